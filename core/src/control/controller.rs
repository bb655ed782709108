//! The controller: the one writer of the load balancer's desired state.
//!
//! It owns the replica set, the ring parameters and the configuration file. REST handlers, the
//! file watcher, the health checker and the supervisor send it [`Command`]s; it applies them one
//! at a time, publishes a new immutable [`Snapshot`] for readers, and writes replica changes back
//! to `lb.toml`. Nothing else mutates the replica set.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot, watch};

use lb_balance::{Balancer, Placement, RingError, RingHash};

use crate::config::key::KeyRule;
use crate::config::{Config, HealthSection, Loaded, Source};
use crate::state::{
    timestamp, Backend, ConfigStatus, Handle, Issue, Meta, Shared, Snapshot, Vacancy,
};

use super::command::{Command, ControlError, ControllerHandle, ScaleReply, ScaleRequest};
use super::file::{self, FileRead, OwnedEntry, WriteOutcome};
use super::guard::panic_message;
use super::launch::{self, LaunchError, Launcher};
use super::probe::Prober;
use super::reconcile::{
    changes, file_touched, plan_add, plan_membership, plan_remove, reconcile, room, Members,
    MembershipChange, Plan,
};
use super::supervisor::{ReplicaSpec, Supervisor, SupervisorError, SupervisorEvent};

/// Replicas whose stop failed, and why (what [`Controller::retire`] reports).
type Retired = Vec<(Arc<Backend>, String)>;

/// How many replicas of one `/add` are started at the same time.
const ADD_BATCH: usize = 8;
/// Longest wait between two attempts to fill a vacancy.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Shared membership: how long after an id collision an `/add` is planned again (a listing
/// comes every second).
const ADD_AGAIN_AFTER: Duration = Duration::from_millis(1500);
/// Shared membership: how long start-up waits for the running services' tasks to answer.
const START_REJOIN: Duration = Duration::from_secs(3);
/// A replica that dies sooner than this after joining the ring counts toward a crash loop.
const CRASH_WINDOW: Duration = Duration::from_secs(10);

/// Tables whose build costs more than this ([`Balancer::build_cost`]: about a few milliseconds
/// here) are built on a blocking thread while requests keep the table they have.
const INLINE_BUILD_COST: u64 = 1 << 21;

/// The configuration file being followed, and its I/O in progress (reads and write-backs run
/// off the controller, one at a time: see [`Controller::kick_file`]).
struct ConfigFile {
    path: PathBuf,
    /// The text last applied or written: the same text again is not a change.
    last_text: String,
    /// A read or a write-back is running.
    busy: bool,
    /// Read the file again when the current I/O is done (`Some(true)`: asked by SIGHUP).
    read_again: Option<bool>,
    /// Write the replica list back when the file is not busy and holds no unapplied save.
    write_due: bool,
    /// Told once the next write-back is done (`/add` and `/rm` answer then).
    waiters: Vec<oneshot::Sender<()>>,
}

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
}

impl PlacementKey {
    fn new(balancer: Balancer, hash: &Arc<dyn RingHash>, ids: Vec<u64>) -> PlacementKey {
        PlacementKey {
            balancer,
            hash: Arc::as_ptr(hash).cast::<()>() as usize,
            ids,
        }
    }
}

/// Owns the replica set. Build with [`Controller::new`], fill with [`Controller::start`], then
/// [`Controller::run`] it on its own task.
pub struct Controller {
    shared: Arc<Shared>,
    launcher: Launcher,
    balancer: Balancer,
    hash: Arc<dyn RingHash>,
    /// What requests are hashed by (published with the ring).
    key: KeyRule,
    /// `[ring] bounded_load`, published with every snapshot.
    bounded_load: Option<f64>,
    health: watch::Sender<HealthSection>,
    replicas: BTreeMap<u64, Arc<Backend>>,
    vacancies: BTreeMap<u64, Vacancy>,
    /// Vacancies whose replica is being started right now (at most one start per id).
    launching: BTreeSet<u64>,
    /// Ids and names reserved by `/add`s whose replicas are still starting.
    adding: BTreeMap<u64, String>,
    /// Per server id, how many of its replicas in a row died within [`CRASH_WINDOW`].
    crash_streak: BTreeMap<u64, u32>,
    /// The supervisor's runtime holds the replica set, shared with other load balancers
    /// (Swarm): follow its membership listings, and leave failed replicas to it.
    shared_membership: bool,
    /// Shared membership: vacancies whose service this load balancer creates (a seed, or an
    /// entry added to the file), rather than finds.
    to_create: BTreeSet<u64>,
    /// Shared membership: ids this load balancer is changing (`None`: in progress) or changed
    /// at that instant. A listing asked for before then does not speak for them.
    local_changes: BTreeMap<u64, Option<Instant>>,
    /// Shared membership: services the last listing had no room for in the ring (logged when
    /// it changes).
    membership_overflow: usize,
    /// What the published table was built from.
    placed: Option<PlacementKey>,
    /// A table being built off the controller (its number), if any.
    building: Option<u64>,
    /// Numbers the builds.
    builds: u64,
    /// The command loop runs (before it does, at start-up, tables are built in place: nothing
    /// is served yet, and a build's result could not be taken in).
    running: bool,
    /// Shared membership: the replica list (id → hostname) of the file version this load
    /// balancer last wrote or applied; a save changes only the ids it differs in from this.
    file_base: BTreeMap<u64, String>,
    file: Option<ConfigFile>,
    /// The configuration the process started with (for fields that need a restart).
    startup: Config,
    /// The configuration last applied (to say what a new one changes).
    applied: Config,
    commands: ControllerHandle,
    /// Random names and `/rm`'s random picks.
    rng: fastrand::Rng,
    rx: mpsc::UnboundedReceiver<Command>,
}

impl Controller {
    /// A controller for `loaded` with no replica running yet, the shared state its readers use,
    /// and a handle to command it.
    pub fn new(
        loaded: &Loaded,
        hash: Arc<dyn RingHash>,
        supervisor: Arc<dyn Supervisor>,
        meta: Meta,
    ) -> Result<(Controller, Arc<Shared>, ControllerHandle), RingError> {
        let config = &loaded.config;
        let balancer = config.balancer();
        let empty = balancer.place(Arc::clone(&hash), &[])?;
        let placed = Some(PlacementKey::new(balancer, &hash, Vec::new()));
        let file = match &loaded.source {
            Source::File(path) => Some(ConfigFile {
                path: path.clone(),
                last_text: loaded.text.clone(),
                busy: false,
                read_again: None,
                write_due: false,
                waiters: Vec::new(),
            }),
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
        });
        let (handle, rx) = ControllerHandle::channel();
        let supervisor_shares = supervisor.shared_membership();
        let controller = Controller {
            shared: Arc::clone(&shared),
            launcher: Launcher {
                supervisor,
                prober: Prober::default(),
                listening: shared.meta.listening(),
            },
            launching: BTreeSet::new(),
            adding: BTreeMap::new(),
            balancer,
            hash,
            key: config.ring.key_rule(),
            bounded_load: config.ring.bounded_load(),
            health: watch::Sender::new(config.health.clone()),
            replicas: BTreeMap::new(),
            vacancies: BTreeMap::new(),
            crash_streak: BTreeMap::new(),
            shared_membership: supervisor_shares,
            to_create: BTreeSet::new(),
            local_changes: BTreeMap::new(),
            membership_overflow: 0,
            placed,
            building: None,
            builds: 0,
            running: false,
            file_base: listed_in(config),
            file,
            startup: config.clone(),
            applied: config.clone(),
            commands: handle.clone(),
            rng: fastrand::Rng::new(),
            rx,
        };
        Ok((controller, shared, handle))
    }

    /// Heartbeat settings, updated when the file changes them.
    pub fn health_settings(&self) -> watch::Receiver<HealthSection> {
        self.health.subscribe()
    }

    fn settings(&self) -> HealthSection {
        self.health.borrow().clone()
    }

    /// Take over the configured replicas an earlier run left running (containers), start the
    /// rest and wait for their first heartbeats. A replica that does not come up leaves a
    /// vacancy that is retried with backoff once the controller runs.
    pub async fn start(&mut self) {
        if self.shared_membership {
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
                        Ok(backend) => {
                            tracing::info!(hostname = %spec.hostname, id = spec.id, "replica taken over");
                            self.replicas.insert(spec.id, backend);
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
        let listed = match self.launcher.supervisor.members().await {
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
            .map(|r| ReplicaSpec::managed(r.hostname.get_ref().clone(), *r.id.get_ref()))
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
                let now = Instant::now();
                for (spec, result) in seeds.iter().zip(&results) {
                    if result.is_ok() {
                        self.local_changes.insert(spec.id, Some(now));
                    } else {
                        self.to_create.insert(spec.id);
                        self.local_changes.insert(spec.id, None);
                    }
                }
                (seeds, results)
            }
            Some(mut listed) => {
                // Only what the ring holds, in id order (as later listings): a service beyond
                // that (one made by hand with the labels, or by an lb with a larger ring) is
                // left out, never seated to fail the ring build or written back.
                listed.sort_by_key(|s| s.id);
                let fit = room(&self.balancer, 0, listed.len());
                if fit < listed.len() {
                    let left_out = listed.split_off(fit);
                    let e = self.balancer.check_capacity(fit + 1).err();
                    let ids: Vec<u64> = left_out.iter().map(|s| s.id).collect();
                    tracing::error!(left_out = ?ids, error = ?e, "the swarm lists more replicas than the ring holds; leaving the rest out");
                    self.membership_overflow = left_out.len();
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
    fn seat(&mut self, specs: Vec<ReplicaSpec>, results: Vec<Result<Arc<Backend>, LaunchError>>) {
        for (spec, result) in specs.into_iter().zip(results) {
            match result {
                Ok(backend) => {
                    tracing::info!(hostname = %backend.hostname, id = backend.id, address = %backend.addr, "replica up");
                    self.replicas.insert(spec.id, backend);
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

    /// Follow the runtime's membership listing (shared membership): services that appeared
    /// join (once their task answers), services that are gone leave the ring. Ids this load
    /// balancer is changing itself are judged only by listings asked for after its change.
    fn membership(&mut self, listed_at: Instant, listed: Vec<ReplicaSpec>) {
        if !self.shared_membership {
            return;
        }
        let listed: BTreeMap<u64, String> =
            listed.into_iter().map(|s| (s.id, s.hostname)).collect();
        // A listing newer than a finished local change speaks for that id from now on.
        self.local_changes
            .retain(|_, at| at.is_none_or(|at| listed_at <= at));
        let MembershipChange { gone, new } = plan_membership(&self.members(), &listed, |id| {
            !self.local_changes.contains_key(&id)
        });
        // Removals always apply; new replicas only as far as the ring has room (in id order).
        let base = self.replicas.len() + self.vacancies.len() - gone.len();
        let mut new = new;
        let room = room(&self.balancer, base, new.len());
        let left_out = new.len() - room;
        if left_out != self.membership_overflow {
            if left_out > 0 {
                let e = self.balancer.check_capacity(base + room + 1).err();
                tracing::error!(left_out, error = ?e, "the swarm lists more replicas than the ring holds; leaving the rest out");
            }
            self.membership_overflow = left_out;
        }
        new.truncate(room);
        if gone.is_empty() && new.is_empty() {
            return;
        }
        let mut left = Vec::new();
        for id in &gone {
            self.vacancies.remove(id);
            self.to_create.remove(id);
            if let Some(backend) = self.replicas.remove(id) {
                tracing::info!(hostname = %backend.hostname, id, "replica's service is gone from the swarm; out of the ring");
                left.push(backend);
            }
        }
        for spec in &new {
            tracing::info!(hostname = %spec.hostname, id = spec.id, "replica's service appeared in the swarm; joining once it answers");
            self.vacancies.insert(
                spec.id,
                vacancy_of(spec, 0, "service found in the swarm".into()),
            );
        }
        self.publish();
        // Removed elsewhere: nothing of ours to stop.
        drop(self.retire(left, false));
        for spec in &new {
            self.respawn(spec.id);
        }
        self.write_back(None);
    }

    /// Mark `ids` as being changed by this load balancer until [`Command::Settled`] says
    /// the runtime reflects the change.
    fn changing(&mut self, ids: impl IntoIterator<Item = u64>) {
        if self.shared_membership {
            for id in ids {
                self.local_changes.insert(id, None);
            }
        }
    }

    /// Send [`Command::Settled`] for `ids` once `done` completes.
    fn settle_after<T: Send + 'static>(&self, ids: Vec<u64>, done: oneshot::Receiver<T>) {
        if !self.shared_membership || ids.is_empty() {
            return;
        }
        let commands = self.commands.clone();
        tokio::spawn(async move {
            let _ = done.await;
            commands.send(Command::Settled { ids });
        });
    }

    /// Shared membership: a saved file speaks only for the ids it changed relative to the
    /// version this load balancer last wrote or applied; every other id keeps what the
    /// runtime's listings say (they may be newer than the text that was saved).
    fn only_what_the_save_changed(&mut self, plan: &mut Plan, config: &Config) {
        if !self.shared_membership {
            return;
        }
        let touched = file_touched(&self.file_base, config);
        plan.only(&touched);
        self.file_base = listed_in(config);
    }

    /// Apply commands until shutdown. Nothing here waits for a replica to start, a file to be
    /// read or written, or a large table to be built: those run on tasks of their own and
    /// report back with a command. A panic while handling a command is caught, logged and
    /// counted (`lb_control_panics_total`); the controller goes on with the state it has.
    pub async fn run(mut self) {
        self.running = true;
        while let Some(command) = self.rx.recv().await {
            let what = command.name();
            match AssertUnwindSafe(self.handle(command)).catch_unwind().await {
                Ok(true) => {}
                Ok(false) => return,
                Err(panic) => self.recover(what, panic.as_ref()),
            }
        }
    }

    /// After a panic in the handling of a `what` command: say so, count it, and make sure what
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

    /// Handle one command; false once the controller is to stop.
    async fn handle(&mut self, command: Command) -> bool {
        match command {
            Command::Add {
                request,
                reply,
                retries,
            } => self.add(request, reply, retries),
            Command::Added {
                specs,
                results,
                reply,
                request,
                retries,
            } => {
                let collided = self.shared_membership
                    && results.iter().any(|r| {
                        matches!(
                            r,
                            Err(LaunchError::Supervisor(SupervisorError::Taken { .. }))
                        )
                    });
                let result = self.added(specs, results);
                if result.is_err() && collided && retries > 0 {
                    // Another lb took an id at the same moment: plan again once a listing
                    // shows its service (the ids are then taken here too).
                    tracing::info!(retries, "a server id of an /add was taken in the swarm meanwhile; planning it again");
                    let commands = self.commands.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(ADD_AGAIN_AFTER).await;
                        commands.send(Command::Add {
                            request,
                            reply,
                            retries: retries - 1,
                        });
                    });
                    return true;
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
            Command::Remove { request, reply } => {
                let removed = self.remove(request, reply);
                self.shared.metrics.reload(removed.is_some());
                if let Some(written) = removed {
                    self.write_back(Some(written));
                }
            }
            Command::NotRemoved { failed, reply } => self.not_removed(failed, reply),
            Command::FileChanged => self.read_file(false),
            Command::Reload => self.read_file(true),
            Command::FileRead { read, hangup } => self.file_read(read, hangup),
            Command::Written { outcome } => self.written(outcome),
            Command::Placed {
                build,
                key_ids,
                placement,
            } => self.placed(build, key_ids, placement),
            Command::ReplicaFailed { id, handle, reason } => {
                self.replica_failed(id, &handle, reason);
            }
            Command::Supervisor(SupervisorEvent::Exited { handle, detail }) => {
                let id = self
                    .replicas
                    .values()
                    .find(|b| b.handle == handle)
                    .map(|b| b.id);
                if let Some(id) = id {
                    self.replica_failed(id, &handle, format!("exited ({detail})"));
                }
            }
            Command::Respawn { id } => self.respawn(id),
            Command::Supervisor(SupervisorEvent::Members { listed_at, members }) => {
                self.membership(listed_at, members);
            }
            Command::Settled { ids } => {
                let now = Instant::now();
                for id in ids {
                    if let Some(at) = self.local_changes.get_mut(&id) {
                        *at = Some(now);
                    }
                }
            }
            Command::Resolved {
                id,
                handle,
                address,
            } => self.resolved(id, &handle, address),
            Command::Started { spec, result } => {
                if self.started(spec, result) {
                    self.write_back(None);
                }
            }
            Command::Shutdown { reply } => {
                self.launcher.supervisor.stop_all().await;
                let _ = reply.send(());
                return false;
            }
        }
        true
    }

    /// What `/rep` lists: replicas in the ring and backends by address that are down, in
    /// server-id order. From the controller's state, which a large table being built may not
    /// have published yet.
    fn hostnames(&self) -> Vec<String> {
        let mut listed: Vec<(u64, &str)> = self
            .replicas
            .values()
            .map(|b| (b.id, b.hostname.as_str()))
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
        PlacementKey::new(
            self.balancer,
            &self.hash,
            self.replicas.keys().copied().collect(),
        )
    }

    /// Publish the current replica set as a new snapshot. The table is built here when it is
    /// cheap (the assignment's 512 slots take microseconds). A costly one — rendezvous over
    /// millions of slots after a change of parameters takes seconds — is built on a blocking
    /// thread; until it is ready, replicas that leave or join are published at once with the
    /// algorithm and hash requests use now (when that is cheap), so failover never waits for a
    /// build, and the new parameters take effect when their table is ready.
    fn publish(&mut self) {
        let wanted = self.wanted_placement();
        if self.placed.as_ref() == Some(&wanted) {
            let placement = self.shared.snapshot.load().placement.clone();
            self.store(placement);
            return;
        }
        let current = self.shared.snapshot.load_full();
        let cost = self
            .balancer
            .rebuild_cost(&current.placement, &self.hash, &wanted.ids);
        if cost <= INLINE_BUILD_COST || !self.running {
            let built =
                self.balancer
                    .place_from(&current.placement, Arc::clone(&self.hash), &wanted.ids);
            match built {
                Ok(placement) => {
                    self.store(placement);
                    self.placed = Some(wanted);
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
        let interim = PlacementKey::new(interim_balancer, &interim_hash, wanted.ids.clone());
        let interim_cost =
            interim_balancer.rebuild_cost(&current.placement, &interim_hash, &wanted.ids);
        let rebuilt = (interim != wanted && interim_cost <= INLINE_BUILD_COST)
            .then(|| interim_balancer.place_from(&current.placement, interim_hash, &wanted.ids))
            .and_then(Result::ok);
        match rebuilt {
            Some(placement) => {
                self.store(placement);
                self.placed = Some(interim);
            }
            None => self.shared.snapshot.store(Arc::new(Snapshot {
                placement: current.placement.clone(),
                backends: current.backends.clone(),
                vacancies: self.vacancies.values().cloned().collect(),
                key: self.key.clone(),
                bounded_load: self.bounded_load,
            })),
        }
        if self.building.is_none() {
            self.build(wanted.ids, Base::Published(current));
        }
    }

    /// Build the table for `ids` with the wanted balancer and hash on a blocking thread, from
    /// `base` (rendezvous moves only what must move); the result comes back as
    /// [`Command::Placed`].
    fn build(&mut self, ids: Vec<u64>, base: Base) {
        self.builds += 1;
        let build = self.builds;
        self.building = Some(build);
        let balancer = self.balancer;
        let hash = Arc::clone(&self.hash);
        tracing::info!(
            algorithm = %balancer,
            slots = balancer.slots(),
            replicas = ids.len(),
            "building a large table off the controller; requests keep the current one meanwhile"
        );
        let commands = self.commands.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let key_ids = ids.clone();
            let placement = tokio::task::spawn_blocking(move || {
                let base = match &base {
                    Base::Published(snapshot) => &snapshot.placement,
                    Base::Built(placement) => &**placement,
                };
                balancer
                    .place_from(base, hash, &ids)
                    .map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(format!("the build failed: {e}")));
            tracing::info!(
                took_ms = started.elapsed().as_millis() as u64,
                "large table built"
            );
            commands.send(Command::Placed {
                build,
                key_ids,
                placement: placement.map(Box::new),
            });
        });
    }

    /// Store a snapshot of the current replicas with `placement` (built for them).
    fn store(&self, placement: Placement) {
        let backends: Vec<Arc<Backend>> = self.replicas.values().cloned().collect();
        for backend in &backends {
            backend
                .metrics
                .get_or_init(|| self.shared.metrics.replica(&backend.hostname));
        }
        self.shared.snapshot.store(Arc::new(Snapshot {
            placement,
            backends,
            vacancies: self.vacancies.values().cloned().collect(),
            key: self.key.clone(),
            bounded_load: self.bounded_load,
        }));
    }

    /// A large table was built off the controller for the server ids `key_ids` (with the
    /// balancer and hash of that moment). Published if the state still wants it; otherwise the
    /// state now is built from it (for rendezvous, moving only what changed meanwhile).
    fn placed(&mut self, build: u64, key_ids: Vec<u64>, placement: Result<Box<Placement>, String>) {
        if self.building != Some(build) {
            return;
        }
        self.building = None;
        let wanted = self.wanted_placement();
        match placement {
            Ok(placement) => {
                let built = PlacementKey::new(placement.balancer(), placement.hash(), key_ids);
                if built == wanted {
                    self.store(*placement);
                    self.placed = Some(wanted);
                } else if built.balancer == wanted.balancer && built.hash == wanted.hash {
                    // Replicas changed meanwhile (they are published with the previous
                    // parameters until then): bring this table up to date.
                    self.build(wanted.ids, Base::Built(placement));
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

    fn update_config_status(&self, change: impl FnOnce(&mut ConfigStatus)) {
        let mut status = ConfigStatus::clone(&self.shared.config.load());
        change(&mut status);
        self.shared.config.store(Arc::new(status));
    }

    /// Write the replica list (running replicas and vacancies) back to the file, if there is
    /// one, off the controller; `done` is told when that happened (or failed). A save of the
    /// file not applied yet is read and applied first, so the write never puts the controller's
    /// replica list over the user's edit.
    fn write_back(&mut self, done: Option<oneshot::Sender<()>>) {
        let Some(file) = &mut self.file else {
            if let Some(done) = done {
                let _ = done.send(());
            }
            return;
        };
        file.write_due = true;
        file.waiters.extend(done);
        self.kick_file();
    }

    /// Read the followed file off the controller (a save, or SIGHUP when `hangup`); its
    /// result comes back as [`Command::FileRead`].
    fn read_file(&mut self, hangup: bool) {
        let Some(file) = &mut self.file else {
            if hangup {
                let source = self.shared.config.load().path.clone();
                tracing::info!(%source, "no configuration file is followed; nothing to re-read");
            }
            return;
        };
        file.read_again = Some(file.read_again.unwrap_or(false) || hangup);
        self.kick_file();
    }

    /// Start the file's next I/O if none runs: a read when one is asked for (saves are applied
    /// before anything is written), else a write-back when one is due. One at a time, so a
    /// write-back never races a read of the file and the text last applied or written is
    /// always known.
    fn kick_file(&mut self) {
        let entries = self.entries();
        let Some(file) = &mut self.file else {
            return;
        };
        if file.busy {
            return;
        }
        let commands = self.commands.clone();
        let path = file.path.clone();
        let last_text = file.last_text.clone();
        if let Some(hangup) = file.read_again.take() {
            file.busy = true;
            let dirs = self.startup.plugin_dirs();
            tokio::spawn(async move {
                let work = tokio::task::spawn_blocking(move || {
                    file::read_and_check(&path, &last_text, &dirs)
                });
                let read = match tokio::time::timeout(file::READ_LIMIT, work).await {
                    Ok(Ok(read)) => read,
                    Ok(Err(e)) => FileRead::Refused {
                        text: None,
                        message: format!("internal error while checking the file: {e}"),
                    },
                    Err(_) => FileRead::Refused {
                        text: None,
                        message: format!(
                            "reading and checking the file took over {} s; keeping the running configuration",
                            file::READ_LIMIT.as_secs()
                        ),
                    },
                };
                commands.send(Command::FileRead { read, hangup });
            });
        } else if file.write_due {
            file.write_due = false;
            file.busy = true;
            let waiters = std::mem::take(&mut file.waiters);
            let listed: BTreeMap<u64, String> = entries
                .iter()
                .map(|(id, hostname, _)| (*id, hostname.clone()))
                .collect();
            tokio::spawn(async move {
                let work = tokio::task::spawn_blocking(move || {
                    file::write_back(&path, &last_text, &entries)
                });
                let outcome = match tokio::time::timeout(file::READ_LIMIT, work).await {
                    Ok(Ok(outcome)) => outcome,
                    Ok(Err(e)) => WriteOutcome::Failed(format!(
                        "internal error while writing the file back: {e}"
                    )),
                    Err(_) => WriteOutcome::Failed(format!(
                        "writing the file back took over {} s",
                        file::READ_LIMIT.as_secs()
                    )),
                };
                // The waiters learn of it once the controller has taken the outcome in.
                commands.send(Command::Written {
                    outcome: (outcome, waiters, listed),
                });
            });
        }
    }

    /// The replica list as the file should hold it: running replicas and vacancies by id.
    fn entries(&self) -> Vec<OwnedEntry> {
        let mut entries: Vec<OwnedEntry> = self
            .replicas
            .values()
            .map(|b| {
                (
                    b.id,
                    b.hostname.clone(),
                    address_of(&b.handle).map(str::to_owned),
                )
            })
            .chain(
                self.vacancies
                    .values()
                    .map(|v| (v.id, v.hostname.clone(), v.address.clone())),
            )
            .collect();
        entries.sort_unstable();
        entries
    }

    /// A write-back ended.
    fn written(
        &mut self,
        (outcome, waiters, listed): (
            WriteOutcome,
            Vec<oneshot::Sender<()>>,
            BTreeMap<u64, String>,
        ),
    ) {
        let Some(file) = &mut self.file else {
            return;
        };
        file.busy = false;
        let error = match outcome {
            WriteOutcome::Done { before, written } => {
                // Shared membership: the file lists exactly these now, the base the next save
                // is compared with.
                self.file_base = listed;
                if before == file.last_text {
                    file.last_text = written;
                }
                None
            }
            WriteOutcome::SaveFirst => {
                // Apply the save, then write again (with the waiters still waiting).
                file.waiters.extend(waiters);
                file.write_due = true;
                file.read_again.get_or_insert(false);
                self.kick_file();
                return;
            }
            WriteOutcome::Failed(message) => {
                tracing::error!("{message}");
                Some(Issue::now(message))
            }
        };
        self.update_config_status(|s| s.write_error = error);
        for waiter in waiters {
            let _ = waiter.send(());
        }
        self.kick_file();
    }

    /// A read of the followed file ended: apply it, or say why not and keep what runs.
    fn file_read(&mut self, read: FileRead, hangup: bool) {
        let Some(file) = &mut self.file else {
            return;
        };
        file.busy = false;
        let path = file.path.display().to_string();
        match read {
            FileRead::Unchanged => {
                if hangup {
                    tracing::info!(%path, "configuration unchanged");
                    self.resolve_again();
                    self.shared.metrics.reload(true);
                }
            }
            FileRead::Refused { text, message } => {
                if let Some(text) = text {
                    file.last_text = text;
                }
                tracing::error!("{message}; keeping the running configuration");
                self.update_config_status(|s| s.last_error = Some(Issue::now(message)));
                self.shared.metrics.reload(false);
            }
            FileRead::Valid { text, config, hash } => {
                file.last_text = text;
                super::failpoint::hit("apply");
                self.apply(*config, hash);
                self.shared.metrics.reload(true);
            }
        }
        self.kick_file();
    }

    /// The replica set as plain data, for the planning functions in [`super::reconcile`].
    fn members(&self) -> Members {
        Members {
            running: self
                .replicas
                .values()
                .map(|b| (b.id, b.hostname.clone()))
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
                .filter_map(|b| Some((b.id, address_of(&b.handle)?.to_owned())))
                .chain(
                    self.vacancies
                        .values()
                        .filter_map(|v| Some((v.id, v.address.clone()?))),
                )
                .collect(),
        }
    }

    /// `/add`: reserve ids and names, and start the replicas on a task of their own, which
    /// reports back with [`Command::Added`].
    fn add(&mut self, request: ScaleRequest, reply: oneshot::Sender<ScaleReply>, retries: u32) {
        if self.shared_membership && !request.addresses.is_empty() {
            self.shared.metrics.reload(false);
            let kind = self.launcher.supervisor.kind();
            let _ = reply.send(Err(ControlError::NoAddresses(kind)));
            return;
        }
        let specs = match plan_add(
            &self.members(),
            &request,
            &self.balancer,
            &self.hash,
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
        for spec in &specs {
            self.adding.insert(spec.id, spec.hostname.clone());
        }
        self.changing(specs.iter().map(|s| s.id));
        let launcher = self.launcher.clone();
        let health = self.settings();
        let deadline = Duration::from_millis(health.start_timeout_ms);
        let commands = self.commands.clone();
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
            commands.send(Command::Added {
                specs,
                results,
                reply,
                request,
                retries,
            });
        });
    }

    /// The replicas of an `/add` started (or not): all join the ring, or none does.
    fn added(
        &mut self,
        specs: Vec<ReplicaSpec>,
        results: Vec<Result<Arc<Backend>, LaunchError>>,
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
            let started: Vec<Handle> = results
                .into_iter()
                .flatten()
                .map(|b| b.handle.clone())
                .collect();
            let launcher = self.launcher.clone();
            let (stopped, settled) = oneshot::channel();
            tokio::spawn(async move {
                for handle in started {
                    let _ = launcher.stop(&handle).await;
                }
                let _ = stopped.send(());
            });
            self.settle_after(specs.iter().map(|s| s.id).collect(), settled);
            return Err(ControlError::StartFailed(reasons));
        }
        if self.shared_membership {
            let now = Instant::now();
            for spec in &specs {
                self.local_changes.insert(spec.id, Some(now));
            }
        }
        for backend in results.into_iter().flatten() {
            tracing::info!(hostname = %backend.hostname, id = backend.id, "replica added");
            self.replicas.insert(backend.id, backend);
        }
        self.publish();
        Ok(self.hostnames())
    }

    /// Take replicas out of the ring at once; drain and stop them on another task, which answers
    /// once they are stopped and the change is written back. When anything was removed, returns
    /// what to tell that task when the write-back is done.
    fn remove(
        &mut self,
        request: ScaleRequest,
        reply: oneshot::Sender<ScaleReply>,
    ) -> Option<oneshot::Sender<()>> {
        let victims = match plan_remove(&self.members(), &request, &mut self.rng) {
            Ok(victims) => victims,
            Err(e) => {
                let _ = reply.send(Err(e));
                return None;
            }
        };
        let removed: Vec<Arc<Backend>> = victims
            .iter()
            .filter_map(|id| self.replicas.remove(id))
            .collect();
        self.changing(victims.iter().copied());
        self.publish();
        let remaining = self.hostnames();
        let done = self.retire(removed, true);
        let (stopped, settled) = oneshot::channel();
        self.settle_after(victims.clone(), settled);
        let (written, write_back) = oneshot::channel();
        let commands = self.commands.clone();
        tokio::spawn(async move {
            let failed = done.await.unwrap_or_default();
            let _ = stopped.send(());
            let _ = write_back.await;
            if failed.is_empty() {
                let _ = reply.send(Ok(remaining));
            } else {
                // Not removed after all (the engine refused or did not answer): the controller
                // takes them back and the answer says why.
                commands.send(Command::NotRemoved { failed, reply });
            }
        });
        Some(written)
    }

    /// Replicas an `/rm` took out of the ring whose stop failed (the container engine refused
    /// or did not answer): they still run, so they go back into the ring (unless their id was
    /// filled meanwhile, e.g. by a listing that still shows the service) and the `/rm` fails
    /// with the engine's reason. Nothing is reported removed that was not.
    fn not_removed(
        &mut self,
        failed: Vec<(Arc<Backend>, String)>,
        reply: oneshot::Sender<ScaleReply>,
    ) {
        let mut reasons = Vec::new();
        let mut restored = false;
        let now = Instant::now();
        for (backend, reason) in failed {
            reasons.push(format!(
                "could not remove '{}': {reason}; it is still a replica",
                backend.hostname
            ));
            let id = backend.id;
            if self.shared_membership {
                self.local_changes.insert(id, Some(now));
            }
            let free = !self.replicas.contains_key(&id)
                && !self.vacancies.contains_key(&id)
                && !self.adding.contains_key(&id);
            if free {
                tracing::warn!(hostname = %backend.hostname, id, "replica not removed; back in the ring");
                self.replicas.insert(id, backend);
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

    /// Drain replicas already out of the ring and, with `stop`, stop them, on another task.
    /// The returned receiver completes when they are drained and stopped, with the ones whose
    /// stop failed and why. Without `stop` they are left to run: the same replica at a new
    /// address, or a service that failed or was removed elsewhere (shared membership: the
    /// runtime owns it).
    fn retire(&self, removed: Vec<Arc<Backend>>, stop: bool) -> oneshot::Receiver<Retired> {
        let launcher = self.launcher.clone();
        let drain = Duration::from_millis(self.settings().drain_timeout_ms);
        let (done, finished) = oneshot::channel();
        tokio::spawn(async move {
            let stops = removed.into_iter().map(|backend| {
                let launcher = &launcher;
                async move {
                    drain_requests(&backend, drain).await;
                    if !stop {
                        return None;
                    }
                    // A backend by address is left running: lb did not start it.
                    if let Err(e) = launcher.stop(&backend.handle).await {
                        tracing::error!(hostname = %backend.hostname, id = backend.id, error = %e, "could not remove the replica; it may still run");
                        return Some((backend, e.to_string()));
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

    fn replica_failed(&mut self, id: u64, handle: &Handle, reason: String) {
        let current = self.replicas.get(&id).is_some_and(|b| &b.handle == handle);
        if !current {
            return; // an earlier incarnation, or already removed
        }
        let dead = self.replicas.remove(&id).expect("checked above");
        let address = address_of(&dead.handle).map(str::to_owned);
        if self.shared_membership || address.is_some() {
            // Not replaced by lb: a backend by address is not ours, and Swarm restarts its own
            // tasks (at a new address). Out of the ring until it answers again, then back with
            // the same id (hence the same slots), name and pipelining.
            if self.shared_membership {
                tracing::warn!(hostname = %dead.hostname, id, handle = %dead.handle, %reason, "replica failed; out of the ring until its service's task answers again");
            } else {
                tracing::warn!(hostname = %dead.hostname, id, address = address.as_deref().unwrap_or_default(), %reason, "backend down; out of the ring until it answers again");
            }
            let spec = ReplicaSpec {
                hostname: dead.hostname.clone(),
                id,
                address,
                pipelining: Some(dead.pipelining),
            };
            self.vacancies.insert(
                id,
                vacancy_of(&spec, 0, format!("'{}' {reason}", dead.hostname)),
            );
            self.publish();
            if self.shared_membership {
                // Counted once readers no longer see it in the ring.
                self.shared.metrics.restarted();
            }
            dead.failed
                .store(true, std::sync::atomic::Ordering::Relaxed);
            drop(self.retire(vec![dead], false));
            self.respawn(id);
            return;
        }
        // The assignment gives the replacement a new random hostname; it keeps the server id,
        // so its virtual nodes land on the same slots and no other replica's keys move.
        let hostname = self.members().random_hostname(&[], &mut self.rng);
        tracing::warn!(hostname = %dead.hostname, id, %reason, replacement = %hostname, "replica failed; replacing it");
        let streak = if dead.started.elapsed() < CRASH_WINDOW {
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
    /// [`Command::Started`]. At most one start per id runs at a time.
    fn respawn(&mut self, id: u64) {
        let Some(vacancy) = self.vacancies.get(&id) else {
            return; // filled, or removed from the configuration meanwhile
        };
        if !self.launching.insert(id) {
            return; // already starting; its result fills the vacancy
        }
        let spec = spec_of(vacancy);
        // Shared membership: a service is created only for a seed or a file entry; any other
        // vacancy is a service that exists (or existed) and is found again.
        let find = self.shared_membership && !self.to_create.contains(&id);
        let launcher = self.launcher.clone();
        let health = self.settings();
        let deadline = Duration::from_millis(health.start_timeout_ms);
        let commands = self.commands.clone();
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
            commands.send(Command::Started { spec, result });
        });
    }

    /// A vacancy's replica started (or not). Returns whether the replica set changed.
    fn started(&mut self, spec: ReplicaSpec, result: Result<Arc<Backend>, LaunchError>) -> bool {
        self.launching.remove(&spec.id);
        let wanted = self
            .vacancies
            .get(&spec.id)
            .is_some_and(|v| v.hostname == spec.hostname && v.address == spec.address);
        match result {
            Ok(backend) if wanted => {
                self.vacancies.remove(&spec.id);
                if self.to_create.remove(&spec.id) {
                    self.local_changes.insert(spec.id, Some(Instant::now()));
                }
                if backend.is_address() {
                    tracing::info!(hostname = %backend.hostname, id = spec.id, address = %backend.addr, "backend healthy; in the ring");
                } else {
                    tracing::info!(hostname = %backend.hostname, id = spec.id, "vacancy filled");
                }
                self.replicas.insert(spec.id, backend);
                self.publish();
                true
            }
            Ok(backend) => {
                // The configuration changed while it started: it is not wanted any more.
                // Shared membership: its service is the runtime's (removed elsewhere, or
                // listed under another name now); only a service this lb created is removed.
                let stop = !self.shared_membership || self.to_create.contains(&spec.id);
                tracing::info!(hostname = %backend.hostname, id = spec.id, stop, "started replica no longer wanted");
                drop(self.retire(vec![backend], stop));
                // The id may be vacant under another name now.
                self.respawn(spec.id);
                false
            }
            Err(LaunchError::Supervisor(SupervisorError::Taken { by, .. }))
                if wanted && self.to_create.remove(&spec.id) =>
            {
                // Another lb (or a foreign service) holds the id in the swarm: the swarm wins.
                // The next listing replaces this vacancy with whatever holds the id, or drops it.
                tracing::warn!(hostname = %spec.hostname, id = spec.id, %by, "server id taken in the swarm; following the swarm instead of this entry");
                self.local_changes.insert(spec.id, Some(Instant::now()));
                let vacancy = self.vacancies.get_mut(&spec.id).expect("checked above");
                vacancy.reason = format!("server id {} is taken by {by}", spec.id);
                self.publish();
                false
            }
            Err(reason)
                if wanted
                    && (spec.address.is_some() || self.shared_membership)
                    && !self.to_create.contains(&spec.id) =>
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

    fn schedule_respawn(&self, id: u64, failed_attempts: u32) {
        let delay = Duration::from_millis(100)
            .saturating_mul(1 << failed_attempts.min(16))
            .min(MAX_BACKOFF);
        self.schedule(id, delay);
    }

    /// Try to fill vacancy `id` again after `delay`.
    fn schedule(&self, id: u64, delay: Duration) {
        let commands = self.commands.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            commands.send(Command::Respawn { id });
        });
    }

    /// Resolve the names of the backends by address in the ring again, on a task of its own
    /// (on every reload: a saved file or SIGHUP); one whose name now gives another address is
    /// switched over by [`Command::Resolved`].
    fn resolve_again(&self) {
        let backends: Vec<(u64, String, Handle, String)> = self
            .replicas
            .values()
            .filter_map(|b| {
                let configured = address_of(&b.handle)?;
                // An IP literal resolves to itself.
                (configured.parse::<std::net::SocketAddr>().is_err())
                    .then(|| (b.id, b.hostname.clone(), b.handle.clone(), b.addr.clone()))
            })
            .collect();
        if backends.is_empty() {
            return;
        }
        let commands = self.commands.clone();
        tokio::spawn(async move {
            for (id, hostname, handle, current) in backends {
                let Handle::Address(configured) = &handle else {
                    continue;
                };
                match launch::resolve(&hostname, configured).await {
                    Ok(address) if address != current => commands.send(Command::Resolved {
                        id,
                        handle,
                        address,
                    }),
                    Ok(_) => {}
                    // Keep the address that works; its health checks say if it stops working.
                    Err(e) => {
                        tracing::warn!(error = %e, "resolving a backend again failed; keeping its address")
                    }
                }
            }
        });
    }

    /// A backend by address's name resolves to `address` now: the same backend (id, name,
    /// slots) at the new address replaces it in one snapshot; requests in flight to the old one
    /// finish there.
    fn resolved(&mut self, id: u64, handle: &Handle, address: String) {
        let Some(old) = self.replicas.get(&id).filter(|b| &b.handle == handle) else {
            return; // gone or replaced meanwhile
        };
        if old.addr == address {
            return;
        }
        tracing::info!(hostname = %old.hostname, id, from = %old.addr, to = %address, "backend's name resolves to another address; moved");
        let pipelining = old.pipelining;
        if let Some(old) = self.swap(id, address, pipelining) {
            self.publish();
            drop(self.retire(vec![old], false));
        }
    }

    /// Replace the backend with server id `id` by the same backend (name, id, handle) at
    /// `address` with `pipelining`; returns the old one, for the caller to retire once it has
    /// published (requests in flight to it finish there).
    fn swap(&mut self, id: u64, address: String, pipelining: bool) -> Option<Arc<Backend>> {
        let old = self.replicas.get(&id)?;
        let new = Backend::new(old.hostname.clone(), id, address, old.handle.clone())?;
        self.replicas
            .insert(id, Arc::new(new.with_pipelining(pipelining)))
    }

    /// Make the running state match a validated configuration, with its hash resolved.
    fn apply(&mut self, config: Config, hash: Arc<dyn RingHash>) {
        let members = self.members();
        let mut plan = reconcile(&members, &config, &self.startup);
        self.only_what_the_save_changed(&mut plan, &config);
        for change in changes(&self.applied, &config, &members, &plan) {
            tracing::info!("configuration change: {change}");
        }
        for field in &plan.needs_restart {
            tracing::warn!(field, "changed in the file; takes effect after a restart");
        }
        self.health.send_replace(config.health.clone());
        let removed: Vec<Arc<Backend>> = plan
            .stop
            .iter()
            .filter_map(|id| self.replicas.remove(id))
            .collect();
        let mut forgotten = Vec::new();
        for id in &plan.forget {
            if let Some(vacancy) = self.vacancies.remove(id) {
                forgotten.push(spec_of(&vacancy));
            }
            self.to_create.remove(id);
        }
        if self.shared_membership && !forgotten.is_empty() {
            // A vacancy's service (a task that does not run) is removed too, or the next
            // listing would bring the entry back.
            self.changing(forgotten.iter().map(|s| s.id));
            let ids = forgotten.iter().map(|s| s.id).collect();
            let launcher = self.launcher.clone();
            let (removed, settled) = oneshot::channel();
            tokio::spawn(async move {
                for spec in forgotten {
                    if let Err(e) = launcher.supervisor.remove_replica(&spec).await {
                        tracing::warn!(hostname = %spec.hostname, id = spec.id, error = %e, "cannot remove the service of a replica removed from the file");
                    }
                }
                let _ = removed.send(());
            });
            self.settle_after(ids, settled);
        }

        // A kept entry whose `pipelining` changed: the same backend with the new setting.
        let mut swapped = Vec::new();
        for entry in &config.replicas {
            let id = *entry.id.get_ref();
            let change = self.replicas.get(&id).and_then(|b| {
                let wanted = entry.pipelining.unwrap_or(!b.is_address());
                (b.pipelining != wanted).then(|| (b.addr.clone(), wanted))
            });
            if let Some((address, wanted)) = change {
                tracing::info!(hostname = %entry.hostname.get_ref(), id, pipelining = wanted, "configuration change: pipelining of a replica");
                swapped.extend(self.swap(id, address, wanted));
            }
        }
        // Ring parameters and hash swap with the remaining replicas in one store; new replicas
        // join only after their first heartbeat.
        self.balancer = plan.balancer;
        self.hash = hash;
        self.key = config.ring.key_rule();
        self.bounded_load = config.ring.bounded_load();
        self.publish();
        for backend in &removed {
            tracing::info!(hostname = %backend.hostname, id = backend.id, "removed by the configuration file");
        }
        let stopped_ids: Vec<u64> = removed.iter().map(|b| b.id).collect();
        self.changing(stopped_ids.iter().copied());
        let stopped = self.retire(removed, true);
        self.settle_after(stopped_ids, stopped);
        // The same replicas with a new setting: nothing to stop.
        drop(self.retire(swapped, false));
        // New replicas are vacancies until their first heartbeat; they start off this loop.
        if self.shared_membership {
            // Entries added to the file become services (a listing from before does not
            // know them yet).
            self.to_create.extend(plan.start.iter().map(|s| s.id));
            self.changing(plan.start.iter().map(|s| s.id));
        }
        for spec in &plan.start {
            let reason = if spec.address.is_some() {
                "waiting for its health checks"
            } else {
                "starting"
            };
            self.vacancies
                .insert(spec.id, vacancy_of(spec, 0, reason.into()));
        }
        for spec in &plan.start {
            self.respawn(spec.id);
        }
        self.publish();
        self.resolve_again();
        tracing::info!("configuration file applied");
        self.applied = config;
        self.update_config_status(|s| {
            s.last_applied = Some(timestamp());
            s.last_error = None;
            s.needs_restart = plan.needs_restart.iter().map(|f| f.to_string()).collect();
        });
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

/// Start the replicas of an `/add`, [`ADD_BATCH`] at a time (each batch within `deadline`):
/// dozens of containers created at once on a small machine would all miss their deadline
/// together. After a batch with a failure nothing more is started (the `/add` fails as a
/// whole, and only what it created is removed), so the results may be fewer than `specs`.
async fn launch_in_batches(
    launcher: &Launcher,
    specs: Vec<ReplicaSpec>,
    health: &HealthSection,
    deadline: Duration,
) -> Vec<Result<Arc<Backend>, LaunchError>> {
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

/// The replica list of a configuration: id → hostname.
fn listed_in(config: &Config) -> BTreeMap<u64, String> {
    config
        .replicas
        .iter()
        .map(|r| (*r.id.get_ref(), r.hostname.get_ref().clone()))
        .collect()
}

/// The configured address of a backend by address.
fn address_of(handle: &Handle) -> Option<&str> {
    match handle {
        Handle::Address(address) => Some(address),
        Handle::Pid(_) | Handle::ContainerId(_) | Handle::SwarmTask { .. } => None,
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
    }
}

/// What to start (or health-check) to fill `vacancy`.
fn spec_of(vacancy: &Vacancy) -> ReplicaSpec {
    ReplicaSpec {
        hostname: vacancy.hostname.clone(),
        id: vacancy.id,
        address: vacancy.address.clone(),
        pipelining: vacancy.pipelining,
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
