//! Heartbeats: `GET /heartbeat` to every replica in the ring every `interval_ms` (to a backend
//! by address: the check of `[health] kind`, [`crate::config::HealthCheck`]).
//!
//! After `fall` misses in a row the controller is told the replica is dead; what happens next is
//! the controller's decision. A check counts as missed only when it was refused, failed, or
//! timed out on time: one whose timer fired late (this thread was held up) counts neither way,
//! so a stalled checker never declares healthy replicas dead. `lb` runs the checks on a thread
//! of their own (`run.rs`), apart from the controller's work.
//!
//! The counters (misses in a row, whether the controller was told) live in [`Shared::health`],
//! beside the snapshot's backends: this loop is their only writer, and they outlive a restart
//! of it after a panic.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::command::{Command, ControllerHandle};
use super::probe::{ProbeError, Prober};
use crate::config::HealthSection;
use crate::state::Shared;

/// Run heartbeats forever over whatever the current snapshot holds, with the current settings.
pub(crate) async fn run(
    shared: Arc<Shared>,
    settings: watch::Receiver<HealthSection>,
    controller: ControllerHandle,
    prober: Prober,
) {
    loop {
        let settings = settings.borrow().clone();
        let round = tokio::time::Instant::now();
        let timeout = Duration::from_millis(settings.timeout_ms);
        let snapshot = shared.snapshot.load_full();
        let beats = snapshot.backends.iter().map(|b| {
            let prober = &prober;
            let check = settings.check(b.is_address());
            async move {
                let sent = tokio::time::Instant::now();
                // Its authority: `addr`, or for a TLS backend with its settings' id (connections
                // made under replaced settings are pooled apart and never reused).
                let result = prober.beat(b.authority.as_str(), check, timeout).await;
                (b, result, sent.elapsed())
            }
        });
        for (backend, result, took) in futures_util::future::join_all(beats).await {
            match result {
                Ok(()) => shared.health.answered(backend),
                Err(ProbeError::Timeout(_)) if checker_was_late(timeout, took) => {
                    // The timer fired long after it was due: this thread was held up, so the
                    // replica may well have answered in time. Neither a miss nor a success.
                    tracing::warn!(hostname = %backend.hostname, waited_ms = took.as_millis() as u64, timeout_ms = timeout.as_millis() as u64, "heartbeat inconclusive: the health checker itself was late");
                }
                Err(reason) => {
                    let missed = shared.health.missed(backend);
                    tracing::warn!(hostname = %backend.hostname, missed, %reason, "heartbeat missed");
                    if missed >= settings.fall && shared.health.report_dead(backend) {
                        controller.send(Command::ReplicaFailed {
                            id: backend.id,
                            incarnation: backend.incarnation,
                            reason: format!("{missed} heartbeats missed ({reason})"),
                        });
                    }
                }
            }
        }
        // Replicas gone from the ring take their counters with them.
        shared.health.keep_only(&snapshot.backends);
        drop(snapshot);
        tokio::time::sleep_until(round + Duration::from_millis(settings.interval_ms)).await;
    }
}

/// Whether a heartbeat that timed out after `took` (its timeout being `timeout`) timed out
/// late enough that the checker, not the replica, was slow: its timer should have fired at
/// `timeout`. A miss is counted only for checks that were sent and timed out on time, so a
/// stalled checker can never declare healthy replicas dead.
pub(crate) fn checker_was_late(timeout: Duration, took: Duration) -> bool {
    took > timeout + timeout / 2 + Duration::from_millis(50)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_timeout_that_fired_late_is_the_checkers_fault() {
        let timeout = Duration::from_millis(300);
        assert!(!checker_was_late(timeout, Duration::from_millis(300)));
        assert!(!checker_was_late(timeout, Duration::from_millis(480)));
        assert!(checker_was_late(timeout, Duration::from_millis(520)));
        assert!(checker_was_late(timeout, Duration::from_secs(2)));
        assert!(!checker_was_late(
            Duration::from_millis(10),
            Duration::from_millis(40)
        ));
    }
}
