//! What A-3's fault phases share, and nothing else: the one [`PhaseOutcome`] every phase
//! returns, the victim (`choose_victim`) and how to reach it (`KillBy`, `signal_target`,
//! `signal`, `alive`), `GET /home` client traffic on a thread of its own (`Traffic`),
//! its [`timeline`] and failure notes, and the probes a poller sends with a short deadline.
//!
//! A leaf: it imports none of the phases (`checks`, `kill`, `hang`, `slowloris`,
//! `supervisors`, `control`, `loop_attempt`), which import it; `a3/mod.rs` imports the phases.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use rustix::process::{Pid, Signal};
use serde::Serialize;

use crate::client::{Connection, Method};
use crate::error::{Error, Result};
use crate::experiments::Context;
use crate::lb_api::{eventually, ReplicaStatus};
use crate::load::{self, served_by, Limits, LoadRun, Outcome, Tally};
use crate::progress;

/// A phase's result: done, or skipped with the reason (the kill, the hang, each supervisor's
/// kill, the control-plane phases). Serialized as `{"done": …}` or `{"skipped": "…"}`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PhaseOutcome<T> {
    /// Done.
    Done(Box<T>),
    /// Not possible here (or not chosen), with the reason.
    Skipped(String),
}

impl<T> PhaseOutcome<T> {
    /// The result, when the phase ran.
    pub fn done(&self) -> Option<&T> {
        match self {
            PhaseOutcome::Done(t) => Some(t),
            PhaseOutcome::Skipped(_) => None,
        }
    }
}

/// Deadline of each client request of the phases' traffic: past it the request counts as failed
/// (`timeout`).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long traffic may take to get its first answer before a fault is started.
pub(super) const FIRST_ANSWER_LIMIT: Duration = Duration::from_secs(10);

/// Send `signal` to `pid` (through `rustix`: `kill(2)`).
pub(super) fn signal(pid: u32, signal: Signal) -> std::io::Result<()> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    rustix::process::kill_process(pid, signal).map_err(std::io::Error::from)
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

/// Width of a timeline bin.
pub const BIN: Duration = Duration::from_millis(50);

/// Requests in one bin of the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bin {
    /// Start of the bin since traffic started, milliseconds.
    pub start_ms: u64,
    /// Answers with 200 completed in the bin.
    pub ok: u64,
    /// Failed requests completed in the bin.
    pub failed: u64,
}

/// Why a phase that was not chosen has no result.
pub const NOT_CHOSEN: &str = "not chosen (--a3-phases)";

/// How a replica's process is reached from here.
#[derive(Debug, Clone)]
pub(super) enum KillBy {
    /// A local process.
    Pid(u32),
    /// A container, through the `docker` command.
    Docker(String),
}

/// How `victim` can be signalled from here: by pid when the load balancer is on this machine
/// (ours, or a loopback URL), else by container id; or why neither is possible.
pub(super) fn signal_target(
    ctx: &Context,
    victim: &ReplicaStatus,
) -> std::result::Result<KillBy, String> {
    let host = ctx.client.host();
    let local = ctx.owned_config.is_some() || is_loopback(&host);
    match (&victim.handle.pid, victim.handle.container()) {
        (Some(pid), _) if local => Ok(KillBy::Pid(*pid)),
        (_, Some(id)) => Ok(KillBy::Docker(id.to_owned())),
        (Some(pid), None) => Err(format!(
            "the victim {} is pid {pid} on another host ({host}); it cannot be signalled from here",
            victim.hostname
        )),
        (None, None) => Err(format!(
            "/_lb/status shows neither a pid nor a container id for {}",
            victim.hostname
        )),
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// True while `pid` is a live (not zombie) process.
pub(super) fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// The replica serving the most slots (the lowest server id among equals), with its slot count.
pub(super) fn choose_victim(
    status: &[ReplicaStatus],
    owners: &[String],
) -> Option<(ReplicaStatus, usize)> {
    status
        .iter()
        .map(|r| {
            (
                r.clone(),
                owners.iter().filter(|o| **o == r.hostname).count(),
            )
        })
        .max_by_key(|(r, slots)| (*slots, std::cmp::Reverse(r.id)))
}

/// Completed requests per [`BIN`], split into 200s and failures.
pub fn timeline(samples: &[load::Sample]) -> Vec<Bin> {
    let bin_ms = BIN.as_millis() as u64;
    let last = samples
        .iter()
        .map(|s| s.done.as_millis() as u64 / bin_ms)
        .max();
    let Some(last) = last else { return Vec::new() };
    let mut bins: Vec<Bin> = (0..=last)
        .map(|i| Bin {
            start_ms: i * bin_ms,
            ok: 0,
            failed: 0,
        })
        .collect();
    for s in samples {
        let bin = &mut bins[(s.done.as_millis() as u64 / bin_ms) as usize];
        match s.outcome {
            load::Outcome::Served(_) => bin.ok += 1,
            load::Outcome::Failed(_) => bin.failed += 1,
        }
    }
    bins
}

/// A note when the traffic sent every id it had, i.e. stopped before its phase ended.
pub fn ran_out(tally: &Tally) -> Option<String> {
    (tally.planned > 0 && tally.sent >= tally.planned).then(|| {
        format!(
            "the clients used all {} request ids before the phase ended, so their traffic stopped early",
            tally.planned
        )
    })
}

/// Failure kinds of a tally, e.g. `3 × timeout, 1 × HTTP 502`.
pub fn failure_kinds(tally: &Tally) -> String {
    let kinds: Vec<String> = tally
        .failed
        .iter()
        .map(|(kind, n)| format!("{n} × {kind}"))
        .collect();
    kinds.join(", ")
}

/// First and last failure, ms since the traffic's origin.
pub(super) fn failure_window(run: &LoadRun) -> Option<(f64, f64)> {
    run.samples
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Failed(_)))
        .map(|s| s.done.as_secs_f64() * 1000.0)
        .fold(None, |w, t| {
            Some(w.map_or((t, t), |(a, b): (f64, f64)| (a.min(t), b.max(t))))
        })
}

/// Deadline of each request of a poll.
pub(super) const POLL_TIMEOUT: Duration = Duration::from_secs(1);
/// Characters of a message or answer kept by [`shorten`].
const KEEP: usize = 300;

/// A duration in milliseconds.
pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The start of `text`, at most [`KEEP`] characters, on one line.
pub(super) fn shorten(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(KEEP) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

/// `GET /home` with `X-Request-Id: probe` within [`POLL_TIMEOUT`]: who answered it.
pub(super) fn probe(conn: &mut Connection, probe: u32) -> Option<String> {
    conn.send_within(
        Method::GET,
        "/home",
        None,
        Some(u64::from(probe)),
        POLL_TIMEOUT,
    )
    .ok()
    .filter(|a| a.status == 200)
    .and_then(|a| served_by(&a.body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{Outcome, Sample};

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback("127.0.0.1") && is_loopback("localhost") && is_loopback("[::1]"));
        assert!(!is_loopback("10.0.0.1") && !is_loopback("example.org"));
    }

    #[test]
    fn bins_count_every_sample() {
        let s = |ms: u64, ok: bool| Sample {
            id: 100_000,
            sent: Duration::ZERO,
            done: Duration::from_millis(ms),
            outcome: if ok {
                Outcome::Served("a".into())
            } else {
                Outcome::Failed("HTTP 502".into())
            },
        };
        let bins = timeline(&[s(0, true), s(49, false), s(50, true), s(120, true)]);
        assert_eq!(bins.len(), 3);
        assert_eq!((bins[0].ok, bins[0].failed), (1, 1));
        assert_eq!((bins[1].start_ms, bins[1].ok), (50, 1));
        assert_eq!(bins[2].ok, 1);
    }

    #[test]
    fn victim_is_the_replica_with_most_slots() {
        let r = |h: &str, id| ReplicaStatus {
            hostname: h.into(),
            id,
            healthy: true,
            handle: Default::default(),
            requests: 0,
            ..Default::default()
        };
        let owners: Vec<String> = ["a", "b", "b", "c"].iter().map(|s| s.to_string()).collect();
        let (v, slots) = choose_victim(&[r("a", 1), r("b", 2), r("c", 3)], &owners).unwrap();
        assert_eq!((v.hostname.as_str(), slots), ("b", 2));
    }
}
