//! The local-process supervisor: each replica is a child process serving on a loopback port.
//!
//! - The listening socket is bound here and handed to the replica as file descriptor 3, so no
//!   other program can take the port between choosing it and the replica binding it.
//! - Each replica runs under a keeper, `lb keep` (`keep.rs`), that holds the read end of the
//!   [`Lifeline`]: replicas die with the last `lb` that holds its write end — even one killed
//!   with SIGKILL — but outlive one `lb` handing them to the next (a binary upgrade), which
//!   adopts them by pid ([`Adoptee`]).
//! - The keeper logs the replica's stdout and stderr line by line with the hostname as prefix.
//! - A replica is watched through a pidfd of its own pid (no pid reuse can mislead a signal),
//!   and stopped with SIGTERM, then SIGKILL after [`STOP_GRACE`].

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rustix::process::{Pid, PidfdFlags, Signal};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};

use super::{Handle, ReplicaSpec, Started, Supervisor, SupervisorError, SupervisorEvent};
use crate::keep::{LIFELINE_FD, LISTEN_FD};

/// The environment variable that carries an upgrade's handover to the new `lb` (`upgrade.rs`);
/// never passed on to replicas.
pub(crate) const HANDOVER_ENV: &str = "LB_UPGRADE";
/// How long a replica gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// How long a keeper gets to say its replica's pid.
const KEEPER_REPORT: Duration = Duration::from_secs(10);

type StopRequest = oneshot::Sender<()>;

/// The pipe that ties replicas to the `lb` processes that run them: every generation of `lb`
/// holds the write end (inherited through an upgrade), every keeper the read end.
#[derive(Debug)]
pub(crate) struct Lifeline {
    /// Given to each keeper (as [`LIFELINE_FD`]).
    pub(crate) read: OwnedFd,
    /// Held; never written.
    pub(crate) write: OwnedFd,
}

impl Lifeline {
    /// A new lifeline (both ends close on exec).
    pub(crate) fn new() -> std::io::Result<Lifeline> {
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        Ok(Lifeline { read, write })
    }
}

/// A replica an earlier `lb` ran, handed over for adoption.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Adoptee {
    /// Its hostname.
    pub(crate) hostname: String,
    /// Its server id.
    pub(crate) id: u64,
    /// Its pid (the replica's, not its keeper's).
    pub(crate) pid: u32,
    /// Where it serves: `host:port`.
    pub(crate) address: String,
}

/// Runs replicas as child processes on 127.0.0.1.
pub(crate) struct ProcessSupervisor {
    /// This executable (`lb keep` runs each replica).
    exe: OsString,
    program: OsString,
    args: Vec<OsString>,
    lifeline: Arc<Lifeline>,
    events: mpsc::UnboundedSender<SupervisorEvent>,
    children: Arc<Mutex<HashMap<u32, mpsc::Sender<StopRequest>>>>,
    /// Replicas an earlier `lb` handed over, until [`Supervisor::adopt`] takes them.
    handed_over: Mutex<Vec<Adoptee>>,
}

impl ProcessSupervisor {
    /// A supervisor that runs `command` (program and leading arguments) per replica, appending
    /// `--hostname=NAME --listen-fd 3`, under a keeper holding `lifeline`. An empty `command`
    /// runs this executable as `lb replica`. `handed_over`: the replicas of the `lb` this one
    /// upgrades.
    pub(crate) fn new(
        command: &[String],
        lifeline: Arc<Lifeline>,
        handed_over: Vec<Adoptee>,
        events: mpsc::UnboundedSender<SupervisorEvent>,
    ) -> std::io::Result<Self> {
        let exe = std::env::current_exe()?.into_os_string();
        let (program, args) = match command.split_first() {
            Some((program, args)) => (program.into(), args.iter().map(Into::into).collect()),
            None => (exe.clone(), vec!["replica".into()]),
        };
        Ok(ProcessSupervisor {
            exe,
            program,
            args,
            lifeline,
            events,
            children: Arc::default(),
            handed_over: Mutex::new(handed_over),
        })
    }

    fn spawn_keeper(&self, spec: &ReplicaSpec, listener: &TcpListener) -> std::io::Result<Child> {
        let mut cmd = Command::new(&self.exe);
        cmd.arg("keep")
            .arg(format!("--name={}", spec.hostname))
            .arg("--lifeline-fd")
            .arg(LIFELINE_FD.to_string())
            .arg("--")
            .arg(&self.program)
            .args(&self.args)
            // One argument, so a name can never be read as an option of its own.
            .arg(format!("--hostname={}", spec.hostname))
            .arg("--listen-fd")
            .arg(LISTEN_FD.to_string())
            .env("SERVER_ID", &spec.hostname)
            .env_remove(HANDOVER_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let listen = listener.as_raw_fd();
        let lifeline = self.lifeline.read.as_raw_fd();
        // SAFETY: only async-signal-safe libc calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                place_descriptors(&[(listen, LISTEN_FD), (lifeline, LIFELINE_FD)])
            });
        }
        cmd.spawn()
    }

    /// Watch `pid` (a replica) until it exits or is stopped; `keeper`: its keeper, when this
    /// `lb` started it (reaped here, and its exit status is the replica's).
    fn watch(&self, pid: u32, keeper: Option<Child>) -> std::io::Result<()> {
        let pidfd = rustix::process::pidfd_open(pid_of(pid)?, PidfdFlags::empty())?;
        // SAFETY: an OwnedFd stays open, the same descriptor, for the AsyncFd's whole life.
        let pidfd =
            unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
                .map_err(|e| e.into_parts().1)?;
        let (stop_tx, stop_rx) = mpsc::channel(1);
        self.children.lock().unwrap().insert(pid, stop_tx);
        tokio::spawn(watch_replica(
            pidfd,
            keeper,
            pid,
            stop_rx,
            self.events.clone(),
            Arc::clone(&self.children),
        ));
        Ok(())
    }
}

/// Put each `(from, to)` descriptor at `to` in a child (between fork and exec), open across
/// exec, whatever numbers they had: each is first copied above every target.
fn place_descriptors(moves: &[(RawFd, RawFd)]) -> std::io::Result<()> {
    let mut high = [0 as RawFd; 4];
    for (i, (from, _)) in moves.iter().enumerate() {
        // SAFETY: fcntl on a descriptor open in this (forked) process.
        let copy = unsafe { libc::fcntl(*from, libc::F_DUPFD_CLOEXEC, 16) };
        if copy < 0 {
            return Err(std::io::Error::last_os_error());
        }
        high[i] = copy;
    }
    for (i, (_, to)) in moves.iter().enumerate() {
        // SAFETY: dup2 onto a fixed number; the result is open across exec.
        if unsafe { libc::dup2(high[i], *to) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn pid_of(pid: u32) -> std::io::Result<Pid> {
    i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| std::io::Error::other(format!("{pid} is not a pid")))
}

#[async_trait]
impl Supervisor for ProcessSupervisor {
    fn kind(&self) -> &'static str {
        "process"
    }

    async fn start(&self, spec: &ReplicaSpec) -> Result<Started, SupervisorError> {
        let fail = |reason: String| SupervisorError::Start {
            hostname: spec.hostname.clone(),
            reason,
        };
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| fail(format!("cannot bind a loopback port: {e}")))?;
        let addr: SocketAddr = listener.local_addr().map_err(|e| fail(e.to_string()))?;
        let mut keeper = self
            .spawn_keeper(spec, &listener)
            .map_err(|e| fail(format!("cannot run {:?}: {e}", self.exe)))?;
        // The keeper has its own copy of the socket now.
        drop(listener);
        let report = keeper.stdout.take().map(BufReader::new);
        let mut line = String::new();
        let said = match report {
            Some(mut report) => {
                tokio::time::timeout(KEEPER_REPORT, report.read_line(&mut line)).await
            }
            None => Ok(Ok(0)),
        };
        let pid = match said {
            Ok(Ok(_)) => match line.trim().strip_prefix("pid ").map(str::parse::<u32>) {
                Some(Ok(pid)) => pid,
                _ => {
                    let _ = keeper.kill().await;
                    let reason = line.trim().strip_prefix("error: ").unwrap_or(line.trim());
                    return Err(fail(if reason.is_empty() {
                        format!("cannot run {:?}: its keeper exited", self.program)
                    } else {
                        reason.to_owned()
                    }));
                }
            },
            Ok(Err(e)) => {
                let _ = keeper.kill().await;
                return Err(fail(format!("cannot read its keeper's report: {e}")));
            }
            Err(_) => {
                let _ = keeper.kill().await;
                return Err(fail("its keeper did not report a pid".into()));
            }
        };
        self.watch(pid, Some(keeper))
            .map_err(|e| fail(format!("exited immediately ({e})")))?;
        tracing::info!(hostname = %spec.hostname, id = spec.id, %addr, pid, "replica started");
        Ok(Started {
            spec: spec.clone(),
            address: addr.to_string(),
            handle: Handle::Pid(pid),
        })
    }

    async fn stop(&self, handle: &Handle) -> Result<(), SupervisorError> {
        let Handle::Pid(pid) = handle else {
            return Err(SupervisorError::Unknown(handle.clone()));
        };
        let stop = self.children.lock().unwrap().remove(pid);
        let Some(stop) = stop else {
            // Already exited (and reaped): nothing left to stop.
            return Ok(());
        };
        let (ack_tx, ack_rx) = oneshot::channel();
        if stop.send(ack_tx).await.is_ok() {
            let _ = ack_rx.await;
        }
        Ok(())
    }

    async fn stop_all(&self) {
        let handles: Vec<Handle> = (self.children.lock().unwrap().keys())
            .map(|pid| Handle::Pid(*pid))
            .collect();
        let stops = handles.iter().map(|handle| self.stop(handle));
        futures_util::future::join_all(stops).await;
    }

    /// The replicas the `lb` this one upgrades handed over, still running.
    async fn adopt(&self) -> Result<Vec<Started>, SupervisorError> {
        let handed_over = std::mem::take(&mut *self.handed_over.lock().unwrap());
        let mut adopted = Vec::new();
        for replica in handed_over {
            match self.watch(replica.pid, None) {
                Ok(()) => adopted.push(Started {
                    spec: ReplicaSpec::managed(replica.hostname, replica.id),
                    address: replica.address,
                    handle: Handle::Pid(replica.pid),
                }),
                Err(e) => {
                    tracing::warn!(hostname = %replica.hostname, pid = replica.pid, error = %e, "a handed-over replica is gone")
                }
            }
        }
        Ok(adopted)
    }
}

/// Stop replicas an earlier `lb` handed over that this one does not run (its supervisor is no
/// longer `process`): SIGTERM, then SIGKILL after [`STOP_GRACE`]. Their keepers then end.
pub(crate) fn release(replicas: Vec<Adoptee>) {
    for replica in replicas {
        let pidfd = pid_of(replica.pid)
            .and_then(|pid| Ok(rustix::process::pidfd_open(pid, PidfdFlags::empty())?));
        let Ok(pidfd) = pidfd else {
            continue;
        };
        tracing::info!(hostname = %replica.hostname, pid = replica.pid, "stopping a process replica the new [supervisor] does not run");
        let _ = rustix::process::pidfd_send_signal(&pidfd, Signal::TERM);
        tokio::spawn(async move {
            tokio::time::sleep(STOP_GRACE).await;
            let _ = rustix::process::pidfd_send_signal(&pidfd, Signal::KILL);
        });
    }
}

/// Watch one replica: report its exit, or stop it when asked (SIGTERM, then SIGKILL).
async fn watch_replica(
    pidfd: AsyncFd<OwnedFd>,
    mut keeper: Option<Child>,
    pid: u32,
    mut stop_rx: mpsc::Receiver<StopRequest>,
    events: mpsc::UnboundedSender<SupervisorEvent>,
    children: Arc<Mutex<HashMap<u32, mpsc::Sender<StopRequest>>>>,
) {
    let exited = async {
        match keeper.as_mut() {
            // The keeper ends as its replica ended.
            Some(keeper) => match keeper.wait().await {
                Ok(status) => status.to_string(),
                Err(e) => format!("wait failed: {e}"),
            },
            None => {
                let _ = pidfd.readable().await;
                "status unknown: adopted from an earlier lb".to_owned()
            }
        }
    };
    tokio::select! {
        detail = exited => {
            children.lock().unwrap().remove(&pid);
            tracing::warn!(pid, %detail, "replica exited");
            let _ = events.send(SupervisorEvent::Exited { handle: Handle::Pid(pid), detail });
        }
        Some(ack) = stop_rx.recv() => {
            let _ = rustix::process::pidfd_send_signal(pidfd.get_ref().as_fd(), Signal::TERM);
            if tokio::time::timeout(STOP_GRACE, pidfd.readable()).await.is_err() {
                let _ = rustix::process::pidfd_send_signal(pidfd.get_ref().as_fd(), Signal::KILL);
            }
            if let Some(keeper) = keeper.as_mut() {
                let _ = tokio::time::timeout(STOP_GRACE, keeper.wait()).await;
            }
            tracing::info!(pid, "replica stopped");
            let _ = ack.send(());
        }
    }
}
