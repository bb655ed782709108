//! `/add` and `/rm`, and [`Change`]: the one path a planned change of the replica set takes,
//! whether it comes from the API or from a saved file (`reload.rs`). The plans themselves are
//! pure functions in `reconcile.rs` (`plan_add`, `plan_remove`, `reconcile`); here they are
//! carried out by [`Controller::carry_out`].

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::{BackendTls, HealthSection, Protocol};
use crate::control::command::{ControlError, ScaleReply, ScaleRequest};
use crate::control::guard::panic_message;
use crate::control::launch::{LaunchError, Launcher, Running};
use crate::control::reconcile::{plan_add, plan_remove};
use crate::control::supervisor::{ReplicaSpec, SupervisorError};

use super::{spec_of, vacancy_of, Controller, Done, Retired, RingParams};

/// How many replicas of one `/add` are started at the same time.
const ADD_BATCH: usize = 8;
/// How many times an `/add` is planned again after another load balancer of a shared
/// membership took one of its server ids at the same moment.
pub(super) const ADD_RETRIES: u32 = 3;
/// Shared membership: how long after an id collision an `/add` is planned again (a listing
/// comes every second).
const ADD_AGAIN_AFTER: Duration = Duration::from_millis(1500);

/// A planned change of the replica set: what an `/add`, an `/rm` or a saved file asks for.
#[derive(Default)]
pub(super) struct Change {
    /// Replicas to take out of the ring, drain and stop.
    pub(super) stop: Vec<u64>,
    /// Vacancies no longer wanted.
    pub(super) forget: Vec<u64>,
    /// Replicas kept with a new pipelining, TLS or protocol setting: server id → the settings.
    pub(super) repipeline: Vec<(u64, bool, Option<Arc<BackendTls>>, Protocol)>,
    /// Replicas to start.
    pub(super) start: Vec<ReplicaSpec>,
    /// How they start.
    pub(super) starts: Starts,
    /// New ring parameters, swapped in with the remaining replicas in one snapshot.
    pub(super) params: Option<RingParams>,
    /// What the log says stopped replicas were removed by (`None`: only their stop is
    /// logged).
    pub(super) removed_by: Option<&'static str>,
}

/// How the new replicas of a [`Change`] start.
#[derive(Default)]
pub(super) enum Starts {
    /// Each is a vacancy, started (and retried) on its own, joining after its first heartbeat
    /// (a saved file).
    #[default]
    Vacancies,
    /// All start together and join at once, or none does, and the `/add` is answered.
    Together {
        /// The `/add`.
        request: ScaleRequest,
        /// Where its answer goes.
        reply: oneshot::Sender<ScaleReply>,
        /// Shared membership: how many more times to plan it again after an id collision.
        retries: u32,
    },
}

impl Controller {
    /// Carry out a planned change: stopped replicas leave the ring and forgotten vacancies go,
    /// kept replicas get their new setting and the new parameters swap in, all in one
    /// snapshot; then removed replicas drain and stop on another task, and new ones start
    /// ([`Starts`]). The returned receiver gives the replicas whose stop failed, once every
    /// stop is done.
    pub(super) fn carry_out(&mut self, change: Change) -> oneshot::Receiver<Retired> {
        let Change {
            stop,
            forget,
            repipeline,
            start,
            starts,
            params,
            removed_by,
        } = change;
        let removed: Vec<Running> = stop
            .iter()
            .filter_map(|id| self.replicas.remove(id))
            .collect();
        self.forget(&forget);
        // The same replicas with a new setting (nothing to stop).
        let swapped: Vec<Running> = repipeline
            .into_iter()
            .filter_map(|(id, on, tls, protocol)| {
                let address = self.replicas.get(&id)?.backend.addr.clone();
                self.swap(id, address, on, tls, protocol)
            })
            .collect();
        let new_params = params.is_some();
        if let Some(params) = params {
            self.ring = params;
        }
        let together = matches!(starts, Starts::Together { .. });
        if !together || !removed.is_empty() || !swapped.is_empty() || new_params {
            self.publish();
        }
        if let Some(by) = removed_by {
            for running in &removed {
                tracing::info!(hostname = %running.backend.hostname, id = running.backend.id, "{by}");
            }
        }
        let stopped_ids: Vec<u64> = removed.iter().map(|r| r.backend.id).collect();
        self.changing(stopped_ids.iter().copied());
        let stopped = self.retire(removed, true);
        let stopped = self.settle_after(stopped_ids, stopped);
        drop(self.retire(swapped, false));
        match starts {
            Starts::Vacancies => {
                if let Some(membership) = &mut self.membership {
                    // Entries added to the file become services (a listing from before does
                    // not know them yet).
                    membership.to_create.extend(start.iter().map(|s| s.id));
                    membership.changing(start.iter().map(|s| s.id));
                }
                for spec in &start {
                    let reason = if spec.address.is_some() {
                        "waiting for its health checks"
                    } else {
                        "starting"
                    };
                    self.vacancies
                        .insert(spec.id, vacancy_of(spec, 0, reason.into()));
                }
                for spec in &start {
                    self.respawn(spec.id);
                }
                if !start.is_empty() {
                    self.publish();
                }
            }
            Starts::Together {
                request,
                reply,
                retries,
            } => self.start_together(start, request, reply, retries),
        }
        stopped
    }

    /// Give up vacancies. Shared membership: a vacancy's service (a task that does not run) is
    /// removed too, or the next listing would bring the entry back.
    fn forget(&mut self, ids: &[u64]) {
        let mut forgotten = Vec::new();
        for id in ids {
            if let Some(vacancy) = self.vacancies.remove(id) {
                forgotten.push(spec_of(&vacancy, self.weight_of(*id)));
            }
            if let Some(membership) = &mut self.membership {
                membership.to_create.remove(id);
            }
        }
        if self.membership.is_none() || forgotten.is_empty() {
            return;
        }
        self.changing(forgotten.iter().map(|s| s.id));
        let ids = forgotten.iter().map(|s| s.id).collect();
        let supervisor = Arc::clone(&self.launcher.supervisor);
        let (removed, settled) = oneshot::channel();
        tokio::spawn(async move {
            if let Some(membership) = supervisor.membership() {
                for spec in forgotten {
                    if let Err(e) = membership.remove_replica(&spec).await {
                        tracing::warn!(hostname = %spec.hostname, id = spec.id, error = %e, "cannot remove the service of a replica removed from the file");
                    }
                }
            }
            let _ = removed.send(());
        });
        drop(self.settle_after(ids, settled));
    }

    /// `/add`: plan it, reserve ids and names, and start the replicas together on a task of
    /// their own, which reports back with [`Done::Added`].
    pub(super) fn add(
        &mut self,
        request: ScaleRequest,
        reply: oneshot::Sender<ScaleReply>,
        retries: u32,
    ) {
        if self.membership.is_some() && !request.addresses.is_empty() {
            self.shared.metrics.reload(false);
            let kind = self.launcher.supervisor.kind();
            let _ = reply.send(Err(ControlError::NoAddresses(kind)));
            return;
        }
        let specs = match plan_add(
            &self.members(),
            &request,
            &self.ring.balancer,
            &self.ring.hash,
            self.applied.limits.max_replicas,
            &mut self.rng,
        ) {
            Ok(specs) => specs,
            Err(e) => {
                self.shared.metrics.reload(false);
                let _ = reply.send(Err(e));
                return;
            }
        };
        // The new ids' weights (the request's, by position), in force when they join.
        for spec in &specs {
            self.set_weight(spec.id, spec.weight);
        }
        drop(self.carry_out(Change {
            start: specs,
            starts: Starts::Together {
                request,
                reply,
                retries,
            },
            ..Change::default()
        }));
    }

    /// Start the replicas of an `/add` on a task of its own.
    fn start_together(
        &mut self,
        specs: Vec<ReplicaSpec>,
        request: ScaleRequest,
        reply: oneshot::Sender<ScaleReply>,
        retries: u32,
    ) {
        for spec in &specs {
            self.adding.insert(spec.id, spec.hostname.clone());
        }
        self.changing(specs.iter().map(|s| s.id));
        let launcher = self.launcher.clone();
        let health = self.settings();
        let deadline = Duration::from_millis(health.start_timeout_ms);
        let done = self.done.clone();
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            let results = AssertUnwindSafe(launch_in_batches(
                &launcher,
                specs.clone(),
                &health,
                deadline,
            ))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                let message = panic_message(panic.as_ref());
                shared.metrics.control_panicked();
                tracing::error!("internal error while starting the replicas of an /add: {message}");
                specs
                    .iter()
                    .map(|spec| {
                        Err(LaunchError::Panicked {
                            hostname: spec.hostname.clone(),
                            message: message.clone(),
                        })
                    })
                    .collect()
            });
            let _ = done.send(Done::Added {
                specs,
                results,
                reply,
                request,
                retries,
            });
        });
    }

    /// The replicas of an `/add` started (or not): all join the ring, or none does; the `/add`
    /// is answered once the change is in the file, or planned again after an id collision.
    pub(super) fn added(
        &mut self,
        specs: Vec<ReplicaSpec>,
        results: Vec<Result<Running, LaunchError>>,
        reply: oneshot::Sender<ScaleReply>,
        request: ScaleRequest,
        retries: u32,
    ) {
        let collided = self.membership.is_some()
            && results.iter().any(|r| {
                matches!(
                    r,
                    Err(LaunchError::Supervisor(SupervisorError::Taken { .. }))
                )
            });
        let result = self.join_all_or_none(specs, results);
        if result.is_err() && collided && retries > 0 {
            // Another lb took an id at the same moment: plan again once a listing shows its
            // service (the ids are then taken here too).
            tracing::info!(
                retries,
                "a server id of an /add was taken in the swarm meanwhile; planning it again"
            );
            let done = self.done.clone();
            tokio::spawn(async move {
                tokio::time::sleep(ADD_AGAIN_AFTER).await;
                let _ = done.send(Done::AddAgain {
                    request,
                    reply,
                    retries: retries - 1,
                });
            });
            return;
        }
        self.shared.metrics.reload(result.is_ok());
        if result.is_ok() {
            // Answer once the change is in the file.
            let (written, done) = oneshot::channel();
            self.write_back(Some(written));
            tokio::spawn(async move {
                let _ = done.await;
                let _ = reply.send(result);
            });
        } else {
            let _ = reply.send(result);
        }
    }

    /// All of an `/add`'s replicas join the ring, or none does (those that started are
    /// stopped again).
    fn join_all_or_none(
        &mut self,
        specs: Vec<ReplicaSpec>,
        results: Vec<Result<Running, LaunchError>>,
    ) -> ScaleReply {
        for spec in &specs {
            self.adding.remove(&spec.id);
        }
        let mut reasons: Vec<String> = results
            .iter()
            .filter_map(|r| r.as_ref().err().map(ToString::to_string))
            .collect();
        // A configuration change may have claimed an id meanwhile.
        for spec in &specs {
            if self.replicas.contains_key(&spec.id) || self.vacancies.contains_key(&spec.id) {
                reasons.push(format!(
                    "server id {} was given to another replica by a configuration change",
                    spec.id
                ));
            }
        }
        if !reasons.is_empty() {
            let started: Vec<Running> = results.into_iter().flatten().collect();
            let launcher = self.launcher.clone();
            let (stopped, settled) = oneshot::channel();
            tokio::spawn(async move {
                for running in started {
                    let _ = launcher.stop(&running.handle).await;
                }
                let _ = stopped.send(());
            });
            drop(self.settle_after(specs.iter().map(|s| s.id).collect(), settled));
            return Err(ControlError::StartFailed(reasons));
        }
        self.changed(specs.iter().map(|s| s.id), Instant::now());
        for running in results.into_iter().flatten() {
            let backend = &running.backend;
            tracing::info!(hostname = %backend.hostname, id = backend.id, "replica added");
            self.replicas.insert(backend.id, running);
        }
        self.publish();
        Ok(self.hostnames())
    }

    /// `/rm`: take replicas out of the ring at once; drain and stop them on another task, which
    /// answers once they are stopped and the change is written back.
    pub(super) fn remove(&mut self, request: ScaleRequest, reply: oneshot::Sender<ScaleReply>) {
        let victims = match plan_remove(&self.members(), &request, &mut self.rng) {
            Ok(victims) => victims,
            Err(e) => {
                self.shared.metrics.reload(false);
                let _ = reply.send(Err(e));
                return;
            }
        };
        let stopped = self.carry_out(Change {
            stop: victims,
            ..Change::default()
        });
        let remaining = self.hostnames();
        let (written, write_back) = oneshot::channel();
        let done = self.done.clone();
        tokio::spawn(async move {
            let failed = stopped.await.unwrap_or_default();
            let _ = write_back.await;
            if failed.is_empty() {
                let _ = reply.send(Ok(remaining));
            } else {
                // Not removed after all (the engine refused or did not answer): the controller
                // takes them back and the answer says why.
                let _ = done.send(Done::NotRemoved { failed, reply });
            }
        });
        self.shared.metrics.reload(true);
        self.write_back(Some(written));
    }

    /// Replicas an `/rm` took out of the ring whose stop failed (the container engine refused
    /// or did not answer): they still run, so they go back into the ring (unless their id was
    /// filled meanwhile, e.g. by a listing that still shows the service) and the `/rm` fails
    /// with the engine's reason. Nothing is reported removed that was not.
    pub(super) fn not_removed(&mut self, failed: Retired, reply: oneshot::Sender<ScaleReply>) {
        let mut reasons = Vec::new();
        let mut restored = false;
        let now = Instant::now();
        for (running, reason) in failed {
            reasons.push(format!(
                "could not remove '{}': {reason}; it is still a replica",
                running.backend.hostname
            ));
            let id = running.backend.id;
            self.changed([id], now);
            let free = !self.replicas.contains_key(&id)
                && !self.vacancies.contains_key(&id)
                && !self.adding.contains_key(&id);
            if free {
                tracing::warn!(hostname = %running.backend.hostname, id, "replica not removed; back in the ring");
                self.replicas.insert(id, running);
                restored = true;
            }
        }
        if restored {
            self.publish();
            self.write_back(None);
        }
        self.shared.metrics.reload(false);
        let _ = reply.send(Err(ControlError::RemoveFailed(reasons)));
    }
}

/// Start the replicas of an `/add`, [`ADD_BATCH`] at a time (each batch within `deadline`):
/// dozens of containers created at once on a small machine would all miss their deadline
/// together. After a batch with a failure nothing more is started (the `/add` fails as a
/// whole, and only what it created is removed), so the results may be fewer than `specs`.
async fn launch_in_batches(
    launcher: &Launcher,
    specs: Vec<ReplicaSpec>,
    health: &HealthSection,
    deadline: Duration,
) -> Vec<Result<Running, LaunchError>> {
    let mut results = Vec::with_capacity(specs.len());
    for batch in specs.chunks(ADD_BATCH) {
        let started = launcher
            .launch_all_new(batch.to_vec(), health, deadline)
            .await;
        let failed = started.iter().any(Result::is_err);
        results.extend(started);
        if failed {
            break;
        }
    }
    results
}
