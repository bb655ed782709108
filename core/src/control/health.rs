//! Heartbeats: `GET /heartbeat` to every replica in the ring every `interval_ms`.
//!
//! After `fall` misses in a row the controller is told the replica is dead; what happens next is
//! the controller's decision.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::command::{Command, ControllerHandle};
use super::probe::Prober;
use crate::config::HealthSection;
use crate::state::Shared;

/// Run heartbeats forever over whatever the current snapshot holds, with the current settings.
pub async fn run(
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
            let path = settings.check_path(b.is_address());
            async move { (b, prober.beat(&b.addr, path, timeout).await) }
        });
        for (backend, result) in futures_util::future::join_all(beats).await {
            match result {
                Ok(()) => backend.missed.store(0, Ordering::Relaxed),
                Err(reason) => {
                    let missed = backend.missed.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!(hostname = %backend.hostname, missed, %reason, "heartbeat missed");
                    if missed >= settings.fall
                        && !backend.reported_dead.swap(true, Ordering::Relaxed)
                    {
                        controller.send(Command::ReplicaFailed {
                            id: backend.id,
                            handle: backend.handle.clone(),
                            reason: format!("{missed} heartbeats missed ({reason})"),
                        });
                    }
                }
            }
        }
        drop(snapshot);
        tokio::time::sleep_until(round + Duration::from_millis(settings.interval_ms)).await;
    }
}
