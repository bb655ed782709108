//! A-3's hang: the replica serving the most slots is stopped (SIGSTOP, or `docker pause`) for
//! [`HANG`] while [`HANG_CLIENTS`] clients send `GET /home`, each request with a
//! [`CLIENT_TIMEOUT`]; then it is continued (SIGCONT, `docker unpause`) — always, also on an
//! error or a panic (`Stopped` does it when dropped). Measured: requests answered and failed,
//! their latency, and when the victim left `/rep`. Bounded in time by the traffic's stop flag
//! and per-request deadlines, and in count by its request ids.

use std::time::Duration;

use rustix::io::Errno;
use rustix::process::Signal;
use serde::Serialize;

use super::command::docker;
use super::faults::{
    alive, choose_victim, failure_window, signal, signal_target, timeline, Bin, KillBy,
    PhaseOutcome, Traffic, FIRST_ANSWER_LIMIT, PHASE_IDS, POLL_TIMEOUT,
};
use crate::client::{Connection, Method};
use crate::config_file;
use crate::error::{Error, Result};
use crate::experiments::Context;
use crate::lb_api::{eventually, Rep, POLL};
use crate::load::Tally;
use crate::progress;
use crate::stats::Summary;

/// How long the victim stays stopped.
pub const HANG: Duration = Duration::from_secs(5);
/// Clients sending `GET /home` during the hang.
pub const HANG_CLIENTS: usize = 32;
/// Deadline of each client request: past it the request counts as failed (`timeout`).
pub use super::faults::CLIENT_TIMEOUT;
/// Traffic before the stop, for a baseline.
const BEFORE_HANG: Duration = Duration::from_millis(500);
/// Traffic after the victim is continued.
const AFTER_HANG: Duration = Duration::from_secs(1);
/// How long the load balancer may take to start a replacement for the hung replica.
const REPLACEMENT_LIMIT: Duration = Duration::from_secs(10);

/// The hang measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Hang {
    /// The replica stopped (the one serving the most slots).
    pub victim: String,
    /// Its server id.
    pub victim_id: u64,
    /// Slots it served.
    pub victim_slots: usize,
    /// How it was stopped, e.g. `SIGSTOP to pid 1234`.
    pub how: String,
    /// Clients sending requests.
    pub clients: usize,
    /// Deadline of each client request, milliseconds.
    pub request_timeout_ms: u64,
    /// When it was stopped, ms since traffic started.
    pub stopped_ms: f64,
    /// From the stop to the continue, milliseconds.
    pub stopped_for_ms: f64,
    /// What continuing it did, e.g. `SIGCONT to pid 1234` or why that failed (the load balancer
    /// may have ended the process already).
    pub resumed: String,
    /// First `/rep` without the victim, ms after the stop (`None`: not while it was stopped).
    pub left_ring_after_ms: Option<f64>,
    /// `/rep` polls made while it was stopped.
    pub polls: u64,
    /// The replica with the victim's server id and a new hostname afterwards, if any.
    pub replacement: Option<(String, u64)>,
    /// The client traffic.
    pub traffic: Tally,
    /// Requests answered with 200.
    pub answered: u64,
    /// Failed requests: any other status, a transport error, or no answer within the deadline.
    pub failed: u64,
    /// Latency of every request, failed ones included, milliseconds.
    pub latency_ms: Option<Summary>,
    /// First and last failure, ms since traffic started.
    pub failure_window_ms: Option<(f64, f64)>,
    /// The timeline in [`super::BIN`] bins.
    pub timeline: Vec<Bin>,
    /// Requests the load balancer sent to another replica during the phase (`retries` in
    /// `/_lb/status`), when it reports them.
    pub retried_by_lb: Option<u64>,
    /// Whether the victim's process was gone afterwards (for a pid).
    pub victim_gone: Option<bool>,
}

/// A replica stopped by [`Stopped::stop`]: continued by [`Stopped::resume`] or, at the latest,
/// when dropped — also while unwinding from a panic, so it is never left stopped.
struct Stopped {
    target: Option<KillBy>,
}

impl Stopped {
    /// Stop the replica; the guard, and how it was stopped.
    fn stop(target: KillBy) -> std::result::Result<(Stopped, String), String> {
        let how = match &target {
            KillBy::Pid(pid) => {
                signal(*pid, Signal::STOP).map_err(|e| format!("SIGSTOP to pid {pid}: {e}"))?;
                format!("SIGSTOP to pid {pid}")
            }
            KillBy::Docker(id) => {
                docker(&["pause", id]).map_err(|e| e.to_string())?;
                format!("docker pause {id}")
            }
        };
        Ok((
            Stopped {
                target: Some(target),
            },
            how,
        ))
    }

    /// Continue the replica (once); what that did.
    fn resume(&mut self) -> String {
        match self.target.take() {
            None => "already continued".into(),
            Some(KillBy::Pid(pid)) => match signal(pid, Signal::CONT) {
                Ok(()) => format!("SIGCONT to pid {pid}"),
                Err(e) if e.raw_os_error() == Some(Errno::SRCH.raw_os_error()) => format!(
                    "SIGCONT not sent: pid {pid} no longer existed (ended while stopped; the load \
                     balancer ends the replicas it replaces)"
                ),
                Err(e) => format!("SIGCONT to pid {pid} failed: {e}"),
            },
            Some(KillBy::Docker(id)) => match docker(&["unpause", &id]) {
                Ok(_) => format!("docker unpause {id}"),
                Err(e) => e.to_string(),
            },
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if self.target.is_some() {
            let what = self.resume();
            progress::note(&format!("A-3 hang: continued the stopped replica: {what}"));
        }
    }
}

/// `GET /rep` within [`POLL_TIMEOUT`] on a connection of the poller's own.
fn rep_within(conn: &mut Connection) -> Option<Rep> {
    let answer = conn
        .send_within(Method::GET, "/rep", None, None, POLL_TIMEOUT)
        .ok()?;
    (answer.status == 200)
        .then(|| Rep::parse(&answer.body))
        .flatten()
}

/// Hang the replica serving the most slots for [`HANG`] under [`HANG_CLIENTS`] clients.
pub fn run(ctx: &Context) -> Result<PhaseOutcome<Hang>> {
    let client = &ctx.client;
    let status = client.status()?;
    let ring = client.ring()?;
    let Some((victim, victim_slots)) = choose_victim(&status.replicas, &ring.owners) else {
        return Ok(PhaseOutcome::Skipped("no replica to stop".into()));
    };
    let target = match signal_target(ctx, &victim) {
        Ok(target) => target,
        Err(why) => return Ok(PhaseOutcome::Skipped(why)),
    };
    let victim_pid = match &target {
        KillBy::Pid(pid) => Some(*pid),
        KillBy::Docker(_) => None,
    };

    let traffic = Traffic::start(
        ctx,
        "a3-hang",
        PHASE_IDS,
        HANG_CLIENTS,
        FIRST_ANSWER_LIMIT + HANG * 2 + AFTER_HANG,
    );
    if let Err(e) = traffic.warmed_up(BEFORE_HANG) {
        return Ok(PhaseOutcome::Skipped(format!(
            "the client traffic got no answer before the hang: {e}"
        )));
    }
    let retries_before = client.status().ok().and_then(|s| s.retries);
    traffic
        .spinner()
        .set_message(format!("stopping {}", victim.hostname));
    let (mut stopped, how) = match Stopped::stop(target) {
        Ok(stopped) => stopped,
        Err(why) => {
            let _ = traffic.finish();
            return Ok(PhaseOutcome::Skipped(why));
        }
    };
    let stopped_at = traffic.origin().elapsed();
    traffic
        .spinner()
        .set_message(format!("{} stopped; polling /rep", victim.hostname));

    // While it is stopped: when does it leave /rep? Bounded by HANG (and each poll by its
    // deadline); once it is out, the rest of HANG is simply waited.
    let mut poller = client.connection();
    let mut left = None;
    let mut polls = 0u64;
    // Every round takes POLL at least (or ends the wait), so this cap is never the limit.
    let rounds = (HANG.as_millis() / POLL.as_millis().max(1)) as usize * 2 + 4;
    for _ in 0..rounds {
        let since = traffic.origin().elapsed().saturating_sub(stopped_at);
        let Some(rest) = HANG.checked_sub(since).filter(|r| !r.is_zero()) else {
            break;
        };
        if left.is_some() {
            std::thread::sleep(rest);
            continue;
        }
        polls += 1;
        if let Some(rep) = rep_within(&mut poller) {
            if !rep.replicas.contains(&victim.hostname) {
                left = Some(traffic.origin().elapsed().saturating_sub(stopped_at));
                continue;
            }
        }
        std::thread::sleep(POLL.min(rest));
    }
    let resumed = stopped.resume();
    let stopped_for = traffic.origin().elapsed().saturating_sub(stopped_at);
    drop(stopped);
    traffic
        .spinner()
        .set_message(format!("{} continued ({resumed})", victim.hostname));
    std::thread::sleep(AFTER_HANG);
    let run = traffic.finish()?;

    // The replacement, if the load balancer replaced the hung replica.
    let mut replacement = None;
    let waited = eventually(
        REPLACEMENT_LIMIT,
        "a replacement for the hung replica",
        || {
            let now = client.status()?;
            replacement = now
                .replicas
                .iter()
                .find(|r| r.id == victim.id && r.hostname != victim.hostname)
                .map(|r| (r.hostname.clone(), r.id));
            Ok(replacement.is_some() || now.replicas.iter().any(|r| r.hostname == victim.hostname))
        },
    );
    match waited {
        Ok(()) => {}
        Err(e @ Error::Timeout { .. }) => progress::note(&format!("A-3 hang: {e}")),
        Err(e) => return Err(e),
    }
    // The slow-loris phase and A-4 come next: let the replacement reach lb.toml first, so A-4's
    // edit cannot race with the write-back.
    if let (Some(path), Some((host, _))) = (&ctx.owned_config, &replacement) {
        eventually(
            Duration::from_secs(10),
            "the replacement in lb.toml",
            || Ok(config_file::replica_hostnames(path)?.contains(host)),
        )?;
    }
    let retried_by_lb = match (retries_before, client.status()?.retries) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };

    let tally = run.tally();
    let hang = Hang {
        victim: victim.hostname,
        victim_id: victim.id,
        victim_slots,
        how,
        clients: HANG_CLIENTS,
        request_timeout_ms: CLIENT_TIMEOUT.as_millis() as u64,
        stopped_ms: stopped_at.as_secs_f64() * 1000.0,
        stopped_for_ms: stopped_for.as_secs_f64() * 1000.0,
        resumed,
        left_ring_after_ms: left.map(|d| d.as_secs_f64() * 1000.0),
        polls,
        replacement,
        answered: tally.successes(),
        failed: tally.failures(),
        latency_ms: run.latency(),
        failure_window_ms: failure_window(&run),
        timeline: timeline(&run.samples),
        traffic: tally,
        retried_by_lb,
        victim_gone: victim_pid.map(|pid| !alive(pid)),
    };
    progress::note(&format!(
        "A-3 hang: {} ({}) for {:.1} s; out of /rep after {}; {} of {} requests failed, p99 {} ms",
        hang.victim,
        hang.how,
        hang.stopped_for_ms / 1000.0,
        hang.left_ring_after_ms
            .map_or("(not while stopped)".into(), |t| format!("{t:.0} ms")),
        hang.failed,
        hang.traffic.sent,
        hang.latency_ms
            .map_or("?".into(), |l| format!("{:.0}", l.p99)),
    ));
    Ok(PhaseOutcome::Done(Box::new(hang)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_process_is_continued_when_the_guard_drops() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let state = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .map(|(_, r)| r.trim_start().chars().next())
                })
                .flatten()
        };
        let stopped_state = |want: bool| {
            eventually(Duration::from_secs(5), "process state", || {
                Ok(matches!(state(), Some('T')) == want)
            })
        };
        {
            let (_guard, how) = Stopped::stop(KillBy::Pid(pid)).unwrap();
            assert_eq!(how, format!("SIGSTOP to pid {pid}"));
            stopped_state(true).unwrap();
            // Dropped here without resume(), as on an early return.
        }
        stopped_state(false).unwrap();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let (_guard, _) = Stopped::stop(KillBy::Pid(pid)).unwrap();
            stopped_state(true).unwrap();
            panic!("a failure while the replica is stopped");
        }));
        assert!(result.is_err());
        stopped_state(false).unwrap();
        let (mut guard, _) = Stopped::stop(KillBy::Pid(pid)).unwrap();
        assert_eq!(guard.resume(), format!("SIGCONT to pid {pid}"));
        assert_eq!(guard.resume(), "already continued");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
