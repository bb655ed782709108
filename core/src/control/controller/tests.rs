//! The controller driven without processes, sockets to replicas or Docker: a fake supervisor
//! (starts and stops recorded, failures injected, a shared membership's listing set by the test)
//! and heartbeats that always answer, under paused time (`start_paused`), so backoffs and
//! delays pass at once and are measured exactly.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;

use super::*;
use crate::config::{Config, HealthCheck};
use crate::control::command::ControlError;
use crate::control::probe::ProbeError;
use crate::control::supervisor::{Membership, Started, SupervisorError};

/// An in-memory supervisor.
#[derive(Default)]
struct Fake {
    /// Every start asked for, and when.
    starts: Mutex<Vec<(Instant, ReplicaSpec)>>,
    /// Every stop asked for.
    stops: Mutex<Vec<Handle>>,
    /// How many of the next starts fail.
    failing: AtomicU32,
    /// Numbers the replicas (their pids).
    next: AtomicU32,
    /// `Some`: the runtime holds the replica set (like Swarm), listing these.
    listing: Option<Mutex<Vec<ReplicaSpec>>>,
    /// Every weight set in the runtime ([`Membership::set_weight`]).
    weights_set: Mutex<Vec<ReplicaSpec>>,
}

impl Fake {
    fn shared(listing: Vec<ReplicaSpec>) -> Fake {
        Fake {
            listing: Some(Mutex::new(listing)),
            ..Fake::default()
        }
    }

    fn starts(&self) -> Vec<(Instant, ReplicaSpec)> {
        self.starts.lock().unwrap().clone()
    }

    fn stops(&self) -> Vec<Handle> {
        self.stops.lock().unwrap().clone()
    }

    fn list(&self, members: Vec<ReplicaSpec>) {
        *self
            .listing
            .as_ref()
            .expect("a shared fake")
            .lock()
            .unwrap() = members;
    }
}

#[async_trait]
impl Supervisor for Fake {
    fn kind(&self) -> &'static str {
        "fake"
    }

    async fn start(&self, spec: &ReplicaSpec) -> Result<Started, SupervisorError> {
        self.starts
            .lock()
            .unwrap()
            .push((Instant::now(), spec.clone()));
        let fail = self
            .failing
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            return Err(SupervisorError::Start {
                hostname: spec.hostname.clone(),
                reason: "injected failure".into(),
            });
        }
        let pid = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Started {
            spec: spec.clone(),
            address: format!("127.0.0.1:{}", 10_000 + pid),
            handle: Handle::Pid(pid),
        })
    }

    async fn stop(&self, handle: &Handle) -> Result<(), SupervisorError> {
        self.stops.lock().unwrap().push(handle.clone());
        Ok(())
    }

    async fn stop_all(&self) {}

    fn membership(&self) -> Option<&dyn Membership> {
        self.listing.as_ref().map(|_| self as &dyn Membership)
    }
}

#[async_trait]
impl Membership for Fake {
    async fn members(&self) -> Result<Vec<ReplicaSpec>, SupervisorError> {
        Ok(self.listing.as_ref().unwrap().lock().unwrap().clone())
    }

    async fn start_new(&self, spec: &ReplicaSpec) -> Result<Started, SupervisorError> {
        self.start(spec).await
    }

    async fn remove_replica(&self, _spec: &ReplicaSpec) -> Result<(), SupervisorError> {
        Ok(())
    }

    async fn set_weight(&self, spec: &ReplicaSpec) -> Result<(), SupervisorError> {
        self.weights_set.lock().unwrap().push(spec.clone());
        for listed in self.listing.as_ref().unwrap().lock().unwrap().iter_mut() {
            if listed.same_replica(spec) {
                listed.weight = spec.weight;
            }
        }
        Ok(())
    }

    async fn locate(&self, spec: &ReplicaSpec) -> Result<Started, SupervisorError> {
        let listed = self.members().await?.iter().any(|l| l.same_replica(spec));
        if !listed {
            return Err(SupervisorError::Gone {
                hostname: spec.hostname.clone(),
                id: spec.id,
            });
        }
        Ok(Started {
            spec: spec.clone(),
            address: format!("127.0.0.1:{}", 20_000 + spec.id),
            handle: Handle::SwarmTask {
                service: format!("service-{}", spec.id),
                task: format!("task-{}", spec.id),
                container_id: format!("container-{}", spec.id),
            },
        })
    }
}

/// Heartbeats every replica answers at once.
struct Answering;

#[async_trait]
impl Heartbeats for Answering {
    async fn beat(&self, _: &str, _: HealthCheck<'_>, _: Duration) -> Result<(), ProbeError> {
        Ok(())
    }

    async fn wait_alive(&self, _: &str, _: HealthCheck<'_>, _: Duration) -> Result<(), ProbeError> {
        Ok(())
    }

    #[allow(clippy::too_many_arguments)] // the checks' settings, as `Prober::wait_healthy`
    async fn wait_healthy(
        &self,
        _: &str,
        _: HealthCheck<'_>,
        _: u32,
        _: Duration,
        _: Duration,
        _: Duration,
        _: Option<Arc<crate::config::BackendTls>>,
    ) -> Result<(), ProbeError> {
        Ok(())
    }
}

/// `lb.toml` text with replicas `Server <id>` for `ids`.
fn text_with(ids: &[u64]) -> String {
    ids.iter()
        .map(|id| format!("[[replicas]]\nhostname = \"Server {id}\"\nid = {id}\n"))
        .collect()
}

/// A controller over `fake`, its shared state and its handle.
struct Rig {
    ctl: Controller,
    shared: Arc<Shared>,
    handle: ControllerHandle,
    fake: Arc<Fake>,
}

impl Rig {
    /// A controller for the configuration `text` (followed at `file`, if given), filled.
    async fn start(text: &str, file: Option<PathBuf>, fake: Fake) -> Rig {
        let config = Config::parse(text).expect("a valid configuration");
        let hash = config.resolve_hash().expect("the built-in hash");
        let loaded = Loaded {
            config,
            source: file.map_or(Source::Embedded, Source::File),
            text: text.to_owned(),
            created_from: None,
        };
        let meta = Meta {
            listening: Arc::new(arc_swap::ArcSwap::from_pointee(crate::state::Listening {
                listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 1)),
                admin: None,
                tls: None,
            })),
            supervisor: "fake",
            started: std::time::Instant::now(),
            started_at: std::time::SystemTime::now(),
            generation: 1,
            workers: 1,
            base_dir: std::path::PathBuf::new(),
        };
        let fake = Arc::new(fake);
        let supervisor: Arc<dyn Supervisor> = fake.clone();
        let (mut ctl, shared, handle) =
            Controller::with_heartbeats(&loaded, hash, supervisor, meta, Arc::new(Answering))
                .expect("a controller");
        ctl.start().await;
        ctl.running = true;
        Rig {
            ctl,
            shared,
            handle,
            fake,
        }
    }

    /// The server ids in the published ring.
    fn ring(&self) -> Vec<u64> {
        let snapshot = self.shared.snapshot.load();
        snapshot.backends.iter().map(|b| b.id).collect()
    }

    /// Run the controller's loop until `done` holds, within a minute of (paused) time.
    async fn until(&mut self, what: &str, mut done: impl FnMut(&Rig) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done(self) {
            assert!(Instant::now() < deadline, "not within a minute: {what}");
            let next = tokio::time::timeout(Duration::from_millis(10), self.ctl.next()).await;
            if let Ok(Some(message)) = next {
                assert!(self.ctl.step(message).await, "the controller stopped");
            }
        }
    }

    /// Send the command `make` builds and run the loop until it is answered.
    async fn ask(
        &mut self,
        make: impl FnOnce(oneshot::Sender<ScaleReply>) -> Command,
    ) -> ScaleReply {
        let (reply, mut answer) = oneshot::channel();
        self.handle.send(make(reply));
        let mut got = None;
        self.until("an answer", |_| {
            if got.is_none() {
                got = answer.try_recv().ok();
            }
            got.is_some()
        })
        .await;
        got.expect("answered")
    }

    async fn add(&mut self, n: usize, hostnames: &[&str]) -> ScaleReply {
        let request = scale_request(n, hostnames);
        self.ask(|reply| Command::Add { request, reply }).await
    }

    async fn remove(&mut self, n: usize, hostnames: &[&str]) -> ScaleReply {
        let request = scale_request(n, hostnames);
        self.ask(|reply| Command::Remove { request, reply }).await
    }
}

fn scale_request(n: usize, hostnames: &[&str]) -> ScaleRequest {
    ScaleRequest {
        n,
        hostnames: hostnames.iter().map(|h| (*h).to_owned()).collect(),
        addresses: Vec::new(),
        tls: Vec::new(),
        protocols: Vec::new(),
        weights: Vec::new(),
    }
}

#[tokio::test(start_paused = true)]
async fn startup_fills_every_configured_replica() {
    let rig = Rig::start(&text_with(&[1, 2, 3]), None, Fake::default()).await;
    assert_eq!(rig.ring(), [1, 2, 3]);
    let started: Vec<u64> = rig.fake.starts().iter().map(|(_, s)| s.id).collect();
    assert_eq!(started, [1, 2, 3]);
    assert!(rig.ctl.vacancies.is_empty() && rig.ctl.membership.is_none());
    let snapshot = rig.shared.snapshot.load();
    assert_eq!(snapshot.backends[0].hostname, "Server 1");
    assert!(!snapshot.backends[0].is_address());
    assert_eq!(snapshot.backends[0].described.pid, Some(1));
}

#[tokio::test(start_paused = true)]
async fn add_and_remove_change_the_ring_and_refusals_change_nothing() {
    let mut rig = Rig::start(&text_with(&[1, 2]), None, Fake::default()).await;
    let added = rig.add(2, &["extra"]).await.expect("added");
    assert_eq!(added, ["Server 1", "Server 2", "extra", "Server 4"]);
    assert_eq!(rig.ring(), [1, 2, 3, 4]);

    let remaining = rig.remove(1, &["Server 2"]).await.expect("removed");
    assert_eq!(remaining, ["Server 1", "extra", "Server 4"]);
    assert_eq!(rig.ring(), [1, 3, 4]);
    // Answered once it is stopped.
    assert_eq!(rig.fake.stops(), [Handle::Pid(2)]);

    let starts = rig.fake.starts().len();
    let refused = rig.remove(1, &["nobody"]).await;
    assert!(
        matches!(refused, Err(ControlError::UnknownName { .. })),
        "{refused:?}"
    );
    let refused = rig.add(1, &["extra"]).await;
    assert_eq!(refused, Err(ControlError::NameTaken("extra".into())));
    let refused = rig.remove(4, &[]).await;
    assert_eq!(refused, Err(ControlError::TooFew { wanted: 4, have: 3 }));
    assert_eq!(rig.ring(), [1, 3, 4]);
    assert_eq!(rig.fake.starts().len(), starts);
    assert_eq!(rig.fake.stops().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_add_whose_start_fails_adds_nothing_and_stops_what_it_started() {
    let mut rig = Rig::start(&text_with(&[1]), None, Fake::default()).await;
    rig.fake.failing.store(1, Ordering::SeqCst);
    let refused = rig.add(2, &[]).await;
    assert!(
        matches!(&refused, Err(ControlError::StartFailed(reasons)) if reasons.len() == 1),
        "{refused:?}"
    );
    assert_eq!(rig.ring(), [1]);
    rig.until("the started one stopped", |rig| rig.fake.stops().len() == 1)
        .await;
    assert!(rig.ctl.adding.is_empty());
}

/// Each wait is the respawn backoff after that many failed attempts: its base (doubling from
/// 200 ms) plus up to half of it at random. (Paused time: a sleep ends exactly on time.)
fn assert_backoff(waits: &[Duration], failed_attempts: &[u32]) {
    assert_eq!(waits.len(), failed_attempts.len(), "{waits:?}");
    for (wait, attempts) in waits.iter().zip(failed_attempts) {
        let base = Duration::from_millis(200) * 2u32.pow(attempts - 1);
        assert!(
            *wait >= base && *wait <= base.mul_f64(1.5),
            "after {attempts} failed attempts the wait was {wait:?}, not {base:?} + up to half"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_exited_replica_is_replaced_with_growing_backoff_while_starts_fail() {
    let mut rig = Rig::start(&text_with(&[1, 2]), None, Fake::default()).await;
    rig.fake.failing.store(3, Ordering::SeqCst);
    let failed_at = Instant::now();
    rig.handle
        .send(Command::Supervisor(SupervisorEvent::Exited {
            handle: Handle::Pid(1),
            detail: "killed".into(),
        }));
    rig.until("out of the ring", |rig| rig.ring() == [2]).await;
    rig.until("replaced", |rig| rig.ring() == [1, 2]).await;
    // The replacement keeps the id, not the name.
    let snapshot = rig.shared.snapshot.load();
    assert_ne!(snapshot.backends[0].hostname, "Server 1");
    let tries: Vec<Instant> = rig.fake.starts()[2..].iter().map(|(at, _)| *at).collect();
    assert_eq!(tries.len(), 4, "three failed starts, then one that worked");
    assert_eq!(tries[0], failed_at, "the first replacement starts at once");
    // It died within the crash window of its start: its vacancy counts one attempt already,
    // and each failed start doubles the wait.
    let gaps: Vec<Duration> = tries.windows(2).map(|w| w[1] - w[0]).collect();
    assert_backoff(&gaps, &[2, 3, 4]);
    assert_eq!(rig.fake.stops(), [Handle::Pid(1)]);
    assert!(rig.ctl.vacancies.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_replica_that_dies_right_after_starting_again_and_again_backs_off() {
    let mut rig = Rig::start(&text_with(&[1]), None, Fake::default()).await;
    let mut deaths = Vec::new();
    let mut incarnations = Vec::new();
    for round in 0..3u32 {
        let pid = rig.ctl.replicas[&1].handle.clone();
        let incarnation = rig.ctl.replicas[&1].backend.incarnation;
        incarnations.push(incarnation);
        deaths.push(Instant::now());
        rig.handle.send(Command::ReplicaFailed {
            id: 1,
            incarnation,
            reason: "3 heartbeats missed".into(),
        });
        rig.until("replaced", |rig| {
            rig.ctl.replicas.get(&1).is_some_and(|r| r.handle != pid)
        })
        .await;
        assert_eq!(rig.fake.starts().len() as u32, round + 2);
    }
    let starts: Vec<Instant> = rig.fake.starts()[1..].iter().map(|(at, _)| *at).collect();
    let waits: Vec<Duration> = starts.iter().zip(&deaths).map(|(s, d)| *s - *d).collect();
    // The first death is the first of a streak: replaced at once; then 2 and 3 in a row.
    assert_eq!(waits[0], Duration::ZERO);
    assert_backoff(&waits[1..], &[2, 3]);
    // A report about an incarnation that is gone changes nothing.
    rig.handle.send(Command::ReplicaFailed {
        id: 1,
        incarnation: incarnations[0],
        reason: "late".into(),
    });
    let before = rig.fake.starts().len();
    rig.until("the stale report handled", |rig| rig.ctl.rx.is_empty())
        .await;
    assert_eq!(rig.fake.starts().len(), before);
    assert_eq!(rig.ring(), [1]);
}

#[tokio::test(start_paused = true)]
async fn a_saved_file_that_adds_and_removes_replicas_is_carried_out_like_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    let text = text_with(&[1, 2]);
    std::fs::write(&path, &text).unwrap();
    let mut rig = Rig::start(&text, Some(path.clone()), Fake::default()).await;
    assert_eq!(rig.ring(), [1, 2]);

    std::fs::write(&path, text_with(&[1, 3])).unwrap();
    rig.handle.send(Command::FileChanged);
    rig.until("the save applied", |rig| rig.ring() == [1, 3])
        .await;
    rig.until("Server 2 stopped", |rig| {
        rig.fake.stops() == [Handle::Pid(2)]
    })
    .await;
    let last = rig.fake.starts().last().unwrap().1.clone();
    assert_eq!(last, ReplicaSpec::managed("Server 3", 3));

    // And an /add after it is written back to the file.
    rig.add(1, &["api"]).await.expect("added");
    let written = std::fs::read_to_string(&path).unwrap();
    assert!(written.contains("\"api\""), "{written}");
    assert!(!written.contains("Server 2"), "{written}");
}

#[tokio::test(start_paused = true)]
async fn a_shared_membership_follows_listings_but_not_older_than_its_own_changes() {
    let listed = vec![ReplicaSpec::managed("A", 1), ReplicaSpec::managed("B", 2)];
    let mut rig = Rig::start(&text_with(&[1]), None, Fake::shared(listed)).await;
    assert_eq!(rig.ring(), [1, 2], "the swarm's listing is the replica set");
    assert!(rig.fake.starts().is_empty(), "found, not started");

    // A service appears, another vanishes.
    let now = vec![ReplicaSpec::managed("A", 1), ReplicaSpec::managed("C", 3)];
    rig.fake.list(now.clone());
    rig.handle
        .send(Command::Supervisor(SupervisorEvent::Members {
            listed_at: Instant::now(),
            members: now,
        }));
    rig.until("the listing followed", |rig| rig.ring() == [1, 3])
        .await;
    assert!(
        rig.fake.stops().is_empty(),
        "the swarm's services are its own"
    );

    // An /rm done here, then a listing asked for before it settled: the listing does not
    // bring the replica back.
    let before = Instant::now();
    rig.remove(1, &["A"]).await.expect("removed");
    assert_eq!(rig.ring(), [3]);
    let stale = vec![ReplicaSpec::managed("A", 1), ReplicaSpec::managed("C", 3)];
    rig.handle
        .send(Command::Supervisor(SupervisorEvent::Members {
            listed_at: before,
            members: stale,
        }));
    rig.until("the stale listing handled", |rig| rig.ctl.rx.is_empty())
        .await;
    assert_eq!(rig.ring(), [3]);
    assert!(rig.ctl.vacancies.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_save_sets_weights_keeps_those_of_adds_still_starting_and_forgets_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    let text = text_with(&[1, 2]);
    std::fs::write(&path, &text).unwrap();
    let mut rig = Rig::start(&text, Some(path.clone()), Fake::default()).await;
    // An /add still starting id 9 (weight 3; not in the file until it is written back), and a
    // weight left from an id no longer listed.
    rig.ctl.adding.insert(9, "S9".into());
    rig.ctl.set_weight(9, 3);
    rig.ctl.set_weight(7, 5);
    std::fs::write(&path, format!("{text}weight = 2\n")).unwrap();
    rig.handle.send(Command::FileChanged);
    rig.until("the saved weight applied", |rig| rig.ctl.weight_of(2) == 2)
        .await;
    assert_eq!((rig.ctl.weight_of(9), rig.ctl.weight_of(7)), (3, 1));
    rig.until("the ring re-placed", |rig| {
        rig.shared.snapshot.load().placement.weights() == [1, 2]
    })
    .await;
    assert_eq!(rig.ring(), [1, 2]);
}

/// Swarm's weights: a listed weight (the service's label) re-places the ring unless the ring
/// has no room for it; a save that changes a weight sets it in the runtime for the replica it
/// keeps, and only that one.
#[tokio::test(start_paused = true)]
async fn a_shared_membership_follows_listed_weights_and_a_save_sets_them_in_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    let text = text_with(&[1, 2]);
    std::fs::write(&path, &text).unwrap();
    let listed = |w1: u32, w2: u32| {
        vec![
            ReplicaSpec::managed("Server 1", 1).weighing(w1),
            ReplicaSpec::managed("Server 2", 2).weighing(w2),
        ]
    };
    let fake = Fake::shared(listed(1, 1));
    let mut rig = Rig::start(&text, Some(path.clone()), fake).await;
    assert_eq!(rig.ring(), [1, 2]);
    let list = |rig: &mut Rig, members: Vec<ReplicaSpec>| {
        rig.fake.list(members.clone());
        rig.handle
            .send(Command::Supervisor(SupervisorEvent::Members {
                listed_at: Instant::now(),
                members,
            }));
    };

    // Another lb (or `docker service update --label-add io.lb.weight=3`) reweighs id 2.
    list(&mut rig, listed(1, 3));
    rig.until("the listed weight applied", |rig| {
        rig.shared.snapshot.load().placement.weights() == [1, 3]
    })
    .await;
    rig.until("written back", |_| {
        std::fs::read_to_string(&path)
            .unwrap()
            .contains("weight = 3")
    })
    .await;

    // A weight the ring has no room for (K·Σw > M): kept as it was.
    list(&mut rig, listed(1000, 3));
    rig.until("the listing handled", |rig| rig.ctl.rx.is_empty())
        .await;
    assert_eq!((rig.ctl.weight_of(1), rig.ctl.weight_of(2)), (1, 3));

    // A save that changes id 1's weight: set here and in the runtime; id 2 (weight 3, as
    // written back) is not touched.
    list(&mut rig, listed(1, 3));
    let saved =
        std::fs::read_to_string(&path)
            .unwrap()
            .replacen("id = 1\n", "id = 1\nweight = 4\n", 1);
    std::fs::write(&path, saved).unwrap();
    rig.handle.send(Command::FileChanged);
    rig.until("set in the runtime", |rig| {
        !rig.fake.weights_set.lock().unwrap().is_empty()
    })
    .await;
    rig.until("the saved weight applied", |rig| {
        rig.shared.snapshot.load().placement.weights() == [4, 3]
    })
    .await;
    let set = rig.fake.weights_set.lock().unwrap().clone();
    assert_eq!(set, [ReplicaSpec::managed("Server 1", 1).weighing(4)]);
    // Listings after it agree (the runtime holds the new weight): nothing moves back.
    let now = rig.fake.members().await.unwrap();
    list(&mut rig, now);
    rig.until("the listing handled", |rig| rig.ctl.rx.is_empty())
        .await;
    assert_eq!((rig.ctl.weight_of(1), rig.ctl.weight_of(2)), (4, 3));
}
