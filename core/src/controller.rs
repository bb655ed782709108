//! The controller: the one writer of the load balancer's desired state.
//!
//! It owns the replica set and the ring parameters. REST handlers, the health checker and the
//! supervisor send it [`Command`]s; it applies them one at a time and publishes a new immutable
//! [`Snapshot`] for readers. Nothing else mutates the replica set.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::api::{ApiError, ScaleRequest};
use crate::config::{Config, HealthSection};
use crate::hash::RingHash;
use crate::health::Prober;
use crate::ring::{Ring, RingParams};
use crate::state::{Backend, Shared, Snapshot, Vacancy};
use crate::supervisor::{Handle, ReplicaSpec, Supervisor, SupervisorEvent};

/// Longest wait between two attempts to replace a dead replica.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The reply to `/add` and `/rm`: the hostnames in the ring afterwards, or why nothing changed.
pub type ScaleReply = Result<Vec<String>, ApiError>;

/// What the controller can be asked to do.
#[derive(Debug)]
pub enum Command {
    /// `POST /add`.
    Add {
        /// The validated body.
        request: ScaleRequest,
        /// Where the answer goes.
        reply: oneshot::Sender<ScaleReply>,
    },
    /// `DELETE /rm`.
    Remove {
        /// The validated body.
        request: ScaleRequest,
        /// Where the answer goes.
        reply: oneshot::Sender<ScaleReply>,
    },
    /// The health checker gave up on a replica.
    ReplicaFailed {
        /// Its server id.
        id: u64,
        /// Which incarnation (an id outlives its replicas).
        handle: Handle,
        /// Why, for the log and status.
        reason: String,
    },
    /// The supervisor noticed something.
    Supervisor(SupervisorEvent),
    /// Try again to fill a vacancy.
    Respawn {
        /// The vacant server id.
        id: u64,
    },
    /// Stop every replica and stop taking commands.
    Shutdown {
        /// Answered once every replica is stopped.
        reply: oneshot::Sender<()>,
    },
}

/// A cheap, cloneable way to send the controller commands.
#[derive(Debug, Clone)]
pub struct ControllerHandle {
    tx: mpsc::UnboundedSender<Command>,
}

impl ControllerHandle {
    /// Send a command without waiting for its effect.
    pub fn send(&self, command: Command) {
        // The controller only stops at shutdown, when nobody waits for answers any more.
        let _ = self.tx.send(command);
    }

    async fn ask(&self, make: impl FnOnce(oneshot::Sender<ScaleReply>) -> Command) -> ScaleReply {
        let (reply, answer) = oneshot::channel();
        self.send(make(reply));
        answer.await.unwrap_or_else(|_| {
            Err(ApiError::Unavailable(
                "the load balancer is shutting down".into(),
            ))
        })
    }

    /// Add replicas; returns the hostnames in the ring afterwards.
    pub async fn add(&self, request: ScaleRequest) -> ScaleReply {
        self.ask(|reply| Command::Add { request, reply }).await
    }

    /// Remove replicas; returns once they are out of the ring and stopped.
    pub async fn remove(&self, request: ScaleRequest) -> ScaleReply {
        self.ask(|reply| Command::Remove { request, reply }).await
    }

    /// Stop all replicas; returns when they are gone.
    pub async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        self.send(Command::Shutdown { reply });
        let _ = done.await;
    }
}

/// Owns the replica set. Build with [`Controller::new`], fill with [`Controller::start`], then
/// [`Controller::run`] it on its own task.
pub struct Controller {
    shared: Arc<Shared>,
    supervisor: Arc<dyn Supervisor>,
    prober: Prober,
    params: RingParams,
    hash: Arc<dyn RingHash>,
    health: HealthSection,
    replicas: BTreeMap<u64, Arc<Backend>>,
    vacancies: BTreeMap<u64, Vacancy>,
    tx: mpsc::UnboundedSender<Command>,
    rx: mpsc::UnboundedReceiver<Command>,
}

impl Controller {
    /// A controller for `config` with no replica running yet, the shared state its readers use,
    /// and a handle to command it.
    pub fn new(
        config: &Config,
        hash: Arc<dyn RingHash>,
        supervisor: Arc<dyn Supervisor>,
        meta: crate::state::Meta,
    ) -> (Controller, Arc<Shared>, ControllerHandle) {
        let params = config.ring_params();
        let empty = Ring::build(params, Arc::clone(&hash), &[])
            .expect("an empty ring with validated parameters builds");
        let shared = Arc::new(Shared {
            snapshot: arc_swap::ArcSwap::from_pointee(Snapshot {
                ring: empty,
                backends: Vec::new(),
                vacancies: Vec::new(),
            }),
            meta,
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let controller = Controller {
            shared: Arc::clone(&shared),
            supervisor,
            prober: Prober::default(),
            params,
            hash,
            health: config.health,
            replicas: BTreeMap::new(),
            vacancies: BTreeMap::new(),
            tx: tx.clone(),
            rx,
        };
        (controller, shared, ControllerHandle { tx })
    }

    /// Start the configured replicas and wait for their first heartbeats. A replica that does not
    /// come up leaves a vacancy that is retried with backoff once the controller runs.
    pub async fn start(&mut self, config: &Config) {
        let specs: Vec<ReplicaSpec> = config
            .replicas
            .iter()
            .map(|r| ReplicaSpec {
                hostname: r.hostname.get_ref().clone(),
                id: *r.id.get_ref(),
            })
            .collect();
        let results = self.launch_all(specs.clone()).await;
        for (spec, result) in specs.into_iter().zip(results) {
            match result {
                Ok(backend) => {
                    self.replicas.insert(spec.id, backend);
                }
                Err(reason) => {
                    tracing::error!(hostname = %spec.hostname, %reason, "replica did not start");
                    self.vacancies.insert(
                        spec.id,
                        Vacancy {
                            id: spec.id,
                            previous_hostname: spec.hostname,
                            failed_attempts: 1,
                            reason,
                        },
                    );
                    self.schedule_respawn(spec.id, 1);
                }
            }
        }
        self.publish();
    }

    /// Apply commands until shutdown.
    pub async fn run(mut self) {
        while let Some(command) = self.rx.recv().await {
            match command {
                Command::Add { request, reply } => {
                    let result = self.add(request).await;
                    let _ = reply.send(result);
                }
                Command::Remove { request, reply } => self.remove(request, reply),
                Command::ReplicaFailed { id, handle, reason } => {
                    self.replica_failed(id, &handle, reason).await;
                }
                Command::Supervisor(SupervisorEvent::Exited { handle, detail }) => {
                    let id = self
                        .replicas
                        .values()
                        .find(|b| b.handle == handle)
                        .map(|b| b.id);
                    if let Some(id) = id {
                        self.replica_failed(id, &handle, format!("exited ({detail})"))
                            .await;
                    }
                }
                Command::Respawn { id } => self.respawn(id).await,
                Command::Shutdown { reply } => {
                    self.supervisor.stop_all().await;
                    let _ = reply.send(());
                    return;
                }
            }
        }
    }

    fn hostnames(&self) -> Vec<String> {
        self.replicas.values().map(|b| b.hostname.clone()).collect()
    }

    fn name_taken(&self, name: &str) -> bool {
        self.replicas.values().any(|b| b.hostname == name)
    }

    /// A random hostname no replica has (the assignment's naming for replacements).
    fn random_hostname(&self, also_taken: &[String]) -> String {
        loop {
            let name = format!("S{}", fastrand::u32(100_000..1_000_000));
            if !self.name_taken(&name) && !also_taken.contains(&name) {
                return name;
            }
        }
    }

    /// Publish the current replica set as a new snapshot.
    fn publish(&self) {
        let backends: Vec<Arc<Backend>> = self.replicas.values().cloned().collect();
        let ids: Vec<u64> = self.replicas.keys().copied().collect();
        match Ring::build(self.params, Arc::clone(&self.hash), &ids) {
            Ok(ring) => self.shared.snapshot.store(Arc::new(Snapshot {
                ring,
                backends,
                vacancies: self.vacancies.values().cloned().collect(),
            })),
            // Capacity is checked before anything is added, so this means a bug; keep serving
            // the last good ring rather than an inconsistent one.
            Err(e) => tracing::error!(error = %e, "ring rebuild failed; keeping the previous ring"),
        }
    }

    async fn launch_all(&self, specs: Vec<ReplicaSpec>) -> Vec<Result<Arc<Backend>, String>> {
        let launches = specs.into_iter().map(|spec| self.launch(spec));
        futures_util::future::join_all(launches).await
    }

    /// Start one replica and wait for its first heartbeat; stop it again if it never answers.
    async fn launch(&self, spec: ReplicaSpec) -> Result<Arc<Backend>, String> {
        let started = self
            .supervisor
            .start(&spec)
            .await
            .map_err(|e| e.to_string())?;
        let deadline = Duration::from_millis(self.health.start_timeout_ms);
        if let Err(e) = self.prober.wait_alive(started.addr, deadline).await {
            let _ = self.supervisor.stop(&started.handle).await;
            return Err(format!("replica '{}' {e}", spec.hostname));
        }
        Ok(Arc::new(Backend::new(
            spec.hostname,
            spec.id,
            started.addr,
            started.handle,
        )))
    }

    async fn add(&mut self, request: ScaleRequest) -> ScaleReply {
        if let Some(name) = request.hostnames.iter().find(|n| self.name_taken(n)) {
            return Err(ApiError::BadRequest(format!(
                "hostname '{name}' is already a replica"
            )));
        }
        // Lowest free server ids: removing a replica and adding one back restores the ring.
        let mut ids = Vec::with_capacity(request.n);
        let mut candidate = 1u64;
        while ids.len() < request.n {
            if !self.replicas.contains_key(&candidate) && !self.vacancies.contains_key(&candidate) {
                ids.push(candidate);
            }
            candidate += 1;
        }
        let mut all: Vec<u64> = self
            .replicas
            .keys()
            .chain(self.vacancies.keys())
            .copied()
            .collect();
        all.extend(&ids);
        if let Err(e) = Ring::build(self.params, Arc::clone(&self.hash), &all) {
            return Err(ApiError::BadRequest(format!(
                "cannot add {} replicas: {e}",
                request.n
            )));
        }
        let mut names = request.hostnames;
        for &id in &ids[names.len()..] {
            let readable = format!("Server {id}");
            let name = if self.name_taken(&readable) || names.contains(&readable) {
                self.random_hostname(&names)
            } else {
                readable
            };
            names.push(name);
        }
        let specs: Vec<ReplicaSpec> = names
            .into_iter()
            .zip(ids)
            .map(|(hostname, id)| ReplicaSpec { hostname, id })
            .collect();
        let results = self.launch_all(specs).await;
        if results.iter().any(Result::is_err) {
            let mut reasons = Vec::new();
            for result in results {
                match result {
                    Ok(backend) => {
                        let _ = self.supervisor.stop(&backend.handle).await;
                    }
                    Err(reason) => reasons.push(reason),
                }
            }
            return Err(ApiError::Internal(format!(
                "{}; nothing was added",
                reasons.join("; ")
            )));
        }
        for backend in results.into_iter().flatten() {
            tracing::info!(hostname = %backend.hostname, id = backend.id, "replica added");
            self.replicas.insert(backend.id, backend);
        }
        self.publish();
        Ok(self.hostnames())
    }

    /// Take replicas out of the ring at once; drain and stop them on another task, which answers.
    fn remove(&mut self, request: ScaleRequest, reply: oneshot::Sender<ScaleReply>) {
        let refuse = |reply: oneshot::Sender<ScaleReply>, message: String| {
            let _ = reply.send(Err(ApiError::BadRequest(message)));
        };
        if request.n > self.replicas.len() {
            return refuse(
                reply,
                format!(
                    "cannot remove {} replicas: there are only {}",
                    request.n,
                    self.replicas.len()
                ),
            );
        }
        if let Some(name) = request.hostnames.iter().find(|n| !self.name_taken(n)) {
            return refuse(
                reply,
                format!(
                    "hostname '{name}' is not a replica (replicas: {})",
                    self.hostnames().join(", ")
                ),
            );
        }
        let mut victims: Vec<u64> = request
            .hostnames
            .iter()
            .filter_map(|name| self.replicas.values().find(|b| &b.hostname == name))
            .map(|b| b.id)
            .collect();
        let mut others: Vec<u64> = self
            .replicas
            .keys()
            .copied()
            .filter(|id| !victims.contains(id))
            .collect();
        fastrand::shuffle(&mut others);
        victims.extend(others.into_iter().take(request.n - victims.len()));
        let removed: Vec<Arc<Backend>> = victims
            .iter()
            .filter_map(|id| self.replicas.remove(id))
            .collect();
        self.publish();
        let remaining = self.hostnames();
        let supervisor = Arc::clone(&self.supervisor);
        let drain = Duration::from_millis(self.health.drain_timeout_ms);
        tokio::spawn(async move {
            let stops = removed.iter().map(|backend| {
                let supervisor = &supervisor;
                async move {
                    drain_requests(backend, drain).await;
                    let _ = supervisor.stop(&backend.handle).await;
                    tracing::info!(hostname = %backend.hostname, id = backend.id, "replica removed");
                }
            });
            futures_util::future::join_all(stops).await;
            let _ = reply.send(Ok(remaining));
        });
    }

    async fn replica_failed(&mut self, id: u64, handle: &Handle, reason: String) {
        let current = self.replicas.get(&id).is_some_and(|b| &b.handle == handle);
        if !current {
            return; // an earlier incarnation, or already removed
        }
        let dead = self.replicas.remove(&id).expect("checked above");
        tracing::warn!(hostname = %dead.hostname, id, %reason, "replica failed; replacing it");
        self.vacancies.insert(
            id,
            Vacancy {
                id,
                previous_hostname: dead.hostname.clone(),
                failed_attempts: 0,
                reason,
            },
        );
        // Out of the ring at once, so its keys go to its clockwise neighbours meanwhile.
        self.publish();
        let supervisor = Arc::clone(&self.supervisor);
        tokio::spawn(async move {
            let _ = supervisor.stop(&dead.handle).await;
        });
        self.respawn(id).await;
    }

    /// Start a replacement for a vacant id: a new random hostname, the same server id.
    async fn respawn(&mut self, id: u64) {
        if !self.vacancies.contains_key(&id) {
            return;
        }
        let hostname = self.random_hostname(&[]);
        match self.launch(ReplicaSpec { hostname, id }).await {
            Ok(backend) => {
                let vacancy = self.vacancies.remove(&id).expect("checked above");
                tracing::info!(
                    old = %vacancy.previous_hostname,
                    new = %backend.hostname,
                    id,
                    "replica replaced"
                );
                self.replicas.insert(id, backend);
            }
            Err(reason) => {
                let vacancy = self.vacancies.get_mut(&id).expect("checked above");
                vacancy.failed_attempts += 1;
                vacancy.reason = reason;
                let attempts = vacancy.failed_attempts;
                tracing::error!(id, attempts, reason = %vacancy.reason, "replacement failed");
                self.schedule_respawn(id, attempts);
            }
        }
        self.publish();
    }

    fn schedule_respawn(&self, id: u64, failed_attempts: u32) {
        let delay = Duration::from_millis(100)
            .saturating_mul(1 << failed_attempts.min(16))
            .min(MAX_BACKOFF);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(Command::Respawn { id });
        });
    }
}

/// Wait until no request is in flight to `backend`, or `limit` passes.
async fn drain_requests(backend: &Backend, limit: Duration) {
    let start = tokio::time::Instant::now();
    while backend.in_flight.load(Ordering::Acquire) > 0 && start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
