//! HTTP/2 from clients, against stock clients: `curl --http2-prior-knowledge` (h2c on the plain
//! listener) and `curl --http2` (h2 by ALPN on the TLS listener) get the replica's answer over
//! HTTP/2 while HTTP/1.1 keeps working on the same listeners; nghttp2's `h2load` completes with
//! no error; request ids sent over one multiplexed connection land on the replicas `/_lb/ring`
//! says; garbage after a correct preface is closed (GOAWAY) and counted; an idle HTTP/2
//! connection is closed with a GOAWAY after `client_idle_timeout_ms`.
//!
//! Without `h2load` installed (Debian's `nghttp2-client`) its test says why and passes, unless
//! `LB_REQUIRE_H2LOAD=1` (scripts/test.sh sets it and installs the package).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use lb_balance::hash::{request_id_from_header, RingHash, SpecHash};

use common::{eventually, served_by, Lb, THREE};

/// The HTTP/2 client preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// `curl` with `args` (bounded to 20 s): (stdout, whether it exited 0).
fn curl(args: &[&str]) -> (String, bool) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl runs");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.success(),
    )
}

/// A certificate for `localhost` and its CA, made by `lb tls self-signed` in `dir`.
fn self_signed(dir: &Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_lb"))
        .args(["tls", "self-signed", "--name", "localhost", "--out"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn curl_gets_http2_with_prior_knowledge_and_over_tls_and_http1_still_works() {
    let certs = tempfile::tempdir().unwrap();
    self_signed(certs.path());
    let config = format!(
        "[log]\naccess = \"stdout\"\n[tls]\nlisten = \"127.0.0.1:0\"\n\
         [[tls.certificates]]\ncert = \"{0}/cert.pem\"\nkey = \"{0}/key.pem\"\n{THREE}",
        certs.path().display()
    );
    let lb = Lb::start(&config);
    let plain = format!("http://127.0.0.1:{}/home", lb.addr.port());
    let https = lb.https.expect("a TLS listener");
    let tls = format!("https://localhost:{}/home", https.port());
    let ca = certs.path().join("ca.pem");
    let ca = ca.to_str().unwrap();
    let version = ["-w", "\n%{http_version}"];

    let (out, ok) = curl(&[&["--http2-prior-knowledge", &plain][..], &version].concat());
    assert!(ok, "{out}");
    let (body, proto) = out.rsplit_once('\n').unwrap();
    assert_eq!(proto, "2", "h2c with prior knowledge: {out}");
    served_by(body);

    let (out, ok) = curl(&[&["--http2", "--cacert", ca, &tls][..], &version].concat());
    assert!(ok, "{out}");
    let (body, proto) = out.rsplit_once('\n').unwrap();
    assert_eq!(proto, "2", "h2 by ALPN: {out}");
    served_by(body);

    // HTTP/1.1 on both listeners, a method starting with P (like the preface) too.
    for args in [
        vec!["--http1.1", plain.as_str()],
        vec!["--http1.1", "--cacert", ca, tls.as_str()],
    ] {
        let (out, ok) = curl(&[&args[..], &version].concat());
        assert!(ok, "{out}");
        let (body, proto) = out.rsplit_once('\n').unwrap();
        assert_eq!(proto, "1.1", "{args:?}: {out}");
        served_by(body);
    }
    let mut tcp = TcpStream::connect(lb.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(
        b"POST /home HTTP/1.1\r\nHost: lb\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 "), "{answer:?}");

    // Counted and logged as any request, with the protocol in the access log.
    let log = eventually(Duration::from_secs(10), "the access log lines", || {
        let out = lb.stdout();
        async move {
            (out.matches("proto=HTTP/2").count() == 2 && out.contains("proto=HTTP/1.1"))
                .then_some(out)
        }
    })
    .await;
    assert!(
        log.lines()
            .filter(|l| l.contains("proto=HTTP/2"))
            .all(|l| l.contains("path=\"/home\"") && l.contains("status=200")),
        "{log}"
    );
    assert!(lb.metric("lb_http2_connections_total").await >= 2);
}

/// Parse h2load's summary: (requests done, succeeded, failed, errored, 2xx).
fn h2load_summary(out: &str) -> Option<(u64, u64, u64, u64, u64)> {
    let numbers = |line: &str| -> Vec<u64> {
        line.split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect()
    };
    let requests = out.lines().find(|l| l.starts_with("requests:"))?;
    // requests: 20000 total, 20000 started, 20000 done, 20000 succeeded, 0 failed, 0 errored, 0 timeout
    let r = numbers(requests);
    let codes = out.lines().find(|l| l.starts_with("status codes:"))?;
    let c = numbers(codes);
    Some((*r.get(2)?, *r.get(3)?, *r.get(4)?, *r.get(5)?, *c.first()?))
}

#[tokio::test(flavor = "multi_thread")]
async fn h2load_through_lb_completes_without_errors() {
    if Command::new("h2load").arg("--version").output().is_err() {
        if std::env::var("LB_REQUIRE_H2LOAD").as_deref() == Ok("1") {
            panic!(
                "h2load is not installed and LB_REQUIRE_H2LOAD=1 (apt-get install nghttp2-client)"
            );
        }
        eprintln!("h2load is not installed (apt-get install nghttp2-client): skipped");
        return;
    }
    let lb = Lb::start(THREE);
    let url = format!("http://127.0.0.1:{}/home", lb.addr.port());
    // The benchmark (bench/h2.sh) runs -n 100000; a debug build takes a few seconds for this.
    let n = 20_000u64;
    let out = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .args([
                "120",
                "h2load",
                "-n",
                &n.to_string(),
                "-c",
                "20",
                "-m",
                "10",
                &url,
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (done, succeeded, failed, errored, ok) =
        h2load_summary(&text).unwrap_or_else(|| panic!("no h2load summary in\n{text}"));
    assert_eq!(
        (done, succeeded, failed, errored, ok),
        (n, n, 0, 0, n),
        "{text}"
    );
    assert_eq!(lb.metric("lb_http2_connections_total").await, 20);
    // Every stream done: none left in flight.
    eventually(Duration::from_secs(10), "no stream in flight", || async {
        (lb.metric("lb_http2_streams_in_flight").await == 0).then_some(())
    })
    .await;
}

/// An HTTP/2 connection (prior knowledge) to `lb`: its request sender, the connection's task.
async fn h2_connect(
    lb: &Lb,
) -> (
    hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
) {
    let tcp = tokio::net::TcpStream::connect(lb.addr).await.unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    (send, tokio::spawn(conn))
}

#[tokio::test(flavor = "multi_thread")]
async fn request_ids_over_one_http2_connection_land_on_their_ring_owners() {
    let lb = Lb::start(THREE);
    let ring = lb.get("/_lb/ring").await.json();
    let slots = ring["slots"].as_u64().unwrap();
    let owners: Vec<String> = ring["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap().to_owned())
        .collect();
    let (send, _conn) = h2_connect(&lb).await;
    let mut rng = fastrand::Rng::with_seed(27);
    let ids: Vec<String> = (0..100)
        .map(|_| rng.u64(100_000..=999_999).to_string())
        .collect();
    // All 100 at once, multiplexed on the one connection.
    let answers = futures_util::future::join_all(ids.iter().map(|id| {
        let mut send = send.clone();
        let req = hyper::Request::get(format!("http://127.0.0.1:{}/home", lb.addr.port()))
            .header("x-request-id", id.as_str())
            .body(Empty::new())
            .unwrap();
        async move {
            let resp = tokio::time::timeout(Duration::from_secs(30), send.send_request(req))
                .await
                .expect("answered within 30 s")
                .expect("answered");
            assert_eq!(resp.version(), http::Version::HTTP_2);
            assert_eq!(resp.status(), 200);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            served_by(std::str::from_utf8(&body).unwrap())
        }
    }))
    .await;
    let mut served = std::collections::HashSet::new();
    for (id, got) in ids.iter().zip(&answers) {
        let slot = SpecHash.request(request_id_from_header(id.as_bytes())) % slots;
        assert_eq!(
            got, &owners[slot as usize],
            "X-Request-Id {id} (slot {slot})"
        );
        served.insert(got.clone());
    }
    assert!(served.len() >= 2, "{served:?}");
}

/// The frames in `bytes` (what a server sent): (type, flags, stream, payload), as far as whole.
fn frames(bytes: &[u8]) -> Vec<(u8, u8, u32, &[u8])> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 9 {
        let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
        if rest.len() < 9 + len {
            break;
        }
        let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff;
        out.push((rest[3], rest[4], stream, &rest[9..9 + len]));
        rest = &rest[9 + len..];
    }
    out
}

/// Everything `tcp` receives until the peer closes (or resets), at most 10 s.
fn read_until_closed(tcp: &mut TcpStream) -> Vec<u8> {
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut all = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match tcp.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_after_the_preface_is_closed_with_a_goaway_and_counted() {
    let lb = Lb::start(THREE);
    let before = lb.metric("lb_http2_protocol_errors_total").await;
    let mut tcp = TcpStream::connect(lb.addr).unwrap();
    tcp.write_all(PREFACE).unwrap();
    // Not a SETTINGS frame: a frame header claiming 4 MiB of type 0x4.
    tcp.write_all(b"\x40\x00\x00\x04\x00\x00\x00\x00\x00garbage garbage garbage")
        .unwrap();
    let got = read_until_closed(&mut tcp);
    let goaway = frames(&got).into_iter().find(|f| f.0 == 0x7);
    let (_, _, _, payload) = goaway.unwrap_or_else(|| panic!("no GOAWAY in {got:?}"));
    let code = u32::from_be_bytes(payload[4..8].try_into().unwrap());
    assert_ne!(code, 0, "an error code (not NO_ERROR)");
    eventually(
        Duration::from_secs(10),
        "the protocol error counted",
        || async { (lb.metric("lb_http2_protocol_errors_total").await > before).then_some(()) },
    )
    .await;
    // The listener still serves both protocols.
    assert_eq!(lb.get("/rep").await.status, 200);
    let (mut send, _conn) = h2_connect(&lb).await;
    let req = hyper::Request::get(format!("http://127.0.0.1:{}/rep", lb.addr.port()))
        .body(Empty::new())
        .unwrap();
    assert_eq!(send.send_request(req).await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_http2_connection_gets_a_goaway_after_the_idle_timeout() {
    let lb = Lb::start(&format!(
        "[proxy]\nclient_idle_timeout_ms = 2000\nclient_header_timeout_ms = 5000\n{THREE}"
    ));
    let (mut send, conn) = h2_connect(&lb).await;
    let req = hyper::Request::get(format!("http://127.0.0.1:{}/home", lb.addr.port()))
        .body(Empty::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
    assert_eq!(lb.metric("lb_http2_connections_open").await, 1);
    assert_eq!(lb.status().await["http2"]["connections_open"], 1);
    // The client does nothing more: lb ends the connection (GOAWAY, then close) and hyper's
    // client connection future returns.
    let ended = tokio::time::timeout(Duration::from_secs(20), conn).await;
    assert!(ended.is_ok(), "the idle connection was not closed");
    eventually(
        Duration::from_secs(10),
        "no HTTP/2 connection open",
        || async { (lb.metric("lb_http2_connections_open").await == 0).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_request_with_more_fields_than_a_replica_takes_is_a_431() {
    let lb = Lb::start(THREE);
    let (send, _conn) = h2_connect(&lb).await;
    let request = |fields: usize| {
        let mut req = hyper::Request::get(format!("http://127.0.0.1:{}/home", lb.addr.port()));
        for i in 0..fields {
            req = req.header(format!("x-extra-{i}"), i.to_string());
        }
        let mut send = send.clone();
        let req = req.body(Empty::new()).unwrap();
        async move {
            let resp = send.send_request(req).await.unwrap();
            let status = resp.status();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status.as_u16(), String::from_utf8_lossy(&body).into_owned())
        }
    };
    let (status, body) = request(97).await;
    assert_eq!(status, 431, "{body}");
    assert!(body.contains("more than 96 header fields"), "{body}");
    // As many as an HTTP/1.1 head may have reach the replica whole, with lb's own fields.
    let (status, body) = request(95).await;
    assert_eq!(status, 200, "{body}");
    served_by(&body);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_streams_in_progress_finish_with_a_goaway() {
    let fixture = common::SLOW_REPLICA;
    let mut lb = Lb::start(&format!(
        r#"
[supervisor]
command = ["python3", "{fixture}", "--slow-ms", "700"]
[health]
drain_timeout_ms = 60000
[[replicas]]
hostname = "Slow 1"
id = 1
[[replicas]]
hostname = "Slow 2"
id = 2
"#
    ));
    let (send, conn) = h2_connect(&lb).await;
    let port = lb.addr.port();
    let requests: Vec<_> = (0..4)
        .map(|i| {
            let mut send = send.clone();
            let req = hyper::Request::get(format!("http://127.0.0.1:{port}/home"))
                .header("x-request-id", (100_000 + i * 7).to_string())
                .body(Empty::new())
                .unwrap();
            tokio::spawn(async move {
                let resp = send.send_request(req).await.expect("answered");
                let status = resp.status();
                let body = resp.into_body().collect().await.expect("a whole body");
                (status, body.to_bytes())
            })
        })
        .collect();
    eventually(Duration::from_secs(10), "4 streams in flight", || async {
        (lb.metric("lb_http2_streams_in_flight").await == 4).then_some(())
    })
    .await;
    // SIGTERM while the 4 streams wait on 700 ms replicas: each is answered whole, then the
    // connection ends (GOAWAY) and lb exits 0.
    let exit = tokio::task::spawn_blocking(move || {
        let exit = lb.signal_and_wait(libc::SIGTERM, Duration::from_secs(15));
        (exit, lb)
    });
    for request in requests {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 200);
        served_by(std::str::from_utf8(&body).unwrap());
    }
    // A GOAWAY ends the client's connection cleanly; without it lb would wait the whole
    // drain time (60 s) for the idle connection before exiting.
    let ended = tokio::time::timeout(Duration::from_secs(15), conn).await;
    let ended = ended.expect("the connection ends after the drain").unwrap();
    assert!(ended.is_ok(), "not a clean end: {ended:?}");
    let (exit, _lb) = exit.await.unwrap();
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}");
}

/// A backend by address that answers every request with what it received: its `Host`, whether
/// it had `te`, `x-forwarded-proto`, how it framed the body and the body's length
/// (`/health`: `200 ok`). HTTP/1.1 with keep-alive; one thread per connection.
fn echo_backend() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || echo_connection(stream));
        }
    });
    addr
}

fn echo_connection(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let mut fill = |buf: &mut Vec<u8>, stream: &mut TcpStream| match stream.read(&mut chunk) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    };
    loop {
        let end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end;
            }
            if !fill(&mut buf, &mut stream) {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
        buf.drain(..end + 4);
        let field = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
        };
        let framing;
        let mut body = 0usize;
        if let Some(len) = field("content-length") {
            framing = "length";
            let len: usize = len.trim().parse().unwrap();
            while buf.len() < len {
                if !fill(&mut buf, &mut stream) {
                    return;
                }
            }
            buf.drain(..len);
            body = len;
        } else if field("transfer-encoding").is_some() {
            framing = "chunked";
            loop {
                let line_end = loop {
                    if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    if !fill(&mut buf, &mut stream) {
                        return;
                    }
                };
                let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
                let size =
                    usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
                while buf.len() < line_end + 2 + size + 2 {
                    if !fill(&mut buf, &mut stream) {
                        return;
                    }
                }
                buf.drain(..line_end + 2 + size + 2);
                body += size;
                if size == 0 {
                    break;
                }
            }
        } else {
            framing = "none";
        }
        let answer = if head.starts_with("get /health ") {
            "ok".to_owned()
        } else {
            format!(
                "host={} te={} proto={} framing={framing} body={body}",
                field("host").unwrap_or_default(),
                field("te").is_some(),
                field("x-forwarded-proto").unwrap_or_default(),
            )
        };
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if stream.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn http2_requests_reach_a_backend_as_http1_with_their_authority_and_whole_bodies() {
    let backend = echo_backend();
    let lb = Lb::start(&format!(
        "[health]\npath = \"/health\"\ninterval_ms = 100\nrise = 1\n\
         [[replicas]]\nhostname = \"echo\"\nid = 1\naddress = \"{backend}\"\npipelining = true\n"
    ));
    eventually(
        Duration::from_secs(10),
        "the backend in the ring",
        || async {
            (lb.get("/rep").await.json()["message"]["N"] == 1
                && lb.send("GET", "/x", b"", &[]).await.status == 200)
                .then_some(())
        },
    )
    .await;
    let tcp = tokio::net::TcpStream::connect(lb.addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake::<_, _, http_body_util::Full<Bytes>>(
            TokioExecutor::new(),
            TokioIo::new(tcp),
        )
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut ask = |method: &str, body: Vec<u8>| {
        let req = hyper::Request::builder()
            .method(method)
            .uri("http://shop.example:8080/cart?x=1")
            .header("te", "trailers")
            .body(http_body_util::Full::new(Bytes::from(body)))
            .unwrap();
        let sent = send.send_request(req);
        async move {
            let resp = tokio::time::timeout(Duration::from_secs(30), sent)
                .await
                .expect("answered within 30 s")
                .unwrap();
            assert_eq!(resp.status(), 200);
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            String::from_utf8(body.to_vec()).unwrap()
        }
    };
    // A bodiless GET (the batching client's head) and a POST of 1 MiB (hyper's client,
    // streamed): Host is the client's :authority, te is gone, the body arrives whole.
    assert_eq!(
        ask("GET", Vec::new()).await,
        "host=shop.example:8080 te=false proto=http framing=none body=0"
    );
    let answer = ask("POST", vec![b'x'; 1 << 20]).await;
    assert!(
        answer.starts_with("host=shop.example:8080 te=false proto=http framing=")
            && answer.ends_with(" body=1048576"),
        "{answer}"
    );
}
