//! `analysis` end to end against its own load balancer (the real `lb` binary with real replica
//! processes on loopback), with small request counts, and its error paths.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use lb_balance::plugin::SHIPPED;
const REQUESTS: u64 = 300;

/// `cargo test` does not build `cdylib`s: build the shipped plugins here, with the same cargo,
/// into a target directory of their own (no lock shared with the running `cargo test`; the same
/// directory `core/tests/plugins.rs` uses, so the two share the build).
fn built_plugins() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-build");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .args(["build", "--quiet", "--target-dir"])
            .arg(&target);
        for name in SHIPPED {
            cmd.args(["-p", &format!("lb-hash-{name}")]);
        }
        let status = cmd.status().expect("run cargo build for the plugins");
        assert!(status.success(), "building the plugins failed");
        target.join("debug")
    })
}

fn analysis() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_analysis"));
    cmd.stdin(Stdio::null());
    cmd
}

/// `lb` next to `analysis` (`cargo test --workspace` builds every package's binaries).
fn lb_bin() -> PathBuf {
    let lb = Path::new(env!("CARGO_BIN_EXE_analysis")).with_file_name("lb");
    assert!(
        lb.is_file(),
        "{} missing: run `cargo build -p lb` or `cargo test --workspace`",
        lb.display()
    );
    lb
}

/// Run `cmd` to completion, killing it after `limit`.
fn run(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run analysis");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "analysis ran longer than {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn served(m: &Value) -> u64 {
    m["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["requests"].as_u64().unwrap())
        .sum()
}

fn failed(m: &Value) -> u64 {
    m["failed"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum()
}

/// Every request of a measurement is accounted for: answered by a replica or failed.
fn assert_counts(m: &Value, n: u64, what: &str) {
    assert_eq!(m["sent"].as_u64(), Some(REQUESTS), "{what}: {m}");
    assert_eq!(served(m) + failed(m), REQUESTS, "{what}: {m}");
    assert_eq!(failed(m), 0, "{what}: no request should fail: {m}");
    assert_eq!(m["n"].as_u64(), Some(n), "{what}");
    let replicas = m["replicas"].as_array().unwrap();
    assert_eq!(replicas.len() as u64, n, "{what}: {m}");
    let mut ids: Vec<u64> = replicas.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (1..=n).collect::<Vec<_>>(), "{what}");
}

/// `docker ARGS…`'s standard output, if it ran and succeeded.
fn docker_out(args: &[&str]) -> Option<String> {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// A-3 per supervisor: a row for process, docker and swarm in that order; the process row always
/// ran, the docker and swarm rows ran or say why not (and must have run with
/// `LB_REQUIRE_DOCKER=1`). Every row that ran: N restored, the victim's server id serving again
/// in finite time and listed healthy, every request accounted for, nothing left behind.
fn assert_supervisors(runs: &Value, report: &str, csv: &Path) {
    let runs = runs.as_array().expect("A-3 per supervisor ran");
    let kinds: Vec<&str> = runs
        .iter()
        .map(|r| r["supervisor"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["process", "docker", "swarm"]);
    let required = std::env::var("LB_REQUIRE_DOCKER").is_ok_and(|v| v == "1");
    let csv = std::fs::read_to_string(csv).unwrap();
    let csv_rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(csv_rows.len(), 3, "{csv}");
    assert!(report.contains("### A replica killed, per supervisor"));
    let mut victim_ids = Vec::new();
    for ((run, kind), row) in runs.iter().zip(&kinds).zip(&csv_rows) {
        assert!(row.starts_with(&format!("{kind},")), "{row}");
        let outcome = &run["outcome"];
        if let Some(why) = outcome["skipped"].as_str() {
            assert!(*kind != "process" && !required, "{kind} was skipped: {why}");
            assert!(!why.is_empty());
            eprintln!("A-3 {kind} was skipped: {why}");
            assert!(report.contains(&format!("| {kind} | skipped: ")), "{kind}");
            continue;
        }
        let k = &outcome["done"];
        assert!(k.is_object(), "{kind}: {run}");
        assert_eq!(k["n_before"], 3, "{kind}: {k}");
        assert_eq!(k["n_after"], 3, "{kind}: N restored: {k}");
        let out = k["out_after_ms"].as_f64().expect("seen out of service");
        let again = k["serving_again_ms"]
            .as_f64()
            .unwrap_or_else(|| panic!("{kind}: not serving again within the limit: {k}"));
        assert!(out >= 0.0 && out < again && again < 30_000.0, "{kind}: {k}");
        // From the victim's death: kill(2) for a process, the engine's die event for a
        // container, within the docker kill command (give or take the clocks).
        let died = k["died_ms"].as_f64().expect("the victim's death time");
        let kill_ms = k["kill_ms"].as_f64().unwrap();
        assert!(died >= 0.0 && died <= kill_ms + 2_000.0, "{kind}: {k}");
        let after_death = k["serving_after_death_ms"].as_f64().unwrap();
        assert!((after_death - (again - died)).abs() < 1e-6, "{kind}: {k}");
        assert!(after_death > 0.0, "{kind}: {k}");
        assert_eq!(k["victim_id_back"], true, "{kind}: {k}");
        let replacement = k["replacement"]
            .as_str()
            .expect("the victim's id is listed");
        let victim = k["victim"].as_str().unwrap();
        // Process and Docker replace the victim under a new hostname; Swarm restarts its task
        // and lb keeps the replica.
        if *kind == "swarm" {
            assert_eq!(replacement, victim, "{k}");
        } else {
            assert_ne!(replacement, victim, "{k}");
        }
        let how = k["how"].as_str().unwrap();
        let handle = &k["replacement_handle"];
        match *kind {
            "process" => {
                assert!(how.starts_with("SIGKILL to pid "), "{how}");
                assert!(handle["pid"].is_u64(), "{handle}");
            }
            "docker" => {
                assert!(how.starts_with("docker kill "), "{how}");
                assert!(handle["container_id"].is_string(), "{handle}");
            }
            _ => {
                assert!(how.starts_with("docker kill "), "{how}");
                assert!(handle["swarm_task"]["container_id"].is_string(), "{handle}");
            }
        }
        let sent = k["traffic"]["sent"].as_u64().unwrap();
        let ok: u64 = k["traffic"]["served"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        let failed = k["failed"].as_u64().unwrap();
        assert!(sent > 0 && ok + failed == sent, "{kind}: {k}");
        assert!(
            k["traffic"]["served"][replacement].as_u64() > Some(0),
            "{kind}: no client request answered by the victim's id after the kill: {k}"
        );
        assert!(
            k["first_client_after_death_ms"].as_f64() > Some(0.0),
            "{kind}: {k}"
        );
        assert!(
            report.contains(&format!("| {kind} | {victim} (")),
            "report.md lacks the {kind} row"
        );
        victim_ids.push(k["victim_id"].as_u64().unwrap());
        // Nothing is left behind: containers, services, network.
        if let Some(instance) = k["instance"].as_str() {
            assert!(k["cleanup"].as_str().is_some_and(|c| !c.is_empty()), "{k}");
            let label = match *kind {
                "swarm" => format!("label=io.lb.swarm.instance={instance}"),
                _ => format!("label=io.lb.owner={instance}"),
            };
            let left = docker_out(&["ps", "-aq", "--filter", &label]).expect("docker ps");
            assert!(left.trim().is_empty(), "{kind}: containers left: {left}");
            if *kind == "swarm" {
                let left = docker_out(&["service", "ls", "-q", "--filter", &label])
                    .expect("docker service ls");
                assert!(left.trim().is_empty(), "swarm services left: {left}");
            }
            assert!(
                docker_out(&["network", "inspect", instance]).is_none(),
                "{kind}: network {instance} left"
            );
        }
    }
    // The same ring for every supervisor: the same victim.
    victim_ids.dedup();
    assert_eq!(victim_ids.len(), 1, "{victim_ids:?}");
}

#[test]
fn all_experiments_end_to_end() {
    let plugins = built_plugins();
    let out = tempfile::tempdir().unwrap();
    let mut cmd = analysis();
    cmd.args([
        "all",
        "--requests",
        &REQUESTS.to_string(),
        "--concurrency",
        "16",
        "--seed",
        "7",
        // A-5's offline part at two N only: a debug build of the tables is slow.
        "--a5-counts",
        "3,10",
        // A-6's offline part likewise.
        "--a6-counts",
        "3,10",
        // A-3's control-plane phases have tests of their own (below).
        "--a3-phases",
        "checks,kill,hang,slowloris,supervisors",
        "--out",
    ])
    .arg(out.path())
    .arg("--lb-bin")
    .arg(lb_bin())
    .arg("--plugin-dir")
    .arg(plugins);
    let output = run(cmd, Duration::from_secs(300));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "analysis failed:\n{stderr}");

    for file in [
        "report.md",
        "results.json",
        "a1.csv",
        "a2.csv",
        "a2_spread.csv",
        "a3_checks.csv",
        "a3_timeline.csv",
        "a3_hang_timeline.csv",
        "a3_slowloris.csv",
        "a3_supervisors.csv",
        "a4_a1.csv",
        "a4_a2_spread.csv",
        "a4_offline_shares.csv",
        "a4_offline_moves.csv",
        "a5_offline.csv",
        "a5_live.csv",
        "a5_hot_key.csv",
        "a6_offline.csv",
        "a6_offline_shares.csv",
        "a6_weight_change.csv",
        "a6_plan.csv",
        "a6_ramp.csv",
    ] {
        let len = std::fs::metadata(out.path().join(file))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 0, "{file} missing or empty");
    }
    let report = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    for chart in [
        "a1_requests_per_replica",
        "a2_load_per_replica",
        "a2_spread",
        "a3_timeline",
        "a3_hang_timeline",
        "a3_slowloris",
        "a4_a1_per_hash",
        "a4_a2_spread_per_hash",
        "a4_offline",
        "a5_balance",
        "a5_moves",
        "a5_hot_key",
        "a6_shares",
        "a6_weight_change",
        "a6_ramp",
    ] {
        let png = std::fs::read(out.path().join(format!("{chart}.png"))).unwrap_or_default();
        assert!(png.len() > 1000 && &png[1..4] == b"PNG", "{chart}.png");
        let svg =
            std::fs::read_to_string(out.path().join(format!("{chart}.svg"))).unwrap_or_default();
        assert!(svg.contains("<svg"), "{chart}.svg");
        assert!(
            report.contains(&format!("]({chart}.png)")),
            "report.md does not embed {chart}.png"
        );
    }

    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).unwrap())
            .unwrap();
    assert_eq!(results["settings"]["seed"], 7);

    // N = 3, every request counted; the report states the measured numbers.
    let a1 = &results["a1"];
    assert_counts(a1, 3, "A-1");
    assert_eq!(a1["hash"], "spec");
    let busiest = a1["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["requests"].as_u64().unwrap())
        .max()
        .unwrap();
    assert!(
        report.contains(&format!("served {busiest} of {REQUESTS}")),
        "report.md lacks A-1's numbers"
    );
    // The spec functions send most requests to server id 1 (SPEC §2: about 84 %).
    assert!(busiest as f64 > REQUESTS as f64 * 0.6, "{a1}");

    // N = 2..6, each with its own count of requests.
    let points = results["a2"]["points"].as_array().unwrap();
    assert_eq!(points.len(), 5);
    for (point, n) in points.iter().zip(2..) {
        assert_counts(point, n, &format!("A-2 N = {n}"));
        let s = &point["spread"];
        let avg = s["avg"].as_f64().unwrap();
        assert!((avg - REQUESTS as f64 / n as f64).abs() < 1e-9, "{point}");
        assert!(s["max_over_avg"].as_f64().unwrap() >= 1.0);
    }

    // every check passes, the replacement is observed in finite time with N restored.
    let a3 = &results["a3"];
    let checks = a3["checks"].as_array().unwrap();
    assert!(checks.len() >= 20, "{checks:?}");
    let failing: Vec<&Value> = checks.iter().filter(|c| c["verdict"] != "pass").collect();
    assert!(failing.is_empty(), "failing checks: {failing:#?}");
    let kill = &a3["kill"]["done"];
    assert!(kill.is_object(), "the kill did not run: {}", a3["kill"]);
    let recovered = kill["recovered_after_ms"]
        .as_f64()
        .expect("recovery observed");
    assert!(recovered > 0.0 && recovered < 30_000.0, "{kill}");
    assert_eq!(kill["n"], 3);
    assert_eq!(
        kill["replacement"][1], kill["victim_id"],
        "the replacement keeps the server id"
    );
    assert_ne!(
        kill["replacement"][0], kill["victim"],
        "the replacement has a new hostname"
    );
    assert_eq!(kill["victim_gone"], true);
    let traffic = &kill["traffic"];
    let sent = traffic["sent"].as_u64().unwrap();
    let ok: u64 = traffic["served"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    let bad: u64 = traffic["failed"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!(
        sent > 0 && ok + bad == sent && kill["failed"].as_u64() == Some(bad),
        "{traffic}"
    );
    let binned: u64 = kill["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["ok"].as_u64().unwrap() + b["failed"].as_u64().unwrap())
        .sum();
    assert_eq!(binned, sent);

    // A-3 hang: the replica was stopped and continued, traffic flowed, every request is
    // accounted for, and the report states the figures.
    let hang = &a3["hang"]["done"];
    assert!(hang.is_object(), "the hang did not run: {}", a3["hang"]);
    assert!(
        hang["how"].as_str().unwrap().starts_with("SIGSTOP to pid "),
        "{hang}"
    );
    assert!(
        hang["resumed"].as_str().unwrap().starts_with("SIGCONT"),
        "{hang}"
    );
    let stopped_for = hang["stopped_for_ms"].as_f64().unwrap();
    assert!((5_000.0..7_000.0).contains(&stopped_for), "{hang}");
    let (h_sent, h_ok, h_failed) = (
        hang["traffic"]["sent"].as_u64().unwrap(),
        hang["answered"].as_u64().unwrap(),
        hang["failed"].as_u64().unwrap(),
    );
    assert!(h_sent > 0 && h_ok + h_failed == h_sent, "{hang}");
    assert!(
        h_sent < hang["traffic"]["planned"].as_u64().unwrap(),
        "the hang's traffic ran out of ids"
    );
    let binned: u64 = hang["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["ok"].as_u64().unwrap() + b["failed"].as_u64().unwrap())
        .sum();
    assert_eq!(binned, h_sent);
    assert_eq!(hang["clients"], 32);
    let left = hang["left_ring_after_ms"]
        .as_f64()
        .expect("the hung replica left /rep while stopped");
    assert!(left > 0.0 && left < 5_000.0, "{hang}");
    let latency = &hang["latency_ms"];
    assert!(
        latency["max"].as_f64().unwrap() >= latency["p99"].as_f64().unwrap(),
        "{hang}"
    );
    assert!(
        report.contains(&format!("{h_sent} requests were sent: {h_ok} answered 200")),
        "report.md lacks the hang's figures"
    );

    // A-3 slow loris: with the header timeout analysis set, every connection was answered 408 or
    // closed within the bound, and the normal clients were answered meanwhile.
    let loris = &a3["slowloris"];
    let opened = loris["opened"].as_u64().unwrap();
    assert_eq!(
        opened,
        loris["planned"].as_u64().unwrap(),
        "{}",
        loris["connect_failed"]
    );
    assert!(opened >= 100, "{opened}");
    assert_eq!(loris["header_timeout_ms"], 3000);
    assert_eq!(loris["still_open"], 0, "slow-loris connections left open");
    let conns = loris["connections"].as_array().unwrap();
    assert_eq!(conns.len() as u64, opened);
    let bound = loris["bound_ms"].as_f64().unwrap();
    for c in conns {
        let answered = c["answer"][0].as_u64() == Some(408);
        let closed = c["closed_after_ms"].as_f64();
        assert!(
            answered || closed.is_some_and(|t| t < bound),
            "neither answered 408 nor closed: {c}"
        );
        if let Some(t) = c["answer"][1].as_f64() {
            // Not before the header timeout; within it and the watchdog's quarter, plus slack.
            assert!((2_900.0..6_000.0).contains(&t), "408 after {t} ms: {c}");
        }
    }
    assert!(
        loris["answered_408"].as_u64().unwrap() >= opened * 9 / 10,
        "{loris:#}"
    );
    assert!(
        loris["attack_ms"].as_f64().unwrap() < bound,
        "{}",
        loris["attack_ms"]
    );
    let (l_sent, l_ok) = (
        loris["traffic"]["sent"].as_u64().unwrap(),
        loris["answered"].as_u64().unwrap(),
    );
    assert!(
        l_ok > 0 && l_ok + loris["failed"].as_u64().unwrap() == l_sent,
        "{loris:#}"
    );
    assert!(
        report.contains("client_header_timeout_ms` was **3000 ms**"),
        "report.md lacks the header timeout"
    );

    assert_supervisors(
        &a3["supervisors"],
        &report,
        &out.path().join("a3_supervisors.csv"),
    );

    // every shipped plugin ran live, with the same checks as, and offline.
    let a4 = &results["a4"];
    assert!(a4["live_skipped"].is_null(), "{}", a4["live_skipped"]);
    assert_eq!(
        a4["skipped"].as_array().unwrap().len(),
        0,
        "{}",
        a4["skipped"]
    );
    let runs = a4["runs"].as_array().unwrap();
    let names: Vec<&str> = runs.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, SHIPPED);
    for r in runs {
        let name = r["name"].as_str().unwrap();
        assert_eq!(r["a1"]["hash"], name);
        assert_counts(&r["a1"], 3, &format!("A-4 {name} A-1"));
        for (point, n) in r["a2"]["points"].as_array().unwrap().iter().zip(2..) {
            assert_eq!(point["hash"], name);
            assert_counts(point, n, &format!("A-4 {name} A-2 N = {n}"));
        }
    }
    // The same request ids through different hashes give different splits.
    assert_ne!(runs[0]["a1"]["replicas"], runs[2]["a1"]["replicas"]);
    let offline = a4["offline"]["hashes"].as_array().unwrap();
    let names: Vec<&str> = offline
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, SHIPPED);
    for h in offline {
        for s in h["shares"].as_array().unwrap() {
            let slots: u64 = s["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["slots"].as_u64().unwrap())
                .sum();
            assert_eq!(slots, 512, "{}", h["name"]);
        }
        // Adding the replica with the highest id moves only the ids it now serves.
        for m in h["adds"].as_array().unwrap() {
            let (moved, necessary) = (
                m["moved"].as_f64().unwrap(),
                m["necessary"].as_f64().unwrap(),
            );
            assert!((moved - necessary).abs() < 1e-9, "{m}");
        }
    }

    check_a5(&results["a5"]);
    assert!(report.contains("## A-5: balancing algorithms"));
    check_a6(&results["a6"], &report, out.path());
    assert!(a3["control"].is_null(), "not chosen: {}", a3["control"]);
}

/// `analysis a3 --a3-phases PHASES` against its own lb: results.json, report.md and the
/// directory they are in.
fn a3_phases(phases: &str) -> (Value, String, tempfile::TempDir) {
    let out = tempfile::tempdir().unwrap();
    let mut cmd = analysis();
    cmd.args(["a3", "--a3-phases", phases, "--seed", "7", "--out"])
        .arg(out.path())
        .arg("--lb-bin")
        .arg(lb_bin());
    let output = run(cmd, Duration::from_secs(600));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "analysis failed:\n{stderr}");
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).unwrap())
            .unwrap();
    let report = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    let a3 = &results["a3"];
    // Only what was chosen ran.
    assert!(
        a3["checks"].as_array().unwrap().is_empty(),
        "{}",
        a3["checks"]
    );
    assert_eq!(a3["kill"]["skipped"], "not chosen (--a3-phases)");
    assert!(a3["slowloris"].is_null() && a3["supervisors"].as_array().unwrap().is_empty());
    assert!(!report.contains("### A replica killed"), "{report}");
    (results, report, out)
}

/// The hostile saves, each with a kill -9 of a replica at the same moment, under 32
/// clients with random ids: the victim's id serves again from a new process, no other replica is
/// replaced or leaves the ring, the restart counter counts the victim only, no panic; (1) and
/// (5) are refused with their reasons, (2) is applied with its large table; the normal file is
/// applied again after each.
#[test]
fn a3_hostile_saves_never_stall_the_controller() {
    let (results, report, out) = a3_phases("stall");
    let c = &results["a3"]["control"]["done"];
    assert!(c.is_object(), "{}", results["a3"]["control"]);
    assert_eq!(c["replicas"], 64);
    assert_eq!(c["clients"], 32);
    assert_eq!(c["heartbeats"]["timeout_ms"], 300);
    assert!(c["loop_attempt"].is_null());
    let saves = c["saves"].as_array().unwrap();
    let expected = [
        (1, Some("invalid type")),
        (2, None),
        (5, Some("unknown key `k0` in [limits]")),
    ];
    assert_eq!(saves.len(), expected.len(), "{saves:#?}");
    let mut victims = Vec::new();
    for (save, (number, refused)) in saves.iter().zip(expected) {
        let s = &save["done"];
        assert!(s.is_object(), "({number}) was not made: {save}");
        assert_eq!(s["number"], number);
        let what = format!("({number})");
        let again = s["serving_again_ms"]
            .as_f64()
            .unwrap_or_else(|| panic!("{what}: the victim's id never served again: {s}"));
        assert!(again > 0.0, "{what}: {s}");
        let (host, pid) = (&s["replacement"][0], s["replacement"][1].as_u64().unwrap());
        assert!(
            host.is_string() && pid != s["victim_pid"].as_u64().unwrap(),
            "{s}"
        );
        assert_eq!(
            s["healthy_replaced"], 0,
            "{what}: healthy replicas replaced: {s}"
        );
        assert_eq!(
            s["disturbed"].as_array().unwrap().len(),
            0,
            "{what}: other replicas replaced or out of the ring: {}",
            s["disturbed"]
        );
        let restarts = s["restarts"][1].as_f64().unwrap() - s["restarts"][0].as_f64().unwrap();
        assert_eq!(restarts, 1.0, "{what}: lb_replica_restarts_total: {s}");
        assert_eq!(s["panics"][1].as_f64(), Some(0.0), "{what}: panics: {s}");
        match refused {
            Some(reason) => {
                let message = s["decision"]["refused"]["message"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{what} was not refused: {}", s["decision"]));
                assert!(message.contains(reason), "{what}: {message}");
            }
            None => {
                let applied = &s["decision"]["applied"];
                assert_eq!(applied["slots"], 4_194_304, "{what}: {}", s["decision"]);
                assert_eq!(applied["algorithm"], "rendezvous");
            }
        }
        assert!(s["restored"]["Ok"].is_f64(), "{what}: {}", s["restored"]);
        let traffic = &s["traffic"];
        let ok: u64 = traffic["served"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        let sent = traffic["sent"].as_u64().unwrap();
        assert!(
            sent > 0 && ok + s["failed"].as_u64().unwrap() == sent,
            "{traffic}"
        );
        victims.push(s["victim_id"].as_u64().unwrap());
    }
    victims.dedup();
    assert_eq!(
        victims.len(),
        3,
        "a different victim each time: {victims:?}"
    );
    let csv = std::fs::read_to_string(out.path().join("a3_stall.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(!out.path().join("a3_loop.csv").exists());
    assert!(report.contains("### A save that would stall the controller"));
    assert!(
        report.contains("Healthy replicas replaced: 0 in all"),
        "{report}"
    );
}

/// The loop attempt: lb's own address at `/add` in four spellings, each refused with 400 and N
/// unchanged; a request carrying lb's own `Via` mark answered 508; no more requests reached the
/// replicas than the plain ones sent. Needs an lb with loop marks (a top-level `via` in
/// `/_lb/status`): against one without, this test fails by design — run it alone with
/// `cargo test -p analysis --test end_to_end a3_loop`.
#[test]
fn a3_loop_attempt_is_refused() {
    let (results, report, out) = a3_phases("loop");
    let c = &results["a3"]["control"]["done"];
    assert!(c["saves"].as_array().unwrap().is_empty());
    let l = &c["loop_attempt"];
    assert!(l.is_object(), "{c}");
    let adds = l["adds"].as_array().unwrap();
    assert_eq!(adds.len(), 4);
    for a in adds {
        assert_eq!(a["status"], 400, "/add of lb's own address: {a}");
        assert_eq!(a["n_before"], a["n_after"], "{a}");
        assert!(a["undone"].is_null(), "{a}");
    }
    assert_eq!(l["n"][0], l["n"][1], "{l}");
    assert_ne!(
        l["mark"], "not_shown",
        "lb shows no loop mark in /_lb/status"
    );
    let mark = &l["mark"]["forged"];
    assert!(
        mark["via"]
            .as_str()
            .is_some_and(|v| v.starts_with("1.1 lb-")),
        "{mark}"
    );
    assert_eq!(mark["status"], 508, "a request with lb's own mark: {mark}");
    let (plain, answered) = (
        l["plain"][0].as_u64().unwrap(),
        l["plain"][1].as_u64().unwrap(),
    );
    assert_eq!(answered, plain, "{l}");
    assert_eq!(
        l["reached_replicas"].as_u64(),
        Some(plain),
        "no request went round: {l}"
    );
    let csv = std::fs::read_to_string(out.path().join("a3_loop.csv")).unwrap();
    assert_eq!(csv.lines().count(), 7, "{csv}");
    assert!(report.contains("### A loop attempt"));
}

/// every setup computed at N = 3 and 10; Maglev balances within 1 %, rendezvous moves
/// exactly the removed replica's slots; live shares are the offline ones; a hot key goes to one
/// replica.
fn check_a5(a5: &Value) {
    assert_eq!(
        a5["skipped"].as_array().unwrap().len(),
        0,
        "{}",
        a5["skipped"]
    );
    let curves = a5["curves"].as_array().unwrap();
    let labels: Vec<String> = curves
        .iter()
        .map(|c| {
            format!(
                "{}/{}",
                c["setup"]["algorithm"].as_str().unwrap(),
                c["setup"]["hash"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        labels,
        [
            "ring/spec",
            "ring/murmur3",
            "ring/ketama",
            "maglev/murmur3",
            "rendezvous/murmur3"
        ]
    );
    let at = |label: &str, n: u64| -> &Value {
        let c = &curves[labels.iter().position(|l| l == label).unwrap()];
        c["points"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["n"] == n)
            .unwrap_or_else(|| panic!("{label} N = {n}"))
    };
    let num = |p: &Value, k: &str| p[k].as_f64().unwrap_or_else(|| panic!("{k} in {p}"));
    let maglev = at("maglev/murmur3", 10);
    assert!(num(maglev, "slot_max_over_avg") <= 1.01, "{maglev}");
    assert!(num(maglev, "removed_over_ideal") <= 1.25, "{maglev}");
    assert!(num(maglev, "removed_worst_over_ideal") <= 1.25, "{maglev}");
    for n in [3, 10] {
        let r = at("rendezvous/murmur3", n);
        // Exactly the removed replica's slots move (and, adding, only slots of the new one).
        assert_eq!(num(r, "removed_beyond"), 0.0, "{r}");
        assert_eq!(num(r, "added_beyond"), 0.0, "{r}");
        assert!(num(r, "slot_max_over_avg") < 1.05, "{r}");
        // The assignment's spec hash with the spec Φ: one replica takes nearly everything.
        let spec = at("ring/spec", n);
        assert!(num(spec, "slot_max_over_avg") > 0.9 * n as f64, "{spec}");
    }

    assert!(a5["live_skipped"].is_null(), "{}", a5["live_skipped"]);
    let live = a5["live"].as_array().unwrap();
    assert_eq!(live.len(), 5, "{live:?}");
    for run in live {
        assert_eq!(run["sent"].as_u64(), Some(REQUESTS), "{run}");
        assert_eq!(run["failed"].as_u64(), Some(0), "{run}");
        assert_eq!(run["as_predicted"].as_u64(), Some(REQUESTS), "{run}");
        let replicas = run["replicas"].as_array().unwrap();
        assert_eq!(replicas.len(), 3, "{run}");
        let sum: f64 = replicas.iter().map(|r| num(r, "share")).sum();
        assert!((sum - 1.0).abs() < 1e-9, "{run}");
        for r in replicas {
            assert!(
                (num(r, "share") - num(r, "predicted")).abs() < 0.01,
                "{run}"
            );
        }
    }

    let hot = a5["hot"].as_array().unwrap();
    assert_eq!(hot.len(), 2, "{hot:?}");
    assert!(hot[0]["unavailable"].is_null(), "{}", hot[0]);
    assert_eq!(hot[0]["failed"].as_u64(), Some(0), "{}", hot[0]);
    assert!(num(&hot[0], "busiest_share") >= 0.99, "{}", hot[0]);
    // With bounded loads: either the lb refused the setting and the row says so, or it ran.
    match hot[1]["unavailable"].as_str() {
        Some(why) => assert!(why.starts_with("not available in this lb"), "{why}"),
        None => assert_eq!(hot[1]["sent"].as_u64(), Some(REQUESTS), "{}", hot[1]),
    }
}

/// The setups' labels of an result's `curves`.
fn labels(curves: &[Value]) -> Vec<String> {
    curves
        .iter()
        .map(|c| {
            format!(
                "{}/{}",
                c["setup"]["algorithm"].as_str().unwrap(),
                c["setup"]["hash"].as_str().unwrap()
            )
        })
        .collect()
}

fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("{key} in {v}"))
}

/// A-6 offline: weights 1:2:3 at N = 3 within the bounds (Maglev 0.1 point,
/// rendezvous 1 point), the ring with K·w virtual nodes per replica; a weight change moving
/// at least the minimum, rendezvous only to the reweighted replica, Maglev at most 1.25× the
/// minimum.
fn check_a6_offline(a6: &Value) {
    assert_eq!(
        a6["skipped"].as_array().unwrap().len(),
        0,
        "{}",
        a6["skipped"]
    );
    let curves = a6["curves"].as_array().unwrap();
    let labels = labels(curves);
    assert_eq!(
        labels,
        [
            "ring/spec",
            "ring/murmur3",
            "ring/ketama",
            "maglev/murmur3",
            "rendezvous/murmur3"
        ]
    );
    let k = a6["virtual_nodes"].as_u64().unwrap();
    for (c, label) in curves.iter().zip(&labels) {
        let points = c["points"].as_array().unwrap();
        assert!(!points.is_empty(), "{label}");
        for p in points {
            let what = format!("{label} N = {}", p["n"]);
            let replicas = p["replicas"].as_array().unwrap();
            assert_eq!(replicas.len() as u64, p["n"].as_u64().unwrap(), "{what}");
            let weights: Vec<u64> = replicas
                .iter()
                .map(|r| r["weight"].as_u64().unwrap())
                .collect();
            let cycle: Vec<u64> = (0..replicas.len()).map(|i| i as u64 % 3 + 1).collect();
            assert_eq!(weights, cycle, "{what}");
            let total: f64 = replicas.iter().map(|r| num(r, "slot_share")).sum();
            assert!((total - 1.0).abs() < 1e-9, "{what}: {p}");
            for r in replicas {
                let target = num(r, "weight") / p["total_weight"].as_f64().unwrap();
                assert!((num(r, "target") - target).abs() < 1e-12, "{what}");
                let largest = num(p, "slot_error_points");
                assert!(
                    (num(r, "slot_share") - target).abs() * 100.0 <= largest + 1e-9,
                    "{what}"
                );
                // The ring places K·w virtual nodes for a replica of weight w.
                if label.starts_with("ring/") {
                    assert_eq!(
                        r["marks"].as_u64(),
                        Some(k * num(r, "weight") as u64),
                        "{what}"
                    );
                } else {
                    assert!(r["marks"].is_null(), "{what}");
                }
            }
            if label.starts_with("ring/") {
                assert_eq!(p["ring_marks_match"], true, "{what}");
            }
            let change = &p["change"];
            assert_eq!(
                (change["id"].as_u64(), change["from"].as_u64()),
                (Some(1), Some(1))
            );
            assert!(num(change, "requests_minimum") > 0.0, "{what}: {change}");
            assert!(
                num(change, "over_minimum") >= 1.0 - 1e-9,
                "{what}: {change}"
            );
            assert!(
                change["slots_moved"].as_u64() >= change["slots_minimum"].as_u64(),
                "{what}: {change}"
            );
            assert!(num(change, "moved_elsewhere") >= 0.0, "{what}: {change}");
            match label.as_str() {
                "maglev/murmur3" => {
                    assert!(num(p, "slot_error_points") <= 0.1, "{what}: {p}");
                    // The bound, at the N this test runs (3 and 10); the reference run
                    // shows Maglev over it at N = 50, where the minimum is a few hundred slots.
                    assert!(num(change, "over_minimum") <= 1.25, "{what}: {change}");
                    assert!(
                        num(change, "slots_over_minimum") <= 1.25,
                        "{what}: {change}"
                    );
                }
                "rendezvous/murmur3" => {
                    assert!(num(p, "slot_error_points") <= 1.0, "{what}: {p}");
                    assert!(num(p, "request_error_points") <= 1.0, "{what}: {p}");
                    assert_eq!(change["only_to_changed"], true, "{what}: {change}");
                    assert_eq!(num(change, "moved_elsewhere"), 0.0, "{what}: {change}");
                    assert_eq!(change["slots_moved"], change["slots_minimum"], "{change}");
                    assert!((num(change, "over_minimum") - 1.0).abs() < 1e-9, "{change}");
                }
                _ => {}
            }
        }
    }
    // N = 3 is exactly 1 : 2 : 3, and Maglev's slot shares are 1/6, 1/3, 1/2 within 0.1 point.
    let maglev = &curves[3]["points"][0];
    assert_eq!(maglev["n"], 3);
    let shares: Vec<f64> = maglev["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| num(r, "slot_share"))
        .collect();
    for (share, target) in shares.iter().zip([1.0 / 6.0, 1.0 / 3.0, 0.5]) {
        assert!((share - target).abs() < 0.001, "{shares:?}");
    }
}

/// the offline checks; live, the plan for an /add is the ring that /add makes, slot for
/// slot and request for request; a replica added with slow start ramps in without a failed
/// client request, from a small share to its whole one.
fn check_a6(a6: &Value, report: &str, out: &Path) {
    check_a6_offline(a6);
    assert!(report.contains("## A-6: weights, slow start and plans"));
    assert!(a6["live_skipped"].is_null(), "{}", a6["live_skipped"]);

    let p = &a6["plan"]["done"];
    assert!(p.is_object(), "the plan check did not run: {}", a6["plan"]);
    let m = a6["slots"].as_u64().unwrap();
    assert_eq!(p["slots"].as_u64(), Some(m), "{p}");
    assert_eq!(p["plan_owners"].as_u64(), Some(m), "{p}");
    assert_eq!(p["ring_owners"].as_u64(), Some(m), "{p}");
    assert_eq!(
        p["owners_equal"].as_u64(),
        Some(m),
        "plan owners ≠ ring owners: {p}"
    );
    assert_eq!(p["unchanged_by_plan"], true, "a plan changed the ring: {p}");
    assert_eq!(p["restored"], true, "{p}");
    let sample = p["sample"].as_u64().unwrap();
    assert!(sample > REQUESTS / 2 && sample <= REQUESTS, "{p}");
    assert_eq!(p["sample_failed"], 0, "{p}");
    assert_eq!(p["routed_as_ring"].as_u64(), Some(sample), "{p}");
    assert_eq!(p["as_planned"].as_u64(), Some(sample), "{p}");
    assert_eq!(p["moved_actual"], p["moved_predicted"], "{p}");
    // A replica of weight 2 joining three of weight 1 takes 2/5 of the requests; with
    // rendezvous exactly that moves.
    assert_eq!(p["total_weight_after"], 5, "{p}");
    assert!((num(p, "share_after") - 0.4).abs() < 0.01, "{p}");
    assert!(
        (num(p, "requests_moved") - num(p, "requests_minimum")).abs() < 1e-9,
        "{p}"
    );
    let sampled = p["moved_actual"].as_f64().unwrap() / sample as f64;
    assert!((sampled - num(p, "requests_moved")).abs() < 0.1, "{p}");

    let r = &a6["ramp"]["done"];
    assert!(r.is_object(), "the ramp did not run: {}", a6["ramp"]);
    let sent = r["traffic"]["sent"].as_u64().unwrap();
    assert!(sent > 1000, "{}", r["traffic"]);
    assert_eq!(
        r["failed"], 0,
        "client requests failed during the ramp: {}",
        r["traffic"]
    );
    assert_eq!(r["ran_out"], false);
    let slow = num(r, "slow_start_ms");
    let joined = num(r, "joined_ms");
    let done = r["ramp_done_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("the ramp never ended: {}", r["steps"]));
    assert!(
        done - joined >= 0.8 * slow && done - joined <= slow + 2000.0,
        "joined {joined} ms, whole weight {done} ms after the /add"
    );
    assert!(r["steps_seen"].as_u64() >= Some(5), "{}", r["steps"]);
    // The effective weight only rises, from a part of the weight.
    let seen: Vec<f64> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["effective_weight"].as_f64())
        .collect();
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert!(seen[0] > 0.0 && seen[0] <= 0.2, "{seen:?}");
    let (first, full, target) = (
        num(r, "first_share"),
        num(r, "full_share"),
        num(r, "target_share"),
    );
    assert!((target - 0.4).abs() < 1e-9, "{r}");
    assert!(
        (full - target).abs() < 0.05,
        "full share {full}, target {target}"
    );
    assert!(first < 0.5 * full, "first share {first}, full share {full}");
    let reached = num(r, "reached_ms");
    assert!(
        reached > joined + 0.5 * slow,
        "reached {reached} ms, joined {joined} ms"
    );
    let buckets = r["buckets"].as_array().unwrap();
    let binned: u64 = buckets
        .iter()
        .map(|b| b["served"].as_u64().unwrap() + b["failed"].as_u64().unwrap())
        .sum();
    assert_eq!(binned, sent);
    for b in buckets {
        if b["start_ms"].as_i64().unwrap() < 0 {
            assert_eq!(
                b["to_new"], 0,
                "answered by the new replica before its /add: {b}"
            );
        }
    }
    let csv = std::fs::read_to_string(out.join("a6_ramp.csv")).unwrap();
    assert_eq!(csv.lines().count(), buckets.len() + 1);
    let csv = std::fs::read_to_string(out.join("a6_plan.csv")).unwrap();
    assert_eq!(csv.lines().count(), 2);
    assert!(report.contains("### Live: slow start"));
    assert!(report.contains("The plan was the change"), "{report}");
}

#[test]
fn against_a_given_lb_a4_and_a6_skip_the_live_part_with_a_message() {
    let plugins = built_plugins();
    let lb = analysis::lb_process::OwnedLb::start(&lb_bin(), plugins).expect("start lb");
    let out = tempfile::tempdir().unwrap();
    let mut cmd = analysis();
    cmd.args(["a4", "--requests", "10", "--lb", &lb.url(), "--plugin-dir"])
        .arg(plugins)
        .arg("--out")
        .arg(out.path());
    let output = run(cmd, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("A-4 live part skipped"), "{stderr}");
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).unwrap())
            .unwrap();
    assert!(results["a4"]["live_skipped"]
        .as_str()
        .unwrap()
        .contains("--lb"));
    assert_eq!(results["a4"]["runs"].as_array().unwrap().len(), 0);
    assert_eq!(
        results["a4"]["offline"]["hashes"].as_array().unwrap().len(),
        SHIPPED.len()
    );
    let report = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(report.contains("The live part was skipped"), "{report}");
    assert!(results["a1"].is_null() && results["a3"].is_null());

    // A-6 likewise: its offline part, and the reason the live part did not run.
    let out = tempfile::tempdir().unwrap();
    let mut cmd = analysis();
    cmd.args(["a6", "--a6-counts", "3", "--lb", &lb.url(), "--plugin-dir"])
        .arg(plugins)
        .arg("--out")
        .arg(out.path());
    let output = run(cmd, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("A-6 live part skipped"), "{stderr}");
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("results.json")).unwrap())
            .unwrap();
    let a6 = &results["a6"];
    check_a6_offline(a6);
    assert!(
        a6["live_skipped"].as_str().unwrap().contains("--lb"),
        "{a6}"
    );
    assert!(a6["plan"].is_null() && a6["ramp"].is_null(), "{a6}");
    assert!(!out.path().join("a6_ramp.csv").exists());
    let report = std::fs::read_to_string(out.path().join("report.md")).unwrap();
    assert!(
        report.contains("### Live\n\nNot run: the load balancer was given with --lb"),
        "{report}"
    );
    assert!(results["a5"].is_null());
    lb.stop().expect("stop lb");
}

#[test]
fn bad_arguments_fail_with_a_message() {
    let out = tempfile::tempdir().unwrap();
    let mut cmd = analysis();
    cmd.args(["a1", "--lb", "ftp://127.0.0.1:1", "--out"])
        .arg(out.path());
    let output = run(cmd, Duration::from_secs(30));
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("only http:// URLs"),
        "{output:?}"
    );

    let mut cmd = analysis();
    cmd.args(["a1", "--lb-bin", "/nonexistent/lb", "--out"])
        .arg(out.path());
    let output = run(cmd, Duration::from_secs(30));
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("no lb binary at /nonexistent/lb"),
        "{output:?}"
    );

    let mut cmd = analysis();
    cmd.args(["a1", "--requests", "0"]);
    let output = run(cmd, Duration::from_secs(30));
    assert!(!output.status.success());
}
