//! Test harness: runs the real `lb` binary on a free loopback port with a given configuration and
//! talks HTTP to it.

#![allow(dead_code)] // each test file uses a different part of the harness

pub mod backend;
pub mod engine;
pub mod python;
pub mod upgrade;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Three replicas, fast heartbeats: the configuration most tests use.
pub const THREE: &str = r#"
[health]
interval_ms = 100
timeout_ms = 200
fall = 2
[[replicas]]
hostname = "Server 1"
id = 1
[[replicas]]
hostname = "Server 2"
id = 2
[[replicas]]
hostname = "Server 3"
id = 3
"#;

/// A replica for tests (`tests/fixtures/slow_replica.py`): slow `/home`, dies on SIGTERM without
/// finishing, and options to hang, start late, die early or answer another status.
pub const SLOW_REPLICA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/slow_replica.py"
);

/// Three replicas of [`SLOW_REPLICA`]; "Refuse 1" (84 % of the ring) closes its listening socket
/// 1 s after start and stays alive, and with 20 heartbeats of 300 ms to miss it stays in the ring
/// for seconds while refusing connections. `extra` goes first (e.g. a `[proxy]` table).
pub fn refusing_three(extra: &str) -> String {
    format!(
        r#"{extra}
[health]
interval_ms = 300
fall = 20
[supervisor]
command = ["python3", "{SLOW_REPLICA}", "--slow-ms", "0", "--refuse-prefix", "Refuse", "--refuse-after-ms", "1000"]
[[replicas]]
hostname = "Refuse 1"
id = 1
[[replicas]]
hostname = "Server 2"
id = 2
[[replicas]]
hostname = "Server 3"
id = 3
"#
    )
}

/// Two replicas, a 300 ms response timeout, no retries, and heartbeats only every 5 s: a replica
/// stopped with SIGSTOP stays in the ring while requests time out on it.
pub const NO_RETRY_NO_WAIT: &str = r#"
[proxy]
response_timeout_ms = 300
retries = 0
[health]
interval_ms = 5000
[[replicas]]
hostname = "Server 1"
id = 1
[[replicas]]
hostname = "Server 2"
id = 2
"#;

/// A running `lb` process.
pub struct Lb {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where it serves `/add`, `/rm` and `/_lb/*`, when `[admin] listen` moves them.
    pub admin: Option<SocketAddr>,
    /// Where it serves HTTPS, with a `[tls]` section.
    pub https: Option<SocketAddr>,
    /// The configuration file it was started with.
    pub config: PathBuf,
    dir: Option<tempfile::TempDir>,
    log: Arc<Mutex<String>>,
    out: Arc<Mutex<String>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

fn drain(stream: impl Read + Send + 'static, log: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut log = log.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
}

impl Lb {
    /// Start `lb` with `config` (TOML text) on 127.0.0.1:0 and wait until it listens.
    pub fn start(config: &str) -> Lb {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lb.toml");
        std::fs::write(&path, config).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_lb"));
        command.arg("--config").arg(&path);
        Lb::spawn(command, Some(dir), path)
    }

    /// [`Lb::start`] without `--listen 127.0.0.1:0`: `lb` listens where the file says (the
    /// file's `listen` then moves live).
    pub fn start_as_configured(config: &str) -> Lb {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lb.toml");
        std::fs::write(&path, config).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_lb"));
        command.arg("--config").arg(&path);
        Lb::spawn_with(command, Some(dir), path, false)
    }

    /// [`Lb::start`] running `program` (a copy of `lb`, which a test may replace) with `config`
    /// written beside it.
    pub fn start_program(program: &std::path::Path, config: &str) -> Lb {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lb.toml");
        std::fs::write(&path, config).unwrap();
        let mut command = Command::new(program);
        command.arg("--config").arg(&path);
        Lb::spawn(command, Some(dir), path)
    }

    /// [`Lb::start`] with extra environment variables (e.g. `LB_FAILPOINTS`, `DOCKER_HOST`).
    pub fn start_with_env<V: AsRef<std::ffi::OsStr>>(config: &str, env: &[(&str, V)]) -> Lb {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lb.toml");
        std::fs::write(&path, config).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_lb"));
        command.arg("--config").arg(&path);
        for (key, value) in env {
            command.env(key, value);
        }
        Lb::spawn(command, Some(dir), path)
    }

    /// Start `lb` with `config` (TOML text) under an open files limit of `files` (soft and hard,
    /// set with `prlimit`, so `lb` cannot raise it).
    pub fn start_with_open_files(config: &str, files: u64) -> Lb {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lb.toml");
        std::fs::write(&path, config).unwrap();
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={files}:{files}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_lb"))
            .arg("--config")
            .arg(&path);
        Lb::spawn(command, Some(dir), path)
    }

    /// Start `lb` on a configuration file the caller owns (it may be a symlink).
    pub fn start_file(path: &std::path::Path) -> Lb {
        let mut command = Command::new(env!("CARGO_BIN_EXE_lb"));
        command.arg("--config").arg(path);
        Lb::spawn(command, None, path.to_owned())
    }

    /// Start `lb` with no `--config` in an empty working directory: it runs on its embedded
    /// default configuration.
    pub fn start_embedded() -> Lb {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_lb"));
        command.current_dir(dir.path());
        Lb::spawn(command, Some(dir), PathBuf::from("(embedded default)"))
    }

    /// `lb` with no `--config`, in the working directory `dir` (as a user runs it in a clone).
    pub fn start_in(dir: &std::path::Path) -> Lb {
        let mut command = Command::new(env!("CARGO_BIN_EXE_lb"));
        command.current_dir(dir);
        Lb::spawn(command, None, dir.join("config/lb.local.toml"))
    }

    /// Send `sig` to `lb` and wait up to `limit` for it to exit; its exit status, if it did.
    pub fn signal_and_wait(
        &mut self,
        sig: libc::c_int,
        limit: Duration,
    ) -> Option<std::process::ExitStatus> {
        signal(self.child.id(), sig);
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn spawn(command: Command, dir: Option<tempfile::TempDir>, path: PathBuf) -> Lb {
        Lb::spawn_with(command, dir, path, true)
    }

    /// Run `command` (with `--listen 127.0.0.1:0` when `any_port`) and wait until it listens.
    fn spawn_with(
        mut command: Command,
        dir: Option<tempfile::TempDir>,
        path: PathBuf,
        any_port: bool,
    ) -> Lb {
        if any_port {
            command.arg("--listen").arg("127.0.0.1:0");
        }
        let mut child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run lb");
        let log = Arc::new(Mutex::new(String::new()));
        drain(child.stderr.take().unwrap(), Arc::clone(&log));
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        let kept = Arc::clone(&out);
        std::thread::spawn(move || {
            let mut admin = None;
            let mut https = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("lb admin on http://") {
                    admin = addr.parse::<SocketAddr>().ok();
                }
                if let Some(addr) = line.strip_prefix("lb listening on https://") {
                    https = addr.parse::<SocketAddr>().ok();
                }
                if let Some(addr) = line.strip_prefix("lb listening on http://") {
                    let _ = tx.send((addr.parse::<SocketAddr>().unwrap(), admin, https));
                }
                let mut kept = kept.lock().unwrap();
                kept.push_str(&line);
                kept.push('\n');
            }
        });
        let (addr, admin, https) = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addrs) => addrs,
            Err(_) => {
                let _ = child.kill();
                panic!("lb did not start; log:\n{}", log.lock().unwrap());
            }
        };
        Lb {
            child,
            addr,
            admin,
            https,
            config: path,
            dir,
            log,
            out,
            // A pooled connection idle for 250 ms is not reused: tests set lb's
            // client_idle_timeout_ms as low as 500, and a request sent on a connection lb is
            // closing for idleness at that moment is reset (a race, not an lb fault).
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_millis(250))
                .build(HttpConnector::new()),
        }
    }

    /// The `lb` process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything `lb` logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Everything `lb` wrote on its standard output so far.
    pub fn stdout(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    /// Send a request with optional body and headers.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> Answer {
        self.send_to(self.addr, method, path, body, headers).await
    }

    /// [`Lb::send`] to another of its addresses (the admin address).
    pub async fn send_to(
        &self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(Bytes::copy_from_slice(body))).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .expect("answer within 30 s")
            .expect("request succeeds");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    /// Send a request that must succeed: asserts the answer is 200.
    pub async fn ok(&self, method: &str, path: &str, body: &[u8]) -> Answer {
        let a = self.send(method, path, body, &[]).await;
        assert_eq!(a.status, 200, "{method} {path}: {}", a.body);
        a
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, b"", &[]).await
    }

    /// `GET /rep` → (N, replicas).
    pub async fn rep(&self) -> (u64, Vec<String>) {
        let a = self.get("/rep").await;
        assert_eq!(a.status, 200, "{}", a.body);
        let v = a.json();
        assert_eq!(v["status"], "successful");
        let names = v["message"]["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_owned())
            .collect();
        (v["message"]["N"].as_u64().unwrap(), names)
    }

    pub async fn status(&self) -> Value {
        let a = self.get("/_lb/status").await;
        assert_eq!(a.status, 200, "{}", a.body);
        a.json()
    }

    /// `config.last_error.message` of `/_lb/status` once there is one (a refused save, a
    /// setting the data plane could not take), waiting at most `limit`.
    pub async fn last_error(&self, limit: Duration) -> String {
        eventually(limit, "config.last_error", || async {
            let status = self.status().await;
            status["config"]["last_error"]["message"]
                .as_str()
                .map(str::to_owned)
        })
        .await
    }

    /// Pids of the replicas, from `/_lb/status`.
    pub async fn replica_pids(&self) -> Vec<(String, u32)> {
        self.status().await["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["hostname"].as_str().unwrap().to_owned(),
                    r["handle"]["pid"].as_u64().unwrap() as u32,
                )
            })
            .collect()
    }

    /// The pid of the replica called `hostname`, from `/_lb/status`.
    pub async fn pid_of(&self, hostname: &str) -> u32 {
        self.replica_pids()
            .await
            .into_iter()
            .find_map(|(name, pid)| (name == hostname).then_some(pid))
            .unwrap_or_else(|| panic!("no replica called {hostname:?}"))
    }

    /// The value of the unlabelled sample `name` (a counter or gauge) on the metrics page.
    pub async fn metric(&self, name: &str) -> u64 {
        let page = self.get("/_lb/metrics").await.body;
        page.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{page}"))
    }

    /// Requests served so far, over all replicas (from `/_lb/status`).
    pub async fn served(&self) -> u64 {
        self.status().await["replicas"]
            .as_array()
            .map(|rs| rs.iter().filter_map(|r| r["requests"].as_u64()).sum())
            .unwrap_or(0)
    }

    /// The hostname in a `/home` answer.
    pub async fn home(&self, headers: &[(&str, &str)]) -> String {
        let a = self.send("GET", "/home", b"", headers).await;
        assert_eq!(a.status, 200, "{}", a.body);
        served_by(&a.body)
    }
}

/// The replica name in a `/home` body.
pub fn served_by(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap();
    v["message"]
        .as_str()
        .unwrap()
        .strip_prefix("Hello from Server: ")
        .unwrap_or_else(|| panic!("unexpected /home body {body}"))
        .to_owned()
}

impl Drop for Lb {
    fn drop(&mut self) {
        signal(self.child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- lb log ----\n{}", self.log());
        }
        let _ = &self.dir;
    }
}

/// Save `text` to `path` the way most editors do: write a new file beside it, rename it over.
pub fn save_by_rename(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// True while `pid` is a live (not zombie) process.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Poll `check` every 20 ms until it returns `Some` or `limit` passes.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Clients sending `GET /home` with random 6-digit `X-Request-Id`s without pause until
/// [`Traffic::finish`]; each is bounded to 100 000 requests and 120 s.
pub struct Traffic {
    stop: Arc<std::sync::atomic::AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<Vec<Answer>>>,
}

impl Traffic {
    /// Start `clients` concurrent clients sending `GET /home` against `lb`.
    pub fn start(lb: &Arc<Lb>, clients: usize) -> Traffic {
        Traffic::start_with(lb, clients, "GET", b"")
    }

    /// Start `clients` concurrent clients sending `method /home` with `body` against `lb`.
    pub fn start_with(
        lb: &Arc<Lb>,
        clients: usize,
        method: &'static str,
        body: &'static [u8],
    ) -> Traffic {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients = (0..clients)
            .map(|_| {
                let lb = Arc::clone(lb);
                let stop = Arc::clone(&stop);
                tokio::spawn(async move {
                    let start = Instant::now();
                    let mut answers = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed)
                        && answers.len() < 100_000
                        && start.elapsed() < Duration::from_secs(120)
                    {
                        let id = fastrand::u32(100_000..1_000_000).to_string();
                        answers.push(
                            lb.send(method, "/home", body, &[("X-Request-Id", &id)])
                                .await,
                        );
                    }
                    answers
                })
            })
            .collect();
        Traffic { stop, clients }
    }

    /// Stop the clients; assert that every answer was a 200 and that there were at least
    /// `least`. How many there were.
    pub async fn finish_all_ok(self, least: usize) -> usize {
        let answers = self.finish().await;
        let failed: Vec<_> = answers.iter().filter(|a| a.status != 200).collect();
        assert!(
            failed.is_empty(),
            "{} of {} failed, first: {:?}",
            failed.len(),
            answers.len(),
            failed.first()
        );
        assert!(answers.len() >= least, "only {} requests", answers.len());
        answers.len()
    }

    /// Stop the clients and return every answer they got.
    pub async fn finish(self) -> Vec<Answer> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut all = Vec::new();
        for client in self.clients {
            all.extend(client.await.expect("client task"));
        }
        all
    }
}

/// Read one whole response (head and `Content-Length` body) from a keep-alive connection
/// within `limit`; `None` if it did not come whole.
pub fn read_response(stream: &mut std::net::TcpStream, limit: Duration) -> Option<String> {
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("a Content-Length");
            if body.len() >= length {
                return Some(text);
            }
        }
        match stream.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(_) => {}
        }
    }
    None
}

/// Run `docker ARGS` for a clean-up: its stdout, or nothing when it fails (never panics, so a
/// drop guard can use it while a test is failing).
pub fn docker_quiet(args: &[&str]) -> String {
    Command::new("docker")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Run `docker ARGS`, returning stdout; panics with stderr on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Send `sig` to process `pid` (a process this test started, directly or through its `lb`).
#[allow(unsafe_code)]
pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is one of this test's.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// `GET path` over HTTPS from `127.0.0.1:port`, asking for (and verifying) the name `name`
/// against the roots in the PEM file `ca`, with `X-Request-Id: id`: the body of a 200, else
/// `None` (not listening yet, refused, another status).
pub fn fetch_https(
    port: u16,
    name: &str,
    ca: &std::path::Path,
    path: &str,
    id: &str,
) -> Option<String> {
    use rustls::pki_types::pem::PemObject;
    use std::io::{Read, Write};
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).ok()? {
        roots.add(cert.ok()?).ok()?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let server_name = rustls::pki_types::ServerName::try_from(name.to_owned()).ok()?;
    let conn = rustls::ClientConnection::new(Arc::new(config), server_name).ok()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let tcp = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    tcp.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {name}\r\nX-Request-Id: {id}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = Vec::new();
    // A peer that closes without close_notify still gave the whole answer (Connection: close).
    let _ = tls.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// The value of the metrics sample `series` (name and labels, as on the page) on `lb`'s
/// metrics page; the type's default (0) when absent.
pub async fn sample<T: std::str::FromStr + Default>(lb: &Lb, series: &str) -> T {
    let page = lb.get("/_lb/metrics").await.body;
    page.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_default()
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The entry of replica or backend `hostname` in `/_lb/status` (down ones included; `Null` when
/// it is not listed).
pub async fn status_of(lb: &Lb, hostname: &str) -> Value {
    lb.status().await["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["hostname"] == hostname)
        .cloned()
        .unwrap_or(Value::Null)
}

/// A test CA's certificate (PEM) and a certificate for `backend.test` it signed, with its key
/// (PEM): made with rcgen, for backends spoken to over TLS.
pub fn backend_certificates() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "lb test CA");
    let ca = params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["backend.test".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}
