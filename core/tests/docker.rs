//! The Docker supervisor on a real engine: replicas as containers, failures replaced, foreign
//! containers untouched, restarts adopt, and the docker-compose stack end to end.
//!
//! Needs a running engine and the images (`scripts/docker-up-engine.sh`,
//! `docker/build-images.sh`; `scripts/test.sh` runs both). Without them the tests skip with a
//! notice — except in CI (`CI` set) or with `LB_REQUIRE_DOCKER=1`, where they fail.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{docker, docker_quiet, eventually, Lb, Traffic};

const DEADLINE: Duration = Duration::from_secs(30);

/// Whether the engine and the images are there; if not, skip (or fail where Docker is required).
fn docker_ready(images: &[&str]) -> bool {
    let required =
        std::env::var_os("CI").is_some() || std::env::var_os("LB_REQUIRE_DOCKER").is_some();
    let engine = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    let missing: Vec<&str> = images
        .iter()
        .copied()
        .filter(|image| {
            !engine
                || !Command::new("docker")
                    .args(["image", "inspect", image])
                    .output()
                    .is_ok_and(|o| o.status.success())
        })
        .collect();
    if engine && missing.is_empty() {
        return true;
    }
    let why = if engine {
        format!("images {missing:?} are missing (run docker/build-images.sh)")
    } else {
        "no Docker engine answers (run scripts/docker-up-engine.sh)".to_owned()
    };
    assert!(!required, "Docker tests are required here, but {why}");
    eprintln!("SKIPPED: {why}; scripts/test.sh sets everything up");
    false
}

/// A network and an owner label of this test's own; everything carrying them is removed on drop.
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

    /// Running containers of this scope's load balancer: (container id, hostname label).
    fn containers(&self) -> BTreeSet<(String, String)> {
        docker(&[
            "ps",
            "--filter",
            &format!("label=io.lb.owner={}", self.instance),
            "--format",
            "{{.ID}} {{.Label \"io.lb.hostname\"}}",
        ])
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(id, name)| (id.to_owned(), name.to_owned()))
        .collect()
    }

    fn config(&self, replicas: usize) -> String {
        let mut text = format!(
            r#"
[health]
interval_ms = 200
timeout_ms = 500
start_timeout_ms = 20000
[supervisor]
kind = "docker"
image = "lb-replica:latest"
network = "{}"
instance = "{}"
address = "ip"
"#,
            self.network, self.instance
        );
        for i in 1..=replicas {
            text.push_str(&format!(
                "[[replicas]]\nhostname = \"Server {i}\"\nid = {i}\n"
            ));
        }
        text
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let label = format!("label=io.lb.owner={}", self.instance);
        let ids = docker_quiet(&["ps", "-aq", "--filter", &label]);
        for id in ids.split_whitespace() {
            docker_quiet(&["rm", "-f", id]);
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &self.network])
            .output();
    }
}

fn short(id: &str) -> &str {
    &id[..12.min(id.len())]
}

async fn status_container_ids(lb: &Lb) -> BTreeSet<String> {
    lb.status().await["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| short(r["handle"]["container_id"].as_str().unwrap()).to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_follow_add_rm_and_a_kill() {
    if !docker_ready(&["lb-replica:latest"]) {
        return;
    }
    let scope = Scope::new();
    let lb = Arc::new(Lb::start(&scope.config(3)));
    assert_eq!(lb.rep().await.0, 3);
    assert_eq!(scope.containers().len(), 3);
    // The containers carry the exact hostnames.
    let names: BTreeSet<String> = scope.containers().into_iter().map(|(_, n)| n).collect();
    assert_eq!(
        names,
        BTreeSet::from(["Server 1".into(), "Server 2".into(), "Server 3".into()])
    );

    lb.ok("POST", "/add", br#"{"n": 2, "hostnames": ["S4"]}"#)
        .await;
    assert_eq!(scope.containers().len(), 5);
    lb.ok("DELETE", "/rm", br#"{"n": 1, "hostnames": ["Server 2"]}"#)
        .await;
    let left = scope.containers();
    assert_eq!(left.len(), 4);
    assert!(!left.iter().any(|(_, n)| n == "Server 2"));

    // docker kill a replica while a client keeps sending.
    let traffic = Traffic::start(&lb, 2);
    let (victim_id, victim) = left.iter().find(|(_, n)| n == "S4").unwrap().clone();
    docker(&["kill", &victim_id]);
    let names = eventually(DEADLINE, "N back to 4 without the victim", || async {
        let (n, names) = lb.rep().await;
        (n == 4 && !names.contains(&victim)).then_some(names)
    })
    .await;
    let answers = traffic.finish().await;
    let failed = answers.iter().filter(|a| a.status != 200).count();
    assert!(answers.len() >= 10, "only {} requests", answers.len());
    // Docker's event stream reports the death at once: at most the requests already on their
    // way to the victim can fail.
    assert!(failed <= 4, "{failed} of {} requests failed", answers.len());
    let running = scope.containers();
    assert_eq!(running.len(), 4, "{running:?}");
    assert!(!running.iter().any(|(id, _)| *id == victim_id));
    let labels: BTreeSet<String> = running.into_iter().map(|(_, n)| n).collect();
    assert_eq!(labels, names.into_iter().collect());
}

#[tokio::test(flavor = "multi_thread")]
async fn foreign_containers_are_never_touched() {
    if !docker_ready(&["lb-replica:latest"]) {
        return;
    }
    let scope = Scope::new();
    let lb = Lb::start(&scope.config(2));
    // A container on the same network, from the same image, but not the load balancer's.
    let foreign = format!("{}-foreign", scope.instance);
    docker(&[
        "run",
        "-d",
        "--name",
        &foreign,
        "--network",
        &scope.network,
        "-e",
        "SERVER_ID=foreign",
        "lb-replica:latest",
    ]);
    let cleanup = ForeignContainer(foreign.clone());
    for name in [foreign.as_str(), "foreign"] {
        let body = format!(r#"{{"n": 1, "hostnames": ["{name}"]}}"#);
        let a = lb.send("DELETE", "/rm", body.as_bytes(), &[]).await;
        assert_eq!(a.status, 400, "{}", a.body);
        assert!(a.body.contains("is not a replica"), "{}", a.body);
    }
    assert_eq!(lb.rep().await.0, 2);
    // The load balancer stops its own replicas on shutdown, and nothing else.
    drop(lb);
    assert_eq!(scope.containers().len(), 0);
    let state = docker(&["inspect", "-f", "{{.State.Running}}", &foreign]);
    assert_eq!(state.trim(), "true");
    drop(cleanup);
}

struct ForeignContainer(String);

impl Drop for ForeignContainer {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_load_balancer_adopts_its_containers() {
    if !docker_ready(&["lb-replica:latest"]) {
        return;
    }
    let scope = Scope::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    std::fs::write(&path, scope.config(3)).unwrap();
    let mut lb = Lb::start_file(&path);
    let before = status_container_ids(&lb).await;
    assert_eq!(before.len(), 3);
    // SIGKILL: no chance to clean up; the containers keep running.
    common::signal(lb.pid(), libc::SIGKILL);
    eventually(DEADLINE, "lb gone", || async {
        (!common::alive(lb.pid())).then_some(())
    })
    .await;
    lb.addr = "127.0.0.1:9".parse().unwrap();
    drop(lb);
    assert_eq!(scope.containers().len(), 3);

    let lb = Lb::start_file(&path);
    assert_eq!(
        status_container_ids(&lb).await,
        before,
        "not the same containers"
    );
    assert_eq!(scope.containers().len(), 3, "duplicated");
    assert_eq!(lb.rep().await.0, 3);
    lb.home(&[]).await;
}

/// A binary upgrade (SIGUSR2) in Docker mode: the new lb finds the same containers in the
/// engine and serves through them; clients see nothing.
#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_keeps_the_containers_and_drops_no_request() {
    if !docker_ready(&["lb-replica:latest"]) {
        return;
    }
    let scope = Scope::new();
    let lb = Arc::new(Lb::start(&scope.config(3)));
    let successor = common::upgrade::Successor::default();
    let before = status_container_ids(&lb).await;
    assert_eq!(before.len(), 3);
    let traffic = Traffic::start(&lb, 4);
    for generation in 2..=3 {
        let (_, now) = common::upgrade::upgrade(&lb, &successor).await;
        assert_eq!(now, generation);
    }
    traffic.finish_all_ok(100).await;
    assert_eq!(
        status_container_ids(&lb).await,
        before,
        "not the same containers"
    );
    assert_eq!(scope.containers().len(), 3, "a container was added or lost");
    assert_eq!(lb.rep().await.0, 3);
}

/// The docker-compose stack: `docker-compose up -d`, every SPEC row on the published port, and
/// `docker-compose down` leaves no replica container and no network behind.
#[tokio::test(flavor = "multi_thread")]
async fn compose_stack_answers_the_spec_and_leaves_nothing_behind() {
    if !docker_ready(&["lb-replica:latest", "lb:latest"]) {
        return;
    }
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let shipped = format!("{root}/config/lb.docker.toml");
    let original = std::fs::read_to_string(&shipped).unwrap();
    // The stack's runtime configuration goes to a directory of this test's: the shipped one
    // with HTTPS, its certificate in a folder beside it (bind-mounted, so renewed live).
    let state = tempfile::tempdir().unwrap();
    lb::self_signed(&["localhost".to_owned()], &state.path().join("certs")).unwrap();
    std::fs::write(
        state.path().join("lb.toml"),
        format!(
            "{original}\n[tls]\nlisten = \"0.0.0.0:5443\"\n[[tls.certificates]]\n\
             cert = \"certs/cert.pem\"\nkey = \"certs/key.pem\"\n"
        ),
    )
    .unwrap();
    let (port, https) = (common::free_port(), common::free_port());
    let compose = |args: &[&str]| {
        let out = Command::new("docker-compose")
            .args(["-p", "lbcomposetest"])
            .args(args)
            .current_dir(root)
            .env("LB_PORT", port.to_string())
            .env("LB_HTTPS_PORT", https.to_string())
            .env("LB_STATE_DIR", state.path())
            .output()
            .expect("run docker-compose");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    struct Down<F: Fn(&[&str]) -> (bool, String)>(F);
    impl<F: Fn(&[&str]) -> (bool, String)> Drop for Down<F> {
        fn drop(&mut self) {
            let _ = (self.0)(&["down", "-t", "30"]);
            // Replicas the stack's lb started and could not remove itself (it died during a
            // failing test), then the network they held.
            if std::thread::panicking() {
                let left = docker_quiet(&["ps", "-aq", "--filter", "label=io.lb.owner=lb"]);
                for id in left.split_whitespace() {
                    docker_quiet(&["rm", "-f", id]);
                }
                docker_quiet(&["network", "rm", "net1"]);
            }
        }
    }
    let (ok, err) = compose(&["up", "-d"]);
    let guard = Down(compose);
    assert!(ok, "docker-compose up failed: {err}");

    let base = format!("http://127.0.0.1:{port}");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let call = |method: &'static str, path: &'static str, body: &'static str| {
        let client = client.clone();
        let uri = format!("{base}{path}");
        async move {
            use http_body_util::BodyExt;
            let req = hyper::Request::builder()
                .method(method)
                .uri(uri)
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .unwrap();
            let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
                .await
                .ok()?
                .ok()?;
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.ok()?.to_bytes();
            Some((status, String::from_utf8_lossy(&body).into_owned()))
        }
    };
    let rep = eventually(
        Duration::from_secs(90),
        "the stack answering /rep",
        || async { call("GET", "/rep", "").await.filter(|(s, _)| *s == 200) },
    )
    .await;
    assert_eq!(
        rep.1,
        r#"{"message": {"N": 3, "replicas": ["Server 1", "Server 2", "Server 3"]}, "status": "successful"}"#
    );
    let (status, body) = call("GET", "/home", "").await.unwrap();
    assert_eq!(status, 200);
    assert!(
        body.starts_with(r#"{"message": "Hello from Server: Server "#),
        "{body}"
    );
    // HTTPS on the published port with the certificate from the bind-mounted folder.
    let secure = |ca: std::path::PathBuf| async move {
        tokio::task::spawn_blocking(move || {
            common::fetch_https(https, "localhost", &ca, "/home", "42")
        })
        .await
        .unwrap()
    };
    let body = secure(state.path().join("certs/ca.pem"))
        .await
        .expect("the stack over HTTPS");
    assert!(body.contains("Hello from Server: Server "), "{body}");
    // Renewed on the host (new files renamed over the old ones): served live, no restart.
    let renewed = tempfile::tempdir().unwrap();
    lb::self_signed(&["localhost".to_owned()], renewed.path()).unwrap();
    for file in ["key.pem", "cert.pem"] {
        let staged = state.path().join("certs").join(format!(".{file}.new"));
        std::fs::copy(renewed.path().join(file), &staged).unwrap();
        std::fs::rename(&staged, state.path().join("certs").join(file)).unwrap();
    }
    eventually(
        Duration::from_secs(10),
        "the renewed certificate served",
        || secure(renewed.path().join("ca.pem")),
    )
    .await;
    let (status, body) = call("POST", "/add", r#"{"n": 1, "hostnames": ["S5"]}"#)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""N": 4"#), "{body}");
    let runtime = std::fs::read_to_string(state.path().join("lb.toml")).unwrap();
    assert!(runtime.contains("hostname = \"S5\""), "{runtime}");
    let (status, body) = call("POST", "/add", r#"{"n": 1, "hostnames": ["A", "B"]}"#)
        .await
        .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (
            400,
            r#"{"message": "<Error> Length of hostname list is more than newly added instances", "status": "failure"}"#
        )
    );
    let (status, body) = call("DELETE", "/rm", r#"{"n": 1, "hostnames": ["S5"]}"#)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""N": 3"#), "{body}");
    let (status, body) = call("DELETE", "/rm", r#"{"n": 1, "hostnames": ["lb"]}"#)
        .await
        .unwrap();
    assert_eq!(
        status, 400,
        "the LB's own container is not a replica: {body}"
    );
    let (status, body) = call("GET", "/other", "").await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (
            400,
            r#"{"message": "<Error> '/other' endpoint does not exist in server replicas", "status": "failure"}"#
        )
    );
    assert_eq!(
        docker(&["ps", "-q", "--filter", "label=io.lb.owner=lb"])
            .lines()
            .count(),
        3
    );

    // A killed lb (its process, not `docker kill`, which counts as a manual stop) comes back
    // by its restart policy and takes over its running replicas. On main it stayed down.
    let lb_container = docker(&[
        "ps",
        "-q",
        "--filter",
        "label=com.docker.compose.project=lbcomposetest",
        "--filter",
        "label=com.docker.compose.service=lb",
    ])
    .trim()
    .to_owned();
    assert!(!lb_container.is_empty(), "the lb container");
    let pid: u32 = docker(&["inspect", "-f", "{{.State.Pid}}", &lb_container])
        .trim()
        .parse()
        .unwrap();
    common::signal(pid, libc::SIGKILL);
    eventually(
        Duration::from_secs(90),
        "the lb container restarted and serving its 3 replicas",
        || async {
            let restarts = docker(&["inspect", "-f", "{{.RestartCount}}", &lb_container]);
            let rep = call("GET", "/rep", "").await;
            (restarts.trim() != "0"
                && rep.is_some_and(|(s, b)| s == 200 && b.contains(r#""N": 3"#)))
            .then_some(())
        },
    )
    .await;

    // /add and /rm were written back to the runtime copy, never to the tracked file.
    let runtime = std::fs::read_to_string(state.path().join("lb.toml")).unwrap();
    assert!(
        runtime.contains("Server 3") && !runtime.contains("S5"),
        "{runtime}"
    );
    assert_eq!(std::fs::read_to_string(&shipped).unwrap(), original);

    let (ok, err) = (guard.0)(&["down", "-t", "30"]);
    assert!(ok, "docker-compose down failed: {err}");
    let left = docker(&["ps", "-aq", "--filter", "label=io.lb.owner=lb"]);
    assert_eq!(left.trim(), "", "replica containers left behind");
    let networks = docker(&["network", "ls", "-q", "--filter", "name=^net1$"]);
    assert_eq!(networks.trim(), "", "network net1 left behind");
    drop(guard);
}

/// The network aliases of this scope's running containers: hostname label → aliases.
fn aliases(scope: &Scope) -> Vec<(String, Vec<String>)> {
    scope
        .containers()
        .into_iter()
        .map(|(id, hostname)| {
            let format = format!(
                "{{{{json (index .NetworkSettings.Networks \"{}\").Aliases}}}}",
                scope.network
            );
            let out = docker(&["inspect", "-f", &format, &id]);
            let aliases: Vec<String> = serde_json::from_str(out.trim()).unwrap_or_default();
            // Docker adds the container's short id; only the names lb chose matter.
            let chosen = aliases
                .into_iter()
                .filter(|a| !id.starts_with(a.as_str()))
                .collect();
            (hostname, chosen)
        })
        .collect()
}

/// Issue 24: aliases came from the hostname, so "a b" and "a_b" shared `a-b` (DNS then picks
/// either replica) and a replica called "lb" or "localhost" had the load balancer's own name.
/// Now each replica's alias is its server id's: distinct, and never such a name.
#[tokio::test(flavor = "multi_thread")]
async fn every_replica_gets_an_alias_of_its_own() {
    if !docker_ready(&["lb-replica:latest"]) {
        return;
    }
    let scope = Scope::new();
    let lb = Lb::start(&scope.config(1));
    lb.ok(
        "POST",
        "/add",
        br#"{"n": 4, "hostnames": ["a b", "a_b", "lb", "localhost"]}"#,
    )
    .await;
    let found = aliases(&scope);
    assert_eq!(found.len(), 5, "{found:?}");
    let mut all = BTreeSet::new();
    for (hostname, aliases) in &found {
        assert!(!aliases.is_empty(), "{hostname}: no alias");
        for alias in aliases {
            assert!(
                all.insert(alias.to_lowercase()),
                "alias {alias} repeated: {found:?}"
            );
            assert!(
                !["lb", "localhost", "a-b"].contains(&alias.to_lowercase().as_str()),
                "{hostname}: alias {alias}"
            );
        }
    }
    // Each one answers as itself.
    assert_eq!(lb.rep().await.0, 5);
}

/// Issue 24: with the engine not answering, `/rm` answered 200, removed nothing (the container
/// kept running) and logged "replica removed". Now it fails with the reason and the replica
/// stays in the ring.
#[tokio::test(flavor = "multi_thread")]
async fn rm_fails_while_the_engine_does_not_answer() {
    if !docker_ready(&["lb-replica:latest"]) {
        return;
    }
    let scope = Scope::new();
    let proxy = common::engine::EngineProxy::start();
    let lb = Lb::start_with_env(&scope.config(2), &[("DOCKER_HOST", &proxy.host())]);
    assert_eq!(lb.rep().await.0, 2);
    proxy.set(common::engine::Engine::Silent);
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
    assert_eq!(lb.rep().await.0, 2);
    assert_eq!(scope.containers().len(), 2);
    proxy.set(common::engine::Engine::Answers);
    lb.ok("DELETE", "/rm", br#"{"n": 1, "hostnames": ["Server 2"]}"#)
        .await;
    assert_eq!(scope.containers().len(), 1);
}
