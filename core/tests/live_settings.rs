//! Every setting that used to wait for a restart changes live, through a save of `lb.toml`:
//! `[proxy]` (timeouts, retries, limits, `max_connections`, pipelining, HTTP/2 and tunnel
//! settings), `[log]` (the access log's target and format), `[admin] token` and `[plugins] dirs`
//! — under traffic, without a failed request. New connections take the new settings at once;
//! an open HTTP/1.1 connection is told `Connection: close` on its next answer and its client
//! reconnects to them. Listeners move: `listen`, `[admin] listen` and `[tls] listen` bind their
//! new address first, then the old one stops accepting. (`[tls] min_version` and
//! `redirect_http`: `tests/tls.rs`.)

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{eventually, save_by_rename, Lb, Traffic, THREE};

/// How long a save may take to be applied and reach the workers.
const APPLIED: Duration = Duration::from_secs(10);

/// Version `i` of a file changing every formerly restart-only setting, with its access log in
/// `access-{i % 2}.log` (text, or JSON every other pair), token `token-{i}` and plugins looked
/// up in `plugins-{i % 2}` of `dir`.
fn version(i: usize, dir: &Path) -> String {
    let format = if (i / 2).is_multiple_of(2) {
        "text"
    } else {
        "json"
    };
    format!(
        "[proxy]\n\
         pipelining = {pipelining}\n\
         retries = {retries}\n\
         response_timeout_ms = {response}\n\
         connect_timeout_ms = {connect}\n\
         client_header_timeout_ms = {header}\n\
         client_idle_timeout_ms = {idle}\n\
         client_send_timeout_ms = {send}\n\
         max_connections = {max}\n\
         trust_forwarded_for = {trust}\n\
         h2_max_concurrent_streams = {streams}\n\
         h2_keepalive_interval_ms = {keepalive}\n\
         tunnel_idle_timeout_ms = {tunnel}\n\
         [log]\naccess = \"access-{file}.log\"\naccess_format = \"{format}\"\n\
         [admin]\ntoken = \"token-{i}\"\n\
         [plugins]\ndirs = [\"{plugins}\"]\n{THREE}",
        pipelining = i.is_multiple_of(2),
        retries = i % 3,
        response = 5_000 + 100 * i,
        connect = 1_000 + i,
        header = 10_000 + i,
        idle = 60_000 + i,
        send = 30_000 + i,
        max = 200 + 10 * i,
        trust = i % 2 == 1,
        streams = 100 + i,
        keepalive = if i.is_multiple_of(2) { 20_000 } else { 0 },
        tunnel = 60_000 + i,
        file = i % 2,
        plugins = dir.join(format!("plugins-{}", i % 2)).display(),
    )
}

/// Send `GET target` on a new connection and read the answer's status line.
fn get_fresh(lb: &Lb, target: &str) -> String {
    let mut stream = TcpStream::connect(lb.addr).unwrap();
    stream
        .write_all(
            format!("GET {target} HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.lines().next().unwrap_or_default().to_owned()
}

/// The lines of `path` (none while it does not exist).
fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Twenty saves, each changing every formerly restart-only setting, while four clients send
/// requests without pause: every answer is a 200 from a replica, each save's token is the one
/// that works once it is applied, each save's access log target and format get the requests
/// that follow, and nothing is reported as needing a restart.
#[tokio::test(flavor = "multi_thread")]
async fn twenty_saves_of_every_formerly_restart_only_setting_lose_no_request() {
    let dir = tempfile::tempdir().unwrap();
    for k in 0..2 {
        std::fs::create_dir(dir.path().join(format!("plugins-{k}"))).unwrap();
    }
    let lb = Arc::new(Lb::start(&version(0, dir.path())));
    let base = lb.config.parent().unwrap().to_path_buf();
    eventually(APPLIED, "three replicas", || async {
        (lb.rep().await.0 == 3).then_some(())
    })
    .await;
    let traffic = Traffic::start(&lb, 4);
    for i in 1..=20 {
        save_by_rename(&lb.config, &version(i, dir.path()));
        let token = format!("Bearer token-{i}");
        eventually(APPLIED, &format!("token-{i} taken"), || async {
            let status = lb
                .send("GET", "/_lb/status", b"", &[("Authorization", &token)])
                .await;
            (status.status == 200).then_some(())
        })
        .await;
        // The access log: this save's file gets this save's requests, in this save's format.
        let log = base.join(format!("access-{}.log", i % 2));
        let json = (i / 2) % 2 == 1;
        let target = format!("/home?save={i}");
        eventually(APPLIED, &format!("save {i} logged"), || async {
            assert_eq!(get_fresh(&lb, &target), "HTTP/1.1 200 OK");
            let found = lines(&log).into_iter().find(|l| l.contains(&target))?;
            assert_eq!(found.starts_with('{'), json, "{found}");
            Some(())
        })
        .await;
    }
    traffic.finish_all_ok(100).await;
    let status = lb
        .send(
            "GET",
            "/_lb/status",
            b"",
            &[("Authorization", "Bearer token-20")],
        )
        .await
        .json();
    assert_eq!(status["config"]["needs_restart"], serde_json::json!([]));
    assert_eq!(status["config"]["last_error"], serde_json::Value::Null);
    assert_eq!(
        status["config"]["plugin_dirs"][0],
        dir.path().join("plugins-0").display().to_string()
    );
    let old = lb
        .send(
            "GET",
            "/_lb/status",
            b"",
            &[("Authorization", "Bearer token-19")],
        )
        .await;
    assert_eq!(old.status, 401, "the previous token no longer works");
}

/// An HTTP/1.1 connection opened before a save keeps working: its next answer says
/// `Connection: close` and lb closes it after that answer (so the client reconnects to the new
/// settings, and never sends a request on a socket being closed).
#[tokio::test(flavor = "multi_thread")]
async fn an_open_connection_is_closed_after_its_next_answer_once_settings_change() {
    let text = format!("[proxy]\nretries = 1\n{THREE}");
    let lb = Lb::start(&text);
    eventually(APPLIED, "three replicas", || async {
        (lb.rep().await.0 == 3).then_some(())
    })
    .await;
    let mut stream = TcpStream::connect(lb.addr).unwrap();
    let request = b"GET /home HTTP/1.1\r\nHost: lb\r\n\r\n";
    stream.write_all(request).unwrap();
    let first = common::read_response(&mut stream, Duration::from_secs(10)).expect("an answer");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(!first.to_ascii_lowercase().contains("connection: close"));
    save_by_rename(&lb.config, &text.replace("retries = 1", "retries = 2"));
    // A new connection is served as soon as the workers have the new settings; until then the
    // open one stays keep-alive.
    let deadline = Instant::now() + APPLIED;
    let last = loop {
        stream.write_all(request).unwrap();
        let answer =
            common::read_response(&mut stream, Duration::from_secs(10)).expect("an answer");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        if answer.to_ascii_lowercase().contains("connection: close") {
            break answer;
        }
        assert!(Instant::now() < deadline, "never told to close");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(last.contains("Server "), "{last}");
    // Closed by lb after that answer: the next read sees the end.
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    let n = stream.read_to_end(&mut rest).unwrap_or(0);
    assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&rest));
}

/// `max_connections` changes live: with one worker and a limit of one connection, a second
/// client waits in the kernel's queue; raising the limit serves it without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn raising_max_connections_serves_a_waiting_client() {
    let text = format!(
        "[proxy]\nworkers = 1\nmax_connections = 1\nclient_idle_timeout_ms = 60000\n{THREE}"
    );
    let lb = Lb::start(&text);
    // Connections of their own, closed after each answer (the test's pooled client would keep
    // one open and take the only place).
    eventually(APPLIED, "a replica answering", || async {
        (get_fresh(&lb, "/home") == "HTTP/1.1 200 OK").then_some(())
    })
    .await;
    // Hold the one connection allowed.
    let mut first = TcpStream::connect(lb.addr).unwrap();
    first
        .write_all(b"GET /home HTTP/1.1\r\nHost: lb\r\n\r\n")
        .unwrap();
    let answer = common::read_response(&mut first, Duration::from_secs(10)).expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let mut second = TcpStream::connect(lb.addr).unwrap();
    second
        .write_all(b"GET /home HTTP/1.1\r\nHost: lb\r\n\r\n")
        .unwrap();
    assert_eq!(
        common::read_response(&mut second, Duration::from_millis(500)),
        None,
        "the second connection is not served while the first is open"
    );
    save_by_rename(
        &lb.config,
        &text.replace("max_connections = 1", "max_connections = 10"),
    );
    let answer = common::read_response(&mut second, APPLIED).expect("served once raised");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// An access log target lb cannot open is refused with the reason in `config.last_error`, and
/// the log it had keeps getting lines; a later good target is taken.
#[tokio::test(flavor = "multi_thread")]
async fn an_access_log_that_cannot_be_opened_keeps_the_one_in_use() {
    let text = |access: &str| format!("[log]\naccess = \"{access}\"\n{THREE}");
    let lb = Lb::start(&text("a.log"));
    let base = lb.config.parent().unwrap().to_path_buf();
    eventually(APPLIED, "three replicas", || async {
        (lb.rep().await.0 == 3).then_some(())
    })
    .await;
    save_by_rename(&lb.config, &text("no-such-dir/b.log"));
    let error = lb.last_error(APPLIED).await;
    assert!(
        error.contains("[log] access") && error.contains("no-such-dir"),
        "{error}"
    );
    eventually(APPLIED, "a line in a.log after the refusal", || async {
        assert_eq!(get_fresh(&lb, "/home?after=refusal"), "HTTP/1.1 200 OK");
        lines(&base.join("a.log"))
            .iter()
            .any(|l| l.contains("after=refusal"))
            .then_some(())
    })
    .await;
    save_by_rename(&lb.config, &text("c.log"));
    eventually(APPLIED, "a line in c.log", || async {
        assert_eq!(get_fresh(&lb, "/home?after=fix"), "HTTP/1.1 200 OK");
        lines(&base.join("c.log"))
            .iter()
            .any(|l| l.contains("after=fix"))
            .then_some(())
    })
    .await;
    assert!(!base.join("no-such-dir").exists());
}

/// Whether something accepts TCP connections at `addr`.
fn accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

/// `[admin] listen` and `[tls] listen` move live, three times each, while four clients send
/// requests to `listen` without pause: the new address serves as soon as the save is applied,
/// the old one stops accepting, no request fails; a move to an address already taken keeps the
/// listener where it is and says why.
#[tokio::test(flavor = "multi_thread")]
async fn admin_and_tls_listeners_move_live_under_traffic() {
    let certs = tempfile::tempdir().unwrap();
    lb::self_signed(&["localhost".to_owned()], certs.path()).unwrap();
    let text = |admin: &str, tls: &str| {
        format!(
            "[admin]\nlisten = \"{admin}\"\n[tls]\nlisten = \"{tls}\"\n\
             [[tls.certificates]]\ncert = \"{}\"\nkey = \"{}\"\n{THREE}",
            certs.path().join("cert.pem").display(),
            certs.path().join("key.pem").display(),
        )
    };
    let lb = Arc::new(Lb::start(&text("127.0.0.1:0", "127.0.0.1:0")));
    let ca = certs.path().join("ca.pem");
    eventually(APPLIED, "three replicas", || async {
        (lb.send_to(lb.admin.unwrap(), "GET", "/rep", b"", &[])
            .await
            .json()["message"]["N"]
            == 3)
            .then_some(())
    })
    .await;
    let traffic = Traffic::start(&lb, 4);
    let (mut admin, mut https) = (lb.admin.unwrap(), lb.https.unwrap());
    for round in 0..3 {
        let (to_admin, to_https) = (common::free_port(), common::free_port());
        save_by_rename(
            &lb.config,
            &text(
                &format!("127.0.0.1:{to_admin}"),
                &format!("127.0.0.1:{to_https}"),
            ),
        );
        let moved: SocketAddr = format!("127.0.0.1:{to_admin}").parse().unwrap();
        let status = eventually(APPLIED, &format!("round {round}: admin moved"), || async {
            if !accepts(moved) {
                return None;
            }
            let status = lb.send_to(moved, "GET", "/_lb/status", b"", &[]).await;
            (status.status == 200).then(|| status.json())
        })
        .await;
        eventually(APPLIED, &format!("round {round}: https moved"), || async {
            tokio::task::spawn_blocking({
                let ca = ca.clone();
                move || common::fetch_https(to_https, "localhost", &ca, "/home", "7")
            })
            .await
            .unwrap()
        })
        .await;
        eventually(
            APPLIED,
            &format!("round {round}: old addresses closed"),
            || async { (!accepts(admin) && !accepts(https)).then_some(()) },
        )
        .await;
        assert_eq!(status["config"]["last_error"], serde_json::Value::Null);
        assert_eq!(status["tls"]["listen"], format!("127.0.0.1:{to_https}"));
        admin = moved;
        https = format!("127.0.0.1:{to_https}").parse().unwrap();
    }
    // An address something else holds: refused, the listener stays.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    save_by_rename(
        &lb.config,
        &text(&taken_addr.to_string(), &https.to_string()),
    );
    let error = eventually(APPLIED, "the refused move", || async {
        let status = lb
            .send_to(admin, "GET", "/_lb/status", b"", &[])
            .await
            .json();
        status["config"]["last_error"]["message"]
            .as_str()
            .map(str::to_owned)
    })
    .await;
    assert!(
        error.contains("[admin] listen")
            && error.contains(&taken_addr.to_string())
            && error.contains("address already in use")
            && error.contains(&format!("still listening on {admin}")),
        "{error}"
    );
    assert!(accepts(admin));
    traffic.finish_all_ok(100).await;
}

/// The file's `listen` moves live when no `--listen` is given: the new address serves, the old
/// one stops accepting, `/_lb/status` shows the new one.
#[tokio::test(flavor = "multi_thread")]
async fn the_traffic_listener_moves_live() {
    let first: SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let text = |addr: SocketAddr| format!("listen = \"{addr}\"\n{THREE}");
    let lb = Lb::start_as_configured(&text(first));
    assert_eq!(lb.addr, first);
    eventually(APPLIED, "three replicas", || async {
        (lb.rep().await.0 == 3).then_some(())
    })
    .await;
    let mut at = first;
    for round in 0..3 {
        let next: SocketAddr = format!("127.0.0.1:{}", common::free_port())
            .parse()
            .unwrap();
        save_by_rename(&lb.config, &text(next));
        let status = eventually(APPLIED, &format!("round {round}: moved"), || async {
            if !accepts(next) {
                return None;
            }
            let answer = lb.send_to(next, "GET", "/_lb/status", b"", &[]).await;
            (answer.status == 200).then(|| answer.json())
        })
        .await;
        assert_eq!(status["listen"], next.to_string());
        eventually(
            APPLIED,
            &format!("round {round}: old address closed"),
            || async { (!accepts(at)).then_some(()) },
        )
        .await;
        let home = lb.send_to(next, "GET", "/home", b"", &[]).await;
        assert_eq!(home.status, 200, "{}", home.body);
        at = next;
    }
}

/// The indexes of `lb`'s traffic worker threads (named `lb-worker-N`), from `/proc`.
fn worker_threads(pid: u32) -> Vec<usize> {
    let mut found: Vec<usize> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .filter_map(|task| {
                    let comm = std::fs::read_to_string(task.ok()?.path().join("comm")).ok()?;
                    comm.trim().strip_prefix("lb-worker-")?.parse().ok()
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort_unstable();
    found
}

/// `[proxy] workers` changes live under traffic: more start at once; fewer stop once their
/// connections are done (each moves after its next answer; an idle one closes by the idle
/// timeout); no request fails.
#[tokio::test(flavor = "multi_thread")]
async fn workers_start_and_stop_live_under_traffic() {
    let text = |workers: usize| {
        format!("[proxy]\nworkers = {workers}\nclient_idle_timeout_ms = 2000\n{THREE}")
    };
    let lb = Arc::new(Lb::start(&text(1)));
    eventually(APPLIED, "three replicas", || async {
        (lb.rep().await.0 == 3).then_some(())
    })
    .await;
    assert_eq!(worker_threads(lb.pid()), vec![0]);
    let traffic = Traffic::start(&lb, 4);
    for workers in [3, 2, 1, 4, 2] {
        save_by_rename(&lb.config, &text(workers));
        let wanted: Vec<usize> = (0..workers).collect();
        eventually(
            Duration::from_secs(20),
            &format!("{workers} workers"),
            || async { (worker_threads(lb.pid()) == wanted).then_some(()) },
        )
        .await;
        // Each worker still there takes connections: a new one is answered.
        assert_eq!(get_fresh(&lb, "/home"), "HTTP/1.1 200 OK");
    }
    traffic.finish_all_ok(100).await;
    let status = lb.status().await;
    assert_eq!(status["config"]["needs_restart"], serde_json::json!([]));
    assert_eq!(status["config"]["last_error"], serde_json::Value::Null);
}
