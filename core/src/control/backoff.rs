//! One jittered exponential backoff, for everything the control plane tries again: respawning a
//! replica (`controller/vacancies.rs`), reaching the container engine, reopening its event stream
//! (`supervisor/engine.rs`).
//!
//! Modelled on linkerd2-proxy's `exp-backoff`: the `n`-th wait (from 0) is
//! `min · 2ⁿ`, at most `max`, plus a random share of up to `jitter` of it (so that several load
//! balancers that lost the same engine at the same moment do not all come back at once), never
//! more than `max`. A success resets it to `min`.

use std::time::Duration;

/// How waits grow: from `min`, doubling up to `max`, each with up to `jitter` × itself added at
/// random.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    jitter: f64,
}

impl Backoff {
    /// Waits from `min` to `max`, each lengthened by a random share of up to `jitter` (a ratio,
    /// `0.0..=1.0`) of itself. Panics when `min > max`, `max` is zero or `jitter` is outside
    /// `0.0..=1.0`: these are constants of the code, not inputs.
    pub(crate) const fn new(min: Duration, max: Duration, jitter: f64) -> Self {
        assert!(
            min.as_nanos() <= max.as_nanos(),
            "backoff: min must not exceed max"
        );
        assert!(!max.is_zero(), "backoff: max must not be zero");
        assert!(
            jitter >= 0.0 && jitter <= 1.0,
            "backoff: jitter is a ratio from 0 to 1"
        );
        Backoff { min, max, jitter }
    }

    /// The wait before retry `attempt` (from 0) without jitter: `min · 2^attempt`, at most `max`.
    pub(crate) fn base(&self, attempt: u32) -> Duration {
        2u32.checked_pow(attempt)
            .and_then(|factor| self.min.checked_mul(factor))
            .map_or(self.max, |d| d.min(self.max))
    }

    /// The wait before retry `attempt` with `unit` (`0.0..1.0`, a uniform random number) as its
    /// share of the jitter: `base + unit · jitter · base`, at most `max`.
    pub(crate) fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let base = self.base(attempt);
        let extra = base.mul_f64(self.jitter * unit.clamp(0.0, 1.0));
        (base + extra).min(self.max)
    }

    /// A fresh sequence of waits under this policy.
    pub(crate) fn start(&self) -> Retries {
        Retries {
            policy: *self,
            attempt: 0,
        }
    }
}

/// A sequence of waits: each [`Retries::next_delay`] is longer than the one before (up to the
/// policy's `max`), until [`Retries::reset`].
#[derive(Debug, Clone)]
pub(crate) struct Retries {
    policy: Backoff,
    attempt: u32,
}

impl Retries {
    /// The next wait (jittered), and the one after it grows.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.policy.delay(self.attempt, fastrand::f64());
        self.attempt = self.attempt.saturating_add(1);
        delay
    }

    /// The next wait without its jitter: the least [`Retries::next_delay`] would return.
    pub(crate) fn peek_base(&self) -> Duration {
        self.policy.base(self.attempt)
    }

    /// Sleep for the next wait.
    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// Back to the shortest wait (after a success).
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn waits_double_from_min_and_stop_at_max() {
        let b = Backoff::new(200 * MS, 5000 * MS, 0.0);
        let waits: Vec<u128> = (0..8).map(|n| b.base(n).as_millis()).collect();
        assert_eq!(waits, [200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        // No overflow however many attempts.
        assert_eq!(b.base(31), 5000 * MS);
        assert_eq!(b.base(u32::MAX), 5000 * MS);
        assert_eq!(b.delay(3, 0.99), 1600 * MS, "no jitter asked for");
    }

    #[test]
    fn jitter_adds_at_most_its_share_and_never_passes_max() {
        let b = Backoff::new(200 * MS, 5000 * MS, 0.5);
        assert_eq!(b.delay(0, 0.0), 200 * MS);
        assert_eq!(b.delay(0, 0.5), 250 * MS);
        assert!(b.delay(0, 0.999_999) < 300 * MS);
        assert_eq!(b.delay(1, 0.5), 500 * MS);
        assert_eq!(b.delay(4, 0.25), 3600 * MS);
        // 800 + up to 400 would pass a max of 1000: capped.
        let low = Backoff::new(200 * MS, 1000 * MS, 0.5);
        assert_eq!(low.delay(2, 0.2), 880 * MS);
        assert_eq!(low.delay(2, 0.999), 1000 * MS);
        assert_eq!(b.delay(9, 0.7), 5000 * MS);
        // Out-of-range units are clamped.
        assert_eq!(b.delay(0, 7.0), 300 * MS);
        assert_eq!(b.delay(0, -1.0), 200 * MS);
    }

    #[test]
    fn random_waits_stay_in_range_and_are_not_all_alike() {
        let b = Backoff::new(100 * MS, 60_000 * MS, 0.5);
        let mut retries = b.start();
        let mut first = Vec::new();
        for _ in 0..200 {
            let d = retries.next_delay();
            assert!((100 * MS..150 * MS).contains(&d), "{d:?}");
            first.push(d);
            retries.reset();
        }
        first.sort();
        first.dedup();
        assert!(first.len() > 10, "jitter spreads the waits: {first:?}");
    }

    #[test]
    fn a_sequence_grows_until_reset() {
        let mut retries = Backoff::new(10 * MS, 100 * MS, 0.25).start();
        let waits: Vec<Duration> = (0..6).map(|_| retries.next_delay()).collect();
        for (n, (w, base)) in waits.iter().zip([10, 20, 40, 80, 100, 100]).enumerate() {
            let base = base * MS;
            assert!(
                *w >= base && *w <= (base + base / 4).min(100 * MS),
                "{n}: {w:?}"
            );
        }
        assert_eq!(retries.peek_base(), 100 * MS);
        retries.reset();
        assert_eq!(retries.peek_base(), 10 * MS);
        assert!(retries.next_delay() < 13 * MS);
    }

    #[test]
    #[should_panic(expected = "min must not exceed max")]
    fn min_above_max_is_refused() {
        let _ = Backoff::new(2 * MS, MS, 0.1);
    }
}
