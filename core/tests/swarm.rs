//! The Swarm supervisor on a real single-node swarm: replicas as services, two load balancers
//! of one instance sharing one ring, a killed task replaced by Swarm and followed by lb, and
//! services that outlive lb until `lb swarm down`.
//!
//! Needs a running engine that is a swarm manager and the replica image
//! (`scripts/docker-up-engine.sh`, `docker swarm init --advertise-addr 127.0.0.1`,
//! `docker/build-images.sh`; `scripts/test.sh` does all three). Without them the tests skip with
//! a notice — except in CI (`CI` set) or with `LB_REQUIRE_DOCKER=1`, where they fail. Every test
//! removes the services and network it created, also when it fails (a drop guard).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::engine::{Engine, EngineProxy};
use common::{docker, docker_quiet, eventually, free_port, Lb, Traffic};

const DEADLINE: Duration = Duration::from_secs(30);
/// Request ids routed through both load balancers.
const IDS: usize = 40;

/// Whether the engine is an active swarm manager with the replica image; if not, skip (or fail
/// where Docker is required).
fn swarm_ready() -> bool {
    let required =
        std::env::var_os("CI").is_some() || std::env::var_os("LB_REQUIRE_DOCKER").is_some();
    let state = Command::new("docker")
        .args([
            "info",
            "--format",
            "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let image = Command::new("docker")
        .args(["image", "inspect", "lb-replica:latest"])
        .output()
        .is_ok_and(|o| o.status.success());
    let why = match state.as_deref() {
        None => "no Docker engine answers (run scripts/docker-up-engine.sh)".to_owned(),
        Some("active true") if image => return true,
        Some("active true") => "image lb-replica:latest is missing (run docker/build-images.sh)".into(),
        Some(other) => format!(
            "the engine is not a swarm manager ({other}); run docker swarm init --advertise-addr 127.0.0.1"
        ),
    };
    assert!(!required, "Swarm tests are required here, but {why}");
    eprintln!("SKIPPED: {why}; scripts/test.sh sets everything up");
    false
}

/// An instance and an overlay network of this test's own; every service and the network are
/// removed on drop.
struct Scope {
    instance: String,
    network: String,
}

impl Scope {
    fn new() -> Scope {
        let tag = format!("lbtest-{:08x}", fastrand::u32(..));
        Scope {
            instance: tag.clone(),
            network: tag,
        }
    }

    /// The instance's services: name → hostname label (a service removed between the listing
    /// and its inspection is left out).
    fn services(&self) -> BTreeMap<String, String> {
        docker(&[
            "service",
            "ls",
            "--filter",
            &format!("label=io.lb.swarm.instance={}", self.instance),
            "--format",
            "{{.Name}}",
        ])
        .lines()
        .filter_map(|name| {
            let inspected = Command::new("docker")
                .args([
                    "service",
                    "inspect",
                    "--format",
                    "{{index .Spec.Labels \"io.lb.hostname\"}}",
                    name,
                ])
                .output()
                .ok()
                .filter(|o| o.status.success())?;
            let hostname = String::from_utf8_lossy(&inspected.stdout).trim().to_owned();
            Some((name.to_owned(), hostname))
        })
        .collect()
    }

    /// The running task container of the replica `hostname`.
    fn container_of(&self, hostname: &str) -> Option<String> {
        docker(&[
            "ps",
            "-q",
            "--filter",
            &format!("label=io.lb.swarm.instance={}", self.instance),
            "--filter",
            &format!("label=io.lb.hostname={hostname}"),
        ])
        .split_whitespace()
        .next()
        .map(str::to_owned)
    }

    fn config(&self, replicas: &[(&str, u64)]) -> String {
        let mut text = format!(
            r#"
[health]
interval_ms = 200
timeout_ms = 500
start_timeout_ms = 20000
[supervisor]
kind = "swarm"
image = "lb-replica:latest"
network = "{}"
instance = "{}"
address = "published"
"#,
            self.network, self.instance
        );
        for (hostname, id) in replicas {
            text.push_str(&format!(
                "[[replicas]]\nhostname = \"{hostname}\"\nid = {id}\n"
            ));
        }
        text
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let label = format!("label=io.lb.swarm.instance={}", self.instance);
        let ids = docker_quiet(&["service", "ls", "-q", "--filter", &label]);
        for id in ids.split_whitespace() {
            docker_quiet(&["service", "rm", id]);
        }
        // The network is in use until the tasks have stopped.
        let deadline = Instant::now() + DEADLINE;
        while Instant::now() < deadline {
            let removed = Command::new("docker")
                .args(["network", "rm", &self.network])
                .output()
                .map(|o| {
                    o.status.success() || String::from_utf8_lossy(&o.stderr).contains("not found")
                })
                .unwrap_or(true);
            if removed {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

const THREE: [(&str, u64); 3] = [("Server 1", 1), ("Server 2", 2), ("Server 3", 3)];

/// Which replica answered each of `IDS` request ids through `lb`.
async fn routing(lb: &Lb) -> Vec<String> {
    let mut served = Vec::with_capacity(IDS);
    for i in 0..IDS {
        let id = format!("{}", 100_000 + i * 22_501);
        served.push(lb.home(&[("X-Request-Id", &id)]).await);
    }
    served
}

async fn owners(lb: &Lb) -> serde_json::Value {
    lb.get("/_lb/ring").await.json()["owners"].clone()
}

/// Both load balancers show `n` replicas, the same ones, with the same ring.
async fn agree(a: &Lb, b: &Lb, n: u64, what: &str) -> Vec<String> {
    eventually(DEADLINE, what, || async {
        let (ra, rb) = (a.rep().await, b.rep().await);
        let same = ra.0 == n && ra == rb && owners(a).await == owners(b).await;
        same.then_some(ra.1)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn two_load_balancers_of_one_instance_share_the_ring() {
    if !swarm_ready() {
        return;
    }
    let scope = Scope::new();
    let a = Lb::start(&scope.config(&THREE));
    assert_eq!(a.rep().await.0, 3);
    assert_eq!(
        scope.services().into_values().collect::<BTreeSet<_>>(),
        THREE.iter().map(|(h, _)| (*h).to_owned()).collect()
    );
    // B's file lists something else: the swarm already runs the instance, so B takes its
    // replicas and writes them back.
    let b = Lb::start(&scope.config(&[("Elsewhere", 9)]));
    assert!(
        b.log()
            .contains("the swarm already runs this instance's replicas"),
        "{}",
        b.log()
    );
    agree(&a, &b, 3, "both rings the same with 3 replicas").await;
    // The write-back runs off the controller: it may land after the rings agree.
    eventually(DEADLINE, "B's file lists the swarm's replicas", || async {
        let file = std::fs::read_to_string(&b.config).unwrap();
        (file.contains("Server 2") && !file.contains("Elsewhere")).then_some(())
    })
    .await;
    assert_eq!(scope.services().len(), 3, "B created nothing");
    let through_a = routing(&a).await;
    assert_eq!(through_a, routing(&b).await);
    assert!(
        through_a.iter().collect::<BTreeSet<_>>().len() >= 2,
        "40 ids all on one replica: {through_a:?}"
    );

    // /add through A: B sees it without being told.
    a.ok("POST", "/add", br#"{"n": 1, "hostnames": ["S4"]}"#)
        .await;
    let added = Instant::now();
    let names = agree(&a, &b, 4, "B has S4 too").await;
    eprintln!("B saw A's /add after {:?}", added.elapsed());
    assert!(names.contains(&"S4".to_owned()), "{names:?}");
    assert_eq!(routing(&a).await, routing(&b).await);

    // /rm through B: A follows.
    b.ok("DELETE", "/rm", br#"{"n": 1, "hostnames": ["Server 2"]}"#)
        .await;
    let names = agree(&a, &b, 3, "Server 2 gone from both").await;
    assert!(!names.contains(&"Server 2".to_owned()), "{names:?}");
    assert_eq!(routing(&a).await, routing(&b).await);
    eventually(DEADLINE, "Server 2's service removed", || async {
        (scope.services().len() == 3).then_some(())
    })
    .await;
    // A's file follows too.
    let file = std::fs::read_to_string(&a.config).unwrap();
    assert!(file.contains("S4") && !file.contains("Server 2"), "{file}");

    // An entry added to A's file becomes a service, which B follows (and writes back).
    std::fs::write(
        &a.config,
        format!("{file}\n[[replicas]]\nhostname = \"S5\"\nid = 5\n"),
    )
    .unwrap();
    let names = agree(&a, &b, 4, "S5 from A's file in both rings").await;
    assert!(names.contains(&"S5".to_owned()), "{names:?}");
    assert!(scope.services().values().any(|h| h == "S5"));
    eventually(DEADLINE, "B's file lists S5", || async {
        std::fs::read_to_string(&b.config)
            .unwrap()
            .contains("\"S5\"")
            .then_some(())
    })
    .await;

    // Backends by address are not shared through Swarm: refused, nothing changes.
    let refused = a
        .send(
            "POST",
            "/add",
            br#"{"n": 1, "hostnames": ["x"], "addresses": ["127.0.0.1:9"]}"#,
            &[],
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("swarm"), "{}", refused.body);
    assert_eq!(a.rep().await.0, 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_task_is_replaced_and_keeps_its_id_and_slots() {
    if !swarm_ready() {
        return;
    }
    let scope = Scope::new();
    let a = Arc::new(Lb::start(&scope.config(&THREE)));
    let b = Lb::start(&scope.config(&THREE));
    agree(&a, &b, 3, "both rings the same").await;
    let before = routing(&a).await;
    let ring_before = owners(&a).await;
    let victim = "Server 2";
    let address = |status: serde_json::Value| {
        status["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["hostname"] == victim && r["healthy"] == true)
            .map(|r| r["address"].as_str().unwrap().to_owned())
    };
    let old = address(a.status().await).expect("victim serving");
    let container = scope.container_of(victim).expect("victim's container");

    let traffic = Traffic::start(&a, 2);
    docker(&["kill", &container]);
    let killed = Instant::now();
    // Swarm starts a new task; both load balancers find it at its new address.
    for lb in [&*a, &b] {
        eventually(
            DEADLINE,
            "the victim serving again at a new address",
            || async { address(lb.status().await).filter(|now| *now != old) },
        )
        .await;
    }
    eprintln!("serving again {:?} after docker kill", killed.elapsed());
    let answers = traffic.finish().await;
    let failed = answers.iter().filter(|a| a.status != 200).count();
    assert!(answers.len() >= 10, "only {} requests", answers.len());
    // The death is reported at once: at most the requests already on their way can fail.
    assert!(failed <= 4, "{failed} of {} requests failed", answers.len());
    assert_ne!(
        scope.container_of(victim).as_deref(),
        Some(container.as_str())
    );
    // Same id, same name, same slots: every id goes where it went before, through either lb.
    assert_eq!(owners(&a).await, ring_before);
    assert_eq!(routing(&a).await, before);
    assert_eq!(routing(&b).await, before);
    assert_eq!(a.rep().await.0, 3);
    assert_eq!(scope.services().len(), 3);
}

/// A binary upgrade (SIGUSR2) in Swarm mode: the new lb lists the same services and tasks and
/// routes every id as before; clients see nothing.
#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_keeps_the_services_and_the_ring() {
    if !swarm_ready() {
        return;
    }
    let scope = Scope::new();
    let lb = Arc::new(Lb::start(&scope.config(&THREE)));
    let successor = common::upgrade::Successor::default();
    eventually(DEADLINE, "three replicas", || async {
        (lb.rep().await.0 == 3).then_some(())
    })
    .await;
    let before = routing(&lb).await;
    let ring = owners(&lb).await;
    let services = scope.services();
    let traffic = Traffic::start(&lb, 2);
    let (_, generation) = common::upgrade::upgrade(&lb, &successor).await;
    assert_eq!(generation, 2);
    traffic.finish_all_ok(20).await;
    assert_eq!(scope.services(), services, "services changed");
    assert_eq!(owners(&lb).await, ring);
    assert_eq!(routing(&lb).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn services_outlive_lb_until_swarm_down() {
    if !swarm_ready() {
        return;
    }
    let scope = Scope::new();
    let a = Lb::start(&scope.config(&THREE));
    assert_eq!(a.rep().await.0, 3);
    drop(a); // SIGTERM, and wait for it to exit
    let running = scope.services();
    assert_eq!(running.len(), 3, "{running:?}");
    // A later lb of the instance finds them (its file's list is replaced).
    let c = Lb::start(&scope.config(&[("Other", 1)]));
    let (n, names) = c.rep().await;
    assert_eq!(n, 3, "{names:?}");
    assert!(!names.contains(&"Other".to_owned()));

    // A service with the instance label but labels lb cannot read (issue 24: `lb swarm down`
    // left it, and then the network it held, and exited 0).
    let odd = format!("{}-odd", scope.instance);
    docker(&[
        "service",
        "create",
        "--detach",
        "--replicas",
        "0",
        "--name",
        &odd,
        "--label",
        &format!("io.lb.swarm.instance={}", scope.instance),
        "--label",
        "io.lb.server-id=not-a-number",
        "--network",
        &scope.network,
        "lb-replica:latest",
    ]);
    let out = Command::new(env!("CARGO_BIN_EXE_lb"))
        .args(["swarm", "down", "--instance", &scope.instance])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&odd), "{stdout}");
    for i in 1..=3 {
        assert!(
            stdout.contains(&format!("{}-{i}", scope.instance)),
            "{stdout}"
        );
    }
    assert!(scope.services().is_empty());
    // The lb still running sees its replicas leave.
    eventually(DEADLINE, "c's ring empty", || async {
        (c.rep().await.0 == 0).then_some(())
    })
    .await;
    drop(c);
    // Nothing of the instance is left, network included (a removed swarm network leaves the
    // node's list a moment later).
    assert!(
        stdout.contains(&format!("network {}", scope.network)),
        "{stdout}"
    );
    eventually(DEADLINE, "the network gone", || async {
        let networks = docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("name=^{}$", scope.network),
        ]);
        networks.trim().is_empty().then_some(())
    })
    .await;
    // Another instance name is refused before anything is touched.
    let bad = Command::new(env!("CARGO_BIN_EXE_lb"))
        .args(["swarm", "down", "--instance", "no spaces"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

/// `GET path` on 127.0.0.1:`port` with an `X-Request-Id`; the response body, or `None` when
/// nothing answers with 200 within a second (yet).
fn fetch(port: u16, path: &str, id: &str) -> Option<String> {
    use std::io::{Read, Write};
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: lb\r\nX-Request-Id: {id}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// Removes a stack on drop (the replica services and the network go with the [`Scope`]).
struct Stack(String);

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["stack", "rm", &self.0])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stack_runs_lb_on_the_overlay_and_shares_the_ring_with_a_host_lb() {
    if !swarm_ready() {
        return;
    }
    let image = Command::new("docker")
        .args(["image", "inspect", "lb:latest"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !image {
        assert!(
            std::env::var_os("CI").is_none() && std::env::var_os("LB_REQUIRE_DOCKER").is_none(),
            "image lb:latest is missing (docker/build-images.sh)"
        );
        eprintln!("SKIPPED: image lb:latest is missing (run docker/build-images.sh)");
        return;
    }
    let scope = Scope::new();
    // The shipped stack files and configuration, with this test's names and ports: the plain
    // stack with deploy/stack.https.yml on top (the certificate and key as Swarm secrets).
    let plain = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/lb.stack.toml"
    ))
    .unwrap();
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/lb.stack-https.toml"
    ))
    .unwrap();
    assert!(
        shipped.starts_with(&plain) && shipped.contains("[tls]"),
        "config/lb.stack-https.toml is config/lb.stack.toml and a [tls] section"
    );
    let config = shipped
        .replace(
            "network = \"lb-stack\"",
            &format!("network = \"{}\"", scope.network),
        )
        .replace(
            "instance = \"lb-stack\"",
            &format!("instance = \"{}\"", scope.instance),
        );
    assert!(config.contains(&scope.instance) && config.contains("address = \"ip\""));
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("lb.stack.toml");
    std::fs::write(&config_path, config).unwrap();
    let certs = dir.path().join("certs");
    lb::self_signed(&["localhost".to_owned()], &certs).unwrap();
    let (port, https) = (free_port(), free_port());
    let stack = Stack(format!("{}-stack", scope.instance));
    let deployed = Command::new("docker")
        .args(["stack", "deploy", "-c"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/stack.yml"))
        .arg("-c")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/stack.https.yml"
        ))
        .arg(&stack.0)
        .env("LB_PORT", port.to_string())
        .env("LB_HTTPS_PORT", https.to_string())
        .env("LB_NETWORK", &scope.network)
        .env("LB_STACK_CONFIG", &config_path)
        .env("LB_TLS_CERT", certs.join("cert.pem"))
        .env("LB_TLS_KEY", certs.join("key.pem"))
        .output()
        .unwrap();
    assert!(
        deployed.status.success(),
        "{}",
        String::from_utf8_lossy(&deployed.stderr)
    );
    // The stack's lb seeds the three replicas and serves them on the published port.
    let rep = eventually(
        Duration::from_secs(60),
        "the stack's lb serving 3",
        || async { fetch(port, "/rep", "0").filter(|body| body.contains("\"N\": 3")) },
    )
    .await;
    assert!(rep.contains("Server 1"), "{rep}");
    assert_eq!(scope.services().len(), 3);
    // HTTPS on its own published port, with the certificate from the secrets: the same answers.
    let ca = certs.join("ca.pem");
    for i in 0..4 {
        let id = format!("{}", 7 + i * 1_000_003);
        let secure = eventually(
            Duration::from_secs(20),
            "the stack's lb over HTTPS",
            || async { common::fetch_https(https, "localhost", &ca, "/home", &id) },
        )
        .await;
        assert_eq!(Some(secure), fetch(port, "/home", &id), "id {id}");
    }
    // An lb on the host, same instance: same ring, same routing (it reaches the tasks by their
    // published ports, the stack's lb by their overlay addresses).
    let host = Lb::start(&scope.config(&[]));
    assert_eq!(host.rep().await.0, 3);
    for i in 0..IDS {
        let id = format!("{}", 100_000 + i * 22_501);
        let body = fetch(port, "/home", &id).expect("the stack's lb answers /home");
        let through_host = host.home(&[("X-Request-Id", &id)]).await;
        assert!(
            body.contains(&format!("Server: {through_host}\"")),
            "id {id}: stack {body}, host {through_host}"
        );
    }
    drop(host);
    // `docker stack rm` before `lb swarm down` (issue 24: the stack's network, held by the
    // replica services, was left behind): `lb swarm down` removes it once nothing uses it.
    drop(stack);
    let out = Command::new(env!("CARGO_BIN_EXE_lb"))
        .args(["swarm", "down", "--instance", &scope.instance])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("network {}", scope.network)),
        "{stdout}"
    );
    eventually(DEADLINE, "the stack's network gone", || async {
        let networks = docker(&[
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("name=^{}$", scope.network),
        ]);
        networks.trim().is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_load_balancers_seeding_at_once_create_each_service_once() {
    if !swarm_ready() {
        return;
    }
    let scope = Scope::new();
    let config = scope.config(&THREE);
    // Both find no service and create the same three: the second create of each name finds
    // the first one's service for the same replica and takes it.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Lb::start(&config));
        let b = s.spawn(|| Lb::start(&config));
        (a.join().unwrap(), b.join().unwrap())
    });
    agree(&a, &b, 3, "both serving the same three").await;
    assert_eq!(scope.services().len(), 3, "{:?}", scope.services());
    assert_eq!(routing(&a).await, routing(&b).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_seed_that_cannot_run_is_kept_retried_and_removed_with_its_entry() {
    if !swarm_ready() {
        return;
    }
    let scope = Scope::new();
    let config = scope
        .config(&[("Broken", 1)])
        .replace("lb-replica:latest", "lb-replica:no-such-tag")
        .replace("start_timeout_ms = 20000", "start_timeout_ms = 1500");
    let lb = Lb::start(&config);
    // It stays a vacancy with the engine's reason, is created again and again, and the file
    // keeps listing it.
    let vacancy = |status: serde_json::Value| {
        status["vacancies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["hostname"] == "Broken")
            .cloned()
    };
    let retried = eventually(DEADLINE, "a second attempt", || async {
        vacancy(lb.status().await).filter(|v| v["failed_attempts"].as_u64() >= Some(2))
    })
    .await;
    let reason = retried["reason"].as_str().unwrap();
    assert!(reason.contains("image"), "{reason}");
    assert_eq!(lb.rep().await.0, 0);
    let file = std::fs::read_to_string(&lb.config).unwrap();
    assert!(file.contains("\"Broken\""), "{file}");

    // Removing the entry removes the vacancy and leaves no service behind.
    let without = file.replace("[[replicas]]\nhostname = \"Broken\"\nid = 1\n", "");
    assert_ne!(without, file);
    std::fs::write(&lb.config, &without).unwrap();
    eventually(DEADLINE, "no vacancy and no service", || async {
        (vacancy(lb.status().await).is_none() && scope.services().is_empty()).then_some(())
    })
    .await;
    assert!(!std::fs::read_to_string(&lb.config)
        .unwrap()
        .contains("Broken"));
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_adds_through_two_load_balancers_both_succeed() {
    if !swarm_ready() {
        return;
    }
    let scope = Scope::new();
    let a = Lb::start(&scope.config(&THREE));
    let b = Lb::start(&scope.config(&THREE));
    agree(&a, &b, 3, "both rings the same").await;
    // Both pick the lowest free server id; the one whose service comes second plans again once
    // the listing shows the other's.
    for round in 0..2 {
        let body = br#"{"n": 1}"#;
        let (ra, rb) = tokio::join!(
            a.send("POST", "/add", body, &[]),
            b.send("POST", "/add", body, &[])
        );
        assert_eq!(
            (ra.status, rb.status),
            (200, 200),
            "round {round}: {} / {}",
            ra.body,
            rb.body
        );
        let n = 5 + 2 * round;
        agree(&a, &b, n, "both adds in both rings").await;
        assert_eq!(scope.services().len() as u64, n);
    }
    assert_eq!(routing(&a).await, routing(&b).await);
}

/// When `lb`'s last configuration reload was applied (`/_lb/status`).
async fn last_applied(lb: &Lb) -> String {
    lb.status().await["config"]["last_applied"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Whether `lb` holds `hostname` as a replica or a vacancy.
async fn holds(lb: &Lb, hostname: &str) -> bool {
    let status = lb.status().await;
    ["replicas", "vacancies"].iter().any(|list| {
        status[list]
            .as_array()
            .is_some_and(|l| l.iter().any(|r| r["hostname"] == hostname))
    })
}

/// Save `lb`'s file as an editor would (read it, change a setting, write it back): only
/// `[health] interval_ms` changes, to `interval`.
fn save_a_setting(lb: &Lb, interval: u32) {
    let text = std::fs::read_to_string(&lb.config).unwrap();
    let start = text
        .find("interval_ms = ")
        .expect("interval_ms in the file");
    let end = start + text[start..].find('\n').unwrap();
    let saved = format!("{}interval_ms = {interval}{}", &text[..start], &text[end..]);
    assert_ne!(saved, text);
    std::fs::write(&lb.config, saved).unwrap();
}

/// The save race of issue 24: a save of B's file that lands just before an `/add` or `/rm`
/// through A (so that B applies it while following A's change) only changes a setting; on
/// main B applied its replica list as a whole, deleting A's new service (`/add` → 500) or
/// creating the removed one again.
#[tokio::test(flavor = "multi_thread")]
async fn a_save_of_one_lbs_file_never_undoes_another_lbs_add_or_rm() {
    if !swarm_ready() {
        return;
    }
    let scope = Scope::new();
    let a = Lb::start(&scope.config(&THREE));
    let b = Lb::start(&scope.config(&THREE));
    agree(&a, &b, 3, "both rings the same").await;
    let mut n = 3;
    for round in 0..4u32 {
        // /add through A right after a save of B's file.
        let before = last_applied(&b).await;
        let name = format!("Add{round}");
        save_a_setting(&b, 201 + 2 * round);
        let added = a
            .send(
                "POST",
                "/add",
                format!(r#"{{"n": 1, "hostnames": ["{name}"]}}"#).as_bytes(),
                &[],
            )
            .await;
        assert_eq!(added.status, 200, "round {round}: {}", added.body);
        n += 1;
        eventually(DEADLINE, "B applied the save", || async {
            (last_applied(&b).await != before).then_some(())
        })
        .await;
        let names = agree(&a, &b, n, "A's /add in both rings").await;
        assert!(names.contains(&name), "round {round}: {names:?}");
        assert_eq!(scope.services().len() as u64, n, "round {round}");

        // /rm through A right after another save of B's file.
        let before = last_applied(&b).await;
        let victim = if round == 0 {
            "Server 2".to_owned()
        } else {
            format!("Add{}", round - 1)
        };
        save_a_setting(&b, 202 + 2 * round);
        a.ok(
            "DELETE",
            "/rm",
            format!(r#"{{"n": 1, "hostnames": ["{victim}"]}}"#).as_bytes(),
        )
        .await;
        n -= 1;
        eventually(DEADLINE, "B applied the save", || async {
            (last_applied(&b).await != before).then_some(())
        })
        .await;
        // Once B applied the save, it must not be bringing the removed replica back.
        assert!(
            !holds(&b, &victim).await,
            "round {round}: B re-creates {victim}"
        );
        let names = agree(&a, &b, n, "A's /rm in both rings").await;
        assert!(!names.contains(&victim), "round {round}: {names:?}");
        eventually(DEADLINE, "the removed service stays gone", || async {
            let services = scope.services();
            (services.len() as u64 == n && !services.values().any(|h| *h == victim)).then_some(())
        })
        .await;
    }
    // The saves' setting is B's, and both files list the same replicas.
    let (_, names) = b.rep().await;
    let file = std::fs::read_to_string(&b.config).unwrap();
    assert!(file.contains("interval_ms = 208"), "{file}");
    for name in names {
        assert!(
            file.contains(&format!("\"{name}\"")),
            "{name} not in {file}"
        );
    }
}

/// More labelled services than the ring holds (here: made by an lb with a larger ring) when an
/// lb starts: it seats what fits, in id order, serves them, and writes back a file `lb check`
/// accepts. On main it seated all of them, the ring build failed, it served the empty ring
/// (N = 0, every request 503) and its next start was refused by the check.
#[tokio::test(flavor = "multi_thread")]
async fn an_lb_whose_ring_holds_fewer_than_the_swarm_lists_seats_what_fits() {
    if !swarm_ready() {
        return;
    }
    let scope = Scope::new();
    let four = [
        ("Server 1", 1),
        ("Server 2", 2),
        ("Server 3", 3),
        ("Server 4", 4),
    ];
    let big = Lb::start(&format!("[ring]\nslots = 64\n{}", scope.config(&four)));
    assert_eq!(big.rep().await.0, 4);
    // The services stay. 27 slots, 9 virtual nodes each: room for 3.
    drop(big);
    let small = format!("[ring]\nslots = 27\n{}", scope.config(&[]));
    let mut b = Lb::start(&small);
    let (n, names) = b.rep().await;
    assert_eq!(n, 3, "{names:?}");
    assert_eq!(names, ["Server 1", "Server 2", "Server 3"]);
    b.home(&[("X-Request-Id", "123456")]).await;
    assert!(
        b.log().contains("more replicas than the ring holds"),
        "{}",
        b.log()
    );
    let check = Command::new(env!("CARGO_BIN_EXE_lb"))
        .arg("check")
        .arg(&b.config)
        .output()
        .unwrap();
    let file = std::fs::read_to_string(&b.config).unwrap();
    assert!(
        check.status.success(),
        "{}\n{file}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(!file.contains("Server 4"), "{file}");
    // It starts again on that file.
    let path = b.config.clone();
    let kept = tempfile::tempdir().unwrap();
    let copy = kept.path().join("lb.toml");
    std::fs::copy(&path, &copy).unwrap();
    assert!(b
        .signal_and_wait(libc::SIGTERM, Duration::from_secs(10))
        .is_some());
    let again = Lb::start_file(&copy);
    assert_eq!(again.rep().await.0, 3);
    assert_eq!(scope.services().len(), 4, "nothing removed");
}

/// An engine that stops answering (issue 24): `/rm` fails with the reason instead of answering
/// 200 and removing nothing (the replica stays), and `/add` gives up at `start_timeout_ms`
/// instead of bollard's 120 s, with the service its create made once the engine answers late
/// removed. `DOCKER_HOST` is honoured (it points `lb` at the test's socket).
#[tokio::test(flavor = "multi_thread")]
async fn an_engine_that_does_not_answer_fails_rm_and_add_cleanly() {
    if !swarm_ready() {
        return;
    }
    let scope = Scope::new();
    let proxy = EngineProxy::start();
    let config = scope
        .config(&THREE)
        .replace("start_timeout_ms = 20000", "start_timeout_ms = 8000");
    let lb = Lb::start_with_env(&config, &[("DOCKER_HOST", &proxy.host())]);
    eventually(DEADLINE, "3 replicas", || async {
        (lb.rep().await.0 == 3).then_some(())
    })
    .await;

    proxy.set(Engine::Silent);
    let rm = lb
        .send(
            "DELETE",
            "/rm",
            br#"{"n": 1, "hostnames": ["Server 2"]}"#,
            &[],
        )
        .await;
    assert_eq!(rm.status, 503, "{}", rm.body);
    assert!(
        rm.body.contains("could not remove 'Server 2'"),
        "{}",
        rm.body
    );
    let (n, names) = lb.rep().await;
    assert_eq!(n, 3, "{names:?}");
    assert_eq!(scope.services().len(), 3);
    assert!(!lb.log().contains("\"replica removed\"") && !lb.log().contains(" replica removed"));

    // Requests reach the engine, answers do not come back in time: the create lands.
    proxy.set(Engine::Late);
    let add = lb
        .send("POST", "/add", br#"{"n": 1, "hostnames": ["Late"]}"#, &[])
        .await;
    assert_eq!(add.status, 500, "{}", add.body);
    assert!(add.body.contains("start_timeout_ms"), "{}", add.body);
    proxy.set(Engine::Answers);
    eventually(DEADLINE * 2, "the late service removed", || async {
        let services = scope.services();
        (services.len() == 3 && !services.values().any(|h| h == "Late")).then_some(())
    })
    .await;
    assert_eq!(lb.rep().await.0, 3);
    // The engine answers again: the same /rm works.
    lb.ok("DELETE", "/rm", br#"{"n": 1, "hostnames": ["Server 2"]}"#)
        .await;
    assert_eq!(lb.rep().await.0, 2);
    eventually(DEADLINE, "Server 2's service removed", || async {
        (scope.services().len() == 2).then_some(())
    })
    .await;
}

/// Each replica's weight as `lb` shows it in `/_lb/status` (hostname → weight).
async fn weights(lb: &Lb) -> BTreeMap<String, u64> {
    let status = lb.status().await;
    status["replicas"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|r| {
                    let name = r["hostname"].as_str().unwrap_or_default().to_owned();
                    (name, r["weight"].as_u64().unwrap_or(0))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The `io.lb.weight` label of server id `id`'s service.
fn weight_label(scope: &Scope, id: u64) -> String {
    docker(&[
        "service",
        "inspect",
        "--format",
        "{{index .Spec.Labels \"io.lb.weight\"}}",
        &format!("{}-{id}", scope.instance),
    ])
    .trim()
    .to_owned()
}

/// Weights in Swarm mode live in the services' `io.lb.weight` labels: a weight in A's file is
/// created as the label and B (whose file says 1) follows it; `docker service update
/// --label-add` reweighs both rings without restarting the task; a save of A's file sets the
/// label and B follows; a label that is not a weight counts as 1. The two rings agree at every
/// step.
#[tokio::test(flavor = "multi_thread")]
async fn weights_live_in_the_services_labels_and_every_lb_follows_them() {
    if !swarm_ready() {
        return;
    }
    let scope = Scope::new();
    let a = Lb::start(
        &scope
            .config(&THREE)
            .replacen("id = 2\n", "id = 2\nweight = 2\n", 1),
    );
    eventually(DEADLINE, "A's three services", || async {
        (a.rep().await.0 == 3).then_some(())
    })
    .await;
    assert_eq!(weight_label(&scope, 2), "2");
    assert_eq!(weight_label(&scope, 1), "1");
    let b = Lb::start(&scope.config(&THREE));
    let both = |want: [u64; 3], what: &'static str| {
        let (a, b) = (&a, &b);
        async move {
            let want: BTreeMap<String, u64> = THREE
                .iter()
                .zip(want)
                .map(|((name, _), w)| ((*name).to_owned(), w))
                .collect();
            eventually(DEADLINE, what, || async {
                let same = weights(a).await == want
                    && weights(b).await == want
                    && owners(a).await == owners(b).await;
                same.then_some(())
            })
            .await;
        }
    };
    both([1, 2, 1], "B follows the label A created").await;
    let file = || std::fs::read_to_string(&b.config).unwrap();
    eventually(DEADLINE, "B's file written back", || async {
        file().contains("weight = 2").then_some(())
    })
    .await;

    // The label changed by hand: both rings, the task keeps running.
    let task = scope.container_of("Server 2").expect("Server 2 runs");
    let service2 = format!("{}-2", scope.instance);
    docker(&[
        "service",
        "update",
        "-d",
        "--label-add",
        "io.lb.weight=3",
        &service2,
    ]);
    both([1, 3, 1], "both follow the changed label").await;
    assert_eq!(scope.container_of("Server 2"), Some(task), "not restarted");

    // A save of A's file: the label, then B.
    let text = std::fs::read_to_string(&a.config).unwrap();
    assert!(
        text.contains("weight = 3"),
        "A wrote the label's weight back: {text}"
    );
    std::fs::write(
        &a.config,
        text.replacen("id = 1\n", "id = 1\nweight = 4\n", 1),
    )
    .unwrap();
    both([4, 3, 1], "A's saved weight in both rings").await;
    assert_eq!(weight_label(&scope, 1), "4");

    // Not a weight: 1.
    docker(&[
        "service",
        "update",
        "-d",
        "--label-add",
        "io.lb.weight=heavy",
        &service2,
    ]);
    both([4, 1, 1], "a label that is not a weight counts as 1").await;
    // Every request still answered by the ring both agree on.
    assert_eq!(routing(&a).await, routing(&b).await);
}
