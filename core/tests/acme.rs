//! Automatic certificates (`[tls.acme]`) against Debian's `pebble`, Let's Encrypt's test ACME
//! server, started here on loopback ports with a configuration of the test's own (its HTTPS
//! certificate made here with rcgen; `httpPort`/`tlsPort` are `lb`'s listeners, so pebble's
//! validation reaches `lb`), killed by pid at the end. Never a public ACME server.
//!
//! Without pebble (`apt-get install -y pebble`; `scripts/test.sh` installs it and sets
//! `LB_REQUIRE_PEBBLE=1`, which turns the skip into a failure) the pebble test skips with the
//! reason. The bad-directory test needs nothing.

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use common::{eventually, free_port, sample, save_by_rename, Lb};

/// Pebble's certificates live 30 days and 10 seconds: with `renew_before_days = 30` one is due
/// 10 s after it was issued, with 29 a day later.
const VALIDITY_SECS: u64 = 30 * 86_400 + 10;

/// The pebble binary, or why there is none (then the test skips, unless `LB_REQUIRE_PEBBLE`).
fn pebble_binary() -> Option<PathBuf> {
    let found = ["/usr/bin/pebble", "/usr/local/bin/pebble"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("LB_REQUIRE_PEBBLE").is_none(),
            "pebble is not installed (apt-get install -y pebble) and LB_REQUIRE_PEBBLE is set"
        );
        eprintln!("SKIPPED: pebble is not installed (apt-get install -y pebble; scripts/test.sh installs it)");
    }
    found
}

/// A CA of the test's own: it signs pebble's HTTPS certificate, and `lb` trusts it (`ca`).
struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    fn new() -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "lb acme test CA");
        let cert = params.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    /// A leaf for `names`: (certificate PEM, key PEM).
    fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A client trusting only `roots`, offering `http/1.1`.
fn client(roots: &[CertificateDer<'static>]) -> TlsConnector {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// A running pebble, killed (by its pid) when dropped.
struct Pebble {
    child: Child,
    dir: PathBuf,
    /// `https://localhost:PORT/dir`.
    directory: String,
    /// The management port (`/roots/0`).
    management: u16,
}

impl Pebble {
    /// Start `binary` with its HTTP-01 and TLS-ALPN-01 validations going to `http_port` and
    /// `tls_port`, its HTTPS certificate signed by `ca`; wait until it listens.
    fn start(binary: &Path, dir: &Path, ca: &TestCa, http_port: u16, tls_port: u16) -> Pebble {
        let dir = dir.join("pebble");
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"]);
        std::fs::write(dir.join("cert.pem"), cert).unwrap();
        std::fs::write(dir.join("key.pem"), key).unwrap();
        let (listen, management) = (free_port(), free_port());
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{listen}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": dir.join("cert.pem"),
                "privateKey": dir.join("key.pem"),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "certificateValidityPeriod": VALIDITY_SECS,
            }
        });
        std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
        let log = std::fs::File::create(dir.join("pebble.log")).unwrap();
        let child = Command::new(binary)
            .arg("-config")
            .arg(dir.join("pebble.json"))
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_VA_ALWAYS_VALID", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("run pebble");
        let pebble = Pebble {
            child,
            dir,
            directory: format!("https://localhost:{listen}/dir"),
            management,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", listen)).is_err() {
            assert!(
                Instant::now() < deadline,
                "pebble did not listen; its log:\n{}",
                pebble.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        pebble
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pebble.log")).unwrap_or_default()
    }

    /// Pebble's issuing root (`/roots/0` on its management port; made anew at each start).
    async fn root(&self, ca: &TestCa) -> CertificateDer<'static> {
        let connector = client(&[ca.cert.der().clone()]);
        let tcp = TcpStream::connect(("127.0.0.1", self.management))
            .await
            .unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
            .await
            .expect("handshake in time")
            .unwrap();
        tls.write_all(b"GET /roots/0 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut text = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut text))
            .await
            .expect("answer in time")
            .ok();
        let text = String::from_utf8_lossy(&text);
        let pem = &text[text.find("-----BEGIN").expect("a PEM root")..];
        rustls_pemfile_free(pem)
    }
}

/// The first certificate of a PEM text.
fn rustls_pemfile_free(pem: &str) -> CertificateDer<'static> {
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("a PEM certificate")
}

impl Drop for Pebble {
    fn drop(&mut self) {
        common::signal(self.child.id(), libc::SIGKILL);
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("pebble's log:\n{}", self.log());
        }
    }
}

/// The leaf `addr` presents for `name` to a client trusting `roots` (`Err`: the handshake
/// failed, e.g. the certificate does not chain to them).
async fn served(
    connector: &TlsConnector,
    addr: SocketAddr,
    name: &str,
) -> std::io::Result<Vec<u8>> {
    let tcp = TcpStream::connect(addr).await?;
    let server = ServerName::try_from(name.to_owned()).unwrap();
    let tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(server, tcp))
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))??;
    let (_, conn) = tls.get_ref();
    Ok(conn.peer_certificates().unwrap()[0].as_ref().to_vec())
}

/// `lb.toml`: a file certificate for `files.test`, one replica, and `acme` (a `[tls.acme]`
/// body, or nothing).
fn config(dir: &Path, acme: &str) -> String {
    let mut text = format!(
        "[health]\ninterval_ms = 100\n[[replicas]]\nhostname = \"Server 1\"\nid = 1\n\
         [tls]\nlisten = \"127.0.0.1:0\"\n\
         [[tls.certificates]]\ncert = \"{0}/files.pem\"\nkey = \"{0}/files.key\"\n",
        dir.display()
    );
    if !acme.is_empty() {
        text += "[tls.acme]\n";
        text += acme;
    }
    text
}

/// `[tls.acme]` for `localhost` from `pebble`, trusting `ca_file`.
fn acme_section(pebble: &Pebble, ca_file: &Path, renew_before_days: u32) -> String {
    format!(
        "directory = \"{}\"\nemail = \"ops@lb.test\"\ndomains = [\"localhost\"]\n\
         state_dir = \"acme-state\"\nrenew_before_days = {renew_before_days}\nca = \"{}\"\n",
        pebble.directory,
        ca_file.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_against_pebble_is_served_renewed_live_and_kept_across_a_restart() {
    let Some(binary) = pebble_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let ca = TestCa::new();
    let ca_file = dir.join("test-ca.pem");
    std::fs::write(&ca_file, ca.cert.pem()).unwrap();
    let (cert, key) = ca.leaf(&["files.test"]);
    std::fs::write(dir.join("files.pem"), cert).unwrap();
    std::fs::write(dir.join("files.key"), key).unwrap();
    let path = dir.join("lb.toml");
    std::fs::write(&path, config(dir, "")).unwrap();

    // lb first (its ports are pebble's validation ports), then pebble, then [tls.acme] added
    // to the running lb's file: live.
    let lb = Lb::start_file(&path);
    let https = lb.https.expect("a TLS listener");
    let pebble = Pebble::start(&binary, dir, &ca, lb.addr.port(), https.port());
    save_by_rename(&path, &config(dir, &acme_section(&pebble, &ca_file, 29)));

    let root = pebble.root(&ca).await;
    let trusts_pebble = client(std::slice::from_ref(&root));
    let first = eventually(
        Duration::from_secs(60),
        "a certificate from pebble",
        || async { served(&trusts_pebble, https, "localhost").await.ok() },
    )
    .await;
    // The file certificate is still served for its own name, beside the ACME one.
    let trusts_files = client(&[ca.cert.der().clone()]);
    served(&trusts_files, https, "files.test")
        .await
        .expect("the file certificate, chained to the test CA");
    assert_eq!(
        sample::<u64>(&lb, "lb_acme_orders_total{result=\"ok\"}").await,
        1
    );
    // /_lb/status (and so the dashboard) lists both: the file's first, then pebble's, with
    // the days each has left.
    let status = lb.status().await;
    let listed = status["tls"]["certificates"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["names"], serde_json::json!(["files.test"]));
    assert_eq!(listed[1]["names"], serde_json::json!(["localhost"]));
    assert!(
        listed[1]["cert"].as_str().unwrap().contains("acme-state"),
        "{listed:?}"
    );
    assert!(
        listed[1]["days_left"].as_i64().is_some_and(|d| d >= 0),
        "{listed:?}"
    );
    // Kept in the state directory, 0600, beside the account.
    let state = dir.join("acme-state");
    let kept: Vec<PathBuf> = walk(&state)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "pem" || e == "json"))
        .collect();
    assert_eq!(kept.len(), 2, "an account and a certificate: {kept:?}");
    for file in &kept {
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }

    // Renewal: with 30 days the certificate is due 10 s after it was issued. It is replaced
    // live, while clients keep connecting over TLS without one failure.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let traffic = {
        let (stop, ok, failed, connector) = (
            Arc::clone(&stop),
            Arc::clone(&ok),
            Arc::clone(&failed),
            trusts_pebble.clone(),
        );
        tokio::spawn(async move {
            let started = Instant::now();
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(120) {
                    break;
                }
                let counter = match served(&connector, https, "localhost").await {
                    Ok(_) => &ok,
                    Err(_) => &failed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    save_by_rename(&path, &config(dir, &acme_section(&pebble, &ca_file, 30)));
    let renewed = eventually(Duration::from_secs(60), "a renewed certificate", || async {
        let now = served(&trusts_pebble, https, "localhost").await.ok()?;
        (now != first).then_some(now)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    traffic.await.unwrap();
    assert!(ok.load(Ordering::Relaxed) > 0);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "handshakes failed during the renewal"
    );
    assert!(sample::<u64>(&lb, "lb_acme_orders_total{result=\"ok\"}").await >= 2);
    assert!(lb.log().contains("ACME certificate issued"), "{}", lb.log());
    drop(renewed);

    // Back to 29 days (nothing due), then a restart: the certificate kept is served again,
    // nothing is ordered.
    save_by_rename(&path, &config(dir, &acme_section(&pebble, &ca_file, 29)));
    let cert_file = walk(&state)
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "pem"))
        .unwrap();
    // Settled: what is served is what is kept (a renewal in flight was given up on).
    let kept_leaf = eventually(
        Duration::from_secs(30),
        "the kept certificate served",
        || async {
            let kept = leaf_of(&std::fs::read_to_string(&cert_file).ok()?)?;
            let now = served(&trusts_pebble, https, "localhost").await.ok()?;
            (now == kept).then_some(kept)
        },
    )
    .await;
    drop(lb);
    let lb = Lb::start_file(&path);
    let https = lb.https.unwrap();
    let again = eventually(Duration::from_secs(30), "the kept certificate", || async {
        served(&trusts_pebble, https, "localhost").await.ok()
    })
    .await;
    assert_eq!(
        again, kept_leaf,
        "the restarted lb serves the kept certificate"
    );
    assert_eq!(
        sample::<u64>(&lb, "lb_acme_orders_total{result=\"ok\"}").await,
        0
    );
    assert_eq!(
        sample::<u64>(&lb, "lb_acme_orders_total{result=\"error\"}").await,
        0
    );
    drop(pebble);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn_01_is_answered_on_the_tls_listener() {
    let Some(binary) = pebble_binary() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let ca = TestCa::new();
    let ca_file = dir.join("test-ca.pem");
    std::fs::write(&ca_file, ca.cert.pem()).unwrap();
    let (cert, key) = ca.leaf(&["files.test"]);
    std::fs::write(dir.join("files.pem"), cert).unwrap();
    std::fs::write(dir.join("files.key"), key).unwrap();
    let path = dir.join("lb.toml");
    std::fs::write(&path, config(dir, "")).unwrap();
    let lb = Lb::start_file(&path);
    let https = lb.https.expect("a TLS listener");
    // Pebble's HTTP-01 port is one nothing listens on: only TLS-ALPN-01 can succeed.
    let pebble = Pebble::start(&binary, dir, &ca, free_port(), https.port());
    let acme = acme_section(&pebble, &ca_file, 29) + "challenge = \"tls-alpn-01\"\n";
    save_by_rename(&path, &config(dir, &acme));
    let root = pebble.root(&ca).await;
    let trusts_pebble = client(std::slice::from_ref(&root));
    eventually(
        Duration::from_secs(60),
        "a certificate from pebble",
        || async { served(&trusts_pebble, https, "localhost").await.ok() },
    )
    .await;
    assert_eq!(
        sample::<u64>(&lb, "lb_acme_orders_total{result=\"ok\"}").await,
        1
    );
    drop(pebble);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_directory_keeps_lb_serving_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let ca = TestCa::new();
    let (cert, key) = ca.leaf(&["files.test"]);
    std::fs::write(dir.join("files.pem"), cert).unwrap();
    std::fs::write(dir.join("files.key"), key).unwrap();
    // Nothing listens there: the ACME server is unreachable.
    let closed = free_port();
    let path = dir.join("lb.toml");
    let text = config(
        dir,
        &format!(
            "directory = \"https://127.0.0.1:{closed}/dir\"\ndomains = [\"localhost\"]\n\
             state_dir = \"acme-state\"\n"
        ),
    )
    .replace("[tls]\n", "[tls]\nredirect_http = true\n");
    std::fs::write(&path, text).unwrap();
    let lb = Lb::start_file(&path);
    let https = lb.https.unwrap();
    let error = eventually(
        Duration::from_secs(30),
        "the ACME error in status",
        || async {
            let status = lb.status().await;
            let error = status["config"]["last_error"]["message"]
                .as_str()?
                .to_owned();
            error.contains("ACME").then_some(error)
        },
    )
    .await;
    assert!(
        error.contains("order for localhost failed") && error.contains("retried with backoff"),
        "{error}"
    );
    assert_eq!(
        sample::<u64>(&lb, "lb_acme_orders_total{result=\"error\"}").await,
        1
    );
    // Still serving: HTTPS with the file certificate.
    let trusts_files = client(&[ca.cert.der().clone()]);
    served(&trusts_files, https, "files.test")
        .await
        .expect("the file certificate");
    // Plain HTTP answers: with redirect_http, a 308 to HTTPS ...
    assert_eq!(lb.get("/home").await.status, 308);
    // ... but the challenge path is lb's own now: never redirected nor proxied, and an unknown
    // token is a 404.
    let answer = lb.get("/.well-known/acme-challenge/unknown-token").await;
    assert_eq!(answer.status, 404, "{}", answer.body);
    assert!(answer.body.contains("no ACME challenge"), "{}", answer.body);
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                found.push(p);
            }
        }
    }
    found
}

/// The DER of the first certificate in a PEM text (the key comes first in `lb`'s file).
fn leaf_of(pem: &str) -> Option<Vec<u8>> {
    use rustls::pki_types::pem::PemObject as _;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()
        .map(|c| c.as_ref().to_vec())
}
