//! Vacancies: a replica that failed (missed heartbeats, or exited) leaves the ring at once and
//! its id becomes a vacancy, filled by a replacement started on a task of its own; a start that
//! fails is retried with exponential backoff, and replicas that die right after starting again
//! and again (a crash loop) are respawned with backoff too. A backend by address, and any
//! replica with a shared membership, is not replaced but waited for.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::Instant;

use crate::control::backoff::Backoff;
use crate::control::guard::panic_message;
use crate::control::launch::{LaunchError, Running};
use crate::control::supervisor::{ReplicaSpec, SupervisorError};
use crate::state::Shared;

use super::{spec_of, vacancy_of, Controller, Done};

/// Waits between two attempts to fill a vacancy: 200 ms after the first failure, doubling up to
/// 10 s, each lengthened by up to half at random (so that replicas that failed together are not
/// all started again at the same instant).
pub(super) const RESPAWN_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(200), Duration::from_secs(10), 0.5);
/// A replica that dies sooner than this after joining the ring counts toward a crash loop.
pub(super) const CRASH_WINDOW: Duration = Duration::from_secs(10);

impl Controller {
    /// A replica in the ring failed (its heartbeats, or it exited): out of the ring at once,
    /// then replaced — or, for a backend by address and with a shared membership, waited for.
    pub(super) fn replica_failed(&mut self, id: u64, reason: String) {
        let Some(Running {
            backend: dead,
            handle,
            joined,
        }) = self.replicas.remove(&id)
        else {
            return;
        };
        let address = handle.address().map(str::to_owned);
        let shared = self.membership.is_some();
        if shared || address.is_some() {
            // Not replaced by lb: a backend by address is not ours, and Swarm restarts its own
            // tasks (at a new address). Out of the ring until it answers again, then back with
            // the same id (hence the same slots), name and pipelining.
            if shared {
                tracing::warn!(hostname = %dead.hostname, id, %handle, %reason, "replica failed; out of the ring until its service's task answers again");
            } else {
                tracing::warn!(hostname = %dead.hostname, id, address = address.as_deref().unwrap_or_default(), %reason, "backend down; out of the ring until it answers again");
            }
            let spec = ReplicaSpec {
                hostname: dead.hostname.clone(),
                id,
                address,
                pipelining: Some(dead.pipelining),
                tls: dead.tls.clone(),
                protocol: dead.protocol,
                weight: self.weight_of(id),
            };
            self.vacancies.insert(
                id,
                vacancy_of(&spec, 0, format!("'{}' {reason}", dead.hostname)),
            );
            self.publish();
            if shared {
                // Counted once readers no longer see it in the ring.
                self.shared.metrics.restarted();
            }
            dead.failed
                .store(true, std::sync::atomic::Ordering::Relaxed);
            let dead = Running {
                backend: dead,
                handle,
                joined,
            };
            drop(self.retire(vec![dead], false));
            self.respawn(id);
            return;
        }
        // The assignment gives the replacement a new random hostname; it keeps the server id,
        // so its virtual nodes land on the same slots and no other replica's keys move.
        let hostname = self.members().random_hostname(&[], &mut self.rng);
        tracing::warn!(hostname = %dead.hostname, id, %reason, replacement = %hostname, "replica failed; replacing it");
        let streak = if joined.elapsed() < CRASH_WINDOW {
            let streak = self.crash_streak.entry(id).or_default();
            *streak += 1;
            *streak
        } else {
            self.crash_streak.remove(&id);
            0
        };
        let reason = if streak >= 2 {
            format!(
                "'{}' {reason}; crash loop: {streak} replicas in a row died within {} s of starting",
                dead.hostname,
                CRASH_WINDOW.as_secs()
            )
        } else {
            format!("'{}' {reason}", dead.hostname)
        };
        self.vacancies.insert(
            id,
            vacancy_of(&ReplicaSpec::managed(hostname, id), streak, reason),
        );
        // Out of the ring at once, so its keys go to its clockwise neighbours meanwhile. It may
        // only be slow (missed heartbeats): requests already sent to it that are safe to repeat
        // go to the new owner now (`failed`); the others get to finish.
        self.publish();
        // Counted once readers no longer see it in the ring (a scrape never shows the restart
        // with the dead replica still up).
        self.shared.metrics.restarted();
        dead.failed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let dead = Running {
            backend: dead,
            handle,
            joined,
        };
        drop(self.retire(vec![dead], true));
        if streak >= 2 {
            // Dying right after start again and again: back off instead of a tight loop.
            self.schedule_respawn(id, streak);
        } else {
            self.respawn(id);
        }
        self.write_back(None);
    }

    /// Try to fill a vacant id: start its replica on a task of its own, which reports back with
    /// [`Done::Started`]. At most one start per id runs at a time.
    pub(super) fn respawn(&mut self, id: u64) {
        let Some(vacancy) = self.vacancies.get(&id) else {
            return; // filled, or removed from the configuration meanwhile
        };
        if !self.launching.insert(id) {
            return; // already starting; its result fills the vacancy
        }
        let spec = spec_of(vacancy, self.weight_of(id));
        // Shared membership: a service is created only for a seed or a file entry; any other
        // vacancy is a service that exists (or existed) and is found again.
        let find = self.membership.is_some() && !self.membership_creates(id);
        let launcher = self.launcher.clone();
        let health = self.settings();
        let deadline = Duration::from_millis(health.start_timeout_ms);
        let done = self.done.clone();
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            let start = async {
                if find {
                    launcher.rejoin(spec.clone(), &health, deadline).await
                } else {
                    launcher.launch(spec.clone(), &health, deadline).await
                }
            };
            // A panic must still report back, or the id would wait for this start forever.
            let result = AssertUnwindSafe(start)
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| Err(panicked(&shared, &spec, panic.as_ref())));
            let _ = done.send(Done::Started { spec, result });
        });
    }

    /// A vacancy's replica started (or not). Returns whether the replica set changed.
    pub(super) fn started(
        &mut self,
        spec: ReplicaSpec,
        result: Result<Running, LaunchError>,
    ) -> bool {
        self.launching.remove(&spec.id);
        let wanted = self
            .vacancies
            .get(&spec.id)
            .is_some_and(|v| v.hostname == spec.hostname && v.address == spec.address);
        match result {
            Ok(running) if wanted => {
                self.vacancies.remove(&spec.id);
                if let Some(membership) = &mut self.membership {
                    if membership.to_create.remove(&spec.id) {
                        membership.changed(spec.id, Instant::now());
                    }
                }
                let backend = &running.backend;
                if backend.is_address() {
                    tracing::info!(hostname = %backend.hostname, id = spec.id, address = %backend.addr, "backend healthy; in the ring");
                } else {
                    tracing::info!(hostname = %backend.hostname, id = spec.id, "vacancy filled");
                }
                self.replicas.insert(spec.id, running);
                self.publish();
                true
            }
            Ok(running) => {
                // The configuration changed while it started: it is not wanted any more.
                // Shared membership: its service is the runtime's (removed elsewhere, or
                // listed under another name now); only a service this lb created is removed.
                let stop = self.membership.is_none() || self.membership_creates(spec.id);
                tracing::info!(hostname = %running.backend.hostname, id = spec.id, stop, "started replica no longer wanted");
                drop(self.retire(vec![running], stop));
                // The id may be vacant under another name now.
                self.respawn(spec.id);
                false
            }
            Err(LaunchError::Supervisor(SupervisorError::Taken { by, .. }))
                if wanted
                    && self
                        .membership
                        .as_mut()
                        .is_some_and(|m| m.to_create.remove(&spec.id)) =>
            {
                // Another lb (or a foreign service) holds the id in the swarm: the swarm wins.
                // The next listing replaces this vacancy with whatever holds the id, or drops it.
                tracing::warn!(hostname = %spec.hostname, id = spec.id, %by, "server id taken in the swarm; following the swarm instead of this entry");
                self.changed([spec.id], Instant::now());
                let vacancy = self.vacancies.get_mut(&spec.id).expect("checked above");
                vacancy.reason = format!("server id {} is taken by {by}", spec.id);
                self.publish();
                false
            }
            Err(reason)
                if wanted
                    && (spec.address.is_some() || self.membership.is_some())
                    && !self.membership_creates(spec.id) =>
            {
                // A backend by address that is still down: keep checking it, at the health
                // interval, for as long as it is configured.
                let vacancy = self.vacancies.get_mut(&spec.id).expect("checked above");
                vacancy.failed_attempts += 1;
                vacancy.reason = reason.to_string();
                if vacancy.failed_attempts == 1 {
                    tracing::warn!(id = spec.id, reason = %vacancy.reason, "not answering yet; checking it every interval");
                }
                let interval = Duration::from_millis(self.settings().interval_ms);
                self.schedule(spec.id, interval);
                self.publish();
                false
            }
            Err(reason) if wanted => {
                let vacancy = self.vacancies.get_mut(&spec.id).expect("checked above");
                vacancy.failed_attempts += 1;
                vacancy.reason = reason.to_string();
                let attempts = vacancy.failed_attempts;
                tracing::error!(id = spec.id, attempts, reason = %vacancy.reason, "replica start failed; will retry");
                self.schedule_respawn(spec.id, attempts);
                self.publish();
                false
            }
            Err(_) => {
                self.respawn(spec.id);
                false
            }
        }
    }

    pub(super) fn schedule_respawn(&self, id: u64, failed_attempts: u32) {
        let delay = RESPAWN_BACKOFF.delay(failed_attempts.saturating_sub(1), fastrand::f64());
        self.schedule(id, delay);
    }

    /// Try to fill vacancy `id` again after `delay`.
    fn schedule(&self, id: u64, delay: Duration) {
        let done = self.done.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = done.send(Done::Respawn { id });
        });
    }

    /// Shared membership: whether this load balancer creates `id`'s service (a seed or a file
    /// entry) rather than finds it.
    fn membership_creates(&self, id: u64) -> bool {
        self.membership
            .as_ref()
            .is_some_and(|m| m.to_create.contains(&id))
    }
}

/// Log and count a panic while starting `spec`; the error that reports it.
fn panicked(
    shared: &Shared,
    spec: &ReplicaSpec,
    panic: &(dyn std::any::Any + Send),
) -> LaunchError {
    let message = panic_message(panic);
    shared.metrics.control_panicked();
    tracing::error!(hostname = %spec.hostname, id = spec.id, "internal error while starting a replica: {message}");
    LaunchError::Panicked {
        hostname: spec.hostname.clone(),
        message,
    }
}
