//! A-3 per supervisor: the kill of [`super::kill`] once for each way `lb` can run its replicas —
//! `process`, `docker` and `swarm` — each against a load balancer of its own (its own `lb.toml`
//! in a temporary directory, its own loopback port, three replicas with server ids 1..3, 100 ms
//! heartbeats), reported side by side.
//!
//! For each supervisor: start `lb` and wait until it has three healthy replicas; choose the
//! victim as A-3 does (the replica serving the most slots — the same ring, so the same server id
//! for every supervisor) and a *probe id*, a request id the victim answers; start
//! `--concurrency` clients sending `GET /home`; kill the victim — SIGKILL to its pid (process),
//! `docker kill` of its container (docker), `docker kill` of its task's container (swarm: Swarm
//! restarts the task itself); poll until it serves again; let the clients run a little longer;
//! stop `lb` (SIGTERM) and clean up.
//!
//! **Serving again** has one definition for all three: the first poll (one every [`POLL`] from
//! the kill on, once the victim was seen out of service) at which
//!
//! 1. `/_lb/status` lists a replica with the victim's **server id**, healthy,
//! 2. `GET /home` with the probe id is answered 200 by that replica — the probe id's slot belongs
//!    to the victim's server id (virtual nodes are placed by server id), so this is a request
//!    routed to the victim's slots, and
//! 3. `/rep` shows N again, that replica among them.
//!
//! By server id, not hostname: the process and Docker supervisors replace a dead replica with a
//! new one under a new hostname and the same server id, while after a Swarm task restart the
//! load balancer keeps the replica, hostname and all.
//!
//! The polls start as the kill is issued (the kill runs on a thread of its own): a `docker kill`
//! command takes a while of its own (hundreds of ms on a busy machine), the container dies
//! somewhere within it, and `lb` may react before it returns. The figure compared is **from the
//! victim's death**: the moment `kill(2)` returned for a process, the engine's `die` event of the
//! container (`docker events`) for Docker and Swarm.
//!
//! Docker and Swarm need a working `docker`, the image [`IMAGE`] and, for Swarm, an active swarm;
//! without them the row is skipped with the reason — unless `LB_REQUIRE_DOCKER=1`, where that is
//! an error. A row is also skipped when `lb check` refuses the configuration (an `lb` without
//! that supervisor). Whatever happens, also on an error, a [`Scope`] removes what a container
//! measurement created: for Swarm its services (they outlive `lb` on purpose), any container
//! left with its label (`docker rm -f`), and its network.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustix::process::Signal;
use serde::Serialize;

use super::command::{docker, ids, one_line, run_command};
use super::faults::{
    choose_victim, ms, signal, signal_target, KillBy, PhaseOutcome, Traffic, PHASE_IDS,
    POLL_TIMEOUT,
};
use crate::client::{Connection, LbClient, Method};
use crate::config_file::{self, Supervisor};
use crate::error::{Error, Result};
use crate::experiments::Context;
use crate::lb_api::{eventually, Handle, Rep, Status, POLL};
use crate::lb_process::OwnedLb;
use crate::load::{self, served_by, Outcome, Tally};
use crate::progress;

/// The replica image the Docker and Swarm supervisors run.
pub const IMAGE: &str = "lb-replica:latest";
/// Replicas of each load balancer (server ids 1..=N).
pub const N: usize = 3;
/// How long a load balancer may take to have [`N`] healthy replicas.
const READY_LIMIT: Duration = Duration::from_secs(45);
/// How long the victim may take to serve again.
pub const RECOVERY_LIMIT: Duration = Duration::from_secs(30);
/// Client traffic before the kill, for a baseline.
const BEFORE_KILL: Duration = Duration::from_millis(300);
/// Client traffic after the victim serves again: at least this long…
const AFTER_RECOVERY: Duration = Duration::from_millis(300);
/// …and at least this many more requests completed…
const AFTER_REQUESTS: u64 = 100;
/// …within this deadline.
const AFTER_LIMIT: Duration = Duration::from_secs(10);
/// The clients stop sending after this long whatever happens.
const TRAFFIC_LIMIT: Duration = Duration::from_secs(60);
/// Request ids tried to find one the victim answers.
const PROBE_CANDIDATES: usize = 1000;
/// How long the clean-up may wait for containers and the network to go.
const CLEAN_LIMIT: Duration = Duration::from_secs(30);
/// How far outside the `docker kill` command a container's `die` event may be and still count
/// (the engine's clock against ours).
const DIE_SLACK: Duration = Duration::from_secs(2);
/// Lines of a load balancer's output kept in an error.
const LOG_TAIL: usize = 40;
/// The environment variable that makes a Docker or Swarm row that cannot run an error.
pub const REQUIRE_DOCKER: &str = "LB_REQUIRE_DOCKER";

/// A supervisor compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `kind = "process"`: replicas are child processes of `lb`.
    Process,
    /// `kind = "docker"`: replicas are containers.
    Docker,
    /// `kind = "swarm"`: replicas are Swarm services.
    Swarm,
}

impl Kind {
    /// Every supervisor, in the order they run.
    pub const ALL: [Kind; 3] = [Kind::Process, Kind::Docker, Kind::Swarm];

    /// Its `[supervisor] kind`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Process => "process",
            Kind::Docker => "docker",
            Kind::Swarm => "swarm",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One supervisor's kill and recovery.
#[derive(Debug, Clone, Serialize)]
pub struct SupervisedKill {
    /// The `[supervisor] instance` and network name (containers only).
    pub instance: Option<String>,
    /// From starting `lb` until it had [`N`] healthy replicas, ms.
    pub ready_ms: f64,
    /// The replica killed: its hostname.
    pub victim: String,
    /// Its server id.
    pub victim_id: u64,
    /// How it was killed, e.g. `SIGKILL to pid 1234`, `docker kill 0123abcd…`.
    pub how: String,
    /// How long the kill took: `kill(2)`, or the `docker kill` command, ms.
    pub kill_ms: f64,
    /// When the victim died, ms after the kill was issued: as `kill(2)` returned for a process,
    /// the engine's `die` event (`docker events`) for a container; `None` when that event could
    /// not be read (then the times "after death" are from the command's return).
    pub died_ms: Option<f64>,
    /// The request id the victim answered before the kill, polled for after it.
    pub probe_id: u32,
    /// N (`/rep`) before the kill.
    pub n_before: usize,
    /// N (`/rep`) at the end.
    pub n_after: usize,
    /// The first poll that saw the victim's server id not serving, ms after the kill was issued.
    pub out_after_ms: Option<f64>,
    /// The first poll after that which saw it serving again (see the module docs), ms after the
    /// kill was issued.
    pub serving_again_ms: Option<f64>,
    /// The same, ms after the victim died: the figure compared across supervisors.
    pub serving_after_death_ms: Option<f64>,
    /// When the first client request sent after the victim died was answered by the replica
    /// with its server id, ms after the death.
    pub first_client_after_death_ms: Option<f64>,
    /// Polls made while waiting.
    pub polls: u64,
    /// The hostname with the victim's server id at the end.
    pub replacement: Option<String>,
    /// Its handle at the end (a new pid, container or task).
    pub replacement_handle: Option<Handle>,
    /// Whether `/_lb/status` listed the victim's server id, healthy, at the end.
    pub victim_id_back: bool,
    /// The client traffic.
    pub traffic: Tally,
    /// Failed client requests (any non-200, transport error or timeout).
    pub failed: u64,
    /// First and last failure (when its answer or error came), ms after the victim died.
    pub failure_window_ms: Option<(f64, f64)>,
    /// How `lb` exited after SIGTERM.
    pub lb_exit: String,
    /// What the clean-up found and removed (containers only).
    pub cleanup: Option<String>,
    /// The whole measurement, from starting `lb` to the end of the clean-up, ms.
    pub took_ms: f64,
}

/// One supervisor and its row.
#[derive(Debug, Clone, Serialize)]
pub struct SupervisorRun {
    /// The supervisor.
    pub supervisor: Kind,
    /// What came of it.
    pub outcome: PhaseOutcome<SupervisedKill>,
}

/// Kill a replica under traffic once per supervisor, each with a load balancer of its own.
pub fn run(ctx: &Context) -> Result<Vec<SupervisorRun>> {
    let mut runs = Vec::new();
    for kind in Kind::ALL {
        let outcome = one(ctx, kind)?;
        match &outcome {
            PhaseOutcome::Done(k) => progress::note(&format!(
                "A-3 {kind}: {} ({}); serving again {} ms after it died; {} of {} requests failed; N {} → {}",
                k.victim,
                k.how,
                k.serving_after_death_ms
                    .map_or("(not within the limit)".into(), |t| format!("{t:.0}")),
                k.failed,
                k.traffic.sent,
                k.n_before,
                k.n_after
            )),
            PhaseOutcome::Skipped(why) => {
                progress::note(&format!("A-3 {kind}: skipped: {why}"))
            }
        }
        runs.push(SupervisorRun {
            supervisor: kind,
            outcome,
        });
    }
    Ok(runs)
}

/// Whether `LB_REQUIRE_DOCKER=1` is set.
fn docker_required() -> bool {
    std::env::var(REQUIRE_DOCKER).is_ok_and(|v| v == "1")
}

fn one(ctx: &Context, kind: Kind) -> Result<PhaseOutcome<SupervisedKill>> {
    let what = format!("the kill with the {kind} supervisor");
    let cannot = |reason: String| {
        if kind != Kind::Process && docker_required() {
            Err(Error::Required {
                what: what.clone(),
                reason,
            })
        } else {
            Ok(PhaseOutcome::Skipped(reason))
        }
    };
    let Some(lb_bin) = &ctx.lb_bin else {
        return cannot("there is no lb binary to start (give --lb-bin)".into());
    };
    // Declared before the load balancer, so that on an early return it is dropped (and cleans
    // up) after the load balancer has stopped.
    let mut scope = match kind {
        Kind::Process => None,
        Kind::Docker | Kind::Swarm => Some(Scope::new(kind)),
    };
    let section = scope.as_ref().map_or(Supervisor::Process, |s| s.section());
    let config = config_file::with_supervisor(&ctx.plugin_dir, &section);
    if let Err(why) = usable(kind, lb_bin, &config) {
        if let Some(s) = &mut scope {
            s.nothing_created();
        }
        return cannot(why);
    }

    let spinner = progress::spinner(&format!("A-3 {kind}"));
    spinner.set_message("starting lb");
    let started = Instant::now();
    let lb = OwnedLb::start_with(lb_bin, &config)?;
    let measured = measure(ctx, &lb, started, &spinner);
    spinner.finish_and_clear();
    let log = lb.log().tail(LOG_TAIL);
    let exit = lb.stop();
    let cleanup = scope.as_mut().map(Scope::clean).transpose();
    let own = |source: Error| Error::OwnLb {
        what: what.clone(),
        source: Box::new(source),
        log: log.clone(),
    };
    let mut kill = measured.map_err(own)?;
    kill.lb_exit = exit.map_err(own)?.to_string();
    kill.cleanup = cleanup.map_err(own)?;
    kill.instance = scope.as_ref().map(|s| s.name.clone());
    kill.took_ms = ms(started.elapsed());
    Ok(PhaseOutcome::Done(Box::new(kill)))
}

/// Why `kind` cannot run here, if it cannot: `docker` missing or not answering, the image
/// missing, the swarm not active, or `lb check` refusing `config`.
fn usable(kind: Kind, lb_bin: &Path, config: &str) -> std::result::Result<(), String> {
    if kind != Kind::Process {
        docker(&["info", "--format", "{{.ServerVersion}}"])
            .map_err(|e| format!("docker is not usable: {e}"))?;
        docker(&["image", "inspect", "--format", "{{.Id}}", IMAGE]).map_err(|_| {
            format!("the image {IMAGE} is missing (docker/build-images.sh builds it)")
        })?;
    }
    if kind == Kind::Swarm {
        let state = docker(&[
            "info",
            "--format",
            "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}",
        ])
        .map_err(|e| format!("docker is not usable: {e}"))?;
        match state.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["active", "true"] => {}
            ["active", _] => {
                return Err("this engine is a swarm worker; lb needs a manager".into());
            }
            _ => {
                return Err(format!(
                    "the swarm is not active (LocalNodeState {:?}; `docker swarm init` starts one)",
                    state.split_whitespace().next().unwrap_or_default()
                ))
            }
        }
    }
    let file = tempfile::Builder::new()
        .prefix("analysis-check-")
        .suffix(".toml")
        .tempfile()
        .map_err(|e| format!("cannot write a temporary lb.toml: {e}"))?;
    std::fs::write(file.path(), config).map_err(|e| format!("cannot write lb.toml: {e}"))?;
    let mut check = Command::new(lb_bin);
    check.arg("check").arg(file.path());
    let out =
        run_command(check, &format!("{} check", lb_bin.display())).map_err(|e| e.to_string())?;
    if !out.status.success() {
        let said = out
            .stderr_and_stdout()
            .replace(&file.path().display().to_string(), "lb.toml");
        return Err(format!(
            "this lb refuses a `kind = \"{kind}\"` configuration: {}",
            one_line(&said)
        ));
    }
    Ok(())
}

fn measure(
    ctx: &Context,
    lb: &OwnedLb,
    started: Instant,
    spinner: &indicatif::ProgressBar,
) -> Result<SupervisedKill> {
    let client = LbClient::new(&lb.url())?;
    let own = Context {
        client: client.clone(),
        owned_config: Some(lb.config_path().to_owned()),
        ..ctx.clone()
    };
    spinner.set_message(format!("waiting for {N} healthy replicas"));
    eventually(READY_LIMIT, &format!("{N} healthy replicas"), || {
        let status = client.status()?;
        Ok(status.replicas.len() == N && status.replicas.iter().all(|r| r.healthy))
    })?;
    let ready_ms = ms(started.elapsed());

    let status = client.status()?;
    let ring = client.ring()?;
    let (victim, _) =
        choose_victim(&status.replicas, &ring.owners).ok_or_else(|| Error::Unexpected {
            request: "GET /_lb/status".into(),
            reason: "no replica to kill".into(),
        })?;
    let target = signal_target(&own, &victim).map_err(|reason| Error::Unexpected {
        request: "GET /_lb/status".into(),
        reason,
    })?;
    let probe_id = probe_id(&client, ctx.seed, &victim.hostname)?;
    let n_before = client.rep()?.n;
    let mut conn = client.connection();
    serving(&mut conn, victim.id, n_before, probe_id).map_err(|why| Error::Unexpected {
        request: "the poll before the kill".into(),
        reason: format!("the victim should be serving, but {why}"),
    })?;

    spinner.set_message("client traffic");
    let traffic = Traffic::start(
        &own,
        "a3-supervisors",
        PHASE_IDS,
        ctx.concurrency,
        TRAFFIC_LIMIT,
    );
    traffic.warmed_up(BEFORE_KILL)?;
    spinner.set_message(format!("killing {}", victim.hostname));
    // The kill runs on a thread of its own and the polls start at once: a `docker kill` command
    // takes a while, and the container dies (and `lb` reacts) somewhere within it.
    let (issued, issued_wall) = (Instant::now(), SystemTime::now());
    let mut killer = Some({
        let target = target.clone();
        std::thread::spawn(move || kill(&target).map(|how| (issued.elapsed(), how)))
    });
    spinner.set_message(format!("waiting for server id {} to serve", victim.id));
    let mut killed: Option<(Duration, String)> = None;
    let mut out = None;
    let mut polls = 0u64;
    let serving_again = loop {
        if killer.as_ref().is_some_and(|k| k.is_finished()) {
            killed = killer.take().map(join_killer).transpose()?.transpose()?;
        }
        polls += 1;
        let state = serving(&mut conn, victim.id, n_before, probe_id);
        let since = issued.elapsed();
        match state {
            Err(_) if out.is_none() => out = Some(since),
            Ok(_) if out.is_some() => break Some(since),
            _ => {}
        }
        // The command itself is bounded (COMMAND_LIMIT); the wait starts when it returned.
        if killed
            .as_ref()
            .is_some_and(|(k, _)| since >= *k + RECOVERY_LIMIT)
        {
            break None;
        }
        std::thread::sleep(POLL);
    };
    if let Some(k) = killer.take() {
        killed = Some(join_killer(k)??);
    }
    let Some((kill_took, how)) = killed else {
        return Err(panicked("the kill ended without a result"));
    };
    if serving_again.is_some() {
        let (at, since) = (traffic.completed(), Instant::now());
        eventually(AFTER_LIMIT, "client requests after recovery", || {
            Ok(traffic.completed() >= at + AFTER_REQUESTS && since.elapsed() >= AFTER_RECOVERY)
        })?;
    }
    // When the victim died, since the kill was issued: as kill(2) returned for a process; the
    // engine's die event for a container (else, as the command returned).
    let died = match &target {
        KillBy::Pid(_) => Some(kill_took),
        KillBy::Docker(id) => died_at(id, issued_wall, issued_wall + kill_took)
            .map(|t| t.duration_since(issued_wall).unwrap_or_default()),
    };
    let death = died.unwrap_or(kill_took);
    let death_at = (issued + death).saturating_duration_since(traffic.origin());
    let run = traffic.finish()?;

    let rep = client.rep()?;
    let after: Status = client.status()?;
    let back = after.replicas.iter().find(|r| r.id == victim.id);
    let replacement = back.map(|r| r.hostname.clone());
    let since_death = |t: Duration| ms(t) - ms(death_at);
    let first_client_after_death_ms = run
        .samples
        .iter()
        .filter(|s| s.sent >= death_at)
        .filter(|s| matches!(&s.outcome, Outcome::Served(h) if Some(h) == replacement.as_ref()))
        .map(|s| since_death(s.done))
        .reduce(f64::min);
    let failure_window_ms = run
        .samples
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Failed(_)))
        .map(|s| since_death(s.done))
        .fold(None, |w: Option<(f64, f64)>, t| {
            Some(w.map_or((t, t), |(a, b)| (a.min(t), b.max(t))))
        });
    let tally = run.tally();
    Ok(SupervisedKill {
        instance: None,
        ready_ms,
        victim: victim.hostname,
        victim_id: victim.id,
        how,
        kill_ms: ms(kill_took),
        died_ms: died.map(ms),
        probe_id,
        n_before,
        n_after: rep.n,
        out_after_ms: out.map(ms),
        serving_again_ms: serving_again.map(ms),
        serving_after_death_ms: serving_again.map(|t| ms(t) - ms(death)),
        first_client_after_death_ms,
        polls,
        replacement,
        replacement_handle: back.map(|r| r.handle.clone()),
        victim_id_back: back.is_some_and(|r| r.healthy),
        failed: tally.failures(),
        traffic: tally,
        failure_window_ms,
        lb_exit: String::new(),
        cleanup: None,
        took_ms: 0.0,
    })
}

fn panicked(reason: &str) -> Error {
    Error::Unexpected {
        request: "killing the victim".into(),
        reason: reason.into(),
    }
}

/// What the kill thread answers: when the kill returned (since it was issued) and how it was
/// done.
type Killed = Result<(Duration, String)>;

/// The kill thread's result.
fn join_killer(killer: std::thread::JoinHandle<Killed>) -> Result<Killed> {
    killer
        .join()
        .map_err(|_| panicked("the kill thread panicked"))
}

/// Kill the victim: SIGKILL to its pid, or `docker kill` of its container.
fn kill(target: &KillBy) -> Result<String> {
    match target {
        KillBy::Pid(pid) => {
            signal(*pid, Signal::KILL).map_err(|e| Error::Unexpected {
                request: format!("SIGKILL to pid {pid}"),
                reason: e.to_string(),
            })?;
            Ok(format!("SIGKILL to pid {pid}"))
        }
        KillBy::Docker(id) => {
            docker(&["kill", id])?;
            Ok(format!("docker kill {}", short(id)))
        }
    }
}

/// When the engine saw `container` die (its `die` event), if that was between shortly before
/// `from` and shortly after `to` (wall clock; a remote engine's clock may be off).
fn died_at(container: &str, from: SystemTime, to: SystemTime) -> Option<SystemTime> {
    let (from, to) = (from - DIE_SLACK, to + DIE_SLACK);
    let unix = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map(|d| format!("{}.{:09}", d.as_secs(), d.subsec_nanos()))
            .ok()
    };
    let out = docker(&[
        "events",
        "--since",
        &unix(from)?,
        "--until",
        &unix(to)?,
        "--filter",
        &format!("container={container}"),
        "--filter",
        "event=die",
        "--format",
        "{{.TimeNano}}",
    ])
    .ok()?;
    let nanos: u64 = out.split_whitespace().next()?.parse().ok()?;
    let died = UNIX_EPOCH + Duration::from_nanos(nanos);
    (from..=to).contains(&died).then_some(died)
}

/// A container id as `docker ps` shows it (12 characters).
fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// A request id (from the seed) that `victim` answers.
fn probe_id(client: &LbClient, seed: u64, victim: &str) -> Result<u32> {
    let mut conn = client.connection();
    for id in load::request_ids(seed, "a3-supervisors-probe", PROBE_CANDIDATES) {
        let answer = conn.send_within(
            Method::GET,
            "/home",
            None,
            Some(u64::from(id)),
            POLL_TIMEOUT,
        )?;
        if answer.status == 200 && served_by(&answer.body).as_deref() == Some(victim) {
            return Ok(id);
        }
    }
    Err(Error::Unexpected {
        request: format!("GET /home with {PROBE_CANDIDATES} request ids"),
        reason: format!("none was answered by {victim}"),
    })
}

/// Whether server id `id` is serving (see the module docs): its hostname, or why not.
fn serving(
    conn: &mut Connection,
    id: u64,
    n: usize,
    probe: u32,
) -> std::result::Result<String, String> {
    let get = |conn: &mut Connection, path: &str, request_id: Option<u64>| {
        conn.send_within(Method::GET, path, None, request_id, POLL_TIMEOUT)
            .map_err(|e| e.to_string())
            .and_then(|a| {
                if a.status == 200 {
                    Ok(a.body)
                } else {
                    Err(format!("GET {path}: {} {}", a.status, one_line(&a.body)))
                }
            })
    };
    let status: Status = serde_json::from_str(&get(conn, "/_lb/status", None)?)
        .map_err(|e| format!("GET /_lb/status: {e}"))?;
    let replica = status
        .replicas
        .iter()
        .find(|r| r.id == id)
        .ok_or_else(|| format!("/_lb/status lists no server id {id}"))?;
    if !replica.healthy {
        return Err(format!(
            "server id {id} ({}) is not healthy",
            replica.hostname
        ));
    }
    let body = get(conn, "/home", Some(u64::from(probe)))?;
    let host = served_by(&body).ok_or_else(|| format!("GET /home: {}", one_line(&body)))?;
    if host != replica.hostname {
        return Err(format!(
            "request id {probe} was answered by {host}, not by server id {id} ({})",
            replica.hostname
        ));
    }
    let rep = Rep::parse(&get(conn, "/rep", None)?).ok_or("GET /rep: not a /rep answer")?;
    if rep.n != n || !rep.replicas.contains(&replica.hostname) {
        return Err(format!("/rep shows N = {}: {:?}", rep.n, rep.replicas));
    }
    Ok(host)
}

/// The names of one container measurement — its `[supervisor] instance` and `network`, unique
/// to it — and the removal of everything carrying them: when `Scope::clean` is called, and
/// otherwise when it is dropped (an error or a panic on the way).
pub struct Scope {
    kind: Kind,
    name: String,
    cleaned: bool,
}

impl Scope {
    fn new(kind: Kind) -> Scope {
        Scope {
            kind,
            name: format!(
                "a3sup-{}-{}-{:08x}",
                kind.name(),
                std::process::id(),
                fastrand::u32(..)
            ),
            cleaned: false,
        }
    }

    /// The `[supervisor]` section with its names.
    fn section(&self) -> Supervisor {
        Supervisor::Containers {
            kind: self.kind.name(),
            image: IMAGE.into(),
            network: self.name.clone(),
            instance: self.name.clone(),
            // `lb` runs here, next to the engine, not on the replicas' network: it reaches a
            // container by its address on the bridge network, a Swarm task by the node's address
            // and the task's published port.
            address: match self.kind {
                Kind::Swarm => "published",
                Kind::Docker | Kind::Process => "ip",
            },
        }
    }

    /// The label filter of its containers.
    fn label(&self) -> String {
        match self.kind {
            Kind::Swarm => format!("label=io.lb.swarm.instance={}", self.name),
            Kind::Docker | Kind::Process => format!("label=io.lb.owner={}", self.name),
        }
    }

    /// Nothing was started with these names: there is nothing to clean.
    fn nothing_created(&mut self) {
        self.cleaned = true;
    }

    /// Remove the Swarm services of the instance, then every container with its label, then the
    /// network; what was found and removed.
    fn clean(&mut self) -> Result<String> {
        self.cleaned = true;
        let mut done = Vec::new();
        if self.kind == Kind::Swarm {
            let services = ids(&[
                "service",
                "ls",
                "-q",
                "--filter",
                &format!("label=io.lb.swarm.instance={}", self.name),
            ])?;
            if !services.is_empty() {
                let mut args = vec!["service", "rm"];
                args.extend(services.iter().map(String::as_str));
                docker(&args)?;
            }
            done.push(format!("{} services removed", services.len()));
        }
        let label = self.label();
        let started = Instant::now();
        let mut removed = BTreeSet::new();
        loop {
            let left = ids(&["ps", "-aq", "--filter", &label])?;
            if left.is_empty() {
                break;
            }
            if started.elapsed() > CLEAN_LIMIT {
                return Err(Error::Timeout {
                    what: format!("the containers with {label} to go ({left:?} are left)"),
                    limit: CLEAN_LIMIT,
                });
            }
            let mut args = vec!["rm", "-f"];
            args.extend(left.iter().map(String::as_str));
            // A container may go on its own between the listing and this.
            let _ = docker(&args);
            removed.extend(left);
            std::thread::sleep(POLL);
        }
        done.push(match self.kind {
            Kind::Swarm => format!("{} task containers gone with them", removed.len()),
            _ => format!("{} containers left by lb removed", removed.len()),
        });
        let exists = || docker(&["network", "inspect", "--format", "{{.Id}}", &self.name]).is_ok();
        let mut network_removed = false;
        // Endpoints of containers that just went are released asynchronously, and a Swarm
        // overlay network goes a little after `docker network rm` answered.
        while exists() {
            if !network_removed {
                match docker(&["network", "rm", &self.name]) {
                    Ok(_) => network_removed = true,
                    Err(e) if started.elapsed() > CLEAN_LIMIT => return Err(e),
                    Err(_) => {}
                }
            } else if started.elapsed() > CLEAN_LIMIT {
                return Err(Error::Timeout {
                    what: format!("network {} to go after `docker network rm`", self.name),
                    limit: CLEAN_LIMIT,
                });
            }
            std::thread::sleep(POLL * 10);
        }
        done.push(if network_removed {
            format!("network {} removed", self.name)
        } else {
            format!("no network {} to remove", self.name)
        });
        Ok(done.join(", "))
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        if !self.cleaned {
            if let Err(e) = self.clean() {
                progress::note(&format!("A-3 {}: clean-up failed: {e}", self.kind));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scope that cleans nothing when dropped.
    fn scope(kind: Kind) -> Scope {
        let mut scope = Scope::new(kind);
        scope.nothing_created();
        scope
    }

    #[test]
    fn scope_names_fit_a_swarm_instance() {
        for kind in [Kind::Docker, Kind::Swarm] {
            let s = scope(kind);
            assert!(s.name.len() <= 40, "{}", s.name);
            assert!(s
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-'));
            assert_ne!(s.name, scope(kind).name);
            assert!(s.label().ends_with(&format!("={}", s.name)));
        }
        let s = scope(Kind::Swarm);
        assert_eq!(s.label(), format!("label=io.lb.swarm.instance={}", s.name));
        let s = scope(Kind::Docker);
        assert_eq!(s.label(), format!("label=io.lb.owner={}", s.name));
    }
}
