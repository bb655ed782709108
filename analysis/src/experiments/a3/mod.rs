//! every endpoint checked (SPEC §3, success and error rows; [`checks`]), then a replica
//! killed while a client keeps sending requests: how long until `/rep` shows N again without the
//! victim, and how many client requests failed ([`kill`]). Then a replica hung ([`hang`]) and a
//! slow-loris attack ([`slowloris`]), the kill again once per supervisor, each with a load
//! balancer of its own ([`supervisors`]), and last the control-plane phases — hostile saves of
//! `lb.toml` with a kill at the same moment ([`control`]), and a loop attempt
//! ([`loop_attempt`]) — with a load balancer of 64 replicas of their own ([`plane`]).
//! `--a3-phases` chooses among them.
//!
//! The phases share one leaf, [`faults`] (the victim, signals, client traffic, the timeline,
//! the one [`PhaseOutcome`]), and [`command`] (bounded `docker` commands); neither imports a
//! phase, no phase imports another (but [`plane`], which runs [`control`] and
//! [`loop_attempt`]), and only this file imports the phases.

pub mod checks;
pub mod command;
pub mod control;
pub mod faults;
pub mod hang;
pub mod kill;
pub mod loop_attempt;
pub mod plane;
pub mod slowloris;
pub mod supervisors;

use serde::Serialize;

pub use self::checks::{Check, Verdict};
pub use self::faults::{Bin, PhaseOutcome, BIN, NOT_CHOSEN};
use self::hang::Hang;
use self::kill::Kill;
use self::plane::Control;
use self::slowloris::Slowloris;
use self::supervisors::SupervisorRun;
use crate::error::Result;
use crate::experiments::{A3Phase, Context};
use crate::progress;

/// A-3's result.
#[derive(Debug, Clone, Serialize)]
pub struct A3 {
    /// The endpoint checks, in order (none when not chosen).
    pub checks: Vec<Check>,
    /// The kill phase.
    pub kill: PhaseOutcome<Kill>,
    /// A replica hung with SIGSTOP under traffic ([`hang::run`]).
    pub hang: PhaseOutcome<Hang>,
    /// Slow-loris connections next to normal clients ([`slowloris::run`]), when chosen.
    pub slowloris: Option<Slowloris>,
    /// The kill once per supervisor, side by side ([`supervisors::run`]; none when not
    /// chosen).
    pub supervisors: Vec<SupervisorRun>,
    /// Hostile saves and a loop attempt ([`plane::run`]), when either was chosen.
    pub control: Option<PhaseOutcome<Control>>,
}

impl A3 {
    /// Checks with this verdict.
    pub fn count(&self, verdict: Verdict) -> usize {
        self.checks.iter().filter(|c| c.verdict == verdict).count()
    }
}

/// Run the chosen phases: the checks, the kill, the hang, the slow-loris attack, the kill per
/// supervisor, the control-plane phases.
pub fn run(ctx: &Context) -> Result<A3> {
    let checks = if ctx.runs(A3Phase::Checks) {
        ctx.client.scale_to(3)?;
        checks::run(ctx)?
    } else {
        Vec::new()
    };
    let kill = if ctx.runs(A3Phase::Kill) {
        ctx.client.scale_to(3)?;
        kill::run(ctx)?
    } else {
        PhaseOutcome::Skipped(NOT_CHOSEN.into())
    };
    let hang = if ctx.runs(A3Phase::Hang) {
        ctx.client.scale_to(3)?;
        hang::run(ctx)?
    } else {
        PhaseOutcome::Skipped(NOT_CHOSEN.into())
    };
    let slowloris = if ctx.runs(A3Phase::Slowloris) {
        Some(slowloris::run(ctx)?)
    } else {
        None
    };
    let supervisors = if ctx.runs(A3Phase::Supervisors) {
        supervisors::run(ctx)?
    } else {
        Vec::new()
    };
    let control = if ctx.runs(A3Phase::Stall) || ctx.runs(A3Phase::Loop) {
        let outcome = plane::run(ctx)?;
        if let PhaseOutcome::Skipped(why) = &outcome {
            progress::note(&format!("A-3 control-plane phases skipped: {why}"));
        }
        Some(outcome)
    } else {
        None
    };
    Ok(A3 {
        checks,
        kill,
        hang,
        slowloris,
        supervisors,
        control,
    })
}
