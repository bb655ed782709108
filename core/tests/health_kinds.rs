//! `[health] kind` for backends by address (issue 27): `tcp` (a connection is enough), `grpc`
//! (the standard `grpc.health.v1.Health/Check`, against the stock Python `grpcio` server with
//! the stock `grpcio-health-checking` servicer, `tests/fixtures/health_server.py`), and a hostile
//! gRPC answer too large to read.
//!
//! The gRPC tests need Python with `grpcio` and `grpcio-health-checking`: `LB_WS_PYTHON`, else
//! `target/ws-venv` (made by `scripts/test.sh`), else `python3`. Without it each says SKIP —
//! unless `LB_REQUIRE_GRPC=1` (CI), when it fails.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::python::Process;
use common::{eventually, Lb};

const SERVER: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/health_server.py"
);

/// Checks every 100 ms, 2 misses to fall, 2 passes to rise; a backend that never passed says
/// why after 2 s.
const HEALTH: &str =
    "interval_ms = 100\ntimeout_ms = 1000\nfall = 2\nrise = 2\nstart_timeout_ms = 2000\n";

/// `lb` with `[health]` = `kind` lines + [`HEALTH`], over backends by address at `ports`.
fn lb_for(kind: &str, ports: &[u16]) -> Lb {
    let mut config = format!("[health]\n{kind}\n{HEALTH}");
    for (i, port) in ports.iter().enumerate() {
        config.push_str(&format!(
            "[[replicas]]\nhostname = \"b-{i}\"\nid = {}\naddress = \"127.0.0.1:{port}\"\n",
            i + 1
        ));
    }
    Lb::start(&config)
}

/// Wait until `hostname` is up (in the ring).
async fn until_up(lb: &Lb, hostname: &str) {
    eventually(
        Duration::from_secs(20),
        &format!("{hostname} up"),
        || async { (common::status_of(lb, hostname).await["health"] == "up").then_some(()) },
    )
    .await;
}

/// Wait until `hostname` is out of the ring with a vacancy whose reason contains `words`;
/// that reason.
async fn until_down_because(lb: &Lb, hostname: &str, words: &str) -> String {
    eventually(
        Duration::from_secs(20),
        &format!("{hostname} out of the ring because of {words:?}"),
        || async {
            let status = lb.status().await;
            let vacancy = status["vacancies"]
                .as_array()?
                .iter()
                .find(|v| v["hostname"] == hostname)?
                .clone();
            let reason = vacancy["reason"].as_str()?.to_owned();
            let up = status["replicas"]
                .as_array()?
                .iter()
                .any(|r| r["hostname"] == hostname && r["health"] == "up");
            (!up && reason.contains(words)).then_some(reason)
        },
    )
    .await
}

/// A listener on 127.0.0.1 that accepts connections and never says a word; it closes (its port
/// refuses) when dropped.
struct Mute {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Mute {
    async fn start() -> Mute {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                // Bounded: the oldest connections are closed past 1000.
                if held.len() >= 1000 {
                    held.remove(0);
                }
                held.push(stream);
            }
        });
        Mute { port, task }
    }
}

impl Drop for Mute {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_passes_a_mute_listener_that_http_fails_live_and_a_closed_port_leaves() {
    let mute = Mute::start().await;

    // kind = "http": the listener never answers GET, so it never joins.
    let http = lb_for("kind = \"http\"", &[mute.port]);
    let reason = until_down_because(&http, "b-0", "no answer within").await;
    assert!(!reason.contains("gRPC"), "{reason}");
    assert_eq!(http.rep().await.0, 1, "a down backend stays listed");

    // kind = "tcp" saved into the running lb's file: live, the connection is enough.
    let text = std::fs::read_to_string(&http.config).unwrap();
    let text = text.replace("kind = \"http\"", "kind = \"tcp\"\npath = \"/ignored\"");
    common::save_by_rename(&http.config, &text);
    let tcp = http;
    until_up(&tcp, "b-0").await;
    assert_eq!(tcp.get("/_lb/ring").await.json()["owners"][0], "b-0");

    // The port closes: refused, out of the ring with the reason.
    let port = mute.port;
    drop(mute);
    let reason = until_down_because(&tcp, "b-0", "connection failed").await;
    assert!(reason.contains("refused"), "{reason}");
    // And a listener on that port again brings it back.
    let back = tokio::net::TcpListener::bind(("127.0.0.1", port)).await;
    if let Ok(listener) = back {
        let held = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                if held.len() >= 1000 {
                    held.remove(0);
                }
                held.push(stream);
            }
        });
        until_up(&tcp, "b-0").await;
        held.abort();
    }
}

/// A Python with `grpcio` and its health servicer, or `None` (SKIP).
fn python(test: &str) -> Option<PathBuf> {
    common::python::python(test, &common::python::GRPC)
}

/// `health_server.py`, killed when dropped.
struct GrpcServer {
    process: Process,
    port: u16,
}

impl GrpcServer {
    fn start(python: &PathBuf) -> GrpcServer {
        GrpcServer::start_with(python, &[])
    }

    /// With more arguments (`--tls CERT KEY`).
    fn start_with(python: &PathBuf, args: &[&str]) -> GrpcServer {
        let process = Process::start(
            Command::new(python)
                .arg(SERVER)
                .args(args)
                // grpcio's core logs only errors (not each refused handshake).
                .env("GRPC_VERBOSITY", "ERROR"),
        );
        let line = process.line(Duration::from_secs(30));
        let port = line
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("health_server.py said {line:?}"));
        GrpcServer { process, port }
    }

    /// Set `service`'s (`-`: the server's) serving status.
    fn set(&mut self, service: &str, status: &str) {
        let stdin = self.process.stdin.as_mut().unwrap();
        writeln!(stdin, "set {service} {status}").unwrap();
        stdin.flush().unwrap();
        assert_eq!(self.process.line(Duration::from_secs(10)), "ok");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_serving_joins_not_serving_leaves_with_its_reason_and_serving_rejoins() {
    let Some(python) =
        python("grpc_serving_joins_not_serving_leaves_with_its_reason_and_serving_rejoins")
    else {
        return;
    };
    let mut server = GrpcServer::start(&python);
    let lb = lb_for("kind = \"grpc\"", &[server.port]);
    until_up(&lb, "b-0").await;
    assert_eq!(lb.get("/_lb/ring").await.json()["owners"][0], "b-0");

    server.set("-", "NOT_SERVING");
    let reason = until_down_because(&lb, "b-0", "NOT_SERVING").await;
    assert!(reason.contains("gRPC health check"), "{reason}");
    assert_eq!(lb.rep().await.0, 1, "a down backend stays listed");

    server.set("-", "SERVING");
    until_up(&lb, "b-0").await;
    assert_eq!(lb.get("/_lb/ring").await.json()["owners"][0], "b-0");

    // The same server checked with kind = "http": a gRPC server does not answer GET with 200.
    let http = lb_for("kind = \"http\"", &[server.port]);
    let reason = until_down_because(&http, "b-0", "heartbeat").await;
    assert!(!reason.contains("NOT_SERVING"), "{reason}");
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_service_is_the_service_checked() {
    let Some(python) = python("grpc_service_is_the_service_checked") else {
        return;
    };
    let mut server = GrpcServer::start(&python);
    // The server as a whole is SERVING, but "shard" is unknown to it: NOT_FOUND.
    let lb = lb_for("kind = \"grpc\"\ngrpc_service = \"shard\"", &[server.port]);
    let reason = until_down_because(&lb, "b-0", "grpc-status 5 (NOT_FOUND)").await;
    assert!(reason.contains("gRPC health check"), "{reason}");

    server.set("shard", "NOT_SERVING");
    until_down_because(&lb, "b-0", "NOT_SERVING").await;

    server.set("shard", "SERVING");
    until_up(&lb, "b-0").await;

    // "shard" going down takes the backend out though the server as a whole still serves.
    server.set("shard", "SERVICE_UNKNOWN");
    until_down_because(&lb, "b-0", "SERVICE_UNKNOWN").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_and_tcp_checks_over_tls() {
    let Some(python) = python("grpc_and_tcp_checks_over_tls") else {
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
    let other_ca = file("other-ca.pem", &common::backend_certificates().0);
    let mut server = GrpcServer::start_with(&python, &["--tls", &cert, &key]);
    let port = server.port;
    let entry = |ca: &str| {
        format!(
            "[[replicas]]\nhostname = \"b-0\"\nid = 1\naddress = \"127.0.0.1:{}\"\n\
             tls = true\nserver_name = \"backend.test\"\nca = \"{ca}\"\n",
            port
        )
    };

    // gRPC over TLS: h2 by ALPN with the entry's settings.
    let lb = Lb::start(&format!(
        "[health]\nkind = \"grpc\"\n{HEALTH}{}",
        entry(&ca)
    ));
    until_up(&lb, "b-0").await;
    server.set("-", "NOT_SERVING");
    until_down_because(&lb, "b-0", "NOT_SERVING").await;
    server.set("-", "SERVING");
    until_up(&lb, "b-0").await;

    // tcp: the handshake is part of the check; a certificate of another CA fails it.
    let good = Lb::start(&format!("[health]\nkind = \"tcp\"\n{HEALTH}{}", entry(&ca)));
    until_up(&good, "b-0").await;
    let bad = Lb::start(&format!(
        "[health]\nkind = \"tcp\"\n{HEALTH}{}",
        entry(&other_ca)
    ));
    let reason = until_down_because(&bad, "b-0", "TLS: certificate not trusted").await;
    assert!(!reason.contains("gRPC"), "{reason}");
}

/// An HTTP/2 server on 127.0.0.1 that answers every request 200 `application/grpc` with
/// `body_bytes` of body (gRPC's framing, announcing all of it) and then `grpc-status: 0`.
async fn hostile_h2(body_bytes: usize) -> (u16, tokio::task::JoinHandle<()>) {
    use bytes::Bytes;
    use http_body_util::{BodyExt as _, StreamBody};
    use hyper::body::Frame;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| async move {
                    let mut data = vec![0u8; body_bytes];
                    data[1..5].copy_from_slice(&((body_bytes - 5) as u32).to_be_bytes());
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                    // In 16 KiB pieces, then the trailers.
                    let mut frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = data
                        .chunks(16 * 1024)
                        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
                        .collect();
                    frames.push(Ok(Frame::trailers(trailers)));
                    let body = StreamBody::new(futures_util::stream::iter(frames)).boxed();
                    Ok::<_, std::convert::Infallible>(
                        hyper::Response::builder()
                            .header("content-type", "application/grpc")
                            .body(body)
                            .unwrap(),
                    )
                });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
            });
        }
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grpc_answer_too_large_to_read_fails_the_check() {
    // 1 MiB: lb reads at most 64 KiB of it.
    let (port, task) = hostile_h2(1024 * 1024).await;
    let lb = lb_for("kind = \"grpc\"", &[port]);
    let reason = until_down_because(&lb, "b-0", "answer larger than 64 KiB").await;
    assert!(reason.contains("gRPC health check"), "{reason}");
    task.abort();
}
