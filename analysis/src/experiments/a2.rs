//! N = 2..6 (changed with `/rm` and `/add`), `requests` × `GET /home` at each N.

use serde::Serialize;

use super::{Context, Measurement};
use crate::error::Result;

/// The replica counts measured.
pub const COUNTS: std::ops::RangeInclusive<usize> = 2..=6;

/// A-2's result: one measurement per N.
#[derive(Debug, Clone, Serialize)]
pub struct A2 {
    /// Hash in use.
    pub hash: String,
    /// One per N, in increasing N.
    pub points: Vec<Measurement>,
}

/// The request ids of A-2 at `n` replicas (A-4 sends the same ones through every hash).
pub fn phase(n: usize) -> String {
    format!("a2-n{n}")
}

/// Measure at N = 2..6, each with server ids 1..N, then go back to the replica count found at
/// the start.
pub fn run(ctx: &Context, label: &str) -> Result<A2> {
    let initial = ctx.client.status()?;
    let mut points = Vec::new();
    for n in COUNTS {
        ctx.client.scale_to(n)?;
        points.push(ctx.measure(&phase(n), &format!("{label} N={n}"))?);
    }
    ctx.client.scale_to(initial.replicas.len().max(1))?;
    Ok(A2 {
        hash: initial.ring.hash,
        points,
    })
}
