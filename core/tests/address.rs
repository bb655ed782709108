//! Backends by address: services `lb` did not start (stock `python3 -m http.server` processes
//! here) are health-checked, balanced on the ring, taken out when they fail and put back with the
//! same id when they answer again — and never started, stopped or replaced by `lb`.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use lb_balance::hash::RingHash as _;

use common::{alive, eventually, free_port, Lb};

/// A stock `python3 -m http.server` on 127.0.0.1, serving a directory whose files `home` and
/// `whoami` hold its name: `GET /home` answers the name, and so does the health check.
struct Service {
    name: String,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Service {
    fn start(name: &str) -> Service {
        let dir = tempfile::tempdir().unwrap();
        for file in ["home", "whoami"] {
            std::fs::write(dir.path().join(file), name).unwrap();
        }
        let port = free_port();
        let mut service = Service {
            name: name.to_owned(),
            port,
            dir,
            child: None,
        };
        service.restart();
        service
    }

    /// Start it (again) on its port, and wait until it answers.
    fn restart(&mut self) {
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(self.port.to_string())
            .arg("--directory")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "{} did not start",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `kill -9` it and wait until it is gone.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Fast health checks on the services' `/whoami`.
const HEALTH: &str =
    "[health]\npath = \"/whoami\"\ninterval_ms = 100\ntimeout_ms = 300\nfall = 2\nrise = 2\n";

fn entry(name: &str, id: u64, address: &str) -> String {
    format!("[[replicas]]\nhostname = \"{name}\"\nid = {id}\naddress = \"{address}\"\n")
}

/// Which service answers request id `id`, and which one the ring says owns it.
async fn answer_and_owner(lb: &Lb, id: u64) -> (u16, String, String) {
    let ring = lb.get("/_lb/ring").await.json();
    let owner = ring["owners"][(lb_balance::hash::SpecHash.request(id) % 512) as usize]
        .as_str()
        .unwrap()
        .to_owned();
    let a = lb
        .send("GET", "/home", b"", &[("X-Request-Id", &id.to_string())])
        .await;
    (a.status, a.body.trim().to_owned(), owner)
}

#[tokio::test(flavor = "multi_thread")]
async fn services_by_address_follow_the_ring_leave_it_when_down_and_come_back() {
    let mut services: Vec<Service> = (1..=3)
        .map(|i| Service::start(&format!("api-{i}")))
        .collect();
    let mut config = HEALTH.to_owned();
    for (i, s) in services.iter().enumerate() {
        config.push_str(&entry(&s.name, i as u64 + 1, &s.address()));
    }
    let lb = Lb::start(&config);
    eventually(Duration::from_secs(10), "three backends up", || async {
        (lb.status().await["replicas"]
            .as_array()?
            .iter()
            .filter(|r| r["health"] == "up")
            .count()
            == 3)
            .then_some(())
    })
    .await;
    let api1 = common::status_of(&lb, "api-1").await;
    assert_eq!(api1["kind"], "address", "{api1}");
    assert_eq!(api1["handle"]["address"], services[0].address(), "{api1}");
    assert_eq!(api1["pipelining"], false, "{api1}");
    assert_eq!(
        lb.rep().await,
        (3, vec!["api-1".into(), "api-2".into(), "api-3".into()])
    );

    // Numeric ids go where the ring's table says, and each service is someone's owner.
    let mut seen = std::collections::BTreeSet::new();
    for id in 0..60u64 {
        let (status, served, owner) = answer_and_owner(&lb, id * 7 + 3).await;
        assert_eq!((status, &served), (200, &owner), "id {}", id * 7 + 3);
        seen.insert(served);
    }
    assert_eq!(seen.len(), 3, "{seen:?}");

    // api-1 (84 % of the slots with the assignment's hash) dies: it leaves the ring after `fall`
    // missed checks, stays listed, and nothing is started in its place.
    services[0].kill();
    eventually(Duration::from_secs(10), "api-1 out of the ring", || async {
        (common::status_of(&lb, "api-1").await["health"] == "down").then_some(())
    })
    .await;
    assert_eq!(lb.rep().await.0, 3, "a down backend is still listed");
    assert!(lb.status().await["vacancies"][0]["address"] == services[0].address());
    for id in 0..60u64 {
        let (status, served, owner) = answer_and_owner(&lb, id * 7 + 3).await;
        assert_eq!(status, 200, "id {} after the failure", id * 7 + 3);
        assert_eq!(served, owner, "id {}", id * 7 + 3);
        assert_ne!(served, "api-1");
    }

    // Back on the same port: back in the ring with the same id, hence the same slots.
    services[0].restart();
    eventually(Duration::from_secs(10), "api-1 back", || async {
        let s = common::status_of(&lb, "api-1").await;
        (s["health"] == "up" && s["id"] == 1).then_some(())
    })
    .await;
    let mut served_by_api1 = 0;
    for id in 0..60u64 {
        let (status, served, owner) = answer_and_owner(&lb, id * 7 + 3).await;
        assert_eq!((status, &served), (200, &owner), "id {}", id * 7 + 3);
        served_by_api1 += usize::from(served == "api-1");
    }
    assert!(served_by_api1 > 30, "api-1 served {served_by_api1} of 60");
    // The file still lists what the user wrote.
    let file = std::fs::read_to_string(&lb.config).unwrap();
    assert!(file.contains(&services[0].address()), "{file}");
    drop(lb);
    for s in &services {
        assert!(alive(s.pid()), "{} was stopped with lb", s.name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn add_and_rm_of_backends_by_address_leave_the_services_alone() {
    let a = Service::start("api-a");
    let b = Service::start("api-b");
    // One replica lb runs itself, answering the same health path as the services.
    let lb = Lb::start(&format!(
        "{}[[replicas]]\nhostname = \"Server 1\"\nid = 1\n",
        HEALTH.replace("/whoami", "/heartbeat")
    ));
    // The services answer /heartbeat with 404: they would never join. Give them a file there.
    for s in [&a, &b] {
        std::fs::write(s.dir.path().join("heartbeat"), &s.name).unwrap();
    }
    let body = format!(
        r#"{{"n": 3, "hostnames": ["api-a"], "addresses": ["{}", "{}"]}}"#,
        a.address(),
        b.address()
    );
    let added = lb.send("POST", "/add", body.as_bytes(), &[]).await;
    assert_eq!(added.status, 200, "{}", added.body);
    let replicas = added.json()["message"]["replicas"].clone();
    assert_eq!(
        replicas,
        serde_json::json!(["Server 1", "api-a", "Server 3", "Server 4"]),
        "{}",
        added.body
    );
    let kinds: Vec<(String, String)> = lb.status().await["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["hostname"].as_str().unwrap().to_owned(),
                r["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("Server 1".to_owned(), "managed".to_owned()),
            ("api-a".into(), "address".into()),
            ("Server 3".into(), "address".into()),
            ("Server 4".into(), "managed".into()),
        ]
    );
    let file = std::fs::read_to_string(&lb.config).unwrap();
    assert!(
        file.contains(&format!("address = \"{}\"", a.address()))
            && file.contains(&format!("address = \"{}\"", b.address())),
        "{file}"
    );

    // Refused with a reason, nothing changes.
    for (body, says) in [
        (
            format!(
                r#"{{"n": 1, "addresses": ["{}", "{}"]}}"#,
                a.address(),
                b.address()
            ),
            "for n = 1",
        ),
        (
            r#"{"n": 1, "addresses": ["no-port"]}"#.to_owned(),
            "HOST:PORT",
        ),
        (
            format!(r#"{{"n": 1, "addresses": ["{}"]}}"#, a.address()),
            "already a backend",
        ),
        (
            format!(r#"{{"n": 1, "addresses": ["{}"]}}"#, lb.addr),
            "lb's own listening address",
        ),
    ] {
        let answer = lb.send("POST", "/add", body.as_bytes(), &[]).await;
        assert_eq!(answer.status, 400, "{body}: {}", answer.body);
        assert!(answer.body.contains(says), "{body}: {}", answer.body);
    }
    assert_eq!(lb.rep().await.0, 4);

    // /rm of a backend by address: out of the ring and the file; the service keeps running.
    let removed = lb
        .send("DELETE", "/rm", br#"{"n": 1, "hostnames": ["api-a"]}"#, &[])
        .await;
    assert_eq!(removed.status, 200, "{}", removed.body);
    assert_eq!(lb.rep().await.1, ["Server 1", "Server 3", "Server 4"]);
    eventually(Duration::from_secs(5), "api-a out of the file", || async {
        let file = std::fs::read_to_string(&lb.config).ok()?;
        (!file.contains(&a.address())).then_some(())
    })
    .await;
    assert!(alive(a.pid()), "api-a was stopped by /rm");
    let direct = std::net::TcpStream::connect(a.address());
    assert!(direct.is_ok(), "api-a no longer answers after /rm");
    drop(lb);
    assert!(alive(b.pid()), "api-b was stopped with lb");
}

/// A file that mixes both kinds and has only backends by address starts no process.
#[tokio::test(flavor = "multi_thread")]
async fn with_only_backends_by_address_nothing_is_started() {
    let s = Service::start("only");
    let lb = Lb::start(&format!("{HEALTH}{}", entry("only", 1, &s.address())));
    eventually(Duration::from_secs(10), "the backend up", || async {
        (common::status_of(&lb, "only").await["health"] == "up").then_some(())
    })
    .await;
    let a = lb.send("GET", "/home", b"", &[]).await;
    assert_eq!((a.status, a.body.trim()), (200, "only"));
    // A path the service does not have is its own 404, not the assignment's error.
    let missing = lb.send("GET", "/nothing-here", b"", &[]).await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    assert!(!missing.body.contains("does not exist in server replicas"));
    assert_eq!(
        children_of(lb.pid()),
        Vec::<u32>::new(),
        "lb started processes"
    );
}

/// Pids of the processes whose parent is `pid` (from `/proc/*/stat`).
fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid …; comm may hold spaces and parentheses.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            if let Some(child) = head.split_whitespace().next().and_then(|p| p.parse().ok()) {
                children.push(child);
            }
        }
    }
    children
}

/// A backend written for this test: answers every request head with a small `200 ok` after
/// `delay`, and counts the requests that arrived while one before them on the same connection was
/// still unanswered (pipelined).
struct Recording {
    addr: std::net::SocketAddr,
    pipelined: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    answered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Recording {
    fn start(delay: Duration) -> Recording {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering::Relaxed;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let pipelined = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (p, a) = (pipelined.clone(), answered.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (p, a) = (p.clone(), a.clone());
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
                        buf.drain(..end + 4);
                        std::thread::sleep(delay);
                        // Bytes of the next request already here: it came before this answer.
                        if !buf.is_empty() {
                            p.fetch_add(1, Relaxed);
                        }
                        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if stream.write_all(answer).is_err() {
                            return;
                        }
                        a.fetch_add(1, Relaxed);
                    }
                });
            }
        });
        Recording {
            addr,
            pipelined,
            answered,
        }
    }
}

/// Pipelining is a per-backend choice: off by default for a backend by address (each request in
/// flight gets a connection of its own), on when its entry says `pipelining = true`.
#[tokio::test(flavor = "multi_thread")]
async fn backends_by_address_get_pipelined_requests_only_when_their_entry_allows() {
    use futures_util::StreamExt;
    use std::sync::atomic::Ordering::Relaxed;
    for pipelining in [None, Some(true)] {
        let backend = Recording::start(Duration::from_millis(20));
        let extra = pipelining.map_or(String::new(), |on| format!("pipelining = {on}\n"));
        let lb = std::sync::Arc::new(Lb::start(&format!(
            "[proxy]\nworkers = 1\n[health]\npath = \"/health\"\ninterval_ms = 100\nrise = 1\n{}{extra}",
            entry("rec", 1, &backend.addr.to_string())
        )));
        eventually(Duration::from_secs(10), "the backend up", || async {
            (common::status_of(&lb, "rec").await["health"] == "up").then_some(())
        })
        .await;
        let statuses: Vec<u16> = futures_util::stream::iter(0..200)
            .map(|i| {
                let lb = std::sync::Arc::clone(&lb);
                async move { lb.send("GET", &format!("/x{i}"), b"", &[]).await.status }
            })
            .buffer_unordered(100)
            .collect()
            .await;
        assert!(
            statuses.iter().all(|&s| s == 200),
            "{pipelining:?}: {statuses:?}"
        );
        assert!(backend.answered.load(Relaxed) >= 200);
        let pipelined = backend.pipelined.load(Relaxed);
        match pipelining {
            None => assert_eq!(
                pipelined, 0,
                "requests were pipelined to a backend by address"
            ),
            Some(_) => assert!(pipelined > 0, "the control run pipelined nothing"),
        }
    }
}

/// `pipelining` of an entry changes live: the same backend (id, slots) with the new setting,
/// without leaving the ring.
#[tokio::test(flavor = "multi_thread")]
async fn an_entrys_pipelining_changes_live() {
    let backend = Recording::start(Duration::from_millis(0));
    let text = format!(
        "[health]\npath = \"/health\"\ninterval_ms = 100\nrise = 1\n{}",
        entry("rec", 1, &backend.addr.to_string())
    );
    let lb = Lb::start(&text);
    eventually(Duration::from_secs(10), "the backend up", || async {
        (common::status_of(&lb, "rec").await["health"] == "up").then_some(())
    })
    .await;
    assert_eq!(common::status_of(&lb, "rec").await["pipelining"], false);
    std::fs::write(&lb.config, format!("{text}pipelining = true\n")).unwrap();
    eventually(Duration::from_secs(10), "pipelining on", || async {
        (common::status_of(&lb, "rec").await["pipelining"] == true).then_some(())
    })
    .await;
    let s = common::status_of(&lb, "rec").await;
    assert_eq!(
        (s["id"].as_u64(), s["health"].as_str()),
        (Some(1), Some("up")),
        "{s}"
    );
    let a = lb.send("GET", "/x", b"", &[]).await;
    assert_eq!((a.status, a.body.as_str()), (200, "ok"));
    assert!(
        lb.log().contains("configuration change: pipelining"),
        "{}",
        lb.log()
    );
}

/// The README's demo: three stock web servers behind `[ring] key = "cookie:session"` — a
/// session stays on one service, sessions spread over all of them.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_cookie_keeps_a_user_on_one_service() {
    let services: Vec<Service> = (1..=3)
        .map(|i| Service::start(&format!("web-{i}")))
        .collect();
    let mut config =
        format!("[ring]\nkey = \"cookie:session\"\nkey_fallback = \"client_ip\"\n{HEALTH}");
    for (i, s) in services.iter().enumerate() {
        config.push_str(&entry(&s.name, i as u64 + 1, &s.address()));
    }
    let lb = Lb::start(&config);
    eventually(Duration::from_secs(10), "three services up", || async {
        (lb.rep().await.0 == 3 && lb.status().await["vacancies"].as_array()?.is_empty())
            .then_some(())
    })
    .await;
    let mut seen = std::collections::BTreeSet::new();
    for user in 0..30 {
        let cookie = format!("theme=dark; session=user-{user}");
        let mut answers = std::collections::BTreeSet::new();
        for _ in 0..3 {
            let a = lb.send("GET", "/home", b"", &[("Cookie", &cookie)]).await;
            assert_eq!(a.status, 200, "{}", a.body);
            answers.insert(a.body.trim().to_owned());
        }
        assert_eq!(answers.len(), 1, "user-{user} moved between {answers:?}");
        seen.extend(answers);
    }
    assert!(seen.len() >= 2, "30 sessions all on {seen:?}");
    // Without the cookie: by client address, so one client always lands on one service.
    let mut anonymous = std::collections::BTreeSet::new();
    for _ in 0..5 {
        anonymous.insert(
            lb.send("GET", "/home", b"", &[])
                .await
                .body
                .trim()
                .to_owned(),
        );
    }
    assert_eq!(anonymous.len(), 1, "{anonymous:?}");
}

/// A backend by address that is down at start-up holds nothing up: `lb` serves with the rest at
/// once (it does not wait `start_timeout_ms` for it), and its own replicas are asked
/// `/heartbeat` whatever `[health] path` says.
#[tokio::test(flavor = "multi_thread")]
async fn a_backend_down_at_start_up_holds_nothing_up() {
    let closed = free_port();
    let started = std::time::Instant::now();
    let lb = Lb::start(&format!(
        "[health]\npath = \"/\"\ninterval_ms = 100\nstart_timeout_ms = 60000\n{}\
         [[replicas]]\nhostname = \"Server 2\"\nid = 2\n",
        entry("gone", 1, &format!("127.0.0.1:{closed}"))
    ));
    let a = lb.send("GET", "/home", b"", &[]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(common::served_by(&a.body) == "Server 2", "{}", a.body);
    // Far below the 60 s a wait for the down backend would take.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(common::status_of(&lb, "gone").await["health"], "down");
    assert_eq!(lb.rep().await.1, ["gone", "Server 2"]);
}

/// Two test backends by address with the same script (so that a request sent again would
/// reach the second), `pipelining` as given, and `lb` in front of them once both are up.
async fn two_scripted(
    pipelining: bool,
    script: fn(&str) -> common::backend::Reply,
) -> (Lb, [common::backend::Backend; 2]) {
    use common::backend::{Backend, HEALTH};
    let backends = [Backend::start(script), Backend::start(script)];
    let lb = Lb::start(&format!(
        "[proxy]\nworkers = 1\n{HEALTH}{}{}",
        backends[0].entry("hostile-1", 1, pipelining),
        backends[1].entry("hostile-2", 2, pipelining)
    ));
    eventually(Duration::from_secs(10), "both backends up", || async {
        let s = lb.status().await;
        (s["replicas"]
            .as_array()?
            .iter()
            .filter(|r| r["health"] == "up")
            .count()
            == 2)
            .then_some(())
    })
    .await;
    (lb, backends)
}

/// A backend by address that answers a `GET` with an invalid head (200 header fields, or one of
/// 70 KiB) gets its client a 502, and the request is not sent to the other backend: one that
/// answered, even badly, is never asked again.
#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_answer_is_a_502_and_never_sent_to_another_backend() {
    use common::backend::Reply;
    fn script(path: &str) -> Reply {
        let mut head = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n".to_owned();
        if path == "/many-fields" {
            for i in 0..200 {
                head.push_str(&format!("X-Field-{i}: {i}\r\n"));
            }
        } else {
            head.push_str(&format!("X-Large: {}\r\n", "a".repeat(70 * 1024)));
        }
        head.push_str("\r\nok");
        Reply::Raw(head.into_bytes())
    }
    for pipelining in [false, true] {
        let (lb, backends) = two_scripted(pipelining, script).await;
        for (i, path) in ["/many-fields", "/large-head"].into_iter().enumerate() {
            let a = lb.get(path).await;
            assert_eq!(a.status, 502, "pipelining {pipelining}, {path}: {}", a.body);
            assert!(a.body.contains("invalid response"), "{}", a.body);
            let reached = backends[0].count() + backends[1].count();
            assert_eq!(
                reached,
                i + 1,
                "pipelining {pipelining}, {path}: the request was sent again"
            );
        }
    }
}

/// More than 8 interim (`100 Continue`) responses to one request are a logged 502, on both
/// forwarding paths; `lb` gives up on the request after the ninth instead of reading them all
/// (the backend's writes fail long before its thousandth), and does not send it elsewhere.
#[tokio::test(flavor = "multi_thread")]
async fn more_than_eight_interim_responses_are_a_502() {
    use common::backend::{ok, Reply};
    fn script(_: &str) -> Reply {
        Reply::Trickle {
            count: 1000,
            every: Duration::from_millis(5),
            final_answer: ok("late"),
        }
    }
    for pipelining in [false, true] {
        let (lb, backends) = two_scripted(pipelining, script).await;
        let a = lb.get("/interim").await;
        assert_eq!(a.status, 502, "pipelining {pipelining}: {}", a.body);
        assert!(a.body.contains("interim (1xx) responses"), "{}", a.body);
        assert_eq!(backends[0].count() + backends[1].count(), 1, "sent again");
        // Over within 5 s either way: its writes fail, or all 1000 went out.
        eventually(Duration::from_secs(10), "the backend done", || async {
            let done: usize = backends
                .iter()
                .map(|b| b.trickles_done.load(std::sync::atomic::Ordering::SeqCst))
                .sum();
            (done == 1).then_some(())
        })
        .await;
        let written: usize = backends
            .iter()
            .map(|b| b.interim_written.load(std::sync::atomic::Ordering::SeqCst))
            .sum();
        assert!(
            written < 1000,
            "pipelining {pipelining}: lb read all {written} interim responses"
        );
        eventually(Duration::from_secs(5), "the 502 in the log", || async {
            lb.log()
                .contains("502: replica did not answer")
                .then_some(())
        })
        .await;
    }
}

/// A `101 Switching Protocols` to a plain `GET` (no `Upgrade` asked for) is a 502, on both
/// forwarding paths, and the next request the client pipelined behind it is answered.
#[tokio::test(flavor = "multi_thread")]
async fn a_101_to_a_plain_get_is_a_502_and_the_next_pipelined_request_is_answered() {
    use common::backend::{ok, read_responses, Reply};
    fn script(path: &str) -> Reply {
        if path == "/switch" {
            Reply::RawClose(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: other\r\nConnection: upgrade\r\n\r\nother protocol"
                    .to_vec(),
            )
        } else {
            Reply::Raw(ok("after"))
        }
    }
    for pipelining in [false, true] {
        let (lb, backends) = two_scripted(pipelining, script).await;
        let mut client = std::net::TcpStream::connect(lb.addr).unwrap();
        std::io::Write::write_all(
            &mut client,
            b"GET /switch HTTP/1.1\r\nHost: lb\r\n\r\nGET /next HTTP/1.1\r\nHost: lb\r\n\r\n",
        )
        .unwrap();
        let answers = read_responses(&mut client, 2, Duration::from_secs(10));
        let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
        assert_eq!(statuses, [502, 200], "pipelining {pipelining}: {answers:?}");
        assert!(
            answers[0].1.contains("101 Switching Protocols"),
            "{answers:?}"
        );
        assert_eq!(answers[1].1, "after");
        assert_eq!(
            backends[0].count() + backends[1].count(),
            2,
            "pipelining {pipelining}: the 101 was sent again"
        );
    }
}
