//! gRPC through the ring (issue 27), against the stock Python `grpcio` library: its servers are
//! the backends (by address, `protocol = "h2c"`, or `"h2"` over TLS;
//! `tests/fixtures/grpc_fixture.py server`: each answers with its name, and its stock
//! `grpc.health.v1` servicer answers lb's `[health] kind = "grpc"` checks on the same port) and
//! its clients the clients (`grpc_fixture.py client`, driven line by line), sharded by
//! `[ring] key = "header:x-shard"` (gRPC metadata).
//!
//! Needs Python with `grpcio` and `grpcio-health-checking`: `LB_WS_PYTHON`, else
//! `target/ws-venv` (made by `scripts/test.sh`), else `python3`. Without it each test says SKIP —
//! unless `LB_REQUIRE_GRPC=1` (CI), when it fails.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::python::Process;
use common::{eventually, free_port, save_by_rename, Lb};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lb_balance::hash::{request_id_from_header, RingHash, SpecHash};
use serde_json::{json, Value};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/grpc_fixture.py"
);

/// A Python with the stock library these tests run, or `None` (SKIP).
fn python(test: &str) -> Option<PathBuf> {
    common::python::python(test, &common::python::GRPC)
}

/// A `grpc_fixture.py server`.
struct Server {
    process: Process,
    port: u16,
}

impl Server {
    fn start(python: &PathBuf, name: &str) -> Server {
        Server::start_with(python, name, &[])
    }

    /// With more arguments (`--tls CERT KEY`).
    fn start_with(python: &PathBuf, name: &str, args: &[&str]) -> Server {
        let process = Process::start(
            Command::new(python)
                .args([FIXTURE, "server", "--name", name])
                .args(args),
        );
        let line = process.line(Duration::from_secs(30));
        let port = line
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("grpc_fixture.py said {line:?}"));
        Server { process, port }
    }

    /// Kill it (the grpcio server's own process), by its pid.
    fn kill(&mut self) {
        let _ = self.process.child.kill();
        let _ = self.process.child.wait();
    }
}

/// The `grpc_fixture.py client` driver.
struct Client(Process);

impl Client {
    fn start(python: &PathBuf) -> Client {
        Client(Process::start(
            Command::new(python).args([FIXTURE, "client"]),
        ))
    }

    /// Send one command, wait (bounded) for its answer.
    fn cmd(&mut self, command: Value, limit: Duration) -> Value {
        let stdin = self.0.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
        let answer: Value = serde_json::from_str(&self.0.line(limit)).unwrap();
        assert!(answer.get("error").is_none(), "{command}: {answer}");
        answer
    }
}

/// The `[ring]` and `[health]` of every lb here: shards by the `x-shard` metadata, checks with
/// `grpc.health.v1.Health/Check` for the fixture's service (the stock servicer answers it).
const RING_AND_HEALTH: &str = "[ring]\nkey = \"header:x-shard\"\nalgorithm = \"rendezvous\"\n\
     [health]\nkind = \"grpc\"\ngrpc_service = \"lb.test.Shard\"\ninterval_ms = 100\n\
     timeout_ms = 500\nfall = 2\nrise = 1\n";

/// lb in front of `servers` (by address, h2c, health-checked with gRPC on their port).
fn lb_for(servers: &[&Server]) -> Lb {
    let mut config = String::from(RING_AND_HEALTH);
    for (i, s) in servers.iter().enumerate() {
        config.push_str(&format!(
            "[[replicas]]\nhostname = \"grpc-{i}\"\nid = {}\naddress = \"127.0.0.1:{}\"\nprotocol = \"h2c\"\n",
            i + 1,
            s.port
        ));
    }
    Lb::start(&config)
}

async fn all_up(lb: &Lb, n: u64) {
    eventually(
        Duration::from_secs(30),
        "every backend in the ring",
        || async {
            (lb.rep().await.0 == n
                && lb.status().await["replicas"]
                    .as_array()
                    .is_some_and(|r| r.iter().all(|r| r["health"] == "up")))
            .then_some(())
        },
    )
    .await;
}

/// The owner `/_lb/ring` gives for `x-shard: SHARD`.
async fn owner_of(lb: &Lb, shard: &str) -> String {
    let ring = lb.get("/_lb/ring").await.json();
    let slots = ring["slots"].as_u64().unwrap();
    let slot = SpecHash.request(request_id_from_header(shard.as_bytes())) % slots;
    ring["owners"][slot as usize].as_str().unwrap().to_owned()
}

/// The fixture names its servers by their hostname in lb: `grpc-0` ….
fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("grpc-{i}")).collect()
}

fn shards(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("tenant-{i}")).collect()
}

/// One gRPC call as raw HTTP/2 (hyper's client): `POST /lb.test.Shard/METHOD` with `request`
/// framed, and the extra `headers`. Returns the response's status and headers.
async fn raw_call(
    lb: &Lb,
    method: &str,
    request: &[u8],
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap) {
    let tcp = tokio::net::TcpStream::connect(lb.addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(request.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(request);
    let mut req = http::Request::post(format!("http://{}/lb.test.Shard/{method}", lb.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(framed))).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), send.send_request(req))
        .await
        .expect("an answer within 20 s")
        .unwrap();
    (resp.status().as_u16(), resp.headers().clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_calls_stick_to_their_shard_and_streams_statuses_and_deadlines_pass() {
    let test = "grpc_calls_stick_to_their_shard_and_streams_statuses_and_deadlines_pass";
    let Some(python) = python(test) else {
        return;
    };
    let servers: Vec<Server> = names(3).iter().map(|n| Server::start(&python, n)).collect();
    let lb = lb_for(&servers.iter().collect::<Vec<_>>());
    all_up(&lb, 3).await;
    let status = lb.status().await;
    for r in status["replicas"].as_array().unwrap() {
        assert_eq!(r["protocol"], "h2c", "{status}");
        assert_eq!(r["pipelining"], false, "{status}");
    }
    let mut client = Client::start(&python);
    let target = lb.addr.to_string();

    // Unary calls: the same shard always reaches the same server, the one /_lb/ring names.
    let shards = shards(12);
    let who = client.cmd(
        json!({"cmd": "who", "target": target, "shards": shards, "repeat": 3}),
        Duration::from_secs(60),
    );
    let mut used = BTreeSet::new();
    for shard in &shards {
        let answers: Vec<&str> = who["answers"][shard]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let owner = owner_of(&lb, shard).await;
        assert_eq!(answers, [owner.as_str(); 3], "shard {shard}");
        used.insert(owner);
    }
    assert!(used.len() >= 2, "every shard on one server: {used:?}");

    // A server-streaming call of 10 000 messages arrives whole and in order.
    let count = client.cmd(
        json!({"cmd": "count", "target": target, "shard": "tenant-1", "n": 10_000}),
        Duration::from_secs(90),
    );
    assert_eq!(count["code"], "OK", "{count}");
    assert_eq!(count["count"], 10_000, "{count}");
    assert_eq!(count["in_order"], true, "{count}");
    assert_eq!(count["servers"], json!([owner_of(&lb, "tenant-1").await]));

    // A server's NOT_FOUND with its message reaches the client as they are (not lb's 400).
    let missing = client.cmd(
        json!({"cmd": "call", "target": target, "method": "Missing", "shard": "tenant-2"}),
        Duration::from_secs(30),
    );
    let owner = owner_of(&lb, "tenant-2").await;
    assert_eq!(missing["code"], "NOT_FOUND", "{missing}");
    assert_eq!(missing["details"], format!("no such key on {owner}"));

    // grpc-timeout shorter than a slow handler: lb answers DEADLINE_EXCEEDED itself, the gRPC
    // way (HTTP 200, trailers-only), long before the handler ends.
    let started = std::time::Instant::now();
    let (status, headers) = raw_call(
        &lb,
        "Slow",
        b"5",
        &[("x-shard", "tenant-3"), ("grpc-timeout", "300m")],
    )
    .await;
    assert_eq!(status, 200, "{headers:?}");
    assert_eq!(headers["content-type"], "application/grpc");
    assert_eq!(headers["grpc-status"], "4", "{headers:?}");
    let message = headers["grpc-message"].to_str().unwrap();
    assert!(message.starts_with("lb: replica"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // A malformed grpc-timeout is ignored: the call is answered by its server.
    let (status, headers) = raw_call(
        &lb,
        "Slow",
        b"0",
        &[("x-shard", "tenant-3"), ("grpc-timeout", "soon")],
    )
    .await;
    assert_eq!(status, 200);
    let from_lb = headers
        .get("grpc-message")
        .is_some_and(|m| m.as_bytes().starts_with(b"lb:"));
    assert!(!from_lb, "answered by lb, not the server: {headers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_grpc_server_fails_only_its_calls_in_flight_and_its_shards_move() {
    let test = "a_killed_grpc_server_fails_only_its_calls_in_flight_and_its_shards_move";
    let Some(python) = python(test) else {
        return;
    };
    let mut servers: Vec<Server> = names(3).iter().map(|n| Server::start(&python, n)).collect();
    let lb = lb_for(&servers.iter().collect::<Vec<_>>());
    all_up(&lb, 3).await;
    let mut client = Client::start(&python);
    let target = lb.addr.to_string();

    // Nine streams of 200 messages 50 ms apart (10 s each), on every server.
    let shards = shards(9);
    let mut owners = BTreeMap::new();
    for shard in &shards {
        owners.insert(shard.clone(), owner_of(&lb, shard).await);
    }
    let mut by_server: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (shard, owner) in &owners {
        by_server.entry(owner).or_default().push(shard);
    }
    assert!(by_server.len() >= 2, "{by_server:?}");
    client.cmd(
        json!({"cmd": "start_counts", "target": target, "shards": shards, "n": 200, "delay_ms": 50}),
        Duration::from_secs(10),
    );
    eventually(
        Duration::from_secs(20),
        "every stream in flight",
        || async {
            let status = lb.status().await;
            let in_flight: u64 = status["replicas"]
                .as_array()?
                .iter()
                .map(|r| r["in_flight"].as_u64().unwrap_or(0))
                .sum();
            (in_flight == 9).then_some(())
        },
    )
    .await;

    // Kill the server with the fewest streams that has any (the others keep theirs).
    let (victim, doomed) = by_server
        .iter()
        .min_by_key(|(_, s)| s.len())
        .map(|(v, s)| ((*v).to_owned(), s.clone()))
        .unwrap();
    let index: usize = victim.strip_prefix("grpc-").unwrap().parse().unwrap();
    servers[index].kill();

    let results = client.cmd(
        json!({"cmd": "wait_counts", "timeout": 60}),
        Duration::from_secs(90),
    );
    for (shard, owner) in &owners {
        let r = &results["results"][shard];
        if *owner == victim {
            assert_eq!(
                r["code"], "UNAVAILABLE",
                "shard {shard} on the killed {owner}: {r}"
            );
        } else {
            assert_eq!(r["code"], "OK", "shard {shard} on {owner}: {r}");
            assert_eq!(r["count"], 200, "shard {shard}: {r}");
            assert_eq!(r["in_order"], true, "shard {shard}: {r}");
        }
    }

    // New calls for its shards go to the next replica once it is out of the ring.
    eventually(
        Duration::from_secs(20),
        "the killed server out of the ring",
        || async {
            let status = lb.status().await;
            let down: Vec<&str> = status["replicas"]
                .as_array()?
                .iter()
                .filter(|r| r["health"] != "up")
                .filter_map(|r| r["hostname"].as_str())
                .collect();
            (down == [victim.as_str()]).then_some(())
        },
    )
    .await;
    let who = client.cmd(
        json!({"cmd": "who", "target": target, "shards": doomed, "repeat": 2}),
        Duration::from_secs(60),
    );
    for shard in &doomed {
        let owner = owner_of(&lb, shard).await;
        assert_ne!(owner, victim);
        assert_eq!(
            who["answers"][*shard],
            json!([owner, owner]),
            "shard {shard}: {who}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_no_replica_reachable_a_grpc_call_gets_unavailable_from_lb() {
    let test = "with_no_replica_reachable_a_grpc_call_gets_unavailable_from_lb";
    let Some(python) = python(test) else {
        return;
    };
    // A backend by address where nothing listens: never healthy, never in the ring.
    let lb = Lb::start(&format!(
        "[ring]\nkey = \"header:x-shard\"\n[health]\ninterval_ms = 100\n\
         [[replicas]]\nhostname = \"gone\"\nid = 1\naddress = \"127.0.0.1:{}\"\nprotocol = \"h2c\"\n",
        free_port()
    ));
    let mut client = Client::start(&python);
    let call = client.cmd(
        json!({"cmd": "call", "target": lb.addr.to_string(), "method": "Who", "shard": "a"}),
        Duration::from_secs(30),
    );
    assert_eq!(call["code"], "UNAVAILABLE", "{call}");
    assert_eq!(
        call["details"], "lb: no replica is available to serve the request",
        "{call}"
    );
    // Plain HTTP is answered as before: a JSON 503.
    let plain = lb.get("/home").await;
    assert_eq!(plain.status, 503, "{}", plain.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_protocol_changed_in_the_saved_file_swaps_the_backend_in_place() {
    let test = "a_protocol_changed_in_the_saved_file_swaps_the_backend_in_place";
    let Some(python) = python(test) else {
        return;
    };
    let server = Server::start(&python, "grpc-0");
    let lb = lb_for(&[&server]);
    all_up(&lb, 1).await;
    let mut client = Client::start(&python);
    let target = lb.addr.to_string();
    let call = json!({"cmd": "call", "target": target, "method": "Who", "shard": "a"});
    let answer = client.cmd(call.clone(), Duration::from_secs(30));
    assert_eq!(answer["answer"], "grpc-0", "{answer}");

    let protocol_is = |wanted: &'static str| {
        let lb = &lb;
        async move {
            eventually(Duration::from_secs(20), wanted, || async {
                let status = lb.status().await;
                let r = &status["replicas"][0];
                (r["protocol"] == wanted && r["health"] == "up").then_some(())
            })
            .await;
        }
    };
    // protocol removed (http1): the same backend, spoken to over HTTP/1.1.
    let text = std::fs::read_to_string(&lb.config).unwrap();
    save_by_rename(&lb.config, &text.replace("protocol = \"h2c\"\n", ""));
    protocol_is("http1").await;
    let status = lb.status().await;
    assert_eq!(status["replicas"][0]["id"], 1, "{status}");
    // And back: gRPC answered again.
    save_by_rename(&lb.config, &text);
    protocol_is("h2c").await;
    let answer = client.cmd(call, Duration::from_secs(30));
    assert_eq!(answer["answer"], "grpc-0", "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_over_tls_to_an_h2_backend_answers_and_its_trailers_pass() {
    let test = "grpc_over_tls_to_an_h2_backend_answers_and_its_trailers_pass";
    let Some(python) = python(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = common::backend_certificates();
    let file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (ca, cert, key) = (
        file("ca.pem", &ca),
        file("cert.pem", &cert),
        file("key.pem", &key),
    );
    // The grpcio server speaks only TLS (h2 by ALPN) on its port: its health checks and calls
    // through lb both go over TLS.
    let server = Server::start_with(&python, "grpc-0", &["--tls", &cert, &key]);
    let lb = Lb::start(&format!(
        "{RING_AND_HEALTH}[[replicas]]\nhostname = \"grpc-0\"\nid = 1\n\
         address = \"127.0.0.1:{}\"\nprotocol = \"h2\"\ntls = true\n\
         server_name = \"backend.test\"\nca = \"{ca}\"\n",
        server.port
    ));
    all_up(&lb, 1).await;
    let status = lb.status().await;
    let replica = &status["replicas"][0];
    assert_eq!(replica["protocol"], "h2", "{status}");
    assert_eq!(replica["tls"]["server_name"], "backend.test", "{status}");
    assert_eq!(replica["tls"]["verify"], true, "{status}");

    let mut client = Client::start(&python);
    let target = lb.addr.to_string();
    // Unary calls through lb are answered by the server.
    let who = client.cmd(
        json!({"cmd": "who", "target": target, "shards": shards(4), "repeat": 2}),
        Duration::from_secs(60),
    );
    for shard in shards(4) {
        assert_eq!(who["answers"][&shard], json!(["grpc-0", "grpc-0"]), "{who}");
    }
    // The server's NOT_FOUND and its message (trailers) reach the client as they are.
    let missing = client.cmd(
        json!({"cmd": "call", "target": target, "method": "Missing", "shard": "tenant-1"}),
        Duration::from_secs(30),
    );
    assert_eq!(missing["code"], "NOT_FOUND", "{missing}");
    assert_eq!(missing["details"], "no such key on grpc-0", "{missing}");
    // A server stream over TLS arrives whole and in order.
    let count = client.cmd(
        json!({"cmd": "count", "target": target, "shard": "tenant-1", "n": 1000}),
        Duration::from_secs(60),
    );
    assert_eq!(count["code"], "OK", "{count}");
    assert_eq!(count["count"], 1000, "{count}");
    assert_eq!(count["in_order"], true, "{count}");
}
