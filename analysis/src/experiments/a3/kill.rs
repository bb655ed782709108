//! A-3's kill: the replica serving the most slots killed (SIGKILL, or `docker kill`) while
//! clients keep sending requests; how long until `/rep` shows N again without it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use serde::Serialize;

use super::command::docker;
use super::faults::{
    alive, choose_victim, failure_window, signal, signal_target, timeline, Bin, KillBy,
    PhaseOutcome,
};
use crate::config_file;
use crate::error::{Error, Result};
use crate::experiments::Context;
use crate::lb_api::{eventually, POLL};
use crate::load::{self, Tally};
use crate::progress;

/// Traffic before the kill, so the timeline has a baseline.
const BEFORE_KILL: Duration = Duration::from_millis(500);
/// Traffic after recovery.
const AFTER_RECOVERY: Duration = Duration::from_millis(500);
/// How long the replacement may take.
const RECOVERY_LIMIT: Duration = Duration::from_secs(30);

/// The kill-and-recover measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Kill {
    /// The replica killed (the one serving the most slots).
    pub victim: String,
    /// Its server id.
    pub victim_id: u64,
    /// Slots it served.
    pub victim_slots: usize,
    /// How it was killed, e.g. `SIGKILL to pid 1234`.
    pub how: String,
    /// N before the kill.
    pub n: usize,
    /// When it was killed, ms since traffic started.
    pub killed_ms: f64,
    /// First `/rep` without the victim, ms after the kill.
    pub left_ring_after_ms: Option<f64>,
    /// First `/rep` with N replicas again and without the victim, ms after the kill.
    pub recovered_after_ms: Option<f64>,
    /// The replacement: hostname and server id.
    pub replacement: Option<(String, u64)>,
    /// `/rep` polls made while waiting.
    pub polls: u64,
    /// The client traffic.
    pub traffic: Tally,
    /// Failed requests (any non-200 or transport error).
    pub failed: u64,
    /// First and last failure, ms since traffic started.
    pub failure_window_ms: Option<(f64, f64)>,
    /// The timeline in [`super::BIN`] bins.
    pub timeline: Vec<Bin>,
    /// Whether the victim's process was gone afterwards (for a pid).
    pub victim_gone: Option<bool>,
}

fn report(kill: &PhaseOutcome<Kill>) {
    match kill {
        PhaseOutcome::Done(k) => progress::note(&format!(
            "A-3 kill: {} ({}); left the ring after {} ms, N = {} again after {} ms; {} of {} requests failed",
            k.victim,
            k.how,
            k.left_ring_after_ms.map_or("?".into(), |t| format!("{t:.0}")),
            k.n,
            k.recovered_after_ms.map_or("(not within the limit)".into(), |t| format!("{t:.0}")),
            k.failed,
            k.traffic.sent
        )),
        PhaseOutcome::Skipped(why) => progress::note(&format!("A-3 kill skipped: {why}")),
    }
}

/// Kill the replica serving the most slots under traffic and wait for its replacement; print
/// the summary.
pub fn run(ctx: &Context) -> Result<PhaseOutcome<Kill>> {
    let kill = kill(ctx)?;
    report(&kill);
    Ok(kill)
}

fn kill(ctx: &Context) -> Result<PhaseOutcome<Kill>> {
    let client = &ctx.client;
    let status = client.status()?;
    let ring = client.ring()?;
    let Some((victim, victim_slots)) = choose_victim(&status.replicas, &ring.owners) else {
        return Ok(PhaseOutcome::Skipped("no replica to kill".into()));
    };
    let method = match signal_target(ctx, &victim) {
        Ok(method) => method,
        Err(why) => return Ok(PhaseOutcome::Skipped(why)),
    };
    let n = status.replicas.len();

    let stop = Arc::new(AtomicBool::new(false));
    let cap = (ctx.requests * 20).clamp(20_000, 1_000_000);
    let ids = Arc::new(load::request_ids(ctx.seed, "a3-traffic", cap));
    let origin = Instant::now();
    let spinner = progress::spinner("A-3 kill under traffic");
    let traffic = {
        let (client, limits, spinner) = (
            client.clone(),
            ctx.limits(
                Arc::clone(&stop),
                RECOVERY_LIMIT * 2 + BEFORE_KILL + AFTER_RECOVERY,
            ),
            spinner.clone(),
        );
        std::thread::spawn(move || load::run(&client, ids, limits, origin, &spinner))
    };

    std::thread::sleep(BEFORE_KILL);
    spinner.set_message(format!("killing {}", victim.hostname));
    let how = match &method {
        KillBy::Pid(pid) => {
            if let Err(e) = signal(*pid, Signal::KILL) {
                stop.store(true, Ordering::Relaxed);
                let _ = traffic.join();
                spinner.finish_and_clear();
                return Ok(PhaseOutcome::Skipped(format!(
                    "SIGKILL to pid {pid} failed: {e}"
                )));
            }
            format!("SIGKILL to pid {pid}")
        }
        KillBy::Docker(id) => {
            if let Err(e) = docker(&["kill", id]) {
                stop.store(true, Ordering::Relaxed);
                let _ = traffic.join();
                spinner.finish_and_clear();
                return Ok(PhaseOutcome::Skipped(e.to_string()));
            }
            format!("docker kill {id}")
        }
    };
    let killed = origin.elapsed();
    spinner.set_message(format!("waiting for a replacement of {}", victim.hostname));

    let mut left = None;
    let mut polls = 0u64;
    let recovered = loop {
        let since = origin.elapsed() - killed;
        if since > RECOVERY_LIMIT {
            break None;
        }
        polls += 1;
        if let Ok(rep) = client.rep() {
            let gone = !rep.replicas.contains(&victim.hostname);
            if gone && left.is_none() {
                left = Some(origin.elapsed() - killed);
            }
            if gone && rep.n == n {
                break Some(origin.elapsed() - killed);
            }
        }
        std::thread::sleep(POLL);
    };
    if recovered.is_some() {
        std::thread::sleep(AFTER_RECOVERY);
    }
    stop.store(true, Ordering::Relaxed);
    let run = traffic.join().map_err(|_| Error::Unexpected {
        request: "A-3 traffic".into(),
        reason: "the load thread panicked".into(),
    })?;
    spinner.finish_and_clear();

    let after = client.status()?;
    let replacement = after
        .replicas
        .iter()
        .find(|r| r.id == victim.id && r.hostname != victim.hostname)
        .map(|r| (r.hostname.clone(), r.id));
    // A-4 edits lb.toml next: wait until the load balancer has written the replacement back,
    // so that edit cannot race with the write-back.
    if let (Some(path), Some((host, _))) = (&ctx.owned_config, &replacement) {
        eventually(
            Duration::from_secs(10),
            "the replacement in lb.toml",
            || Ok(config_file::replica_hostnames(path)?.contains(host)),
        )?;
    }
    let victim_gone = match method {
        KillBy::Pid(pid) => Some(!alive(pid)),
        KillBy::Docker(_) => None,
    };

    let tally = run.tally();
    let failure_window_ms = failure_window(&run);
    Ok(PhaseOutcome::Done(Box::new(Kill {
        victim: victim.hostname,
        victim_id: victim.id,
        victim_slots,
        how,
        n,
        killed_ms: killed.as_secs_f64() * 1000.0,
        left_ring_after_ms: left.map(|d| d.as_secs_f64() * 1000.0),
        recovered_after_ms: recovered.map(|d| d.as_secs_f64() * 1000.0),
        replacement,
        polls,
        failed: tally.failures(),
        traffic: tally,
        failure_window_ms,
        timeline: timeline(&run.samples),
        victim_gone,
    })))
}
