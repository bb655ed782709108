//! N = 3, `requests` × `GET /home` with random 6-digit request ids; requests per replica.

use super::{Context, Measurement};
use crate::error::Result;

/// The request ids of A-1 (A-4 sends the same ones through every hash).
pub const PHASE: &str = "a1";

/// Bring the load balancer to N = 3 (server ids 1..3) and measure.
pub fn run(ctx: &Context, label: &str) -> Result<Measurement> {
    ctx.client.scale_to(3)?;
    ctx.measure(PHASE, label)
}
