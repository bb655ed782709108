//! Start-up: filling the replica set before the command loop runs (it may wait then: nothing
//! is served yet). Replicas an earlier run left running are taken over, the rest started; with
//! a shared membership the runtime's listing is the replica set, and the file only seeds it.

use std::time::Duration;

use tokio::time::Instant;

use crate::control::launch::{LaunchError, Running};
use crate::control::reconcile::room;
use crate::control::supervisor::ReplicaSpec;

use super::{vacancy_of, Controller};

/// Shared membership: how long start-up waits for the running services' tasks to answer.
const START_REJOIN: Duration = Duration::from_secs(3);

impl Controller {
    /// Take over the configured replicas an earlier run left running (containers), start the
    /// rest and wait for their first heartbeats. A replica that does not come up leaves a
    /// vacancy that is retried with backoff once the controller runs.
    pub(crate) async fn start(&mut self) {
        let weights: Vec<(u64, u32)> = self
            .startup
            .replicas
            .iter()
            .map(|r| (*r.id.get_ref(), r.weight()))
            .collect();
        for (id, weight) in weights {
            self.set_weight(id, weight);
        }
        if self.membership.is_some() {
            self.start_shared().await;
            return;
        }
        let mut adopted = match self.launcher.supervisor.adopt().await {
            Ok(adopted) => adopted,
            Err(e) => {
                tracing::error!(error = %e, "cannot look for replicas to take over");
                Vec::new()
            }
        };
        let mut specs = Vec::new();
        for r in self.startup.replicas.clone() {
            let spec = ReplicaSpec {
                hostname: r.hostname.get_ref().clone(),
                id: *r.id.get_ref(),
                address: r.address().map(str::to_owned),
                pipelining: r.pipelining,
                tls: r.tls_settings.clone(),
                protocol: r.protocol(),
                weight: r.weight(),
            };
            if spec.address.is_some() {
                // Not ours to start: checked on a task of its own, and in the ring once healthy.
                // Start-up does not wait for it (a service that is down would hold every other
                // one up for start_timeout_ms).
                let id = spec.id;
                self.vacancies.insert(
                    id,
                    vacancy_of(&spec, 0, "waiting for its health checks".into()),
                );
                self.respawn(id);
                continue;
            }
            let found = adopted.iter().position(|a| a.spec.same_replica(&spec));
            match found {
                Some(i) => {
                    let found = adopted.swap_remove(i);
                    match self
                        .launcher
                        .join_when_alive(found, &self.settings(), Duration::from_secs(2))
                        .await
                    {
                        Ok(running) => {
                            tracing::info!(hostname = %spec.hostname, id = spec.id, "replica taken over");
                            self.replicas.insert(spec.id, running);
                        }
                        Err(reason) => {
                            tracing::warn!(%reason, "a running replica did not answer; starting a new one");
                            specs.push(spec);
                        }
                    }
                }
                None => specs.push(spec),
            }
        }
        // Running, ours, but not in the configuration: leftovers of an earlier run.
        for stray in adopted {
            tracing::info!(hostname = %stray.spec.hostname, handle = %stray.handle, "removing a replica the configuration does not list");
            let _ = self.launcher.supervisor.stop(&stray.handle).await;
        }
        // At start-up (before `run`) the controller may wait: nothing is served yet.
        let deadline = Duration::from_millis(self.settings().start_timeout_ms);
        let results = self
            .launcher
            .launch_all(specs.clone(), &self.settings(), deadline)
            .await;
        self.seat(specs, results);
    }

    /// Start with a shared membership (Swarm): the services of the instance are the replica
    /// set. Only when there is none does the file's `[[replicas]]` seed it (services are
    /// created); otherwise the file is rewritten to list what runs.
    async fn start_shared(&mut self) {
        let listing = match self.launcher.supervisor.membership() {
            Some(membership) => membership.members().await,
            None => Ok(Vec::new()),
        };
        let listed = match listing {
            Ok(listed) => Some(listed),
            Err(e) => {
                tracing::error!(error = %e, "cannot list the replicas' services; starting with none until the swarm answers");
                None
            }
        };
        let deadline = Duration::from_millis(self.settings().start_timeout_ms);
        let seeds: Vec<ReplicaSpec> = self
            .startup
            .replicas
            .iter()
            .map(|r| {
                ReplicaSpec::managed(r.hostname.get_ref().clone(), *r.id.get_ref())
                    .weighing(r.weight())
            })
            .collect();
        let (specs, results) = match listed {
            Some(listed) if listed.is_empty() => {
                tracing::info!(
                    replicas = seeds.len(),
                    "no service of this instance in the swarm; creating them from the file"
                );
                let results = self
                    .launcher
                    .launch_all(seeds.clone(), &self.settings(), deadline)
                    .await;
                // Ours, made after the listing: a listing from before does not speak for them.
                // A seed that did not start is created again (with backoff) until it does;
                // until then no listing speaks for it either.
                if let Some(membership) = &mut self.membership {
                    let now = Instant::now();
                    for (spec, result) in seeds.iter().zip(&results) {
                        if result.is_ok() {
                            membership.changed(spec.id, now);
                        } else {
                            membership.to_create.insert(spec.id);
                            membership.changing([spec.id]);
                        }
                    }
                }
                (seeds, results)
            }
            Some(mut listed) => {
                // Only what the ring holds, in id order (as later listings): a service beyond
                // that (one made by hand with the labels, or by an lb with a larger ring) is
                // left out, never seated to fail the ring build or written back.
                listed.sort_by_key(|s| s.id);
                let fit = room(&self.ring.balancer, 0, listed.len());
                if fit < listed.len() {
                    let left_out = listed.split_off(fit);
                    let e = self.ring.balancer.check_capacity(fit + 1).err();
                    let ids: Vec<u64> = left_out.iter().map(|s| s.id).collect();
                    tracing::error!(left_out = ?ids, error = ?e, "the swarm lists more replicas than the ring holds; leaving the rest out");
                    if let Some(membership) = &mut self.membership {
                        membership.overflow = left_out.len();
                    }
                }
                // The services' weights (their labels), not the file's.
                self.weights.clear();
                for spec in &listed {
                    self.set_weight(spec.id, spec.weight);
                }
                if listed != seeds {
                    tracing::info!(
                        services = listed.len(),
                        "the swarm already runs this instance's replicas; they replace the file's [[replicas]] (written back)"
                    );
                }
                // Running tasks answer at once; one that does not (a failing service) must not
                // hold the others up: it is retried in the background.
                let health = self.settings();
                let deadline = deadline.min(START_REJOIN);
                let joins = listed
                    .iter()
                    .map(|spec| self.launcher.rejoin(spec.clone(), &health, deadline));
                let results = futures_util::future::join_all(joins).await;
                (listed, results)
            }
            None => (Vec::new(), Vec::new()),
        };
        self.seat(specs, results);
        self.write_back(None);
    }

    /// Start-up: the replicas that came up join the ring (published); the others become
    /// vacancies, retried with backoff once the controller runs.
    fn seat(&mut self, specs: Vec<ReplicaSpec>, results: Vec<Result<Running, LaunchError>>) {
        for (spec, result) in specs.into_iter().zip(results) {
            match result {
                Ok(running) => {
                    let backend = &running.backend;
                    tracing::info!(hostname = %backend.hostname, id = backend.id, address = %backend.addr, "replica up");
                    self.replicas.insert(spec.id, running);
                }
                Err(reason) => {
                    tracing::error!(hostname = %spec.hostname, %reason, "replica did not start; will retry");
                    self.vacancies
                        .insert(spec.id, vacancy_of(&spec, 1, reason.to_string()));
                    self.schedule_respawn(spec.id, 1);
                }
            }
        }
        self.publish();
    }
}
