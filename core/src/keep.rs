//! `lb keep`: the small process the process supervisor runs each replica under, so that
//! replicas outlive one `lb` (a binary upgrade hands them to the next) yet never outlive the
//! last one.
//!
//! Every `lb` generation holds the write end of one pipe, the *lifeline*; each keeper holds its
//! read end. While any `lb` runs, reading blocks; when the last one exits — however it ends,
//! SIGKILL too, since the kernel closes its descriptors — the keeper reads end-of-file and kills
//! its replica at once. The keeper itself gives its replica `PR_SET_PDEATHSIG = SIGKILL`, so a
//! killed keeper takes its replica with it.
//!
//! The keeper runs `PROGRAM ARGS…` with the listening socket it was given as descriptor 3,
//! writes `pid N` (or `error: …`) as the first line of its standard output, logs the replica's
//! output lines to its own standard error (`[NAME] line`, `lb`'s log format), passes SIGTERM
//! on, and ends as its replica ended (the same exit code, or the same signal).

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The descriptor a replica finds its listening socket at (as without a keeper).
pub(crate) const LISTEN_FD: RawFd = 3;
/// The descriptor a keeper finds the lifeline's read end at.
pub(crate) const LIFELINE_FD: RawFd = 4;

/// Why `lb keep` could not run its replica.
#[derive(Debug, thiserror::Error)]
pub enum KeepError {
    /// No program was given after `--`.
    #[error("no program to run")]
    NoProgram,
    /// The lifeline descriptor is not open.
    #[error("the lifeline descriptor {0} is not open")]
    NoLifeline(RawFd),
    /// The signal mask could not be set.
    #[error("cannot block signals: {0}")]
    Signals(std::io::Error),
    /// The program could not be started.
    #[error("cannot run {program:?}: {error}")]
    Spawn {
        /// The program.
        program: OsString,
        /// What the OS said.
        error: std::io::Error,
    },
}

/// What `lb keep` runs.
#[derive(Debug, Clone)]
pub struct Keep {
    /// The replica's name, the prefix of its log lines.
    pub name: String,
    /// The lifeline's read end.
    pub lifeline_fd: RawFd,
    /// The program and its arguments.
    pub command: Vec<OsString>,
}

/// How the replica ended: its exit code, or the signal that ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It exited with this code.
    Code(i32),
    /// It was ended by this signal.
    Signal(i32),
}

impl Ended {
    /// End this process the same way (a signal is raised with its default action).
    pub fn mirror(self) -> ! {
        match self {
            Ended::Code(code) => std::process::exit(code),
            Ended::Signal(signal) => {
                // SAFETY: plain libc calls on this process; the signal's default action ends it.
                unsafe {
                    libc::signal(signal, libc::SIG_DFL);
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::sigaddset(&mut set, signal);
                    libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                    libc::raise(signal);
                }
                std::process::exit(128 + signal)
            }
        }
    }
}

/// The signals a keeper takes on its signal thread (blocked everywhere else).
fn keeper_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, filled by sigemptyset/sigaddset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGUSR2] {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}

/// Run `keep.command` as a kept replica and return how it ended; `Err` if it could not start
/// (also said on standard output as `error: …`). Logs to stderr as `lb` does.
pub fn keep(keep: Keep) -> Result<Ended, KeepError> {
    crate::logs::to_stderr();
    let result = start(&keep);
    let mut out = std::io::stdout().lock();
    let _ = match &result {
        Ok((child, _)) => writeln!(out, "pid {}", child.id()),
        Err(e) => writeln!(out, "error: {e}"),
    };
    let _ = out.flush();
    drop(out);
    let (mut child, alive) = result?;
    let name = Arc::new(keep.name);
    let mut logs = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        logs.push(spawn_log(Arc::clone(&name), stdout));
    }
    if let Some(stderr) = child.stderr.take() {
        logs.push(spawn_log(Arc::clone(&name), stderr));
    }
    let pid = child.id() as libc::pid_t;
    let signal_alive = Arc::clone(&alive);
    let _ = std::thread::Builder::new()
        .name("keep-signals".into())
        .spawn(move || forward_signals(pid, &signal_alive));
    let status = child.wait();
    alive.store(false, Ordering::SeqCst);
    // The last lines (bounded: a grandchild may hold the pipes open).
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    for log in logs {
        while !log.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => Ended::Code(code),
            (None, Some(signal)) => Ended::Signal(signal),
            (None, None) => Ended::Code(1),
        },
        Err(_) => Ended::Code(1),
    })
}

/// Start the replica and the lifeline's watcher; the flag is true while the replica has not
/// been reaped (signals go to its pid only then).
fn start(keep: &Keep) -> Result<(std::process::Child, Arc<AtomicBool>), KeepError> {
    let (program, args) = keep.command.split_first().ok_or(KeepError::NoProgram)?;
    // SAFETY: fcntl on a descriptor number we were told is ours.
    if unsafe { libc::fcntl(keep.lifeline_fd, libc::F_GETFD) } < 0 {
        return Err(KeepError::NoLifeline(keep.lifeline_fd));
    }
    // SAFETY: the descriptor is open (checked) and nothing else in this process owns it.
    let lifeline = unsafe { OwnedFd::from_raw_fd(keep.lifeline_fd) };
    // Not for the replica.
    rustix::io::fcntl_setfd(&lifeline, rustix::io::FdFlags::CLOEXEC)
        .map_err(|e| KeepError::Signals(e.into()))?;
    let signals = keeper_signals();
    // SAFETY: sets this thread's mask; threads started later inherit it.
    let blocked = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &signals, std::ptr::null_mut()) };
    if blocked != 0 {
        return Err(KeepError::Signals(std::io::Error::from_raw_os_error(
            blocked,
        )));
    }
    let parent = std::process::id();
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            if libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::other("cannot unblock signals"));
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The keeper may have died before prctl took effect.
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::other("the keeper exited"));
            }
            Ok(())
        });
    }
    let child = command.spawn().map_err(|error| KeepError::Spawn {
        program: program.clone(),
        error,
    })?;
    // The replica has its copy of the listening socket: the keeper needs none.
    // SAFETY: closing descriptor 3, given to this process for the replica only.
    unsafe { libc::close(LISTEN_FD) };
    let alive = Arc::new(AtomicBool::new(true));
    let pid = child.id() as libc::pid_t;
    let watch_alive = Arc::clone(&alive);
    let _ = std::thread::Builder::new()
        .name("keep-lifeline".into())
        .spawn(move || {
            let mut lifeline = std::fs::File::from(lifeline);
            let mut byte = [0u8; 64];
            // Nothing is ever written: a read returns only at end-of-file (every lb gone) or on
            // an error.
            loop {
                match lifeline.read(&mut byte) {
                    Ok(0) => break,
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            if watch_alive.load(Ordering::SeqCst) {
                // SAFETY: kill(2) of our own child, not yet reaped.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        });
    Ok((child, alive))
}

/// Pass SIGTERM on to the replica (how `lb` stops it). SIGINT and SIGHUP from a terminal reach
/// the replica directly (same process group); the keeper ignores them.
fn forward_signals(pid: libc::pid_t, alive: &AtomicBool) {
    let signals = keeper_signals();
    loop {
        let mut signal: libc::c_int = 0;
        // SAFETY: waits for one of the blocked signals.
        if unsafe { libc::sigwait(&signals, &mut signal) } != 0 {
            return;
        }
        if signal == libc::SIGTERM && alive.load(Ordering::SeqCst) {
            // SAFETY: kill(2) of our own child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}

/// Log `stream`'s lines as `[name] line` on a thread of their own.
fn spawn_log(name: Arc<String>, stream: impl Read + Send + 'static) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match lines.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end_matches(['\n', '\r']);
                    tracing::info!(target: "replica", "[{name}] {text}");
                }
            }
        }
    })
}
