//! The TLS listener under many connections: 10 000 half-open TLS connections (no ClientHello, or
//! a truncated one) while a good client is served, a flood beyond `max_connections`, and session
//! resumption whichever worker a reconnect lands on. Certificates from `lb tls self-signed`; the
//! clients are rustls and raw sockets, all on 127.0.0.1.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use common::{sample, Lb};

/// Half-open connections in the flood.
const FLOOD: usize = 10_000;
/// Connections opened at once while flooding (a burst of all 10 000 would overflow the
/// kernel's accept queue and turn into SYN retries, not into work for `lb`).
const OPENING_AT_ONCE: usize = 256;
/// Every this many half-open connections sends a truncated ClientHello instead of nothing.
const TRUNCATED_EVERY: usize = 4;
/// A record header announcing 128 bytes of handshake and the first bytes of a ClientHello.
const TRUNCATED_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x00, 0x80, 0x01, 0x00, 0x00, 0x7c, 0x03];

/// `lb tls self-signed` for localhost into `dir`.
fn self_signed(dir: &Path) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lb"))
        .args(["tls", "self-signed", "--name", "localhost", "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lb tls self-signed failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A TLS client trusting `dir/ca.pem`, with rustls's default session cache (it resumes).
fn client(dir: &Path) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(dir.join("ca.pem")).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// `lb` serving HTTPS with the certificate in `dir`, one replica, `proxy` in `[proxy]`.
fn start(dir: &Path, proxy: &str) -> Lb {
    let lb = Lb::start(&format!(
        "[proxy]\nclient_header_timeout_ms = 1000\n{proxy}\n\
         [tls]\nlisten = \"127.0.0.1:0\"\n\
         [[tls.certificates]]\ncert = \"{}\"\nkey = \"{}\"\n\
         [health]\ninterval_ms = 100\n\
         [[replicas]]\nhostname = \"Server 1\"\nid = 1\n",
        dir.join("cert.pem").display(),
        dir.join("key.pem").display()
    ));
    assert!(lb.https.is_some(), "no https line:\n{}", lb.stdout());
    lb
}

/// A TLS connection to `addr` (at most 10 s).
async fn connect(
    connector: &TlsConnector,
    addr: SocketAddr,
) -> std::io::Result<TlsStream<TcpStream>> {
    tokio::time::timeout(Duration::from_secs(10), async {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
    })
    .await
    .map_err(|_| std::io::Error::other("connect and handshake took over 10 s"))?
}

/// A keep-alive `GET /home` on `tls`, and its status (at most 10 s); an error if the answer is
/// not a whole response.
async fn home(tls: &mut TlsStream<TcpStream>) -> Result<u16, String> {
    let work = async {
        tls.write_all(b"GET /home HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    return head
                        .get(9..12)
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| format!("not a status line: {head}"));
                }
            }
            let n = tls
                .read(&mut chunk)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err(format!("closed mid-response: {buf:?}"));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| "no answer in 10 s".to_owned())?
}

/// Open files of process `pid`.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Raise this process's open-files limit to `want` if it may (root with CAP_SYS_RESOURCE), else
/// to its hard limit; children inherit it. Fails, saying why, below `need`.
fn raise_open_files(want: u64, need: u64) -> u64 {
    use rlimit::Resource;
    let (_, hard) = rlimit::getrlimit(Resource::NOFILE).unwrap();
    if hard < want && rlimit::setrlimit(Resource::NOFILE, want, want).is_ok() {
        return want;
    }
    let soft = rlimit::increase_nofile_limit(want).unwrap();
    assert!(
        soft >= need,
        "this test needs {need} open files, the hard limit is {hard}: raise `ulimit -Hn`"
    );
    soft
}

/// The connections `lb` allows: `max_connections`, or what its open-files limit allows when it
/// said it lowered it.
fn allowed_connections(lb: &Lb, max_connections: usize) -> usize {
    lb.log()
        .lines()
        .filter(|l| l.contains("max_connections lowered"))
        .find_map(|l| {
            l.split("allowed=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(max_connections)
}

/// Wait until the replica answers over HTTPS on a new connection (at most 20 s).
async fn wait_for_replica(lb: &Lb, connector: &TlsConnector) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut tls) = connect(connector, lb.https.unwrap()).await {
            if home(&mut tls).await == Ok(200) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no replica over TLS:\n{}",
            lb.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The good client: `GET /home` until `stop`, alternately on one keep-alive connection and on
/// a new connection per request (at most 20 000 requests, 60 s). Every answer must be a 200;
/// returns (requests, of them answered while `flooding` was set).
async fn good_client(
    connector: TlsConnector,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    flooding: Arc<AtomicBool>,
) -> Result<(usize, usize), String> {
    let started = Instant::now();
    let mut kept = connect(&connector, addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut done, mut during) = (0, 0);
    while !stop.load(Ordering::Relaxed)
        && done < 20_000
        && started.elapsed() < Duration::from_secs(60)
    {
        let during_before = flooding.load(Ordering::Relaxed);
        let status = if done % 2 == 0 {
            home(&mut kept)
                .await
                .map_err(|e| format!("request {done} (keep-alive): {e}"))?
        } else {
            let mut fresh = connect(&connector, addr)
                .await
                .map_err(|e| format!("request {done} (new connection): {e}"))?;
            home(&mut fresh)
                .await
                .map_err(|e| format!("request {done} (new connection): {e}"))?
        };
        if status != 200 {
            return Err(format!("request {done}: status {status}"));
        }
        done += 1;
        if during_before && flooding.load(Ordering::Relaxed) {
            during += 1;
        }
    }
    Ok((done, during))
}

/// How a half-open connection ended: `Ok(waited)` once `lb` closed it (EOF or reset, having sent
/// nothing but an alert), `Err` if it answered anything else or was still open after 30 s.
async fn closed_by_lb(mut stream: TcpStream, opened: Instant) -> Result<Duration, String> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 512];
    let end = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) => return Ok(()),
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await;
    match end {
        Err(_) => Err("still open 30 s after it was opened".into()),
        Ok(Err(e)) => Err(e),
        Ok(Ok(())) if !got.is_empty() && got[0] != 0x15 => {
            Err(format!("lb answered a half-open connection: {got:?}"))
        }
        Ok(Ok(())) => Ok(opened.elapsed()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_half_open_tls_connections_are_closed_counted_and_spare_other_clients() {
    // 10 000 sockets here. lb counts two descriptors per connection (the client's and the
    // replica's) and lowers max_connections to what its open-files limit allows: with a hard
    // limit of 20 000 (containers without CAP_SYS_RESOURCE) that is ~9 800, and the rest of the
    // flood waits in the kernel's queue until handshake deadlines free room (the max_connections
    // contract); every assertion below holds either way.
    let files = raise_open_files(65_536, FLOOD as u64 + 1_000);
    let dir = tempfile::tempdir().unwrap();
    self_signed(dir.path());
    let lb = start(dir.path(), "max_connections = 20000");
    let allowed = allowed_connections(&lb, 20_000);
    let addr = lb.https.unwrap();
    let connector = client(dir.path());
    wait_for_replica(&lb, &connector).await;
    let timeouts = "lb_tls_handshake_errors_total{reason=\"timeout\"}";
    let timeouts_before = sample::<u64>(&lb, timeouts).await;
    let files_before = open_files(lb.pid());

    let stop = Arc::new(AtomicBool::new(false));
    let flooding = Arc::new(AtomicBool::new(false));
    let good = tokio::spawn(good_client(
        connector.clone(),
        addr,
        Arc::clone(&stop),
        Arc::clone(&flooding),
    ));

    // The flood: OPENING_AT_ONCE connects in flight at a time; each connection then waits for
    // lb to close it.
    flooding.store(true, Ordering::Relaxed);
    let flood_started = Instant::now();
    let opened = Arc::new(AtomicUsize::new(0));
    let mut held = JoinSet::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(OPENING_AT_ONCE));
    for i in 0..FLOOD {
        let permit = Arc::clone(&permits).acquire_owned().await.unwrap();
        let opened = Arc::clone(&opened);
        held.spawn(async move {
            let stream = tokio::time::timeout(Duration::from_secs(30), TcpStream::connect(addr))
                .await
                .map_err(|_| format!("connection {i}: connect took over 30 s"))?
                .map_err(|e| format!("connection {i}: connect: {e}"))?;
            let at = Instant::now();
            let mut stream = stream;
            if i % TRUNCATED_EVERY == 0 {
                stream
                    .write_all(TRUNCATED_HELLO)
                    .await
                    .map_err(|e| format!("connection {i}: write: {e}"))?;
            }
            opened.fetch_add(1, Ordering::Relaxed);
            drop(permit);
            closed_by_lb(stream, at)
                .await
                .map_err(|e| format!("connection {i}: {e}"))
        });
    }
    let mut failures = Vec::new();
    let mut earliest = Duration::MAX;
    while let Some(ended) = held.join_next().await {
        match ended.unwrap() {
            Ok(waited) => earliest = earliest.min(waited),
            Err(e) => failures.push(e),
        }
    }
    flooding.store(false, Ordering::Relaxed);
    let flood_took = flood_started.elapsed();
    assert!(
        failures.is_empty(),
        "{} of {FLOOD} half-open connections misbehaved, e.g. {:?}\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        lb.log()
    );
    assert_eq!(opened.load(Ordering::Relaxed), FLOOD);
    // Closed by the handshake deadline (client_header_timeout_ms = 1000), not before it.
    assert!(
        earliest >= Duration::from_millis(900),
        "a half-open connection was closed after {earliest:?}, before the handshake deadline"
    );

    // Counted: one handshake timeout each, nothing else.
    let deadline = Instant::now() + Duration::from_secs(10);
    let counted = loop {
        let counted = sample::<u64>(&lb, timeouts).await - timeouts_before;
        if counted >= FLOOD as u64 || Instant::now() > deadline {
            break counted;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(counted, FLOOD as u64, "handshake timeouts counted");

    // The good client was served throughout, and is still.
    stop.store(true, Ordering::Relaxed);
    let (requests, during) = good
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}\n{}", lb.log()));
    assert!(
        during > 0,
        "the good client got no answer while the flood was open ({requests} in all)"
    );
    let mut tls = connect(&connector, addr).await.unwrap();
    assert_eq!(home(&mut tls).await, Ok(200));
    drop(tls);
    // And lb holds no descriptor of the flood.
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_files(lb.pid()) > files_before + 16 {
        assert!(
            Instant::now() < deadline,
            "lb holds {} files after the flood, {files_before} before",
            open_files(lb.pid())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "flood of {FLOOD}: {flood_took:?}; the good client's requests: {requests}, {during} \
         while it was open; open files {files}, lb allowed {allowed} connections"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn beyond_max_connections_half_open_clients_wait_their_turn_and_the_good_one_is_served() {
    let dir = tempfile::tempdir().unwrap();
    self_signed(dir.path());
    // 16 connections per worker; 96 half-open ones fill them three times over.
    let lb = start(dir.path(), "max_connections = 32");
    let addr = lb.https.unwrap();
    let connector = client(dir.path());
    wait_for_replica(&lb, &connector).await;
    let mut held = JoinSet::new();
    for _ in 0..96 {
        let stream = TcpStream::connect(addr).await.unwrap();
        held.spawn(closed_by_lb(stream, Instant::now()));
    }
    // Queued in the kernel behind the flood, then served once handshake deadlines free room.
    let mut tls = connect(&connector, addr).await.unwrap();
    assert_eq!(home(&mut tls).await, Ok(200));
    while let Some(ended) = held.join_next().await {
        ended.unwrap().unwrap();
    }
    assert!(
        sample::<u64>(&lb, "lb_tls_handshake_errors_total{reason=\"timeout\"}").await >= 96,
        "every half-open connection is counted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_resumes_whichever_worker_takes_the_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    self_signed(dir.path());
    let lb = start(dir.path(), "workers = 4");
    let addr = lb.https.unwrap();
    let connector = client(dir.path());
    // The first connection is a full handshake; its tickets let the next ones resume.
    let mut first = connect(&connector, addr).await.unwrap();
    // TLS 1.3 tickets come after the handshake: a request makes sure they arrived.
    let _ = home(&mut first).await;
    for i in 0..16 {
        let mut tls = connect(&connector, addr).await.unwrap();
        let _ = home(&mut tls).await;
        assert_eq!(
            tls.get_ref().1.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed),
            "reconnect {i} was not resumed (a worker without the session?)"
        );
    }
}
