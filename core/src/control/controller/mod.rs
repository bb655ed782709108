//! The controller: the one writer of the load balancer's desired state.
//!
//! It owns the replica set, the ring parameters and the configuration file. REST handlers, the
//! file watcher, the health checker and the supervisor send it [`Command`]s; it applies them one
//! at a time, publishes a new immutable [`Snapshot`] for readers, and writes replica changes back
//! to `lb.toml`. Nothing else mutates the replica set.
//!
//! This file holds the loop (`run`: a command or a task's [`Done`] at a time), publishing
//! snapshots (tables built in place or off the loop) and what the parts share. The parts, each
//! an `impl Controller` block:
//! - `startup.rs`: filling the replica set before the loop runs;
//! - `scale.rs`: `/add`, `/rm`, and [`scale::Change`], the one path a planned change of the
//!   replica set takes (from the API or from a saved file);
//! - `vacancies.rs`: failed replicas, respawns and their backoff;
//! - `reload.rs`: the followed file: reads, applies, write-backs;
//! - `addresses.rs`: backends by address whose name resolves anew;
//! - `certs.rs`: the TLS listener's certificates, read again when their files change;
//! - `membership.rs`: shared membership (Swarm), the one optional part
//!   ([`membership::SharedMembership`]).

mod addresses;
mod certs;
mod membership;
mod plans;
mod ramp;
mod reload;
mod scale;
mod startup;
#[cfg(test)]
mod tests;
mod vacancies;

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use lb_balance::{Balancer, Placement, RingError, RingHash};

use crate::config::key::KeyRule;
use crate::config::{Config, FrontSettings, HealthSection, Loaded, Source};
use crate::state::{
    timestamp, Backend, ConfigStatus, Issue, Meta, Shared, Snapshot, TlsTable, Vacancy,
};

use super::command::{Command, ControllerHandle, HandedOver, ScaleReply, ScaleRequest};
use super::file::{FileRead, WriteOutcome};
use super::guard::panic_message;
use super::launch::{Heartbeats, LaunchError, Launcher, Running};
use super::probe::Prober;
use super::reconcile::{FileList, Members};
use super::supervisor::{Handle, ReplicaSpec, Supervisor, SupervisorEvent};

use membership::SharedMembership;
use reload::ConfigFile;

/// Replicas whose stop failed, and why (what [`Controller::retire`] reports).
type Retired = Vec<(Running, String)>;

/// Tables whose build costs more than this ([`Balancer::build_cost`]: about a few milliseconds
/// here) are built on a blocking thread while requests keep the table they have.
const INLINE_BUILD_COST: u64 = 1 << 21;

/// What a table built off the controller starts from.
enum Base {
    /// The table requests use now.
    Published(Arc<Snapshot>),
    /// A table just built for replicas that changed since.
    Built(Box<Placement>),
}

/// What a published table was built from: the same again needs no new build.
#[derive(Clone, Debug, PartialEq)]
struct PlacementKey {
    balancer: Balancer,
    /// The hash's identity (its `Arc`'s address; the controller holds the `Arc`).
    hash: usize,
    ids: Vec<u64>,
    /// One weight per id, in units of `1/scale`.
    weights: Vec<u32>,
    /// The units of `weights` (1, or [`ramp::SCALE`] while a replica ramps in).
    scale: u32,
}

impl PlacementKey {
    fn new(
        balancer: Balancer,
        hash: &Arc<dyn RingHash>,
        ids: Vec<u64>,
        (weights, scale): (Vec<u32>, u32),
    ) -> PlacementKey {
        PlacementKey {
            balancer,
            hash: Arc::as_ptr(hash).cast::<()>() as usize,
            ids,
            weights,
            scale,
        }
    }

    /// Build this key's table with `balancer` and `hash` (the key's own or the interim ones),
    /// from `base` where the algorithm allows.
    fn place(
        &self,
        balancer: Balancer,
        base: &Placement,
        hash: Arc<dyn RingHash>,
    ) -> Result<Placement, RingError> {
        if self.scale > 1 {
            balancer.place_scaled(hash, &self.ids, &self.weights, self.scale)
        } else {
            balancer.place_from_weighted(base, hash, &self.ids, &self.weights)
        }
    }

    /// What [`PlacementKey::place`] costs ([`Balancer::rebuild_cost`]).
    fn cost(&self, balancer: Balancer, base: &Placement, hash: &Arc<dyn RingHash>) -> u64 {
        if self.scale > 1 {
            balancer.build_cost(self.ids.len())
        } else {
            balancer.rebuild_cost_weighted(base, hash, &self.ids, &self.weights)
        }
    }

    /// What `placement` was built from.
    fn of(placement: &Placement) -> PlacementKey {
        PlacementKey::new(
            placement.balancer(),
            placement.hash(),
            placement.server_ids().to_vec(),
            (placement.weights().to_vec(), placement.scale()),
        )
    }
}

/// Ring parameters and hashing rules (the file sets them; every snapshot carries them).
struct RingParams {
    balancer: Balancer,
    hash: Arc<dyn RingHash>,
    /// What requests are hashed by.
    key: KeyRule,
    /// `[ring] bounded_load`.
    bounded_load: Option<f64>,
    /// `[ring] slow_start_ms`, when on.
    slow_start: Option<Duration>,
}

/// The tables the controller published and is building.
struct Tables {
    /// What the published table was built from.
    placed: Option<PlacementKey>,
    /// A table being built off the controller (its number), if any.
    building: Option<u64>,
    /// Numbers the builds.
    builds: u64,
}

/// What the controller's own tasks report back when they finish: private to the controller
/// (the rest of `lb` sends [`Command`]s). They come on a channel of their own, taken before
/// new commands.
enum Done {
    /// The replicas of an `/add` started, or some did not.
    Added {
        /// What was started, in order.
        specs: Vec<ReplicaSpec>,
        /// Per spec, the replica in its first heartbeat's good health, or why not.
        results: Vec<Result<Running, LaunchError>>,
        /// Where the `/add`'s answer goes.
        reply: oneshot::Sender<ScaleReply>,
        /// The request, to plan it again after an id collision.
        request: ScaleRequest,
        /// Retries left.
        retries: u32,
    },
    /// Plan an `/add` again (shared membership: another load balancer took one of its ids).
    AddAgain {
        /// The request.
        request: ScaleRequest,
        /// Where its answer goes.
        reply: oneshot::Sender<ScaleReply>,
        /// Retries left.
        retries: u32,
    },
    /// Replicas an `/rm` took out of the ring could not be stopped: they go back, and the
    /// `/rm` fails.
    NotRemoved {
        /// The replicas, and why each stop failed.
        failed: Retired,
        /// Where the `/rm`'s answer goes.
        reply: oneshot::Sender<ScaleReply>,
    },
    /// A vacancy's replica started, or did not.
    Started {
        /// What was started.
        spec: ReplicaSpec,
        /// The replica, or why it did not start.
        result: Result<Running, LaunchError>,
    },
    /// Try again to fill a vacancy.
    Respawn {
        /// The vacant server id.
        id: u64,
    },
    /// The configuration file was read and checked off the controller.
    FileRead {
        /// What was found.
        read: FileRead,
        /// Asked for by SIGHUP.
        hangup: bool,
    },
    /// A write-back of the replica list ended.
    Written {
        /// How it ended.
        outcome: WriteOutcome,
        /// Whom to tell (answered `/add`s and `/rm`s).
        waiters: Vec<oneshot::Sender<()>>,
        /// The replica list (id → hostname) it wrote.
        listed: FileList,
    },
    /// A large table was built off the controller.
    Placed {
        /// Which build.
        build: u64,
        /// The table, or why it could not be built.
        placement: Result<Box<Placement>, String>,
    },
    /// A backend by address's name was resolved again (on a reload) to `address`.
    Resolved {
        /// Its server id.
        id: u64,
        /// Which incarnation was resolved.
        handle: Handle,
        /// The socket address its name resolves to now.
        address: String,
    },
    /// The certificate files were read again off the controller.
    CertificatesRead {
        /// The pairs, read and checked, or why they were refused.
        result: Result<Vec<crate::config::LoadedCert>, String>,
    },
    /// The next step of the replicas ramping in (slow start).
    Ramp,
    /// Replicas this load balancer changed are gone from (or made in) the runtime:
    /// membership listings asked for from now on speak for them again.
    Settled {
        /// Their server ids.
        ids: Vec<u64>,
    },
}

impl Done {
    /// What it is, in words, for the log.
    fn name(&self) -> &'static str {
        match self {
            Done::Added { .. } => "started replicas of an /add",
            Done::AddAgain { .. } => "an /add planned again",
            Done::NotRemoved { .. } => "replicas an /rm could not stop",
            Done::Started { .. } => "a started replica",
            Done::Respawn { .. } => "a respawn",
            Done::FileRead { .. } => "a saved configuration",
            Done::Written { .. } => "a write-back",
            Done::Placed { .. } => "a built table",
            Done::Resolved { .. } => "a resolved backend",
            Done::Settled { .. } => "a settled change",
            Done::Ramp => "a slow start's step",
            Done::CertificatesRead { .. } => "certificates read",
        }
    }
}

/// One thing for the loop to handle.
enum Message {
    /// From the rest of `lb`.
    Command(Command),
    /// From one of the controller's own tasks.
    Done(Done),
}

impl Message {
    fn name(&self) -> &'static str {
        match self {
            Message::Command(command) => command.name(),
            Message::Done(done) => done.name(),
        }
    }
}

/// Owns the replica set. Build with [`Controller::new`], fill with [`Controller::start`], then
/// [`Controller::run`] it on its own task.
pub(crate) struct Controller {
    shared: Arc<Shared>,
    launcher: Launcher,
    /// The algorithm, hash and rules snapshots are published with.
    ring: RingParams,
    health: watch::Sender<HealthSection>,
    /// What the data plane follows live ([`Config::front`]).
    front: watch::Sender<FrontSettings>,
    /// Replicas in the ring, with their supervisor handles.
    replicas: BTreeMap<u64, Running>,
    /// Per server id, its weight (`[[replicas]] weight`, `/add`'s `weights`); absent: 1.
    weights: BTreeMap<u64, u32>,
    /// Replicas ramping in (slow start), with when they joined.
    ramping: BTreeMap<u64, Instant>,
    /// A tick of the ramps is on its way.
    ramp_tick: bool,
    vacancies: BTreeMap<u64, Vacancy>,
    /// Vacancies whose replica is being started right now (at most one start per id).
    launching: BTreeSet<u64>,
    /// Ids and names reserved by `/add`s whose replicas are still starting.
    adding: BTreeMap<u64, String>,
    /// Per server id, how many of its replicas in a row died within
    /// [`vacancies::CRASH_WINDOW`].
    crash_streak: BTreeMap<u64, u32>,
    /// The supervisor's runtime holds the replica set, shared with other load balancers
    /// (Swarm): what following its listings takes. `None`: the replica set is this load
    /// balancer's own.
    membership: Option<SharedMembership>,
    /// The tables published and being built.
    tables: Tables,
    /// The command loop runs (before it does, at start-up, tables are built in place: nothing
    /// is served yet, and a build's result could not be taken in).
    running: bool,
    file: Option<ConfigFile>,
    /// The configuration the process started with (for fields that need a restart).
    startup: Config,
    /// The configuration last applied (to say what a new one changes).
    applied: Config,
    /// Where the controller's tasks report back.
    done: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    /// The TLS listener's certificates.
    certs: certs::Certificates,
    /// Random names and `/rm`'s random picks.
    rng: fastrand::Rng,
    rx: mpsc::UnboundedReceiver<Command>,
}

impl Controller {
    /// A controller for `loaded` with no replica running yet, the shared state its readers use,
    /// and a handle to command it.
    pub(crate) fn new(
        loaded: &Loaded,
        hash: Arc<dyn RingHash>,
        supervisor: Arc<dyn Supervisor>,
        meta: Meta,
    ) -> Result<(Controller, Arc<Shared>, ControllerHandle), RingError> {
        Controller::with_heartbeats(loaded, hash, supervisor, meta, Arc::new(Prober::default()))
    }

    /// [`Controller::new`] with new replicas' first heartbeats checked by `heartbeats`.
    fn with_heartbeats(
        loaded: &Loaded,
        hash: Arc<dyn RingHash>,
        supervisor: Arc<dyn Supervisor>,
        meta: Meta,
        heartbeats: Arc<dyn Heartbeats>,
    ) -> Result<(Controller, Arc<Shared>, ControllerHandle), RingError> {
        let config = &loaded.config;
        let balancer = config.balancer();
        let empty = balancer.place(Arc::clone(&hash), &[])?;
        let placed = Some(PlacementKey::of(&empty));
        let file = match &loaded.source {
            Source::File(path) => Some(ConfigFile::new(path.clone(), loaded.text.clone())),
            Source::Embedded | Source::Copy(_) => None,
        };
        let metrics = crate::metrics::Metrics::new(meta.workers);
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(Snapshot {
                placement: empty,
                backends: Vec::new(),
                vacancies: Vec::new(),
                key: config.ring.key_rule(),
                bounded_load: config.ring.bounded_load(),
                weights: BTreeMap::new(),
            }),
            config: ArcSwap::from_pointee(ConfigStatus {
                path: loaded.source.to_string(),
                live: file.is_some(),
                plugin_dirs: config.plugin_dirs(),
                last_applied: Some(timestamp()),
                ..ConfigStatus::default()
            }),
            meta,
            health: Default::default(),
            retries: AtomicU64::new(0),
            metrics,
            backend_tls: Arc::default(),
            certs: Arc::new(crate::state::tls::CertStore::default()),
            tunnels: Arc::default(),
            admin_token: Default::default(),
        });
        warn_unverified(config);
        let (handle, rx) = ControllerHandle::channel();
        let (done, done_rx) = mpsc::unbounded_channel();
        let membership = supervisor
            .membership()
            .map(|_| SharedMembership::new(listed_in(config)));
        let controller = Controller {
            shared: Arc::clone(&shared),
            launcher: Launcher {
                supervisor,
                prober: heartbeats,
                listening: Arc::clone(&shared.meta.listening),
                tls: Arc::new(ArcSwap::from_pointee(tls_by_address(config))),
            },
            launching: BTreeSet::new(),
            adding: BTreeMap::new(),
            ring: RingParams {
                balancer,
                hash,
                key: config.ring.key_rule(),
                bounded_load: config.ring.bounded_load(),
                slow_start: config.ring.slow_start(),
            },
            health: watch::Sender::new(config.health.clone()),
            front: watch::Sender::new(config.front()),
            replicas: BTreeMap::new(),
            weights: BTreeMap::new(),
            ramping: BTreeMap::new(),
            ramp_tick: false,
            vacancies: BTreeMap::new(),
            crash_streak: BTreeMap::new(),
            membership,
            tables: Tables {
                placed,
                building: None,
                builds: 0,
            },
            running: false,
            file,
            startup: config.clone(),
            applied: config.clone(),
            done,
            done_rx,
            certs: certs::Certificates::default(),
            rng: fastrand::Rng::new(),
            rx,
        };
        controller.store_admin_token(config);
        Ok((controller, shared, handle))
    }

    /// The data plane's settings ([`Config::front`]), updated when the file changes them.
    pub(crate) fn front_settings(&self) -> watch::Receiver<FrontSettings> {
        self.front.subscribe()
    }

    /// Make `config`'s admin token (or `LB_ADMIN_TOKEN`) the one protected routes need, on
    /// every listener and open connection; say so when the routes become open.
    fn store_admin_token(&self, config: &Config) {
        let token = config.admin.effective_token();
        let had = self.shared.admin_token.load().is_some();
        if had && token.is_none() {
            tracing::warn!(
                "[admin] token removed: /add, /rm and /_lb/* are open to anyone who can reach them"
            );
        } else if had && self.shared.admin_token.load().as_deref() != token.as_ref() {
            tracing::info!("configuration change: the admin token (the new one holds from now on)");
        }
        self.shared.admin_token.store(token.map(Arc::new));
    }

    /// Heartbeat settings, updated when the file changes them.
    pub(crate) fn health_settings(&self) -> watch::Receiver<HealthSection> {
        self.health.subscribe()
    }

    fn settings(&self) -> HealthSection {
        self.health.borrow().clone()
    }

    /// Apply commands until shutdown. Nothing here waits for a replica to start, a file to be
    /// read or written, or a large table to be built: those run on tasks of their own and
    /// report back with a [`Done`]. A panic while handling a message is caught, logged and
    /// counted (`lb_control_panics_total`); the controller goes on with the state it has.
    pub(crate) async fn run(mut self) {
        self.running = true;
        while let Some(message) = self.next().await {
            if !self.step(message).await {
                return;
            }
        }
    }

    /// The next thing to handle: what a task of the controller's reported, else a command.
    async fn next(&mut self) -> Option<Message> {
        tokio::select! {
            biased;
            Some(done) = self.done_rx.recv() => Some(Message::Done(done)),
            command = self.rx.recv() => command.map(Message::Command),
        }
    }

    /// Handle one message under `catch_unwind`; false once the controller is to stop.
    async fn step(&mut self, message: Message) -> bool {
        let what = message.name();
        match AssertUnwindSafe(self.handle(message)).catch_unwind().await {
            Ok(go_on) => go_on,
            Err(panic) => {
                self.recover(what, panic.as_ref());
                true
            }
        }
    }

    /// After a panic in the handling of a `what` message: say so, count it, and make sure what
    /// readers see matches the controller's state again.
    fn recover(&mut self, what: &str, panic: &(dyn std::any::Any + Send)) {
        let detail = panic_message(panic);
        let message = format!(
            "internal error while handling {what}: {detail}; the load balancer keeps running with its last state"
        );
        tracing::error!("{message}");
        self.shared.metrics.control_panicked();
        if what == "a saved configuration" {
            self.update_config_status(|s| s.last_error = Some(Issue::now(message)));
        }
        let republished = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.publish();
            self.kick_file();
        }));
        if republished.is_err() {
            self.shared.metrics.control_panicked();
            tracing::error!("internal error again while publishing the replica set; keeping the last published one");
        }
    }

    /// Handle one message; false once the controller is to stop.
    async fn handle(&mut self, message: Message) -> bool {
        match message {
            Message::Command(command) => self.command(command).await,
            Message::Done(done) => {
                self.done(done);
                true
            }
        }
    }

    /// Handle a command from the rest of `lb`; false once the controller is to stop.
    async fn command(&mut self, command: Command) -> bool {
        match command {
            Command::Add { request, reply } => self.add(request, reply, scale::ADD_RETRIES),
            Command::Remove { request, reply } => self.remove(request, reply),
            Command::Plan { ask, reply } => self.plan(ask, reply),
            Command::FileChanged => self.read_file(false),
            Command::Reload => {
                self.read_file(true);
                self.certificates_changed();
            }
            Command::CertificatesChanged => self.certificates_changed(),
            Command::Acme(event) => self.acme_event(event),
            Command::Failed(message) => {
                tracing::error!("{message}");
                self.update_config_status(|s| s.last_error = Some(Issue::now(message)));
            }
            Command::ReplicaFailed {
                id,
                incarnation,
                reason,
            } => {
                // Not an earlier incarnation, nor already removed.
                let current = self
                    .replicas
                    .get(&id)
                    .is_some_and(|r| r.backend.incarnation == incarnation);
                if current {
                    self.replica_failed(id, reason);
                }
            }
            Command::Supervisor(SupervisorEvent::Exited { handle, detail }) => {
                let id = self
                    .replicas
                    .values()
                    .find(|r| r.handle == handle)
                    .map(|r| r.backend.id);
                if let Some(id) = id {
                    self.replica_failed(id, format!("exited ({detail})"));
                }
            }
            Command::Supervisor(SupervisorEvent::Members { listed_at, members }) => {
                self.follow(listed_at, members);
            }
            Command::Handover { reply } => {
                let mut replicas: Vec<HandedOver> = (self.replicas.values())
                    .filter(|r| r.handle.is_supervised())
                    .map(|r| HandedOver {
                        hostname: r.backend.hostname.clone(),
                        id: r.backend.id,
                        address: r.backend.addr.clone(),
                        handle: r.handle.clone(),
                    })
                    .collect();
                replicas.sort_by_key(|r| r.id);
                let _ = reply.send(replicas);
            }
            Command::Detach { keep, reply } => {
                let others: Vec<Handle> = (self.replicas.values())
                    .map(|r| r.handle.clone())
                    .filter(|h| h.is_supervised() && !keep.contains(h))
                    .collect();
                for handle in others {
                    tracing::info!(%handle, "stopping a replica started after the handover");
                    let _ = self.launcher.supervisor.stop(&handle).await;
                }
                tracing::info!("the new lb runs the replicas now");
                let _ = reply.send(());
                return false;
            }
            Command::Shutdown { reply } => {
                self.launcher.supervisor.stop_all().await;
                let _ = reply.send(());
                return false;
            }
        }
        true
    }

    /// Take in what one of the controller's tasks reported.
    fn done(&mut self, done: Done) {
        match done {
            Done::Added {
                specs,
                results,
                reply,
                request,
                retries,
            } => self.added(specs, results, reply, request, retries),
            Done::AddAgain {
                request,
                reply,
                retries,
            } => self.add(request, reply, retries),
            Done::NotRemoved { failed, reply } => self.not_removed(failed, reply),
            Done::Started { spec, result } => {
                if self.started(spec, result) {
                    self.write_back(None);
                }
            }
            Done::Respawn { id } => self.respawn(id),
            Done::FileRead { read, hangup } => self.file_read(read, hangup),
            Done::Written {
                outcome,
                waiters,
                listed,
            } => self.written(outcome, waiters, listed),
            Done::Placed { build, placement } => self.placed(build, placement),
            Done::Resolved {
                id,
                handle,
                address,
            } => self.resolved(id, &handle, address),
            Done::Settled { ids } => self.settled(ids),
            Done::Ramp => self.ramp_step(),
            Done::CertificatesRead { result } => self.certificates_read(result),
        }
    }
    fn hostnames(&self) -> Vec<String> {
        let mut listed: Vec<(u64, &str)> = self
            .replicas
            .values()
            .map(|r| (r.backend.id, r.backend.hostname.as_str()))
            .chain(
                self.vacancies
                    .values()
                    .filter(|v| v.address.is_some())
                    .map(|v| (v.id, v.hostname.as_str())),
            )
            .collect();
        listed.sort_unstable();
        listed
            .into_iter()
            .map(|(_, name)| name.to_owned())
            .collect()
    }

    /// What the table for the current replica set and parameters is built from.
    fn wanted_placement(&self) -> PlacementKey {
        let ids: Vec<u64> = self.replicas.keys().copied().collect();
        let parts: Vec<f64> = ids.iter().map(|id| self.ramp_fraction(*id)).collect();
        let weights = if parts.iter().all(|&f| f >= 1.0) {
            (ids.iter().map(|id| self.weight_of(*id)).collect(), 1)
        } else {
            let scaled = ids
                .iter()
                .zip(&parts)
                .map(|(id, &f)| ramp::scaled(self.weight_of(*id), f))
                .collect();
            (scaled, ramp::SCALE)
        };
        PlacementKey::new(self.ring.balancer, &self.ring.hash, ids, weights)
    }

    /// Server id `id`'s weight (1 unless one was given).
    fn weight_of(&self, id: u64) -> u32 {
        self.weights.get(&id).copied().unwrap_or(1)
    }

    /// Give server id `id` the weight `weight` (the ring changes at the next publish).
    fn set_weight(&mut self, id: u64, weight: u32) {
        if weight == 1 {
            self.weights.remove(&id);
        } else {
            self.weights.insert(id, weight);
        }
    }

    /// Publish the current replica set as a new snapshot. The table is built here when it is
    /// cheap (the assignment's 512 slots take microseconds). A costly one — rendezvous over
    /// millions of slots after a change of parameters takes seconds — is built on a blocking
    /// thread; until it is ready, replicas that leave or join are published at once with the
    /// algorithm and hash requests use now (when that is cheap), so failover never waits for a
    /// build, and the new parameters take effect when their table is ready.
    fn publish(&mut self) {
        self.follow_ramps();
        let wanted = self.wanted_placement();
        if self.tables.placed.as_ref() == Some(&wanted) {
            let placement = self.shared.snapshot.load().placement.clone();
            self.store(placement);
            return;
        }
        let current = self.shared.snapshot.load_full();
        let cost = wanted.cost(self.ring.balancer, &current.placement, &self.ring.hash);
        if cost <= INLINE_BUILD_COST || !self.running {
            let built = wanted.place(
                self.ring.balancer,
                &current.placement,
                Arc::clone(&self.ring.hash),
            );
            match built {
                Ok(placement) => {
                    self.store(placement);
                    self.tables.placed = Some(wanted);
                }
                // Capacity is checked before anything is added, so this means a bug; keep
                // serving the last good ring rather than an inconsistent one.
                Err(e) => {
                    tracing::error!(error = %e, "ring rebuild failed; keeping the previous ring")
                }
            }
            return;
        }
        // Meanwhile: the replicas of now with the table's current parameters, if that is cheap;
        // else the table requests use now, with what changed besides it.
        let interim_balancer = current.placement.balancer();
        let interim_hash = Arc::clone(current.placement.hash());
        let interim = PlacementKey::new(
            interim_balancer,
            &interim_hash,
            wanted.ids.clone(),
            (wanted.weights.clone(), wanted.scale),
        );
        let interim_cost = interim.cost(interim_balancer, &current.placement, &interim_hash);
        let rebuilt = (interim != wanted && interim_cost <= INLINE_BUILD_COST)
            .then(|| interim.place(interim_balancer, &current.placement, interim_hash))
            .and_then(Result::ok);
        match rebuilt {
            Some(placement) => {
                self.store(placement);
                self.tables.placed = Some(interim);
            }
            None => self.shared.snapshot.store(Arc::new(Snapshot {
                placement: current.placement.clone(),
                backends: current.backends.clone(),
                vacancies: self.vacancies.values().cloned().collect(),
                key: self.ring.key.clone(),
                bounded_load: self.ring.bounded_load,
                weights: self.weights.clone(),
            })),
        }
        if self.tables.building.is_none() {
            self.build(wanted, Base::Published(current));
        }
    }

    /// Build the table `key` says (the wanted balancer and hash, ids and weights) on a blocking
    /// thread, from `base` (rendezvous moves only what must move); the result comes back as
    /// [`Done::Placed`].
    fn build(&mut self, key: PlacementKey, base: Base) {
        self.tables.builds += 1;
        let build = self.tables.builds;
        self.tables.building = Some(build);
        let balancer = self.ring.balancer;
        let hash = Arc::clone(&self.ring.hash);
        tracing::info!(
            algorithm = %balancer,
            slots = balancer.slots(),
            replicas = key.ids.len(),
            "building a large table off the controller; requests keep the current one meanwhile"
        );
        let done = self.done.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let placement = tokio::task::spawn_blocking(move || {
                let base = match &base {
                    Base::Published(snapshot) => &snapshot.placement,
                    Base::Built(placement) => &**placement,
                };
                key.place(balancer, base, hash).map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(format!("the build failed: {e}")));
            tracing::info!(
                took_ms = started.elapsed().as_millis() as u64,
                "large table built"
            );
            let _ = done.send(Done::Placed {
                build,
                placement: placement.map(Box::new),
            });
        });
    }

    /// Store a snapshot of the current replicas with `placement` (built for them).
    fn store(&self, placement: Placement) {
        let backends: Vec<Arc<Backend>> = self
            .replicas
            .values()
            .map(|r| Arc::clone(&r.backend))
            .collect();
        for backend in &backends {
            backend
                .metrics
                .get_or_init(|| self.shared.metrics.replica(&backend.hostname));
        }
        // The connectors find a backend's TLS settings by the address it is dialled at; stored
        // before the snapshot that routes to it. Nothing to do while no backend speaks TLS.
        let tls = self.shared.backend_tls.load();
        if !tls.is_empty() || backends.iter().any(|b| b.tls.is_some()) {
            let table: TlsTable = backends
                .iter()
                .filter_map(|b| Some((b.addr.clone(), Arc::clone(b.tls.as_ref()?))))
                .collect();
            if **tls != table {
                drop(tls);
                self.shared.backend_tls.store(Arc::new(table));
            }
        }
        self.shared.snapshot.store(Arc::new(Snapshot {
            placement,
            backends,
            vacancies: self.vacancies.values().cloned().collect(),
            key: self.ring.key.clone(),
            bounded_load: self.ring.bounded_load,
            weights: self.weights.clone(),
        }));
        // Open WebSocket tunnels look their slot up again (one `watch` send, never a wait).
        let drain = Duration::from_millis(self.health.borrow().drain_timeout_ms);
        self.shared.tunnels.ring_changed(drain);
    }

    /// A large table was built off the controller (for the replicas, weights, balancer and hash
    /// of that moment). Published if the state still wants it; otherwise the state now is
    /// built from it (for rendezvous, moving only what changed meanwhile).
    fn placed(&mut self, build: u64, placement: Result<Box<Placement>, String>) {
        if self.tables.building != Some(build) {
            return;
        }
        self.tables.building = None;
        let wanted = self.wanted_placement();
        match placement {
            Ok(placement) => {
                let built = PlacementKey::of(&placement);
                if built == wanted {
                    self.store(*placement);
                    self.tables.placed = Some(wanted);
                } else if built.balancer == wanted.balancer && built.hash == wanted.hash {
                    // Replicas changed meanwhile (they are published with the previous
                    // parameters until then): bring this table up to date.
                    self.build(wanted, Base::Built(placement));
                } else {
                    self.publish();
                }
            }
            // A bug (capacity is checked before anything changes): not retried in a loop; the
            // next change of the replica set tries again.
            Err(e) => {
                tracing::error!(error = %e, "building the table failed; keeping the previous one")
            }
        }
    }

    /// The replica set as plain data, for the planning functions in `reconcile.rs`.
    fn members(&self) -> Members {
        Members {
            running: self
                .replicas
                .values()
                .map(|r| (r.backend.id, r.backend.hostname.clone()))
                .collect(),
            vacant: self
                .vacancies
                .values()
                .map(|v| (v.id, v.hostname.clone()))
                .collect(),
            adding: self.adding.clone(),
            addresses: self
                .replicas
                .values()
                .filter_map(|r| Some((r.backend.id, r.handle.address()?.to_owned())))
                .chain(
                    self.vacancies
                        .values()
                        .filter_map(|v| Some((v.id, v.address.clone()?))),
                )
                .collect(),
            weights: self.weights.clone(),
        }
    }

    /// Drain replicas already out of the ring and, with `stop`, stop them, on another task.
    /// The returned receiver completes when they are drained and stopped, with the ones whose
    /// stop failed and why. Without `stop` they are left to run: the same replica at a new
    /// address, or a service that failed or was removed elsewhere (shared membership: the
    /// runtime owns it).
    fn retire(&self, removed: Vec<Running>, stop: bool) -> oneshot::Receiver<Retired> {
        let launcher = self.launcher.clone();
        let drain = Duration::from_millis(self.settings().drain_timeout_ms);
        let (done, finished) = oneshot::channel();
        tokio::spawn(async move {
            let stops = removed.into_iter().map(|running| {
                let launcher = &launcher;
                async move {
                    let backend = &running.backend;
                    drain_requests(backend, drain).await;
                    if !stop {
                        return None;
                    }
                    // A backend by address is left running: lb did not start it.
                    if let Err(e) = launcher.stop(&running.handle).await {
                        tracing::error!(hostname = %backend.hostname, id = backend.id, error = %e, "could not remove the replica; it may still run");
                        return Some((running, e.to_string()));
                    }
                    if backend.is_address() {
                        tracing::info!(hostname = %backend.hostname, id = backend.id, "backend out of the ring (left running)");
                    } else {
                        tracing::info!(hostname = %backend.hostname, id = backend.id, "replica removed");
                    }
                    None
                }
            });
            let failed = futures_util::future::join_all(stops).await;
            let _ = done.send(failed.into_iter().flatten().collect());
        });
        finished
    }
}

/// The replica list of a configuration: id → hostname.
fn listed_in(config: &Config) -> FileList {
    config
        .replicas
        .iter()
        .map(|r| (*r.id.get_ref(), (r.hostname.get_ref().clone(), r.weight())))
        .collect()
}

/// The TLS settings of `config`'s backends by address with `tls = true`, by configured address.
pub(super) fn tls_by_address(config: &Config) -> TlsTable {
    config
        .replicas
        .iter()
        .filter_map(|r| {
            Some((
                r.address()?.to_owned(),
                Arc::clone(r.tls_settings.as_ref()?),
            ))
        })
        .collect()
}

/// Say loudly which backends are spoken to over TLS without verifying their certificate
/// (`tls_verify = false`): at start and on every reload that keeps it.
pub(super) fn warn_unverified(config: &Config) {
    for r in &config.replicas {
        if r.tls_settings.as_ref().is_some_and(|t| !t.verify) {
            tracing::warn!(
                hostname = %r.hostname.get_ref(),
                address = r.address().unwrap_or_default(),
                "tls_verify = false: the backend's certificate is NOT verified; anyone on the path can impersonate it"
            );
        }
    }
}

/// A vacancy for `spec`.
fn vacancy_of(spec: &ReplicaSpec, failed_attempts: u32, reason: String) -> Vacancy {
    Vacancy {
        id: spec.id,
        hostname: spec.hostname.clone(),
        failed_attempts,
        reason,
        address: spec.address.clone(),
        pipelining: spec.pipelining,
        tls: spec.tls.clone(),
        protocol: spec.protocol,
    }
}

/// What to start (or health-check) to fill `vacancy`, a replica of weight `weight`.
fn spec_of(vacancy: &Vacancy, weight: u32) -> ReplicaSpec {
    ReplicaSpec {
        hostname: vacancy.hostname.clone(),
        id: vacancy.id,
        address: vacancy.address.clone(),
        pipelining: vacancy.pipelining,
        tls: vacancy.tls.clone(),
        protocol: vacancy.protocol,
        weight,
    }
}

/// Wait until nothing but the caller holds `backend` — no snapshot that could route to it, no
/// request in flight to it — or until `limit` passes.
async fn drain_requests(backend: &Arc<Backend>, limit: Duration) {
    let start = tokio::time::Instant::now();
    while Arc::strong_count(backend) > 1 && start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
