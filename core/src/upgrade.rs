//! Binary upgrades, nginx's way (`SIGUSR2`): the running `lb` starts its executable again,
//! hands the new process its listening sockets, the lifeline and its replicas, and waits for
//! it to say it is ready; only then does it stop accepting, drain and exit — without stopping
//! the replicas, which the new `lb` adopted. A new binary that exits or does not get ready in
//! [`READY_TIMEOUT`] is stopped and the old one goes on serving, saying why.
//!
//! The handover is by descriptor inheritance: the descriptors stay open across the new
//! binary's exec (their close-on-exec flag is cleared in the child only), and their numbers
//! travel in the [`HANDOVER_ENV`] variable as JSON. The sockets are the very same ones, never
//! closed: a connection queued on them is accepted by whichever process takes it first, so
//! none is refused or reset during the swap.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use crate::control::supervisor::process::{Adoptee, Lifeline};
use crate::data::sockets::{Bound, ListenError};

pub(crate) use crate::control::supervisor::process::HANDOVER_ENV;
/// How long the new process gets to say it is ready.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// What the new process writes once it serves.
const READY: &[u8] = b"ready\n";

/// Why an upgrade did not happen, or why a handed-over start failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpgradeError {
    /// The handover in the environment is not one an `lb` wrote.
    #[error("{HANDOVER_ENV} is not a handover from lb: {0}")]
    BadHandover(String),
    /// A handed-over listener is not what the handover says.
    #[error("a handed-over listener: {0}")]
    Listener(#[from] ListenError),
    /// `lb` runs as PID 1 (a container's init): its exit would end the container.
    #[error(
        "lb is PID 1 (a container's init): an upgrade would end the container; replace the \
         container instead (its replicas are adopted)"
    )]
    Init,
    /// The descriptors could not be prepared.
    #[error("cannot prepare the handover: {0}")]
    Prepare(std::io::Error),
    /// The new binary could not be started.
    #[error("cannot start {}: {error}", exe.display())]
    Spawn {
        /// The executable.
        exe: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// The new process exited before it was ready.
    #[error("the new lb ({}, pid {pid}) exited before it was ready: {status}", exe.display())]
    Exited {
        /// The executable.
        exe: PathBuf,
        /// Its pid.
        pid: u32,
        /// How it ended.
        status: String,
    },
    /// The new process did not say it was ready in time (or closed its end without saying it
    /// and went on running); it was killed.
    #[error("the new lb ({}, pid {pid}) was not ready within {}s; it was stopped", exe.display(), READY_TIMEOUT.as_secs())]
    NotReady {
        /// The executable.
        exe: PathBuf,
        /// Its pid.
        pid: u32,
    },
}

/// One listener's sockets in the handover.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct HandedListener {
    requested: SocketAddr,
    local: SocketAddr,
    fds: Vec<RawFd>,
}

/// What travels in [`HANDOVER_ENV`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Handover {
    /// The new process' generation.
    generation: u64,
    /// The old process' pid.
    from: u32,
    plain: HandedListener,
    tls: Option<HandedListener>,
    admin: Option<HandedListener>,
    /// The lifeline's read and write ends (process replicas only).
    lifeline: Option<[RawFd; 2]>,
    replicas: Vec<Adoptee>,
    /// Where to write [`READY`].
    ready: RawFd,
}

impl Handover {
    /// Every descriptor it names.
    fn descriptors(&self) -> Vec<RawFd> {
        [&self.plain]
            .into_iter()
            .chain(self.tls.as_ref())
            .chain(self.admin.as_ref())
            .flat_map(|l| l.fds.iter().copied())
            .chain(self.lifeline.into_iter().flatten())
            .chain([self.ready])
            .collect()
    }
}

/// A listener handed over: its address and its sockets, not yet taken.
#[derive(Debug)]
pub(crate) struct InheritedListener {
    /// The address it was asked for.
    pub(crate) requested: SocketAddr,
    /// Its sockets.
    pub(crate) bound: Bound,
}

/// What an `lb` started by an upgrade inherited from the one before it.
#[derive(Debug)]
pub(crate) struct Inherited {
    /// Its generation (the first `lb` is 1).
    pub(crate) generation: u64,
    /// The pid of the `lb` it replaces.
    pub(crate) from: u32,
    /// The listeners, taken by the start as it binds.
    pub(crate) plain: Option<InheritedListener>,
    /// The TLS listener.
    pub(crate) tls: Option<InheritedListener>,
    /// The admin listener.
    pub(crate) admin: Option<InheritedListener>,
    /// The lifeline (process replicas).
    pub(crate) lifeline: Option<Lifeline>,
    /// The replicas to adopt (process replicas; containers are found in the engine).
    pub(crate) replicas: Vec<Adoptee>,
    ready: Option<OwnedFd>,
}

/// Take ownership of an inherited descriptor: it must be open; it closes on exec from now on
/// (never leaked into replicas or a later upgrade's child by accident).
fn own(fd: RawFd) -> Result<OwnedFd, UpgradeError> {
    if fd < 3 {
        return Err(UpgradeError::BadHandover(format!(
            "descriptor {fd} is a standard stream"
        )));
    }
    // SAFETY: fcntl on a descriptor number: fails harmlessly if it is not open.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(UpgradeError::BadHandover(format!(
            "descriptor {fd} is not open"
        )));
    }
    // SAFETY: the handover gave this open descriptor to this process; it is taken once
    // (duplicates are refused by the caller).
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    rustix::io::fcntl_setfd(&owned, rustix::io::FdFlags::CLOEXEC)
        .map_err(|e| UpgradeError::BadHandover(format!("descriptor {fd}: {e}")))?;
    Ok(owned)
}

impl Inherited {
    /// The handover this process was started with, if [`HANDOVER_ENV`] is set.
    pub(crate) fn take() -> Result<Option<Inherited>, UpgradeError> {
        let Some(text) = std::env::var_os(HANDOVER_ENV) else {
            return Ok(None);
        };
        let text = text
            .into_string()
            .map_err(|_| UpgradeError::BadHandover("not UTF-8".into()))?;
        let handover: Handover =
            serde_json::from_str(&text).map_err(|e| UpgradeError::BadHandover(e.to_string()))?;
        // Every descriptor once: two owners of one would close it twice.
        let mut all = handover.descriptors();
        let count = all.len();
        all.sort_unstable();
        all.dedup();
        if all.len() != count {
            return Err(UpgradeError::BadHandover(
                "a descriptor is named twice".into(),
            ));
        }
        let ready = own(handover.ready)?;
        let listener = |handed: &HandedListener| -> Result<InheritedListener, UpgradeError> {
            let fds = (handed.fds.iter().map(|fd| own(*fd))).collect::<Result<Vec<_>, _>>()?;
            Ok(InheritedListener {
                requested: handed.requested,
                bound: Bound::adopt(handed.requested, handed.local, fds)?,
            })
        };
        let lifeline = match handover.lifeline {
            Some([read, write]) => Some(Lifeline {
                read: own(read)?,
                write: own(write)?,
            }),
            None => None,
        };
        Ok(Some(Inherited {
            generation: handover.generation,
            from: handover.from,
            plain: Some(listener(&handover.plain)?),
            tls: handover.tls.as_ref().map(listener).transpose()?,
            admin: handover.admin.as_ref().map(listener).transpose()?,
            lifeline,
            replicas: handover.replicas,
            ready: Some(ready),
        }))
    }

    /// Tell the `lb` this one replaces that it serves now (it then drains and exits).
    pub(crate) fn ready(&mut self) {
        if let Some(fd) = self.ready.take() {
            let mut pipe = std::fs::File::from(fd);
            if let Err(e) = std::io::Write::write_all(&mut pipe, READY) {
                tracing::error!(error = %e, "cannot tell the previous lb that this one is ready");
            }
        }
    }
}

/// Take the inherited listener if it was asked for at `addr`; otherwise bind `addr` afresh
/// (`count` sockets) — a listen address changed with the upgrade.
pub(crate) fn listener_at(
    inherited: Option<InheritedListener>,
    addr: SocketAddr,
    count: usize,
) -> Result<Bound, ListenError> {
    match inherited {
        Some(listener) if listener.requested == addr => {
            if listener.bound.len() < count {
                listener.bound.grown(count)
            } else {
                Ok(listener.bound)
            }
        }
        Some(listener) => {
            tracing::info!(from = %listener.requested, to = %addr, "the listen address changed with the upgrade: binding the new one");
            Bound::bind(addr, count)
        }
        None => Bound::bind(addr, count),
    }
}

/// What the running `lb` hands to the new one.
pub(crate) struct Plan<'a> {
    /// The executable to start (the path this `lb` was started from).
    pub(crate) exe: &'a std::path::Path,
    /// Its arguments (this `lb`'s own).
    pub(crate) args: &'a [OsString],
    /// The new process' generation.
    pub(crate) generation: u64,
    /// The listeners in use now.
    pub(crate) plain: &'a Bound,
    /// The TLS listener.
    pub(crate) tls: Option<&'a Bound>,
    /// The admin listener.
    pub(crate) admin: Option<&'a Bound>,
    /// The lifeline (process replicas).
    pub(crate) lifeline: Option<&'a Lifeline>,
    /// The process replicas.
    pub(crate) replicas: Vec<Adoptee>,
}

/// Start the new binary with the handover and wait until it is ready; its pid. On failure the
/// new process is gone (killed if it still ran) and nothing of this one changed.
pub(crate) async fn start_new(plan: Plan<'_>) -> Result<u32, UpgradeError> {
    if std::process::id() == 1 {
        return Err(UpgradeError::Init);
    }
    let (ready_read, ready_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| UpgradeError::Prepare(e.into()))?;
    let handed = |bound: &Bound| HandedListener {
        requested: bound.requested,
        local: bound.local,
        fds: bound.raw_fds(),
    };
    let handover = Handover {
        generation: plan.generation,
        from: std::process::id(),
        plain: handed(plan.plain),
        tls: plan.tls.map(handed),
        admin: plan.admin.map(handed),
        lifeline: plan
            .lifeline
            .map(|l| [l.read.as_raw_fd(), l.write.as_raw_fd()]),
        replicas: plan.replicas,
        ready: ready_write.as_raw_fd(),
    };
    let inherit = handover.descriptors();
    let json = serde_json::to_string(&handover).map_err(|e| UpgradeError::Prepare(e.into()))?;
    let mut command = std::process::Command::new(plan.exe);
    command.args(plan.args).env(HANDOVER_ENV, json);
    // SAFETY: only async-signal-safe fcntl calls between fork and exec; the flags change in
    // the child only.
    unsafe {
        command.pre_exec(move || {
            for fd in &inherit {
                if libc::fcntl(*fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = command.spawn().map_err(|error| UpgradeError::Spawn {
        exe: plan.exe.to_path_buf(),
        error,
    })?;
    // Until it is ready the new process is this one's to stop: also when the wait is abandoned
    // (a SIGTERM during the upgrade drops this future).
    let mut child = Unready(Some(child));
    // Only the child writes: end-of-file then means it is gone.
    drop(ready_write);
    let pid = child.pid();
    tracing::info!(pid, exe = %plan.exe.display(), generation = plan.generation, "upgrade: the new lb started; waiting for it to be ready");
    let said = async {
        let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(ready_read)?;
        let mut buf = [0u8; READY.len()];
        let mut got = 0;
        while got < buf.len() {
            match pipe.read(&mut buf[got..]).await? {
                0 => break,
                n => got += n,
            }
        }
        Ok::<bool, std::io::Error>(buf[..got] == *READY)
    };
    let outcome = tokio::time::timeout(READY_TIMEOUT, said).await;
    if let Ok(Ok(true)) = outcome {
        // It serves: it outlives this process.
        child.0.take();
        return Ok(pid);
    }
    // Not ready: how it ended, if it did (a process that closed the pipe gets a second to
    // exit); one still running is killed.
    let finished = outcome.is_ok();
    let exited = child.0.take().map(|mut child| {
        tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(1);
            while finished && std::time::Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    return Some(status.to_string());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            None
        })
    });
    let exited = match exited {
        Some(task) => task.await.ok().flatten(),
        None => None,
    };
    let exe = plan.exe.to_path_buf();
    Err(match exited {
        Some(status) => UpgradeError::Exited { exe, pid, status },
        None => UpgradeError::NotReady { exe, pid },
    })
}

/// A new process not (yet) ready: killed and reaped if dropped with it inside.
struct Unready(Option<std::process::Child>);

impl Unready {
    fn pid(&self) -> u32 {
        self.0.as_ref().map_or(0, std::process::Child::id)
    }
}

impl Drop for Unready {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            tracing::warn!(pid = child.id(), "upgrade abandoned: stopping the new lb");
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Tell systemd (a `Type=notify` unit: `$NOTIFY_SOCKET`) that this process serves and is the
/// service's main process now: `READY=1` at start, and after an upgrade `MAINPID` moves to the
/// new process (the unit needs `NotifyAccess=all`, since the new process is not the main one
/// until then). Without `$NOTIFY_SOCKET`, nothing.
pub(crate) fn notify_systemd() {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        notify_at(&path);
    }
}

/// [`notify_systemd`] to the socket at `path` (`@` first: an abstract address).
fn notify_at(path: &std::ffi::OsStr) {
    let message = format!("READY=1\nMAINPID={}\n", std::process::id());
    let sent = (|| -> std::io::Result<()> {
        let socket = std::os::unix::net::UnixDatagram::unbound()?;
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path);
        match bytes.strip_prefix(b"@") {
            // An abstract socket address.
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.send_to_addr(message.as_bytes(), &addr)?;
            }
            None => {
                socket.send_to(message.as_bytes(), path)?;
            }
        }
        Ok(())
    })();
    if let Err(e) = sent {
        tracing::warn!(error = %e, socket = ?path, "cannot notify systemd");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_hears_ready_and_the_main_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        notify_at(path.as_os_str());
        let mut buf = [0u8; 128];
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(
            std::str::from_utf8(&buf[..n]).unwrap(),
            format!("READY=1\nMAINPID={}\n", std::process::id())
        );
    }

    #[test]
    fn a_handover_round_trips_as_json() {
        let handover = Handover {
            generation: 3,
            from: 41,
            plain: HandedListener {
                requested: "127.0.0.1:0".parse().unwrap(),
                local: "127.0.0.1:5000".parse().unwrap(),
                fds: vec![7, 8],
            },
            tls: None,
            admin: Some(HandedListener {
                requested: "127.0.0.1:5001".parse().unwrap(),
                local: "127.0.0.1:5001".parse().unwrap(),
                fds: vec![9],
            }),
            lifeline: Some([10, 11]),
            replicas: vec![Adoptee {
                hostname: "Server 1".into(),
                id: 1,
                pid: 4242,
                address: "127.0.0.1:40000".into(),
            }],
            ready: 12,
        };
        let text = serde_json::to_string(&handover).unwrap();
        assert_eq!(serde_json::from_str::<Handover>(&text).unwrap(), handover);
    }

    #[test]
    fn a_closed_or_standard_descriptor_is_refused() {
        assert!(matches!(own(1), Err(UpgradeError::BadHandover(m)) if m.contains("standard")));
        // A number far above anything this test process opened.
        assert!(
            matches!(own(900_000), Err(UpgradeError::BadHandover(m)) if m.contains("not open"))
        );
    }

    #[test]
    fn a_bound_set_is_adopted_only_for_its_own_address() {
        let bound = Bound::bind("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let fds: Vec<OwnedFd> = (0..bound.len())
            .map(|i| OwnedFd::from(bound.socket(i).unwrap()))
            .collect();
        let adopted = Bound::adopt(bound.requested, bound.local, fds).unwrap();
        assert_eq!(adopted.local, bound.local);
        assert_eq!(adopted.len(), 2);
        let elsewhere: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let fds = vec![OwnedFd::from(bound.socket(0).unwrap())];
        let err = Bound::adopt(bound.requested, elsewhere, fds).unwrap_err();
        assert!(
            err.to_string()
                .contains("not a socket listening on 127.0.0.1:1"),
            "{err}"
        );
        // A socket that does not listen.
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let at = udp.local_addr().unwrap();
        let err = Bound::adopt(at, at, vec![OwnedFd::from(udp)]).unwrap_err();
        assert!(err.to_string().contains("not a socket listening"), "{err}");
    }
}
