//! TLS to backends by address: backends made here (tokio-rustls on 127.0.0.1, certificates for
//! `backend.test` from CAs made with rcgen) reached by `lb` over TLS with `ca` and
//! `server_name`; a wrong CA or name keeps a backend out with the TLS problem as its reason; a
//! backend that starts presenting a certificate of another CA costs an attempt counted as
//! `kind="tls"` and the request goes to the next replica; `tls_verify = false` accepts any
//! certificate, with a warning naming the entry.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use common::{eventually, sample, Lb};

/// A CA made with rcgen, which signs server certificates.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// Its certificate, written as PEM to a file in `dir`.
    fn write(&self, dir: &std::path::Path, file: &str) -> String {
        let path = dir.join(file);
        std::fs::write(&path, self.cert.pem()).unwrap();
        path.to_str().unwrap().to_owned()
    }

    /// Server settings with a certificate for `backend.test` signed by this CA.
    fn server(&self) -> Arc<ServerConfig> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["backend.test".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let chain = vec![CertificateDer::from(cert.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Arc::new(config)
    }
}

/// A backend over TLS on 127.0.0.1: `GET /heartbeat` answers 200, `GET /home` the replica's
/// JSON. Its certificate can be switched ([`TlsBackend::present`]): open connections are
/// dropped, new handshakes get the new one.
struct TlsBackend {
    port: u16,
    config: Arc<Mutex<Arc<ServerConfig>>>,
    generation: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsBackend {
    async fn start(name: &str, config: Arc<ServerConfig>) -> TlsBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let config = Arc::new(Mutex::new(config));
        let (generation, _) = watch::channel(0u64);
        let body = format!(r#"{{"message": "Hello from Server: {name}", "status": "successful"}}"#);
        let task = {
            let config = Arc::clone(&config);
            let generation = generation.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let acceptor = TlsAcceptor::from(Arc::clone(&config.lock().unwrap()));
                    let mut changed = generation.subscribe();
                    let body = body.clone();
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let mut buf = Vec::new();
                        loop {
                            let mut chunk = [0u8; 4096];
                            let n = tokio::select! {
                                n = tls.read(&mut chunk) => n,
                                _ = changed.changed() => return,
                            };
                            let Ok(n) = n else { return };
                            if n == 0 {
                                return;
                            }
                            buf.extend_from_slice(&chunk[..n]);
                            while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                                buf.drain(..end + 4);
                                let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                                let (status, text) = match path.as_str() {
                                    "/heartbeat" => ("200 OK", "ok".to_owned()),
                                    "/home" => ("200 OK", body.clone()),
                                    _ => ("404 Not Found", "not found".to_owned()),
                                };
                                let answer = format!(
                                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
                                    text.len()
                                );
                                if tls.write_all(answer.as_bytes()).await.is_err() {
                                    return;
                                }
                            }
                        }
                    });
                }
            })
        };
        TlsBackend {
            port,
            config,
            generation,
            task,
        }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Present `config`'s certificate from now on, dropping the open connections.
    fn present(&self, config: Arc<ServerConfig>) {
        *self.config.lock().unwrap() = config;
        self.generation.send_modify(|g| *g += 1);
    }
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn entry(name: &str, id: u64, backend: &TlsBackend, extra: &str) -> String {
    format!(
        "[[replicas]]\nhostname = \"{name}\"\nid = {id}\naddress = \"{}\"\ntls = true\n{extra}",
        backend.address()
    )
}

/// The hostnames in the ring (backends by address that are down are listed too, as "down").
async fn in_ring(lb: &Lb) -> Vec<String> {
    let status = lb.status().await;
    let mut names: Vec<String> = status["replicas"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter(|r| r["health"] == "up")
                .filter_map(|r| r["hostname"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The reason of the vacancy of `hostname`, if it is one.
async fn vacancy_reason(lb: &Lb, hostname: &str) -> Option<String> {
    let status: Value = lb.status().await;
    status["vacancies"]
        .as_array()?
        .iter()
        .find(|v| v["hostname"] == hostname)
        .and_then(|v| v["reason"].as_str().map(str::to_owned))
}

fn served_by(body: &str) -> String {
    common::served_by(body)
}

#[tokio::test(flavor = "multi_thread")]
async fn over_tls_with_a_private_ca_and_to_the_next_replica_when_a_certificate_is_foreign() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, other) = (Ca::new("test CA"), Ca::new("another CA"));
    let ca_file = ca.write(dir.path(), "ca.pem");
    let one = TlsBackend::start("api-1", ca.server()).await;
    let two = TlsBackend::start("api-2", ca.server()).await;
    let tls = format!("server_name = \"backend.test\"\nca = \"{ca_file}\"\n");
    // Slow to give up on a replica: the requests below meet the foreign certificate first.
    let config = format!(
        "[health]\npath = \"/heartbeat\"\ninterval_ms = 300\ntimeout_ms = 1000\nfall = 10\nrise = 1\n{}{}",
        entry("api-1", 1, &one, &tls),
        entry("api-2", 2, &two, &tls),
    );
    let lb = Lb::start(&config);
    eventually(
        Duration::from_secs(10),
        "both TLS backends in the ring",
        || async { (in_ring(&lb).await == ["api-1", "api-2"]).then_some(()) },
    )
    .await;
    let mut seen = std::collections::BTreeSet::new();
    for id in 0..40 {
        let a = lb
            .send("GET", "/home", b"", &[("X-Request-Id", &id.to_string())])
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        seen.insert(served_by(&a.body));
    }
    assert_eq!(seen.len(), 2, "both backends answer over TLS: {seen:?}");
    let tls_errors = "lb_upstream_errors_total{replica=\"api-1\",kind=\"tls\"}";
    assert_eq!(sample::<f64>(&lb, tls_errors).await, 0.0);

    // api-1 now presents a certificate of another CA and drops its connections: each request
    // it owns fails its handshake (nothing sent) and goes to api-2.
    one.present(other.server());
    for id in 0..40 {
        let a = lb
            .send("GET", "/home", b"", &[("X-Request-Id", &id.to_string())])
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let counted = sample::<f64>(&lb, tls_errors).await;
    assert!(counted >= 1.0, "kind=\"tls\" counted: {counted}");
    // Its heartbeats fail the same way: it leaves the ring with the TLS problem as its reason.
    let reason = eventually(
        Duration::from_secs(15),
        "api-1 out with its reason",
        || async { vacancy_reason(&lb, "api-1").await },
    )
    .await;
    assert!(
        reason.contains("certificate not trusted (UnknownIssuer)"),
        "{reason}"
    );
    assert_eq!(in_ring(&lb).await, ["api-2"]);
    // Trusted again: it comes back.
    one.present(ca.server());
    eventually(Duration::from_secs(10), "api-1 back", || async {
        (in_ring(&lb).await == ["api-1", "api-2"]).then_some(())
    })
    .await;
    for id in 0..40 {
        let a = lb
            .send("GET", "/home", b"", &[("X-Request-Id", &id.to_string())])
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
    }

    // A saved file that trusts only the other CA for api-1 applies live, and the connections
    // opened under the old settings (still open: the backend did not drop them) are not
    // reused: its requests fail their handshake and go to api-2.
    let before = sample::<f64>(&lb, tls_errors).await;
    let other_file = other.write(dir.path(), "other.pem");
    let text = config.replacen(&ca_file, &other_file, 1);
    assert_ne!(text, config);
    common::save_by_rename(&lb.config, &text);
    eventually(Duration::from_secs(10), "the new CA in use", || async {
        for id in 0..20 {
            let a = lb
                .send("GET", "/home", b"", &[("X-Request-Id", &id.to_string())])
                .await;
            assert_eq!(a.status, 200, "{}", a.body);
        }
        (sample::<f64>(&lb, tls_errors).await > before).then_some(())
    })
    .await;
    for id in 0..20 {
        let a = lb
            .send("GET", "/home", b"", &[("X-Request-Id", &id.to_string())])
            .await;
        assert_eq!(served_by(&a.body), "api-2");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_ca_or_name_never_joins_and_tls_verify_false_accepts_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, other) = (Ca::new("test CA"), Ca::new("another CA"));
    let ca_file = ca.write(dir.path(), "ca.pem");
    let foreign = TlsBackend::start("api-1", other.server()).await;
    let misnamed = TlsBackend::start("api-2", ca.server()).await;
    let unverified = TlsBackend::start("api-3", other.server()).await;
    let config = format!(
        "[health]\npath = \"/heartbeat\"\ninterval_ms = 100\ntimeout_ms = 1000\nfall = 2\nrise = 2\nstart_timeout_ms = 1000\n{}{}{}",
        entry(
            "api-1",
            1,
            &foreign,
            &format!("server_name = \"backend.test\"\nca = \"{ca_file}\"\n")
        ),
        entry(
            "api-2",
            2,
            &misnamed,
            &format!("server_name = \"other.test\"\nca = \"{ca_file}\"\n")
        ),
        entry("api-3", 3, &unverified, "tls_verify = false\n"),
    );
    let lb = Lb::start(&config);
    eventually(Duration::from_secs(10), "api-3 in the ring", || async {
        (in_ring(&lb).await == ["api-3"]).then_some(())
    })
    .await;
    let reason = eventually(Duration::from_secs(15), "api-1's reason", || async {
        vacancy_reason(&lb, "api-1")
            .await
            .filter(|r| r.contains("TLS"))
    })
    .await;
    assert!(
        reason.contains("certificate not trusted (UnknownIssuer)"),
        "{reason}"
    );
    let reason = eventually(Duration::from_secs(15), "api-2's reason", || async {
        vacancy_reason(&lb, "api-2")
            .await
            .filter(|r| r.contains("TLS"))
    })
    .await;
    assert!(
        reason.contains("certificate not valid for name \"other.test\""),
        "{reason}"
    );
    for id in 0..10 {
        let a = lb
            .send("GET", "/home", b"", &[("X-Request-Id", &id.to_string())])
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(served_by(&a.body), "api-3");
    }
    let log = lb.log();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("tls_verify = false") && l.contains("api-3")),
        "{log}"
    );
    // Never joined: still out.
    assert_eq!(in_ring(&lb).await, ["api-3"]);

    // A saved file that trusts api-1's CA applies live: it joins.
    let other_file = other.write(dir.path(), "other.pem");
    let fixed = config.replace(
        &format!("server_name = \"backend.test\"\nca = \"{ca_file}\"\n"),
        &format!("server_name = \"backend.test\"\nca = \"{other_file}\"\n"),
    );
    assert_ne!(fixed, config);
    common::save_by_rename(&lb.config, &fixed);
    eventually(Duration::from_secs(10), "api-1 in the ring", || async {
        (in_ring(&lb).await == ["api-1", "api-3"]).then_some(())
    })
    .await;
    // A CA file that is not PEM is refused with the file and the reason; the ring stays.
    std::fs::write(dir.path().join("bad.pem"), "garbage").unwrap();
    let broken = fixed.replace(&other_file, dir.path().join("bad.pem").to_str().unwrap());
    common::save_by_rename(&lb.config, &broken);
    let error = lb.last_error(Duration::from_secs(10)).await;
    assert!(
        error.contains("bad.pem: holds no PEM certificate"),
        "{error}"
    );
    assert_eq!(in_ring(&lb).await, ["api-1", "api-3"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_add_with_tls_settings_joins_over_tls_shows_in_status_and_is_written_back() {
    let (ca, other) = (Ca::new("test CA"), Ca::new("another CA"));
    let one = TlsBackend::start("api-1", ca.server()).await;
    let two = TlsBackend::start("api-2", ca.server()).await;
    let foreign = TlsBackend::start("api-3", other.server()).await;
    let config = format!(
        "[health]\npath = \"/heartbeat\"\ninterval_ms = 100\ntimeout_ms = 1000\nfall = 2\nrise = 1\nstart_timeout_ms = 2000\n[[replicas]]\nhostname = \"api-1\"\nid = 1\naddress = \"{}\"\n",
        one.address()
    );
    let lb = Lb::start(&config);
    // `ca` in an /add is relative to lb.toml's folder, as in the file.
    let folder = lb.config.parent().unwrap();
    ca.write(folder, "internal-ca.pem");
    // api-1 is plain HTTP to a TLS backend: it never joins. Replace it over TLS by the API.
    let add = |address: String, extra: &str| {
        format!(
            r#"{{"n": 1, "hostnames": ["api-2"], "addresses": [{{"address": "{address}", "tls": true{extra}}}]}}"#
        )
    };
    let refused = |body: String| {
        let lb = &lb;
        async move {
            let a = lb.send("POST", "/add", body.as_bytes(), &[]).await;
            (a.status, a.body)
        }
    };

    // Bad TLS settings are a 400 naming what was wrong; nothing is added.
    let (status, body) = refused(add(two.address(), r#", "ca": "missing.pem""#)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains(&two.address()) && body.contains("missing.pem"),
        "{body}"
    );
    let (status, body) = refused(format!(
        r#"{{"n": 1, "addresses": [{{"address": "{}", "server_name": "backend.test"}}]}}"#,
        two.address()
    ))
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("needs \\\"tls\\\": true"), "{body}");
    let (status, body) = refused(add(two.address(), r#", "server_name": "not a name""#)).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = refused(add(two.address(), r#", "tls_verify": "no""#)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("tls_verify"), "{body}");
    // A backend whose certificate the CA does not sign never passes its checks: 500, rolled back.
    let (status, body) = refused(add(
        foreign.address(),
        r#", "server_name": "backend.test", "ca": "internal-ca.pem""#,
    ))
    .await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("UnknownIssuer"), "{body}");
    assert!(in_ring(&lb).await.is_empty());

    // Good settings: it joins and serves over TLS.
    let a = lb
        .send(
            "POST",
            "/add",
            add(
                two.address(),
                r#", "server_name": "backend.test", "ca": "internal-ca.pem""#,
            )
            .as_bytes(),
            &[],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(in_ring(&lb).await, ["api-2"]);
    for id in 0..10 {
        let a = lb
            .send("GET", "/home", b"", &[("X-Request-Id", &id.to_string())])
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(served_by(&a.body), "api-2");
    }
    // /_lb/status says how lb speaks to each backend.
    let status = lb.status().await;
    let tls_of = |name: &str| {
        status["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["hostname"] == name)
            .map(|r| r["tls"].clone())
            .unwrap()
    };
    assert_eq!(
        tls_of("api-2"),
        serde_json::json!({"server_name": "backend.test", "verify": true})
    );
    assert_eq!(tls_of("api-1"), Value::Null);
    assert_eq!(status["tls"], Value::Null, "no TLS listener");
    // Written back to lb.toml with its TLS keys, so the file keeps it across a restart.
    let written = eventually(Duration::from_secs(10), "the write-back", || async {
        let text = std::fs::read_to_string(&lb.config).unwrap();
        text.contains("api-2").then_some(text)
    })
    .await;
    let parsed: toml::Value = toml::from_str(&written).unwrap();
    let entry = parsed["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["hostname"].as_str() == Some("api-2"))
        .unwrap()
        .clone();
    assert_eq!(entry["tls"].as_bool(), Some(true), "{written}");
    assert_eq!(
        entry["server_name"].as_str(),
        Some("backend.test"),
        "{written}"
    );
    assert_eq!(entry["ca"].as_str(), Some("internal-ca.pem"), "{written}");
    assert!(entry.get("tls_verify").is_none(), "{written}");
    // Re-reading the file it wrote changes nothing: still in the ring, still over TLS.
    common::save_by_rename(&lb.config, &written);
    for id in 0..10 {
        let a = lb
            .send("GET", "/home", b"", &[("X-Request-Id", &id.to_string())])
            .await;
        assert_eq!(served_by(&a.body), "api-2");
    }
    assert_eq!(
        sample::<f64>(
            &lb,
            "lb_upstream_errors_total{replica=\"api-2\",kind=\"tls\"}"
        )
        .await,
        0.0
    );
}
