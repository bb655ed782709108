//! Helpers several A-3 phases share ([`super::a3_faults`], [`super::a3_supervisors`],
//! [`super::a3_control`]): `GET /home` client traffic on a thread of its own, and signals to a
//! replica's process. Kept here so that no phase imports another.

use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;

use super::Context;
use crate::error::{Error, Result};
use crate::lb_api::eventually;
use crate::load::{self, Limits, LoadRun};
use crate::progress;

/// Deadline of each client request of the phases' traffic: past it the request counts as failed
/// (`timeout`).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long traffic may take to get its first answer before a fault is started.
pub(super) const FIRST_ANSWER_LIMIT: Duration = Duration::from_secs(10);

/// Send `signal` to `pid`.
pub(super) fn signal(pid: u32, signal: libc::c_int) -> std::io::Result<()> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| std::io::Error::from(ErrorKind::InvalidInput))?;
    // SAFETY: kill(2) with a pid the load balancer reported for one of its replicas.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `GET /home` traffic on a thread of its own, until its stop flag is set.
pub(super) struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<LoadRun>>,
    spinner: ProgressBar,
    origin: Instant,
}

impl Traffic {
    /// Start `clients` clients with the ids of `phase` (at most `ids`), each request within
    /// [`CLIENT_TIMEOUT`], for at most `time`.
    pub(super) fn start(
        ctx: &Context,
        phase: &str,
        ids: usize,
        clients: usize,
        time: Duration,
    ) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let ids = Arc::new(load::request_ids(ctx.seed, phase, ids));
        let limits = Limits {
            concurrency: clients,
            time,
            stop: Arc::clone(&stop),
            request_timeout: CLIENT_TIMEOUT,
        };
        let spinner = progress::spinner(&format!("A-3 {phase}"));
        let origin = Instant::now();
        let thread = {
            let (client, spinner) = (ctx.client.clone(), spinner.clone());
            std::thread::spawn(move || load::run(&client, ids, limits, origin, &spinner))
        };
        Traffic {
            stop,
            thread: Some(thread),
            spinner,
            origin,
        }
    }

    /// Wait until some request was answered and at least `baseline` has passed.
    pub(super) fn warmed_up(&self, baseline: Duration) -> Result<()> {
        eventually(FIRST_ANSWER_LIMIT, "answers to the client traffic", || {
            Ok(self.spinner.position() > 0 && self.origin.elapsed() >= baseline)
        })
    }

    /// When it started: the origin of its samples' times.
    pub(super) fn origin(&self) -> Instant {
        self.origin
    }

    /// Its progress bar (a spinner), which counts completed requests.
    pub(super) fn spinner(&self) -> &ProgressBar {
        &self.spinner
    }

    /// Requests completed so far (answered or failed).
    pub(super) fn completed(&self) -> u64 {
        self.spinner.position()
    }

    /// Stop it and collect its requests (the ones in flight end within [`CLIENT_TIMEOUT`]).
    pub(super) fn finish(mut self) -> Result<LoadRun> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take();
        self.spinner.finish_and_clear();
        thread
            .ok_or_else(|| panicked("collected twice"))?
            .join()
            .map_err(|_| panicked("the load thread panicked"))
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        // On an early return the clients stop sending; the thread ends on its own.
        self.stop.store(true, Ordering::Relaxed);
        self.spinner.finish_and_clear();
    }
}

fn panicked(reason: &str) -> Error {
    Error::Unexpected {
        request: "A-3 traffic".into(),
        reason: reason.into(),
    }
}

/// Request ids for the traffic of a phase: more than its clients send in the phase's time on
/// this kind of machine (some 10 000 requests a second), so the traffic lasts the whole phase;
/// the report says so if they ran out.
pub(super) const PHASE_IDS: usize = 1_000_000;
