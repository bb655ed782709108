//! A-3's control-plane phases' own load balancer: [`REPLICAS`] replicas run by the process
//! supervisor, rendezvous over [`CONTROL_SLOTS`] slots with the `spec` hash, and the heartbeats
//! [`CONTROL_HEARTBEATS`] (every 100 ms, 300 ms to answer, out after 3 missed). Started once,
//! waited for until every replica is healthy (at most [`READY_LIMIT`]), then the chosen phases
//! run against it — the hostile saves ([`super::control`]) and the loop attempt
//! ([`super::loop_attempt`]) — and it is stopped.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::control::{self, all_healthy, SaveOutcome, CLIENTS, REPLICAS};
use super::faults::{ms, PhaseOutcome};
use super::loop_attempt::{self, LoopAttempt};
use crate::client::LbClient;
use crate::config_file::{self, Heartbeats, CONTROL_HEARTBEATS, CONTROL_SLOTS};
use crate::error::{Error, Result};
use crate::experiments::{A3Phase, Context};
use crate::lb_api::eventually;
use crate::lb_process::OwnedLb;
use crate::progress;

/// How long the load balancer may take to have [`REPLICAS`] healthy replicas.
pub const READY_LIMIT: Duration = Duration::from_secs(120);
/// Lines of the load balancer's output kept in an error.
const LOG_TAIL: usize = 40;

/// Both phases against one load balancer.
#[derive(Debug, Clone, Serialize)]
pub struct Control {
    /// Its replicas.
    pub replicas: usize,
    /// Its heartbeats.
    pub heartbeats: Heartbeats,
    /// Its normal `[ring] slots` (rendezvous).
    pub slots: u32,
    /// Clients during each save.
    pub clients: usize,
    /// From starting it to [`REPLICAS`] healthy replicas, ms.
    pub ready_ms: f64,
    /// The hostile saves (empty when [`A3Phase::Stall`] was not chosen).
    pub saves: Vec<SaveOutcome>,
    /// The loop attempt (when [`A3Phase::Loop`] was chosen).
    pub loop_attempt: Option<LoopAttempt>,
    /// How it exited after SIGTERM.
    pub lb_exit: String,
}

/// Run the chosen control-plane phases against a load balancer of their own.
pub fn run(ctx: &Context) -> Result<PhaseOutcome<Control>> {
    let Some(lb_bin) = &ctx.lb_bin else {
        return Ok(PhaseOutcome::Skipped(
            "there is no lb binary to start (give --lb-bin)".into(),
        ));
    };
    let initial: Vec<(String, u64)> = (1..=REPLICAS as u64)
        .map(|id| (format!("Server {id}"), id))
        .collect();
    let spinner = progress::spinner("A-3 control plane");
    spinner.set_message("starting lb");
    let started = Instant::now();
    let lb = OwnedLb::start_with(lb_bin, &config_file::control_plane(&initial, CONTROL_SLOTS))?;
    let measured = measure(ctx, &lb, started, &spinner);
    spinner.finish_and_clear();
    let log = lb.log().tail(LOG_TAIL);
    let exit = lb.stop();
    let own = |source: Error| Error::OwnLb {
        what: "A-3's control-plane phases".into(),
        source: Box::new(source),
        log: log.clone(),
    };
    let mut control = measured.map_err(own)?;
    control.lb_exit = exit.map_err(own)?.to_string();
    Ok(PhaseOutcome::Done(Box::new(control)))
}

fn measure(
    ctx: &Context,
    lb: &OwnedLb,
    started: Instant,
    spinner: &indicatif::ProgressBar,
) -> Result<Control> {
    let client = LbClient::new(&lb.url())?;
    let own = Context {
        client: client.clone(),
        owned_config: Some(lb.config_path().to_owned()),
        ..ctx.clone()
    };
    spinner.set_message(format!("waiting for {REPLICAS} healthy replicas"));
    eventually(READY_LIMIT, &format!("{REPLICAS} healthy replicas"), || {
        Ok(all_healthy(&client.status()?))
    })?;
    let ready_ms = ms(started.elapsed());
    let saves = if ctx.runs(A3Phase::Stall) {
        control::run(&own, lb, spinner)?
    } else {
        Vec::new()
    };
    let loop_attempt = if ctx.runs(A3Phase::Loop) {
        spinner.set_message("loop attempt");
        Some(loop_attempt::run(&own, lb.addr())?)
    } else {
        None
    };
    Ok(Control {
        replicas: REPLICAS,
        heartbeats: CONTROL_HEARTBEATS,
        slots: CONTROL_SLOTS,
        clients: CLIENTS,
        ready_ms,
        saves,
        loop_attempt,
        lb_exit: String::new(),
    })
}
