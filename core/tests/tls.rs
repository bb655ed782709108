//! HTTPS at the edge: the `[tls]` listener with certificates made here by rcgen (a CA and leaf
//! certificates), a rustls client trusting that CA, and raw bytes for the hostile clients (an
//! old protocol version, garbage, a stalled handshake, a 64 KiB server name). No outside tool.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream as AsyncTcp;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use common::{sample, Lb};

/// A test CA that signs leaf certificates.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "lb test CA");
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A leaf for `names`, signed by this CA: (certificate PEM, key PEM, certificate DER).
    fn leaf(&self, names: &[&str]) -> (String, String, Vec<u8>) {
        self.leaf_with(names, |_| {})
    }

    fn leaf_with(
        &self,
        names: &[&str],
        change: impl FnOnce(&mut CertificateParams),
    ) -> (String, String, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        change(&mut params);
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    /// A client configuration trusting this CA, offering `versions`.
    fn client(&self, versions: &[&'static rustls::SupportedProtocolVersion]) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsConnector::from(Arc::new(config))
    }
}

/// Write `text` to `dir/name` by renaming a new file over it (as editors and certbot do).
fn save(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.new"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// `[tls]` with `certs` (pairs of absolute paths), and `rest` after it.
fn config(min_version: &str, certs: &[(PathBuf, PathBuf)], rest: &str) -> String {
    config_with(min_version, "", certs, rest)
}

/// [`config`] with `tls_extra` lines in `[tls]`.
fn config_with(
    min_version: &str,
    tls_extra: &str,
    certs: &[(PathBuf, PathBuf)],
    rest: &str,
) -> String {
    let mut text = format!(
        "[proxy]\nclient_header_timeout_ms = 1000\n\
         [tls]\nlisten = \"127.0.0.1:0\"\nmin_version = \"{min_version}\"\n{tls_extra}"
    );
    for (cert, key) in certs {
        text += &format!(
            "[[tls.certificates]]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        );
    }
    text + rest
}

/// One replica `lb` runs, fast heartbeats.
const ONE_REPLICA: &str =
    "[health]\ninterval_ms = 100\n[[replicas]]\nhostname = \"Server 1\"\nid = 1\n";

/// A TLS connection to `addr` asking for `name`.
async fn connect(
    connector: &TlsConnector,
    addr: SocketAddr,
    name: &str,
) -> std::io::Result<TlsStream<AsyncTcp>> {
    let tcp = AsyncTcp::connect(addr).await?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))?
}

/// The leaf certificate the server presented.
fn presented(tls: &TlsStream<AsyncTcp>) -> Vec<u8> {
    let (_, conn) = tls.get_ref();
    conn.peer_certificates().unwrap()[0].as_ref().to_vec()
}

/// Send a keep-alive `GET path` for `host` and read one response (head and a
/// `Content-Length` body): (status, body).
async fn get(tls: &mut TlsStream<AsyncTcp>, host: &str, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let status = head[9..12].parse().unwrap();
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                return (status, body);
            }
        }
        assert!(Instant::now() < deadline, "no whole response: {buf:?}");
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut chunk))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(n > 0, "closed before a whole response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A ClientHello record (`legacy_version` as given, no extensions but `extensions`).
fn client_hello(version: [u8; 2], extensions: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&version);
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&[0, 4, 0x00, 0x2f, 0xc0, 0x13]); // two old cipher suites
    body.extend_from_slice(&[1, 0]); // no compression
    if !extensions.is_empty() {
        body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
        body.extend_from_slice(extensions);
    }
    let mut handshake = vec![1u8];
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    // Records of at most 16 KiB.
    let mut out = Vec::new();
    for fragment in handshake.chunks(16 * 1024) {
        out.extend_from_slice(&[0x16, 0x03, 0x01]);
        out.extend_from_slice(&(fragment.len() as u16).to_be_bytes());
        out.extend_from_slice(fragment);
    }
    out
}

/// Send `bytes` to `addr` and read until the server closes (at most `limit`): what it sent,
/// and how long until it closed (`None`: still open at the limit).
fn send_raw(addr: SocketAddr, bytes: &[u8], limit: Duration) -> (Vec<u8>, Option<Duration>) {
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    let _ = stream.write_all(bytes);
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(start.elapsed());
        if left.is_zero() {
            return (got, None);
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut chunk) {
            Ok(0) => return (got, Some(start.elapsed())),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (got, None)
            }
            Err(_) => return (got, Some(start.elapsed())),
        }
    }
}

/// Certificates for `site.test` and `other.test` in a temporary directory, and `lb` serving
/// them (with `min_version` and `rest`).
struct Site {
    ca: Ca,
    dir: tempfile::TempDir,
    site_der: Vec<u8>,
    other_der: Vec<u8>,
    lb: Lb,
}

impl Site {
    fn start(min_version: &str, rest: &str) -> Site {
        Site::start_with(min_version, "", rest)
    }

    fn start_with(min_version: &str, tls_extra: &str, rest: &str) -> Site {
        let ca = Ca::new();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, site_der) = ca.leaf(&["site.test", "localhost"]);
        let site = (
            save(dir.path(), "site.pem", &cert),
            save(dir.path(), "site.key", &key),
        );
        let (cert, key, other_der) = ca.leaf(&["other.test", "*.wild.test"]);
        let other = (
            save(dir.path(), "other.pem", &cert),
            save(dir.path(), "other.key", &key),
        );
        let lb = Lb::start(&config_with(min_version, tls_extra, &[site, other], rest));
        assert!(lb.https.is_some(), "no https line:\n{}", lb.stdout());
        Site {
            ca,
            dir,
            site_der,
            other_der,
            lb,
        }
    }

    fn https(&self) -> SocketAddr {
        self.lb.https.unwrap()
    }
}

/// Poll `/home` over plain HTTP until the replica answers (at most 20 s).
async fn wait_for_replica(lb: &Lb) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while lb.get("/home").await.status != 200 {
        assert!(
            Instant::now() < deadline,
            "no replica in time:\n{}",
            lb.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn https_serves_the_replica_and_picks_certificates_by_sni() {
    let site = Site::start("1.2", ONE_REPLICA);
    wait_for_replica(&site.lb).await;
    let client = site.ca.client(rustls::ALL_VERSIONS);
    let mut tls = connect(&client, site.https(), "localhost").await.unwrap();
    assert_eq!(presented(&tls), site.site_der);
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (status, body) = get(&mut tls, "localhost", "/home").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(common::served_by(&body), "Server 1");
    // Keep-alive: a second request on the same connection.
    let (status, _) = get(&mut tls, "localhost", "/home").await;
    assert_eq!(status, 200);
    // SNI: the exact name, a wildcard one label deep, and the default for an unknown name.
    let other = connect(&client, site.https(), "other.test").await.unwrap();
    assert_eq!(presented(&other), site.other_der);
    let wild = connect(&client, site.https(), "a.wild.test").await.unwrap();
    assert_eq!(presented(&wild), site.other_der);
    let unknown = connect(&client, site.https(), "nobody.test").await;
    assert!(
        unknown.is_err(),
        "the default certificate does not name nobody.test"
    );
    // Both versions offered; TLS 1.2 works too.
    let v12 = site.ca.client(&[&rustls::version::TLS12]);
    let tls12 = connect(&v12, site.https(), "site.test").await.unwrap();
    assert_eq!(
        tls12.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert!(sample::<f64>(&site.lb, "lb_tls_handshakes_total{version=\"1.3\"}").await >= 3.0);
    assert!(sample::<f64>(&site.lb, "lb_tls_handshakes_total{version=\"1.2\"}").await >= 1.0);
    let expiry = sample::<f64>(
        &site.lb,
        "lb_tls_certificate_expiry_seconds{name=\"site.test\"}",
    )
    .await;
    assert!(expiry > 86_400.0, "{expiry}");
    // /_lb/status lists the listener and the certificates with their names and days left.
    let status = site.lb.status().await;
    assert_eq!(status["tls"]["listen"], site.https().to_string());
    let certificates = status["tls"]["certificates"].as_array().unwrap();
    let names: Vec<&serde_json::Value> = certificates.iter().map(|c| &c["names"]).collect();
    assert_eq!(
        names,
        [
            &serde_json::json!(["site.test", "localhost"]),
            &serde_json::json!(["other.test", "*.wild.test"])
        ]
    );
    assert!(certificates[0]["cert"]
        .as_str()
        .unwrap()
        .ends_with("site.pem"));
    // Read a moment after the expiry: a whole day may have ended in between (a certificate
    // made a whole number of days long is at that edge in its first second).
    let whole_days = (expiry / 86_400.0).floor() as i64;
    let days_left = certificates[0]["days_left"].as_i64().unwrap();
    assert!(
        days_left == whole_days || days_left == whole_days - 1,
        "{days_left} days left, expiry in {expiry} s"
    );
    // TLS 1.1 is refused: an alert or a close, never a ServerHello.
    let (answer, closed) = send_raw(
        site.https(),
        &client_hello([3, 2], &[]),
        Duration::from_secs(5),
    );
    assert!(closed.is_some(), "still open after a TLS 1.1 hello");
    assert_ne!(
        answer.first(),
        Some(&0x16),
        "a TLS 1.1 hello got a handshake answer"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_min_version_1_3_tls_1_2_is_refused_and_plain_http_is_redirected() {
    let site = Site::start_with("1.3", "redirect_http = true\n", ONE_REPLICA);
    let v12 = site.ca.client(&[&rustls::version::TLS12]);
    assert!(connect(&v12, site.https(), "site.test").await.is_err());
    let v13 = site.ca.client(&[&rustls::version::TLS13]);
    let mut tls = connect(&v13, site.https(), "site.test").await.unwrap();
    // redirect_http: plain requests get a 308 to the same URL over HTTPS; lb's own endpoints
    // and requests over TLS do not.
    let plain = site
        .lb
        .send("GET", "/home?x=1", b"", &[("Host", "site.test:80")])
        .await;
    assert_eq!(plain.status, 308, "{}", plain.body);
    assert_eq!(
        plain.headers["location"],
        format!("https://site.test:{}/home?x=1", site.https().port())
    );
    assert_eq!(site.lb.get("/_lb/status").await.status, 200);
    assert_eq!(site.lb.get("/rep").await.status, 200);
    wait_for_replica_over(&mut tls).await;
}

/// `min_version` and `redirect_http` change live: a save to 1.3 refuses TLS 1.2 handshakes from
/// then on and turns the redirect on; a save back to 1.2 takes them again, without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn min_version_and_redirect_change_live() {
    let site = Site::start("1.2", ONE_REPLICA);
    let v12 = site.ca.client(&[&rustls::version::TLS12]);
    assert!(connect(&v12, site.https(), "site.test").await.is_ok());
    let text = std::fs::read_to_string(&site.lb.config).unwrap();
    let strict = text.replace(
        "min_version = \"1.2\"",
        "min_version = \"1.3\"\nredirect_http = true",
    );
    assert_ne!(strict, text);
    save_config(&site.lb, &strict);
    let deadline = Instant::now() + Duration::from_secs(10);
    while connect(&v12, site.https(), "site.test").await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "TLS 1.2 still taken:\n{}",
            site.lb.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v13 = site.ca.client(&[&rustls::version::TLS13]);
    assert!(connect(&v13, site.https(), "site.test").await.is_ok());
    // A new connection (the client's pooled one is told to close after its next answer).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let plain = site.lb.send("GET", "/home", b"", &[]).await;
        if plain.status == 308 {
            break;
        }
        assert!(Instant::now() < deadline, "no redirect: {}", plain.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    save_config(&site.lb, &text);
    let deadline = Instant::now() + Duration::from_secs(10);
    while connect(&v12, site.https(), "site.test").await.is_err() {
        assert!(
            Instant::now() < deadline,
            "TLS 1.2 still refused:\n{}",
            site.lb.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = site.lb.status().await;
    assert_eq!(status["config"]["needs_restart"], serde_json::json!([]));
}

/// Poll `/home` over `tls` until the replica answers (at most 20 s).
async fn wait_for_replica_over(tls: &mut TlsStream<AsyncTcp>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = get(tls, "site.test", "/home").await;
        if status == 200 {
            assert_eq!(common::served_by(&body), "Server 1");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no replica over TLS: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A backend by address that answers every request with the `X-Forwarded-Proto` it got.
fn echo_proto() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match stream.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    buf.drain(..end + 4);
                    let proto = head
                        .lines()
                        .find_map(|l| l.strip_prefix("x-forwarded-proto:"))
                        .map_or("none".to_owned(), |v| v.trim().to_owned());
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{proto}",
                        proto.len()
                    );
                    if stream.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_over_tls_reach_replicas_as_https_and_bad_clients_are_closed_and_counted() {
    let backend = echo_proto();
    let logs = tempfile::tempdir().unwrap();
    let access = logs.path().join("access.log");
    let rest = format!(
        "[log]\naccess = \"{}\"\naccess_format = \"json\"\n\
         [health]\npath = \"/health\"\ninterval_ms = 100\nrise = 1\n\
         [[replicas]]\nhostname = \"echo\"\nid = 1\naddress = \"{backend}\"\npipelining = false\n",
        access.display()
    );
    let site = Site::start("1.2", &rest);
    let client = site.ca.client(rustls::ALL_VERSIONS);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut tls = connect(&client, site.https(), "site.test").await.unwrap();
    loop {
        let (status, body) = get(&mut tls, "site.test", "/x").await;
        if status == 200 {
            assert_eq!(body, "https");
            break;
        }
        assert!(Instant::now() < deadline, "no backend in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The plain listener still says http.
    assert_eq!(site.lb.get("/x").await.body, "http");

    // Hostile clients, each on a thread, while a good client is served meanwhile.
    let addr = site.https();
    let garbage = std::thread::spawn(move || {
        send_raw(
            addr,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            Duration::from_secs(5),
        )
    });
    let stalled = std::thread::spawn(move || {
        // A record header and a few bytes of a ClientHello, then nothing.
        send_raw(
            addr,
            &[0x16, 0x03, 0x01, 0x00, 0x80, 0x01, 0x00],
            Duration::from_secs(6),
        )
    });
    let huge_name = std::thread::spawn(move || {
        let name = vec![b'a'; 65_000];
        let mut list = vec![0u8];
        list.extend_from_slice(&(name.len() as u16).to_be_bytes());
        list.extend_from_slice(&name);
        let mut ext = vec![0u8, 0]; // server_name
        ext.extend_from_slice(&((list.len() + 2) as u16).to_be_bytes());
        ext.extend_from_slice(&(list.len() as u16).to_be_bytes());
        ext.extend_from_slice(&list);
        send_raw(addr, &client_hello([3, 3], &ext), Duration::from_secs(5))
    });
    // Served meanwhile, on a new connection.
    let mut good = connect(&client, site.https(), "site.test").await.unwrap();
    assert_eq!(
        get(&mut good, "site.test", "/y").await,
        (200, "https".into())
    );
    let (answer, closed) = garbage.join().unwrap();
    assert!(closed.is_some(), "garbage left open");
    assert!(!answer.starts_with(b"HTTP/"), "garbage got an HTTP answer");
    let (_, closed) = stalled.join().unwrap();
    let took = closed.expect("a stalled handshake is closed");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "closed after {took:?}, not after client_header_timeout_ms"
    );
    let (answer, closed) = huge_name.join().unwrap();
    assert!(closed.is_some(), "a 64 KiB server name left open");
    assert_ne!(
        answer.first(),
        Some(&0x16),
        "a 64 KiB server name got a ServerHello"
    );
    // Counted by reason, and the good client still works.
    assert!(
        sample::<f64>(
            &site.lb,
            "lb_tls_handshake_errors_total{reason=\"timeout\"}"
        )
        .await
            >= 1.0
    );
    assert!(
        sample::<f64>(
            &site.lb,
            "lb_tls_handshake_errors_total{reason=\"protocol\"}"
        )
        .await
            >= 2.0
    );
    assert_eq!(
        get(&mut good, "site.test", "/z").await,
        (200, "https".into())
    );

    // The access log says which requests came over TLS, with which version and name.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(&access).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let over_tls = lines.iter().find(|l| l["path"] == "/z");
        let plain = lines.iter().find(|l| l["path"] == "/x" && l["tls"] == "");
        if let (Some(over_tls), Some(plain)) = (over_tls, plain) {
            assert_eq!(over_tls["tls"], "1.3", "{over_tls}");
            assert_eq!(over_tls["sni"], "site.test", "{over_tls}");
            assert_eq!(plain["sni"], "", "{plain}");
            break;
        }
        assert!(Instant::now() < deadline, "no access log lines:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Save `text` as `lb`'s configuration file by renaming a new file over it.
fn save_config(lb: &Lb, text: &str) {
    let tmp = lb.config.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &lb.config).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_saved_file_adds_and_removes_certificates_live() {
    let site = Site::start("1.2", ONE_REPLICA);
    let client = site.ca.client(rustls::ALL_VERSIONS);
    let (cert, key, added) = site.ca.leaf(&["added.test"]);
    let added_pair = (
        save(site.dir.path(), "added.pem", &cert),
        save(site.dir.path(), "added.key", &key),
    );
    let site_pair = (
        site.dir.path().join("site.pem"),
        site.dir.path().join("site.key"),
    );
    let text = config("1.2", &[site_pair.clone(), added_pair], ONE_REPLICA);
    save_config(&site.lb, &text);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(tls) = connect(&client, site.https(), "added.test").await {
            if presented(&tls) == added {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the added certificate is not served:\n{}",
            site.lb.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // other.test is gone from the file: the default answers for it now.
    let tls = connect(&client, site.https(), "site.test").await.unwrap();
    assert_eq!(presented(&tls), site.site_der);
    assert!(connect(&client, site.https(), "other.test").await.is_err());
    // A save that moves the TLS listener to an address another socket holds: the listener
    // stays where it is, and says why (moves that work: `live_settings.rs`).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap();
    let moved = text.replace("listen = \"127.0.0.1:0\"", &format!("listen = \"{taken}\""));
    save_config(&site.lb, &moved);
    let error = site.lb.last_error(Duration::from_secs(5)).await;
    assert!(
        error.contains("[tls] listen")
            && error.contains("address already in use")
            && error.contains(&format!("still listening on {}", site.https())),
        "{error}"
    );
    assert!(connect(&client, site.https(), "site.test").await.is_ok());
    // A save whose certificate is broken is refused whole: the served set stays.
    let broken = config(
        "1.2",
        &[(site.dir.path().join("missing.pem"), site_pair.1.clone())],
        ONE_REPLICA,
    );
    save_config(&site.lb, &broken);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = site.lb.status().await;
        let error = status["config"]["last_error"]["message"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        if error.contains("missing.pem") {
            break;
        }
        assert!(Instant::now() < deadline, "no last_error: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tls = connect(&client, site.https(), "added.test").await.unwrap();
    assert_eq!(presented(&tls), added);
}

#[tokio::test(flavor = "multi_thread")]
async fn renewed_certificates_are_served_live_and_a_broken_pair_keeps_the_old_one() {
    let site = Site::start("1.2", ONE_REPLICA);
    wait_for_replica(&site.lb).await;
    let client = site.ca.client(rustls::ALL_VERSIONS);
    let mut before = connect(&client, site.https(), "site.test").await.unwrap();
    assert_eq!(get(&mut before, "site.test", "/home").await.0, 200);

    // Renewal: new files renamed over the old ones (valid for 20 more days).
    let (cert, key, renewed) = site.ca.leaf_with(&["site.test", "localhost"], |p| {
        p.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(20);
    });
    save(site.dir.path(), "site.key", &key);
    save(site.dir.path(), "site.pem", &cert);
    let saved = Instant::now();
    loop {
        let tls = connect(&client, site.https(), "site.test").await.unwrap();
        if presented(&tls) == renewed {
            break;
        }
        assert_eq!(presented(&tls), site.site_der);
        assert!(
            saved.elapsed() < Duration::from_secs(2),
            "the renewed certificate is not served within 2 s:\n{}",
            site.lb.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The connection opened before goes on.
    assert_eq!(get(&mut before, "site.test", "/home").await.0, 200);
    assert!(sample::<f64>(&site.lb, "lb_tls_reloads_total{result=\"ok\"}").await >= 1.0);
    // /_lb/status shows the days the renewed certificate has left.
    let days = site.lb.status().await["tls"]["certificates"][0]["days_left"].as_i64();
    assert!(matches!(days, Some(19 | 20)), "{days:?}");

    // A broken pair: a key that is not the certificate's. The renewed one stays.
    let (_, stranger, _) = site.ca.leaf(&["site.test"]);
    save(site.dir.path(), "site.key", &stranger);
    let deadline = Instant::now() + Duration::from_secs(5);
    let error = loop {
        let status = site.lb.status().await;
        if let Some(message) = status["config"]["last_error"]["message"].as_str() {
            break message.to_owned();
        }
        assert!(Instant::now() < deadline, "no last_error: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        error.contains("site.key") && error.contains("does not fit"),
        "{error}"
    );
    let tls = connect(&client, site.https(), "site.test").await.unwrap();
    assert_eq!(presented(&tls), renewed);
    assert!(sample::<f64>(&site.lb, "lb_tls_reloads_total{result=\"error\"}").await >= 1.0);
    // Garbage instead of a certificate: still the renewed one.
    save(site.dir.path(), "site.pem", "not a certificate");
    tokio::time::sleep(Duration::from_millis(300)).await; // no event to wait for: a refusal changes nothing
    let tls = connect(&client, site.https(), "site.test").await.unwrap();
    assert_eq!(presented(&tls), renewed);
    // Good files again: served, and the error cleared.
    let (cert, key, third) = site.ca.leaf(&["site.test"]);
    save(site.dir.path(), "site.key", &key);
    save(site.dir.path(), "site.pem", &cert);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let tls = connect(&client, site.https(), "site.test").await.unwrap();
        if presented(&tls) == third {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the third certificate is not served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(site.lb.status().await["config"]["last_error"].is_null());
}

/// `lb check` on `text` (written beside the certificates in `dir`): (passed, output).
fn lb_check(dir: &Path, text: &str) -> (bool, String) {
    let path = dir.join("lb.toml");
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lb"))
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn lb_check_names_a_mismatched_key_and_an_expired_certificate() {
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, _, _) = ca.leaf(&["site.test"]);
    let (_, other_key, _) = ca.leaf(&["site.test"]);
    let (old, old_key, _) = ca.leaf_with(&["old.test"], |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    save(dir.path(), "site.pem", &cert);
    save(dir.path(), "wrong.key", &other_key);
    save(dir.path(), "old.pem", &old);
    save(dir.path(), "old.key", &old_key);
    save(
        dir.path(),
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\n!!!\n",
    );
    let entry = |c: &str, k: &str| format!("[[tls.certificates]]\ncert = \"{c}\"\nkey = \"{k}\"\n");
    let head = "[tls]\nlisten = \"127.0.0.1:5443\"\n";
    let (ok, out) = lb_check(
        dir.path(),
        &(head.to_owned() + &entry("site.pem", "wrong.key")),
    );
    assert!(
        !ok && out.contains("wrong.key") && out.contains("does not fit"),
        "{out}"
    );
    let (ok, out) = lb_check(
        dir.path(),
        &(head.to_owned() + &entry("old.pem", "old.key")),
    );
    assert!(
        !ok && out.contains("old.pem") && out.contains("expired"),
        "{out}"
    );
    let (ok, out) = lb_check(
        dir.path(),
        &(head.to_owned() + &entry("garbage.pem", "old.key")),
    );
    assert!(!ok && out.contains("garbage.pem"), "{out}");
    let (ok, out) = lb_check(
        dir.path(),
        &(head.to_owned() + &entry("missing.pem", "old.key")),
    );
    assert!(!ok && out.contains("missing.pem"), "{out}");
    let (ok, out) = lb_check(dir.path(), head);
    assert!(!ok && out.contains("at least one"), "{out}");
    let (cert, key, _) = ca.leaf(&["good.test"]);
    save(dir.path(), "good.pem", &cert);
    save(dir.path(), "good.key", &key);
    let (ok, out) = lb_check(
        dir.path(),
        &(head.to_owned() + &entry("good.pem", "good.key")),
    );
    assert!(ok, "{out}");
}
