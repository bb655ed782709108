//! Slow start (`[ring] slow_start_ms`): a replica that joins a ring others already serve —
//! new, replaced, back after failing — takes its weight in [`STEPS`] steps over that time, so
//! its keys arrive gradually. The table is built with weights in thousandths
//! ([`Balancer::place_scaled`](lb_balance::Balancer::place_scaled)) while any replica ramps;
//! a tick republishes it at each step.

use std::time::Duration;

use tokio::time::Instant;

use super::{Controller, Done};

/// Steps a ramp takes: its weight grows by 1/STEPS of the full weight each.
pub(super) const STEPS: u32 = 20;

/// The units of a ramping table's weights.
pub(super) const SCALE: u32 = 1000;

/// The part of its weight a replica that joined `elapsed` ago has, of a ramp `over` long: a
/// multiple of `1/STEPS`, at least the first step, 1 once the ramp is over.
pub(super) fn fraction(elapsed: Duration, over: Duration) -> f64 {
    if over.is_zero() || elapsed >= over {
        return 1.0;
    }
    let steps = (elapsed.as_secs_f64() / over.as_secs_f64() * f64::from(STEPS)).ceil();
    steps.clamp(1.0, f64::from(STEPS)) / f64::from(STEPS)
}

/// `weight` at `fraction` of it, in [`SCALE`] units (at least 1).
pub(super) fn scaled(weight: u32, fraction: f64) -> u32 {
    ((f64::from(weight) * f64::from(SCALE) * fraction).round() as u32).max(1)
}

impl Controller {
    /// Before a publish: start the ramps of replicas that join a table others serve, end the
    /// finished ones and those of replicas that left, and keep a tick coming while any runs.
    pub(super) fn follow_ramps(&mut self) {
        let Some(over) = self.ring.slow_start else {
            self.ramping.clear();
            return;
        };
        let now = Instant::now();
        let replicas = &self.replicas;
        self.ramping
            .retain(|id, started| replicas.contains_key(id) && now - *started < over);
        let published = self.shared.snapshot.load();
        let in_table = published.placement.server_ids();
        if self.running && !in_table.is_empty() {
            for id in self.replicas.keys() {
                if !in_table.contains(id) && !self.ramping.contains_key(id) {
                    tracing::info!(
                        id,
                        over_ms = over.as_millis() as u64,
                        "slow start: the replica takes its weight gradually"
                    );
                    self.ramping.insert(*id, now);
                }
            }
        }
        if !self.ramping.is_empty() && !self.ramp_tick {
            self.ramp_tick = true;
            let step = (over / STEPS).max(Duration::from_millis(20));
            let done = self.done.clone();
            tokio::spawn(async move {
                tokio::time::sleep(step).await;
                let _ = done.send(Done::Ramp);
            });
        }
    }

    /// A ramp's tick: the next step of every ramp.
    pub(super) fn ramp_step(&mut self) {
        self.ramp_tick = false;
        self.publish();
    }

    /// Server id `id`'s part of its weight now (1 unless it ramps).
    pub(super) fn ramp_fraction(&self, id: u64) -> f64 {
        match (self.ramping.get(&id), self.ring.slow_start) {
            (Some(started), Some(over)) => fraction(started.elapsed(), over),
            _ => 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ramp_rises_in_twenty_steps_from_the_first() {
        let over = Duration::from_secs(10);
        assert_eq!(fraction(Duration::ZERO, over), 0.05);
        assert_eq!(fraction(Duration::from_millis(400), over), 0.05);
        assert_eq!(fraction(Duration::from_millis(501), over), 0.1);
        assert_eq!(fraction(Duration::from_secs(5), over), 0.5);
        assert_eq!(fraction(Duration::from_millis(9_999), over), 1.0);
        assert_eq!(fraction(over, over), 1.0);
        assert_eq!(fraction(Duration::from_secs(60), over), 1.0);
        assert_eq!(fraction(Duration::ZERO, Duration::ZERO), 1.0);
        assert_eq!(scaled(3, 0.05), 150);
        assert_eq!(scaled(1, 1.0), 1000);
        assert_eq!(scaled(1, 0.0), 1);
    }
}
