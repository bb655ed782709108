//! A-3: every endpoint checked (SPEC §3, success and error rows), then a replica killed while a
//! client keeps sending requests: how long until `/rep` shows N again without the victim, and
//! how many client requests failed. Then a replica hung and a slow-loris attack
//! ([`super::a3_faults`]), the kill again once per supervisor, each with a load balancer of its
//! own ([`super::a3_supervisors`]), and last the control-plane phases — hostile saves of
//! `lb.toml` with a kill at the same moment, and a loop attempt — with a load balancer of 64
//! replicas of their own ([`super::a3_control`]). `--a3-phases` chooses among them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use super::a3_control::{self, ControlOutcome};
use super::a3_faults::{self, HangOutcome, Slowloris};
use super::a3_supervisors::{self, SupervisorRun};
use super::{A3Phase, Context};
use crate::client::{Answer, LbClient, Method};
use crate::config_file;
use crate::error::Result;
use crate::lb_api::{eventually, Rep, ReplicaStatus, POLL};
use crate::load::{self, served_by, Tally};
use crate::progress;

/// Requests routed by id and compared with `/_lb/ring` in the routing check.
const ROUTED_IDS: usize = 50;
/// Traffic before the kill, so the timeline has a baseline.
const BEFORE_KILL: Duration = Duration::from_millis(500);
/// Traffic after recovery.
const AFTER_RECOVERY: Duration = Duration::from_millis(500);
/// How long the replacement may take.
const RECOVERY_LIMIT: Duration = Duration::from_secs(30);
/// Width of a timeline bin.
pub const BIN: Duration = Duration::from_millis(50);

/// Result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// As expected.
    Pass,
    /// Not as expected.
    Fail,
    /// Could not be checked here (the reason is in `got`).
    Skip,
}

/// One endpoint check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is checked.
    pub name: String,
    /// The request.
    pub request: String,
    /// What should come back.
    pub expected: String,
    /// What came back.
    pub got: String,
    /// Pass, fail or skip.
    pub verdict: Verdict,
}

/// Requests in one bin of the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bin {
    /// Start of the bin since traffic started, milliseconds.
    pub start_ms: u64,
    /// Answers with 200 completed in the bin.
    pub ok: u64,
    /// Failed requests completed in the bin.
    pub failed: u64,
}

/// The kill-and-recover measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Kill {
    /// The replica killed (the one serving the most slots).
    pub victim: String,
    /// Its server id.
    pub victim_id: u64,
    /// Slots it served.
    pub victim_slots: usize,
    /// How it was killed, e.g. `SIGKILL to pid 1234`.
    pub how: String,
    /// N before the kill.
    pub n: usize,
    /// When it was killed, ms since traffic started.
    pub killed_ms: f64,
    /// First `/rep` without the victim, ms after the kill.
    pub left_ring_after_ms: Option<f64>,
    /// First `/rep` with N replicas again and without the victim, ms after the kill.
    pub recovered_after_ms: Option<f64>,
    /// The replacement: hostname and server id.
    pub replacement: Option<(String, u64)>,
    /// `/rep` polls made while waiting.
    pub polls: u64,
    /// The client traffic.
    pub traffic: Tally,
    /// Failed requests (any non-200 or transport error).
    pub failed: u64,
    /// First and last failure, ms since traffic started.
    pub failure_window_ms: Option<(f64, f64)>,
    /// The timeline in [`BIN`] bins.
    pub timeline: Vec<Bin>,
    /// Whether the victim's process was gone afterwards (for a pid).
    pub victim_gone: Option<bool>,
}

/// The kill phase, or why it was skipped.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KillOutcome {
    /// Done.
    Done(Box<Kill>),
    /// Not possible here.
    Skipped(String),
}

/// A-3's result.
#[derive(Debug, Clone, Serialize)]
pub struct A3 {
    /// The endpoint checks, in order (none when not chosen).
    pub checks: Vec<Check>,
    /// The kill phase.
    pub kill: KillOutcome,
    /// A replica hung with SIGSTOP under traffic ([`a3_faults::hang`]).
    pub hang: HangOutcome,
    /// Slow-loris connections next to normal clients ([`a3_faults::slowloris`]), when chosen.
    pub slowloris: Option<Slowloris>,
    /// The kill once per supervisor, side by side ([`a3_supervisors::run`]; none when not
    /// chosen).
    pub supervisors: Vec<SupervisorRun>,
    /// Hostile saves and a loop attempt ([`a3_control::run`]), when either was chosen.
    pub control: Option<ControlOutcome>,
}

/// Why a phase that was not chosen has no result.
pub const NOT_CHOSEN: &str = "not chosen (--a3-phases)";

impl A3 {
    /// Checks with this verdict.
    pub fn count(&self, verdict: Verdict) -> usize {
        self.checks.iter().filter(|c| c.verdict == verdict).count()
    }
}

/// Run the chosen phases: the checks, the kill, the hang, the slow-loris attack, the kill per
/// supervisor, the control-plane phases.
pub fn run(ctx: &Context) -> Result<A3> {
    let checks = if ctx.runs(A3Phase::Checks) {
        ctx.client.scale_to(3)?;
        let spinner = progress::spinner("A-3 endpoint checks");
        let checks = checks(ctx, &spinner)?;
        spinner.finish_and_clear();
        report_checks(&checks);
        checks
    } else {
        Vec::new()
    };
    let kill = if ctx.runs(A3Phase::Kill) {
        ctx.client.scale_to(3)?;
        let kill = kill(ctx)?;
        report_kill(&kill);
        kill
    } else {
        KillOutcome::Skipped(NOT_CHOSEN.into())
    };
    let hang = if ctx.runs(A3Phase::Hang) {
        ctx.client.scale_to(3)?;
        a3_faults::hang(ctx)?
    } else {
        HangOutcome::Skipped(NOT_CHOSEN.into())
    };
    let slowloris = if ctx.runs(A3Phase::Slowloris) {
        Some(a3_faults::slowloris(ctx)?)
    } else {
        None
    };
    let supervisors = if ctx.runs(A3Phase::Supervisors) {
        a3_supervisors::run(ctx)?
    } else {
        Vec::new()
    };
    let control = if ctx.runs(A3Phase::Stall) || ctx.runs(A3Phase::Loop) {
        let outcome = a3_control::run(ctx)?;
        if let ControlOutcome::Skipped(why) = &outcome {
            progress::note(&format!("A-3 control-plane phases skipped: {why}"));
        }
        Some(outcome)
    } else {
        None
    };
    Ok(A3 {
        checks,
        kill,
        hang,
        slowloris,
        supervisors,
        control,
    })
}

fn report_checks(checks: &[Check]) {
    let (pass, fail) = (
        checks.iter().filter(|c| c.verdict == Verdict::Pass).count(),
        checks.iter().filter(|c| c.verdict == Verdict::Fail).count(),
    );
    progress::note(&format!(
        "A-3 checks: {pass} passed, {fail} failed, {} skipped",
        checks.len() - pass - fail
    ));
    for c in checks.iter().filter(|c| c.verdict == Verdict::Fail) {
        progress::note(&format!(
            "  FAIL {}: {} expected {}, got {}",
            c.name, c.request, c.expected, c.got
        ));
    }
}

fn report_kill(kill: &KillOutcome) {
    match kill {
        KillOutcome::Done(k) => progress::note(&format!(
            "A-3 kill: {} ({}); left the ring after {} ms, N = {} again after {} ms; {} of {} requests failed",
            k.victim,
            k.how,
            k.left_ring_after_ms.map_or("?".into(), |t| format!("{t:.0}")),
            k.n,
            k.recovered_after_ms.map_or("(not within the limit)".into(), |t| format!("{t:.0}")),
            k.failed,
            k.traffic.sent
        )),
        KillOutcome::Skipped(why) => progress::note(&format!("A-3 kill skipped: {why}")),
    }
}

fn shorten(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

fn describe(answer: &Result<Answer>) -> String {
    match answer {
        Ok(a) if a.body.is_empty() => format!("{} (empty body)", a.status),
        Ok(a) => format!("{} {}", a.status, shorten(&a.body)),
        Err(e) => format!("error: {e}"),
    }
}

/// The `{"message": "<Error> …", "status": "failure"}` shape, optionally with an exact message.
fn is_failure(answer: &Answer, status: u16, message: Option<&str>) -> bool {
    let Some(v) = answer.json() else { return false };
    let shape = answer.status == status
        && v["status"] == "failure"
        && v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("<Error> "))
        && v.as_object().is_some_and(|o| o.len() == 2);
    shape
        && match message {
            Some(m) => v["message"] == format!("<Error> {m}"),
            None => true,
        }
}

struct Checker<'a> {
    client: &'a LbClient,
    checks: Vec<Check>,
    spinner: &'a indicatif::ProgressBar,
}

impl Checker<'_> {
    fn record(
        &mut self,
        name: &str,
        request: String,
        expected: &str,
        got: String,
        verdict: Verdict,
    ) {
        self.spinner.set_message(name.to_owned());
        self.spinner.inc(1);
        self.checks.push(Check {
            name: name.to_owned(),
            request,
            expected: expected.to_owned(),
            got,
            verdict,
        });
    }

    /// Send a request and judge the answer.
    fn expect(
        &mut self,
        name: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
        expected: &str,
        judge: impl FnOnce(&Answer) -> bool,
    ) -> Option<Answer> {
        let body_text = body.map(|b| b.to_string());
        self.expect_raw(name, method, path, body_text.as_deref(), expected, judge)
    }

    fn expect_raw(
        &mut self,
        name: &str,
        method: Method,
        path: &str,
        body: Option<&str>,
        expected: &str,
        judge: impl FnOnce(&Answer) -> bool,
    ) -> Option<Answer> {
        let request = match body {
            Some(b) => format!("{method} {path} {b}"),
            None => format!("{method} {path}"),
        };
        let answer = self.client.send(method, path, body, None);
        let verdict = match &answer {
            Ok(a) if judge(a) => Verdict::Pass,
            _ => Verdict::Fail,
        };
        let got = describe(&answer);
        self.record(name, request, expected, got, verdict);
        answer.ok()
    }
}

fn rep_is(answer: &Answer, check: impl FnOnce(&Rep) -> bool) -> bool {
    answer.status == 200
        && Rep::parse(&answer.body).is_some_and(|r| r.n == r.replicas.len() && check(&r))
}

fn checks(ctx: &Context, spinner: &indicatif::ProgressBar) -> Result<Vec<Check>> {
    let client = &ctx.client;
    let mut c = Checker {
        client,
        checks: Vec::new(),
        spinner,
    };
    let before = client.rep()?;
    let names = before.replicas.clone();

    // Success rows.
    c.expect(
        "/rep lists the replicas",
        Method::GET,
        "/rep",
        None,
        "200, N = 3 and 3 hostnames",
        |a| rep_is(a, |r| r.n == 3),
    );
    c.expect(
        "/home is served by a replica",
        Method::GET,
        "/home",
        None,
        "200, \"Hello from Server: <ID>\" with <ID> one of /rep's replicas",
        |a| a.status == 200 && served_by(&a.body).is_some_and(|h| names.contains(&h)),
    );
    c.expect(
        "other replica paths are proxied",
        Method::GET,
        "/heartbeat",
        None,
        "200 with an empty body (a replica's heartbeat)",
        |a| a.status == 200 && a.body.is_empty(),
    );
    routing_check(ctx, &mut c);
    c.expect(
        "/add with hostnames",
        Method::POST,
        "/add",
        Some(json!({"n": 2, "hostnames": ["S5"]})),
        "200, N = 5, S5 and one generated name added",
        |a| {
            rep_is(a, |r| {
                r.n == 5
                    && r.replicas.iter().any(|h| h == "S5")
                    && names.iter().all(|h| r.replicas.contains(h))
            })
        },
    );
    c.expect(
        "/rm with hostnames",
        Method::DELETE,
        "/rm",
        Some(json!({"n": 2, "hostnames": ["S5"]})),
        "200, N = 3, S5 and one replica picked at random removed",
        |a| rep_is(a, |r| r.n == 3 && !r.replicas.iter().any(|h| h == "S5")),
    );
    c.expect(
        "/add without hostnames",
        Method::POST,
        "/add",
        Some(json!({"n": 1})),
        "200, N = 4",
        |a| rep_is(a, |r| r.n == 4),
    );
    c.expect(
        "/rm without hostnames",
        Method::DELETE,
        "/rm",
        Some(json!({"n": 1})),
        "200, N = 3",
        |a| rep_is(a, |r| r.n == 3),
    );
    // Back to Server 1..3 with ids 1..3 for the error rows and the kill.
    client.scale_to(3)?;
    let before = client.rep()?;
    let existing = before.replicas.first().cloned().unwrap_or_default();

    // Error rows (SPEC §3 and the open cases): 400 in the failure shape, nothing changes.
    c.expect(
        "/add: more hostnames than n",
        Method::POST,
        "/add",
        Some(json!({"n": 1, "hostnames": ["A", "B"]})),
        "400, <Error> Length of hostname list is more than newly added instances",
        |a| {
            is_failure(
                a,
                400,
                Some("Length of hostname list is more than newly added instances"),
            )
        },
    );
    c.expect(
        "/rm: more hostnames than n",
        Method::DELETE,
        "/rm",
        Some(json!({"n": 1, "hostnames": ["A", "B"]})),
        "400, <Error> Length of hostname list is more than removable instances",
        |a| {
            is_failure(
                a,
                400,
                Some("Length of hostname list is more than removable instances"),
            )
        },
    );
    c.expect(
        "unknown path",
        Method::GET,
        "/other",
        None,
        "400, <Error> '/other' endpoint does not exist in server replicas",
        |a| {
            is_failure(
                a,
                400,
                Some("'/other' endpoint does not exist in server replicas"),
            )
        },
    );
    let failure = "400, {\"message\": \"<Error> …\", \"status\": \"failure\"}";
    c.expect(
        "/rm: n larger than N",
        Method::DELETE,
        "/rm",
        Some(json!({"n": before.n + 1})),
        failure,
        |a| is_failure(a, 400, None),
    );
    c.expect(
        "/add: n = 0",
        Method::POST,
        "/add",
        Some(json!({"n": 0})),
        failure,
        |a| is_failure(a, 400, None),
    );
    c.expect(
        "/add: n not an integer",
        Method::POST,
        "/add",
        Some(json!({"n": "two"})),
        failure,
        |a| is_failure(a, 400, None),
    );
    c.expect_raw(
        "/add: body not JSON",
        Method::POST,
        "/add",
        Some("n=1"),
        failure,
        |a| is_failure(a, 400, None),
    );
    c.expect(
        "/rm: unknown hostname",
        Method::DELETE,
        "/rm",
        Some(json!({"n": 1, "hostnames": ["no-such-replica"]})),
        failure,
        |a| is_failure(a, 400, None),
    );
    c.expect(
        "/add: duplicate hostnames",
        Method::POST,
        "/add",
        Some(json!({"n": 2, "hostnames": ["S9", "S9"]})),
        failure,
        |a| is_failure(a, 400, None),
    );
    c.expect(
        "/add: hostname already present",
        Method::POST,
        "/add",
        Some(json!({"n": 1, "hostnames": [existing]})),
        failure,
        |a| is_failure(a, 400, None),
    );
    c.expect(
        "/rep: wrong method",
        Method::POST,
        "/rep",
        None,
        "405",
        |a| a.status == 405,
    );
    let after = client.rep();
    c.record(
        "bad input changes nothing",
        "GET /rep".into(),
        &format!(
            "N = {} and the same replicas as before the error rows",
            before.n
        ),
        match &after {
            Ok(r) => format!("N = {}, {:?}", r.n, r.replicas),
            Err(e) => format!("error: {e}"),
        },
        if after.as_ref().is_ok_and(|r| *r == before) {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
    );

    // The load balancer's own endpoints.
    c.expect(
        "/_lb/status",
        Method::GET,
        "/_lb/status",
        None,
        "200, JSON with 3 replicas and their handles",
        |a| {
            a.status == 200
                && a.json()
                    .is_some_and(|v| v["replicas"].as_array().is_some_and(|r| r.len() == 3))
        },
    );
    c.expect(
        "/_lb/ring",
        Method::GET,
        "/_lb/ring",
        None,
        "200, JSON with an owner for each of the `slots` slots",
        |a| {
            a.status == 200
                && a.json().is_some_and(|v| {
                    v["owners"].as_array().map(|o| o.len() as u64) == v["slots"].as_u64()
                        && v["slots"].as_u64() > Some(0)
                })
        },
    );
    c.expect(
        "/_lb/plugins",
        Method::GET,
        "/_lb/plugins",
        None,
        "200, JSON listing the active hash",
        |a| {
            a.status == 200
                && a.json().is_some_and(|v| {
                    let active = v["active"].clone();
                    v["plugins"]
                        .as_array()
                        .is_some_and(|p| p.iter().any(|e| e["name"] == active))
                })
        },
    );
    Ok(c.checks)
}

/// `GET /home` with `X-Request-Id: r` must be served by the owner of slot `H(r) mod M` in
/// `/_lb/ring`, with H computed here by the `lb` library from the same hash.
fn routing_check(ctx: &Context, c: &mut Checker<'_>) {
    let name = "routing by X-Request-Id follows /_lb/ring";
    let expected = format!("{ROUTED_IDS} of {ROUTED_IDS} served by owners[H(r) mod M]");
    let request = format!("GET /home with X-Request-Id, {ROUTED_IDS} ids");
    let setup = || {
        let ring = ctx.client.ring()?;
        let status = ctx.client.status()?;
        let mut dirs: Vec<std::path::PathBuf> =
            status.config.plugin_dirs.iter().map(Into::into).collect();
        dirs.push(ctx.plugin_dir.clone());
        let hash =
            lb_balance::plugin::resolve_any(&ring.hash, &lb_balance::plugin::search_path(&dirs))?;
        Ok::<_, crate::Error>((ring, hash))
    };
    let (ring, hash) = match setup() {
        Ok(found) => found,
        Err(e) => {
            c.record(
                name,
                request,
                &expected,
                format!("cannot compute H here: {e}"),
                Verdict::Skip,
            );
            return;
        }
    };
    let mut right = 0;
    let mut first_wrong = None;
    for id in load::request_ids(ctx.seed, "a3-routing", ROUTED_IDS) {
        let slot = (hash.request(u64::from(id)) % u64::from(ring.slots)) as usize;
        let want = ring.owners.get(slot).cloned().unwrap_or_default();
        let got = ctx
            .client
            .send(Method::GET, "/home", None, Some(u64::from(id)));
        let host = got.as_ref().ok().and_then(|a| served_by(&a.body));
        if host.as_deref() == Some(want.as_str()) {
            right += 1;
        } else if first_wrong.is_none() {
            first_wrong = Some(format!(
                "id {id}: slot {slot} belongs to {want}, got {}",
                describe(&got)
            ));
        }
    }
    let got = match first_wrong {
        None => format!("{right} of {ROUTED_IDS} ({} hash)", ring.hash),
        Some(w) => format!("{right} of {ROUTED_IDS}; {w}"),
    };
    let verdict = if right == ROUTED_IDS {
        Verdict::Pass
    } else {
        Verdict::Fail
    };
    c.record(name, request, &expected, got, verdict);
}

/// How a replica's process is reached from here.
#[derive(Debug, Clone)]
pub(super) enum KillBy {
    /// A local process.
    Pid(u32),
    /// A container, through the `docker` command.
    Docker(String),
}

/// How `victim` can be signalled from here: by pid when the load balancer is on this machine
/// (ours, or a loopback URL), else by container id; or why neither is possible.
pub(super) fn signal_target(
    ctx: &Context,
    victim: &ReplicaStatus,
) -> std::result::Result<KillBy, String> {
    let host = ctx.client.host();
    let local = ctx.owned_config.is_some() || is_loopback(&host);
    match (&victim.handle.pid, victim.handle.container()) {
        (Some(pid), _) if local => Ok(KillBy::Pid(*pid)),
        (_, Some(id)) => Ok(KillBy::Docker(id.to_owned())),
        (Some(pid), None) => Err(format!(
            "the victim {} is pid {pid} on another host ({host}); it cannot be signalled from here",
            victim.hostname
        )),
        (None, None) => Err(format!(
            "/_lb/status shows neither a pid nor a container id for {}",
            victim.hostname
        )),
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// True while `pid` is a live (not zombie) process.
pub(super) fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

/// The replica serving the most slots (the lowest server id among equals), with its slot count.
pub(super) fn choose_victim(
    status: &[ReplicaStatus],
    owners: &[String],
) -> Option<(ReplicaStatus, usize)> {
    status
        .iter()
        .map(|r| {
            (
                r.clone(),
                owners.iter().filter(|o| **o == r.hostname).count(),
            )
        })
        .max_by_key(|(r, slots)| (*slots, std::cmp::Reverse(r.id)))
}

fn kill(ctx: &Context) -> Result<KillOutcome> {
    let client = &ctx.client;
    let status = client.status()?;
    let ring = client.ring()?;
    let Some((victim, victim_slots)) = choose_victim(&status.replicas, &ring.owners) else {
        return Ok(KillOutcome::Skipped("no replica to kill".into()));
    };
    let method = match signal_target(ctx, &victim) {
        Ok(method) => method,
        Err(why) => return Ok(KillOutcome::Skipped(why)),
    };
    let n = status.replicas.len();

    let stop = Arc::new(AtomicBool::new(false));
    let cap = (ctx.requests * 20).clamp(20_000, 1_000_000);
    let ids = Arc::new(load::request_ids(ctx.seed, "a3-traffic", cap));
    let origin = Instant::now();
    let spinner = progress::spinner("A-3 kill under traffic");
    let traffic = {
        let (client, limits, spinner) = (
            client.clone(),
            ctx.limits(
                Arc::clone(&stop),
                RECOVERY_LIMIT * 2 + BEFORE_KILL + AFTER_RECOVERY,
            ),
            spinner.clone(),
        );
        std::thread::spawn(move || load::run(&client, ids, limits, origin, &spinner))
    };

    std::thread::sleep(BEFORE_KILL);
    spinner.set_message(format!("killing {}", victim.hostname));
    let how = match &method {
        KillBy::Pid(pid) => {
            // SAFETY: kill(2) with a pid the load balancer reported for one of its replicas.
            #[allow(unsafe_code)]
            let rc = unsafe { libc::kill(*pid as libc::pid_t, libc::SIGKILL) };
            if rc != 0 {
                stop.store(true, Ordering::Relaxed);
                let _ = traffic.join();
                spinner.finish_and_clear();
                return Ok(KillOutcome::Skipped(format!(
                    "SIGKILL to pid {pid} failed: {}",
                    std::io::Error::last_os_error()
                )));
            }
            format!("SIGKILL to pid {pid}")
        }
        KillBy::Docker(id) => {
            let out = std::process::Command::new("docker")
                .args(["kill", id])
                .output();
            if !out.as_ref().is_ok_and(|o| o.status.success()) {
                stop.store(true, Ordering::Relaxed);
                let _ = traffic.join();
                spinner.finish_and_clear();
                return Ok(KillOutcome::Skipped(format!(
                    "`docker kill {id}` failed: {out:?}"
                )));
            }
            format!("docker kill {id}")
        }
    };
    let killed = origin.elapsed();
    spinner.set_message(format!("waiting for a replacement of {}", victim.hostname));

    let mut left = None;
    let mut polls = 0u64;
    let recovered = loop {
        let since = origin.elapsed() - killed;
        if since > RECOVERY_LIMIT {
            break None;
        }
        polls += 1;
        if let Ok(rep) = client.rep() {
            let gone = !rep.replicas.contains(&victim.hostname);
            if gone && left.is_none() {
                left = Some(origin.elapsed() - killed);
            }
            if gone && rep.n == n {
                break Some(origin.elapsed() - killed);
            }
        }
        std::thread::sleep(POLL);
    };
    if recovered.is_some() {
        std::thread::sleep(AFTER_RECOVERY);
    }
    stop.store(true, Ordering::Relaxed);
    let run = traffic.join().map_err(|_| crate::Error::Unexpected {
        request: "A-3 traffic".into(),
        reason: "the load thread panicked".into(),
    })?;
    spinner.finish_and_clear();

    let after = client.status()?;
    let replacement = after
        .replicas
        .iter()
        .find(|r| r.id == victim.id && r.hostname != victim.hostname)
        .map(|r| (r.hostname.clone(), r.id));
    // A-4 edits lb.toml next: wait until the load balancer has written the replacement back,
    // so that edit cannot race with the write-back.
    if let (Some(path), Some((host, _))) = (&ctx.owned_config, &replacement) {
        eventually(
            Duration::from_secs(10),
            "the replacement in lb.toml",
            || Ok(config_file::replica_hostnames(path)?.contains(host)),
        )?;
    }
    let victim_gone = match method {
        KillBy::Pid(pid) => Some(!alive(pid)),
        KillBy::Docker(_) => None,
    };

    let tally = run.tally();
    let failures: Vec<f64> = run
        .samples
        .iter()
        .filter(|s| matches!(s.outcome, load::Outcome::Failed(_)))
        .map(|s| s.done.as_secs_f64() * 1000.0)
        .collect();
    let failure_window_ms = failures
        .iter()
        .copied()
        .fold(None, |w: Option<(f64, f64)>, t| {
            Some(w.map_or((t, t), |(a, b)| (a.min(t), b.max(t))))
        });
    Ok(KillOutcome::Done(Box::new(Kill {
        victim: victim.hostname,
        victim_id: victim.id,
        victim_slots,
        how,
        n,
        killed_ms: killed.as_secs_f64() * 1000.0,
        left_ring_after_ms: left.map(|d| d.as_secs_f64() * 1000.0),
        recovered_after_ms: recovered.map(|d| d.as_secs_f64() * 1000.0),
        replacement,
        polls,
        failed: tally.failures(),
        traffic: tally,
        failure_window_ms,
        timeline: timeline(&run.samples),
        victim_gone,
    })))
}

/// Completed requests per [`BIN`], split into 200s and failures.
pub fn timeline(samples: &[load::Sample]) -> Vec<Bin> {
    let bin_ms = BIN.as_millis() as u64;
    let last = samples
        .iter()
        .map(|s| s.done.as_millis() as u64 / bin_ms)
        .max();
    let Some(last) = last else { return Vec::new() };
    let mut bins: Vec<Bin> = (0..=last)
        .map(|i| Bin {
            start_ms: i * bin_ms,
            ok: 0,
            failed: 0,
        })
        .collect();
    for s in samples {
        let bin = &mut bins[(s.done.as_millis() as u64 / bin_ms) as usize];
        match s.outcome {
            load::Outcome::Served(_) => bin.ok += 1,
            load::Outcome::Failed(_) => bin.failed += 1,
        }
    }
    bins
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{Outcome, Sample};

    #[test]
    fn failure_shape() {
        let a = Answer {
            status: 400,
            body: r#"{"message": "<Error> '/x' endpoint does not exist in server replicas", "status": "failure"}"#.into(),
        };
        assert!(is_failure(&a, 400, None));
        assert!(is_failure(
            &a,
            400,
            Some("'/x' endpoint does not exist in server replicas")
        ));
        assert!(!is_failure(&a, 400, Some("something else")));
        assert!(!is_failure(&a, 404, None));
        let b = Answer {
            status: 400,
            body: "bad".into(),
        };
        assert!(!is_failure(&b, 400, None));
    }

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback("127.0.0.1") && is_loopback("localhost") && is_loopback("[::1]"));
        assert!(!is_loopback("10.0.0.1") && !is_loopback("example.org"));
    }

    #[test]
    fn bins_count_every_sample() {
        let s = |ms: u64, ok: bool| Sample {
            id: 100_000,
            sent: Duration::ZERO,
            done: Duration::from_millis(ms),
            outcome: if ok {
                Outcome::Served("a".into())
            } else {
                Outcome::Failed("HTTP 502".into())
            },
        };
        let bins = timeline(&[s(0, true), s(49, false), s(50, true), s(120, true)]);
        assert_eq!(bins.len(), 3);
        assert_eq!((bins[0].ok, bins[0].failed), (1, 1));
        assert_eq!((bins[1].start_ms, bins[1].ok), (50, 1));
        assert_eq!(bins[2].ok, 1);
    }

    #[test]
    fn victim_is_the_replica_with_most_slots() {
        let r = |h: &str, id| ReplicaStatus {
            hostname: h.into(),
            id,
            healthy: true,
            handle: Default::default(),
            requests: 0,
            ..Default::default()
        };
        let owners: Vec<String> = ["a", "b", "b", "c"].iter().map(|s| s.to_string()).collect();
        let (v, slots) = choose_victim(&[r("a", 1), r("b", 2), r("c", 3)], &owners).unwrap();
        assert_eq!((v.hostname.as_str(), slots), ("b", 2));
    }
}
