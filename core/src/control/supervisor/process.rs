//! The local-process supervisor: each replica is a child process serving on a loopback port.
//!
//! - The listening socket is bound here and handed to the child as file descriptor 3, so no other
//!   program can take the port between choosing it and the child binding it.
//! - Children get `PR_SET_PDEATHSIG = SIGKILL`: they die with the load balancer, even when it is
//!   killed with SIGKILL.
//! - Their stdout and stderr are logged line by line with the hostname as prefix.

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};

use super::{Handle, ReplicaSpec, Started, Supervisor, SupervisorError, SupervisorEvent};

/// The descriptor number a child finds its listening socket at.
const CHILD_LISTEN_FD: i32 = 3;
/// How long a replica gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

type StopRequest = oneshot::Sender<()>;

/// Runs replicas as child processes on 127.0.0.1.
pub(crate) struct ProcessSupervisor {
    program: OsString,
    args: Vec<OsString>,
    events: mpsc::UnboundedSender<SupervisorEvent>,
    children: Arc<Mutex<HashMap<u32, mpsc::Sender<StopRequest>>>>,
}

impl ProcessSupervisor {
    /// A supervisor that runs `command` (program and leading arguments) per replica, appending
    /// `--hostname=NAME --listen-fd 3`. An empty `command` runs this executable as `lb replica`.
    pub(crate) fn new(
        command: &[String],
        events: mpsc::UnboundedSender<SupervisorEvent>,
    ) -> std::io::Result<Self> {
        let (program, args) = match command.split_first() {
            Some((program, args)) => (program.into(), args.iter().map(Into::into).collect()),
            None => (
                std::env::current_exe()?.into_os_string(),
                vec!["replica".into()],
            ),
        };
        Ok(ProcessSupervisor {
            program,
            args,
            events,
            children: Arc::default(),
        })
    }

    fn spawn_child(&self, spec: &ReplicaSpec, listener: &TcpListener) -> std::io::Result<Child> {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            // One argument, so a name can never be read as an option of its own.
            .arg(format!("--hostname={}", spec.hostname))
            .arg("--listen-fd")
            .arg(CHILD_LISTEN_FD.to_string())
            .env("SERVER_ID", &spec.hostname)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let fd = listener.as_raw_fd();
        let parent = std::process::id();
        // SAFETY: only async-signal-safe libc calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() as u32 != parent {
                    return Err(std::io::Error::other("parent exited"));
                }
                if fd == CHILD_LISTEN_FD {
                    let flags = libc::fcntl(fd, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, CHILD_LISTEN_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.spawn()
    }
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
        let mut child = self
            .spawn_child(spec, &listener)
            .map_err(|e| fail(format!("cannot run {:?}: {e}", self.program)))?;
        // The child has its own copy of the socket now.
        drop(listener);
        let pid = child
            .id()
            .ok_or_else(|| fail("exited immediately".into()))?;
        if let Some(out) = child.stdout.take() {
            tokio::spawn(log_lines(spec.hostname.clone(), out));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(log_lines(spec.hostname.clone(), err));
        }
        let (stop_tx, stop_rx) = mpsc::channel(1);
        self.children.lock().unwrap().insert(pid, stop_tx);
        tokio::spawn(watch_child(
            child,
            pid,
            stop_rx,
            self.events.clone(),
            Arc::clone(&self.children),
        ));
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
}

/// Owns one child: reports its exit, or stops it when asked (SIGTERM, then SIGKILL).
async fn watch_child(
    mut child: Child,
    pid: u32,
    mut stop_rx: mpsc::Receiver<StopRequest>,
    events: mpsc::UnboundedSender<SupervisorEvent>,
    children: Arc<Mutex<HashMap<u32, mpsc::Sender<StopRequest>>>>,
) {
    tokio::select! {
        status = child.wait() => {
            children.lock().unwrap().remove(&pid);
            let detail = match status {
                Ok(s) => s.to_string(),
                Err(e) => format!("wait failed: {e}"),
            };
            tracing::warn!(pid, %detail, "replica exited");
            let _ = events.send(SupervisorEvent::Exited { handle: Handle::Pid(pid), detail });
        }
        Some(ack) = stop_rx.recv() => {
            // SAFETY: plain kill(2) on our own, not yet reaped child.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
            if tokio::time::timeout(STOP_GRACE, child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
            tracing::info!(pid, "replica stopped");
            let _ = ack.send(());
        }
    }
}

async fn log_lines(hostname: String, stream: impl AsyncRead + Unpin) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::info!(target: "replica", "[{hostname}] {line}");
    }
}
