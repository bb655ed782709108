//! WebSockets through the ring (issue 27), against the stock Python `websockets` library: its
//! servers are the backends (by address, `tests/fixtures/ws_echo.py`: each echoes text with its
//! name) and its clients the clients (`tests/fixtures/ws_clients.py`, driven line by line).
//!
//! Needs Python with `websockets` (13 or later): `LB_WS_PYTHON`, else `target/ws-venv` (made by
//! `scripts/test.sh`), else `python3`. Without it each test says SKIP — unless
//! `LB_REQUIRE_WEBSOCKETS=1` (CI), when it fails.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::python::Process;
use common::{eventually, Lb};
use lb_balance::hash::{request_id_from_header, RingHash, SpecHash};
use serde_json::{json, Value};

const ECHO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ws_echo.py");
const CLIENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ws_clients.py");

/// A Python with the stock library these tests run, or `None` (SKIP).
fn python(test: &str) -> Option<PathBuf> {
    common::python::python(test, &common::python::WEBSOCKETS)
}

/// A `ws_echo.py` backend.
struct Echo {
    process: Process,
    port: u16,
}

impl Echo {
    fn start(python: &PathBuf, name: &str) -> Echo {
        let process = Process::start(Command::new(python).args([ECHO, "--name", name]));
        let line = process.line(Duration::from_secs(20));
        let port = line
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("ws_echo.py said {line:?}"));
        Echo { process, port }
    }

    fn kill(&mut self) {
        let _ = self.process.child.kill();
        let _ = self.process.child.wait();
    }
}

/// The `ws_clients.py` driver.
struct Clients(Process);

impl Clients {
    fn start(python: &PathBuf) -> Clients {
        Clients(Process::start(Command::new(python).arg(CLIENTS)))
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

/// lb in front of `echoes` (by address, health-checked on `/healthz`), rooms by `?room=`.
/// Health checks: a killed echo server (refused at once) is out after five 100 ms rounds; a
/// busy one (its event loop echoing megabytes on a loaded machine) has 2 s per check, so it is
/// not taken out of the ring (and its tunnels closed) while a test streams through it.
fn lb_for(echoes: &[&Echo], extra: &str) -> Lb {
    let mut config = format!(
        "{extra}\n[ring]\nkey = \"query:room\"\nalgorithm = \"rendezvous\"\n\
         [health]\npath = \"/healthz\"\ninterval_ms = 100\ntimeout_ms = 2000\nfall = 5\nrise = 1\n\
         drain_timeout_ms = 3000\n"
    );
    for (i, e) in echoes.iter().enumerate() {
        config.push_str(&format!(
            "[[replicas]]\nhostname = \"ws-{i}\"\nid = {}\naddress = \"127.0.0.1:{}\"\n",
            i + 1,
            e.port
        ));
    }
    Lb::start(&config)
}

async fn all_up(lb: &Lb, n: u64) {
    eventually(
        Duration::from_secs(20),
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

/// The owner `/_lb/ring` gives for `?room=ROOM`: the slot of its FNV-1a id under the ring's
/// hash.
async fn owner_of(lb: &Lb, room: &str) -> String {
    let ring = lb.get("/_lb/ring").await.json();
    let slots = ring["slots"].as_u64().unwrap();
    let slot = SpecHash.request(request_id_from_header(room.as_bytes())) % slots;
    ring["owners"][slot as usize].as_str().unwrap().to_owned()
}

/// `lb_tunnels_open` (or another labelled family) summed over its replicas.
async fn tunnels_metric(lb: &Lb, family: &str) -> u64 {
    let page = lb.get("/_lb/metrics").await.body;
    page.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Socket id → (room, backend) from an "open" or "reconnect" answer.
fn opened(answer: &Value) -> BTreeMap<u64, (String, String)> {
    let failed = &answer["failed"];
    assert!(
        failed.as_object().is_some_and(|f| f.is_empty()),
        "sockets failed to open: {failed}"
    );
    answer["sockets"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(i, s)| {
            (
                i.parse().unwrap(),
                (
                    s["room"].as_str().unwrap().to_owned(),
                    s["backend"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn rooms_stick_to_their_owner_and_move_only_when_their_backend_leaves() {
    let Some(python) = python("rooms_stick_to_their_owner_and_move_only_when_their_backend_leaves")
    else {
        return;
    };
    let names = ["ws-0", "ws-1", "ws-2"];
    let echoes: Vec<Echo> = names.iter().map(|n| Echo::start(&python, n)).collect();
    let lb = lb_for(
        &echoes.iter().collect::<Vec<_>>(),
        "[log]\naccess = \"stdout\"\naccess_format = \"json\"\n",
    );
    all_up(&lb, 3).await;
    let mut clients = Clients::start(&python);
    let base = format!("ws://{}/chat", lb.addr);

    // 200 sockets in 50 rooms: every socket of a room on the room's owner.
    let open = clients.cmd(
        json!({"cmd": "open", "base": base, "sockets": 200, "rooms": 50}),
        Duration::from_secs(60),
    );
    let sockets = opened(&open);
    assert_eq!(sockets.len(), 200);
    let mut by_room: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (room, backend) in sockets.values() {
        by_room
            .entry(room.clone())
            .or_default()
            .insert(backend.clone());
    }
    assert_eq!(by_room.len(), 50);
    let mut rooms_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (room, backends) in &by_room {
        assert_eq!(backends.len(), 1, "room {room} on {backends:?}");
        let backend = backends.iter().next().unwrap();
        assert_eq!(*backend, owner_of(&lb, room).await, "room {room}");
        rooms_of
            .entry(backend.clone())
            .or_default()
            .push(room.clone());
    }
    assert!(
        rooms_of.len() >= 2,
        "rooms on one backend only: {rooms_of:?}"
    );

    // Echo round trips on every socket; the tunnels are counted.
    let echo = clients.cmd(json!({"cmd": "echo"}), Duration::from_secs(60));
    assert_eq!(echo["ok"].as_object().unwrap().len(), 200, "{echo}");
    assert_eq!(tunnels_metric(&lb, "lb_tunnels_open").await, 200);
    assert_eq!(tunnels_metric(&lb, "lb_tunnels_total").await, 200);
    let status = lb.status().await;
    let shown: u64 = status["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["tunnels"].as_u64().unwrap())
        .sum();
    assert_eq!(shown, 200, "{status}");

    // /rm of the backend with the most rooms (not all of them): only its tunnels close, after
    // the drain time.
    let (victim, victim_rooms) = rooms_of
        .iter()
        .max_by_key(|(_, rooms)| rooms.len())
        .map(|(b, r)| (b.clone(), r.clone()))
        .unwrap();
    let doomed: Vec<u64> = sockets
        .iter()
        .filter(|(_, (_, b))| *b == victim)
        .map(|(i, _)| *i)
        .collect();
    let spared: Vec<u64> = sockets
        .keys()
        .copied()
        .filter(|i| !doomed.contains(i))
        .collect();
    assert!(!spared.is_empty());
    let removed_at = Instant::now();
    let rm = lb
        .send(
            "DELETE",
            "/rm",
            json!({"n": 1, "hostnames": [victim]})
                .to_string()
                .as_bytes(),
            &[],
        )
        .await;
    assert_eq!(rm.status, 200, "{}", rm.body);
    // Rendezvous moves exactly the removed backend's keys: its rooms, and only those, have a
    // new owner.
    for (room, backend) in sockets.values() {
        let owner = owner_of(&lb, room).await;
        assert_eq!(owner != *backend, *backend == victim, "room {room}");
    }
    // Still open within the drain time (checked only if the check itself ends within it).
    let early = clients.cmd(json!({"cmd": "echo"}), Duration::from_secs(60));
    if removed_at.elapsed() < Duration::from_millis(2500) {
        assert_eq!(
            early["ok"].as_object().unwrap().len(),
            200,
            "tunnels closed before the drain time: {early}"
        );
    }
    let closed = clients.cmd(
        json!({"cmd": "wait_closed", "ids": doomed, "timeout": 20}),
        Duration::from_secs(30),
    );
    assert_eq!(
        closed["closed"].as_object().unwrap().len(),
        doomed.len(),
        "{closed}"
    );
    assert!(removed_at.elapsed() >= Duration::from_millis(3000));
    let after = clients.cmd(json!({"cmd": "echo"}), Duration::from_secs(60));
    let ok: BTreeSet<u64> = after["ok"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.parse().unwrap())
        .collect();
    assert_eq!(ok, spared.iter().copied().collect(), "{after}");
    assert_eq!(
        tunnels_metric(&lb, "lb_tunnels_open").await,
        spared.len() as u64
    );

    // Their clients reconnect and land on each room's new owner.
    let again = opened(&clients.cmd(
        json!({"cmd": "reconnect", "ids": doomed}),
        Duration::from_secs(60),
    ));
    assert_eq!(again.len(), doomed.len());
    for (room, backend) in again.values() {
        assert!(victim_rooms.contains(room));
        assert_ne!(*backend, victim);
        assert_eq!(*backend, owner_of(&lb, room).await, "room {room}");
    }

    // Closed by the clients: the count goes back down; each tunnel was logged once as a 101.
    clients.cmd(json!({"cmd": "close"}), Duration::from_secs(60));
    eventually(Duration::from_secs(20), "no tunnel open", || async {
        (tunnels_metric(&lb, "lb_tunnels_open").await == 0).then_some(())
    })
    .await;
    assert_eq!(
        tunnels_metric(&lb, "lb_tunnels_total").await,
        200 + doomed.len() as u64
    );
    let logged = eventually(Duration::from_secs(10), "every tunnel logged", || async {
        let lines: Vec<Value> = lb
            .stdout()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["status"] == 101)
            .collect();
        (lines.len() == 200 + doomed.len()).then_some(lines)
    })
    .await;
    for line in &logged {
        assert!(line["bytes_in"].as_u64().unwrap() > 0, "{line}");
        assert!(line["bytes"].as_u64().unwrap() > 0, "{line}");
        assert!(line["path"].as_str().unwrap().starts_with("/chat?room="));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_megabytes_pass_intact_and_idle_tunnels_outlive_the_client_idle_timeout() {
    let Some(python) =
        python("a_hundred_megabytes_pass_intact_and_idle_tunnels_outlive_the_client_idle_timeout")
    else {
        return;
    };
    let echo = Echo::start(&python, "ws-0");
    let lb = lb_for(&[&echo], "[proxy]\nclient_idle_timeout_ms = 500\n");
    all_up(&lb, 1).await;
    let mut clients = Clients::start(&python);
    let url = format!("ws://{}/chat?room=big", lb.addr);

    let big = clients.cmd(
        json!({"cmd": "big", "url": url, "mib": 100}),
        Duration::from_secs(180),
    );
    assert_eq!(big["sent"], 100 * 1024 * 1024, "{big}");
    assert_eq!(big["received"], big["sent"], "{big}");
    assert_eq!(big["sha_received"], big["sha_sent"], "{big}");

    // Silent for four times the client idle timeout: the tunnel is still there.
    let idle = clients.cmd(
        json!({"cmd": "idle", "url": url, "seconds": 2}),
        Duration::from_secs(30),
    );
    assert_eq!(idle["first"], "ws-0 first", "{idle}");
    assert_eq!(idle["second"], "ws-0 second", "{idle}");
}

/// A backend that dies mid-tunnel ends its tunnels (the client sees the close) and counts them
/// closed.
#[tokio::test(flavor = "multi_thread")]
async fn a_backend_killed_mid_tunnel_closes_its_tunnels() {
    let Some(python) = python("a_backend_killed_mid_tunnel_closes_its_tunnels") else {
        return;
    };
    let mut echo = Echo::start(&python, "ws-0");
    let lb = lb_for(&[&echo], "");
    all_up(&lb, 1).await;
    let mut clients = Clients::start(&python);
    let base = format!("ws://{}/chat", lb.addr);
    let open = clients.cmd(
        json!({"cmd": "open", "base": base, "sockets": 4, "rooms": 2}),
        Duration::from_secs(30),
    );
    assert_eq!(opened(&open).len(), 4);
    assert_eq!(tunnels_metric(&lb, "lb_tunnels_open").await, 4);
    echo.kill();
    let closed = clients.cmd(
        json!({"cmd": "wait_closed", "ids": [0, 1, 2, 3], "timeout": 10}),
        Duration::from_secs(20),
    );
    assert_eq!(closed["closed"].as_object().unwrap().len(), 4, "{closed}");
    eventually(Duration::from_secs(10), "no tunnel open", || async {
        (tunnels_metric(&lb, "lb_tunnels_open").await == 0).then_some(())
    })
    .await;
}

/// `Upgrade: h2c` is served as plain HTTP/1.1, `Upgrade: foo` refused with a 501 that says
/// why, a WebSocket upgrade that is not a GET is a 400, and `CONNECT` stays a 405.
#[tokio::test(flavor = "multi_thread")]
async fn other_upgrades_are_served_plain_or_refused_with_a_reason() {
    let Some(python) = python("other_upgrades_are_served_plain_or_refused_with_a_reason") else {
        return;
    };
    let echo = Echo::start(&python, "ws-0");
    let lb = lb_for(&[&echo], "");
    all_up(&lb, 1).await;
    let h2c = lb
        .send(
            "GET",
            "/healthz",
            b"",
            &[
                ("Connection", "Upgrade, HTTP2-Settings"),
                ("Upgrade", "h2c"),
                ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"),
            ],
        )
        .await;
    assert_eq!((h2c.status, h2c.body.as_str()), (200, "OK\n"));
    let foo = lb
        .send(
            "GET",
            "/chat",
            b"",
            &[("Connection", "upgrade"), ("Upgrade", "foo/1")],
        )
        .await;
    assert_eq!(foo.status, 501, "{}", foo.body);
    let message = foo.json()["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("websocket") && message.contains("foo/1"),
        "{message}"
    );
    // A replica's refusal of the upgrade (no Sec-WebSocket-Key) reaches the client as it is.
    let refused = lb
        .send(
            "GET",
            "/chat?room=a",
            b"",
            &[
                ("Connection", "Upgrade"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Version", "13"),
            ],
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(
        refused.body.contains("Sec-WebSocket-Key"),
        "{}",
        refused.body
    );
    let post = lb
        .send(
            "POST",
            "/chat",
            b"",
            &[("Connection", "upgrade"), ("Upgrade", "websocket")],
        )
        .await;
    assert_eq!(post.status, 400, "{}", post.body);
    assert!(post.body.contains("GET"), "{}", post.body);
}

/// A graceful SIGTERM closes open tunnels at the end of its drain, and `lb` exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_closes_tunnels_at_the_end_of_the_drain() {
    let Some(python) = python("sigterm_closes_tunnels_at_the_end_of_the_drain") else {
        return;
    };
    let echo = Echo::start(&python, "ws-0");
    let mut lb = lb_for(&[&echo], "");
    all_up(&lb, 1).await;
    let mut clients = Clients::start(&python);
    let base = format!("ws://{}/chat", lb.addr);
    let open = clients.cmd(
        json!({"cmd": "open", "base": base, "sockets": 3, "rooms": 3}),
        Duration::from_secs(30),
    );
    assert_eq!(opened(&open).len(), 3);
    let signalled = Instant::now();
    common::signal(lb.pid(), libc::SIGTERM);
    // Still open during the drain (3 s; checked only if the check ends within it).
    let early = clients.cmd(json!({"cmd": "echo"}), Duration::from_secs(30));
    if signalled.elapsed() < Duration::from_millis(2500) {
        assert_eq!(early["ok"].as_object().unwrap().len(), 3, "{early}");
    }
    let closed = clients.cmd(
        json!({"cmd": "wait_closed", "ids": [0, 1, 2], "timeout": 20}),
        Duration::from_secs(30),
    );
    assert_eq!(closed["closed"].as_object().unwrap().len(), 3, "{closed}");
    assert!(signalled.elapsed() >= Duration::from_millis(3000));
    let status = lb.signal_and_wait(0, Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "lb did not exit 0 after the drain: {status:?}\n{}",
        lb.log()
    );
}

/// `lb`'s resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A client that sends and stops reading stalls its tunnel: the echo backs up through `lb`
/// (two fixed buffers) into both sockets, the client's sends stop, and `lb`'s memory does not
/// grow with what was sent; once it reads again, everything arrives intact.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_stalls_its_tunnel_and_lb_buffers_nothing_more() {
    let Some(python) =
        python("a_client_that_stops_reading_stalls_its_tunnel_and_lb_buffers_nothing_more")
    else {
        return;
    };
    let echo = Echo::start(&python, "ws-0");
    let lb = lb_for(&[&echo], "[proxy]\nclient_send_timeout_ms = 500\n");
    all_up(&lb, 1).await;
    let mut clients = Clients::start(&python);
    let url = format!("ws://{}/chat?room=slow", lb.addr);
    let before = rss_kib(lb.pid());
    let mib = 256;
    let stall = clients.cmd(
        json!({"cmd": "stall", "url": url, "mib": mib}),
        Duration::from_secs(120),
    );
    assert_eq!(stall["stalled"], true, "{stall}");
    let sent = stall["sent"].as_u64().unwrap();
    assert!(sent < mib * 1024 * 1024, "{stall}");
    let grown = rss_kib(lb.pid()).saturating_sub(before);
    eprintln!("stalled after {sent} bytes sent; lb grew {grown} KiB");
    assert!(
        grown < 16 * 1024,
        "lb grew {grown} KiB while a tunnel held {sent} bytes unread"
    );
    // Not cut by client_send_timeout_ms (500 ms) while it stalls: three times that passes (the
    // scenario, not a wait for something), then reading again gets it all.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let unstall = clients.cmd(json!({"cmd": "unstall"}), Duration::from_secs(120));
    assert_eq!(unstall["received"], sent, "{unstall}");
    assert_eq!(unstall["same"], true, "{unstall}");
}

/// An upgrade whose replica refuses the connection (killed, still in the ring) goes to the next
/// replica in the ring's order: nothing was sent.
#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_its_replica_refuses_goes_to_the_next_replica() {
    let Some(python) = python("an_upgrade_its_replica_refuses_goes_to_the_next_replica") else {
        return;
    };
    let mut echoes = [Echo::start(&python, "ws-0"), Echo::start(&python, "ws-1")];
    let config = {
        let mut config = "[ring]\nkey = \"query:room\"\nalgorithm = \"rendezvous\"\n\
            [health]\npath = \"/healthz\"\ninterval_ms = 5000\nfall = 20\nrise = 1\n"
            .to_owned();
        for (i, e) in echoes.iter().enumerate() {
            config.push_str(&format!(
                "[[replicas]]\nhostname = \"ws-{i}\"\nid = {}\naddress = \"127.0.0.1:{}\"\n",
                i + 1,
                e.port
            ));
        }
        config
    };
    let lb = Lb::start(&config);
    all_up(&lb, 2).await;
    // A room of ws-0's; ws-0 killed, but its heartbeats are far apart: still in the ring.
    let mut room = None;
    for i in 0..100 {
        let name = format!("room-{i}");
        if owner_of(&lb, &name).await == "ws-0" {
            room = Some(name);
            break;
        }
    }
    let room = room.expect("a room of ws-0's among 100");
    echoes[0].kill();
    assert_eq!(lb.rep().await.0, 2);
    let retries_before = lb.status().await["retries"].as_u64().unwrap();
    let mut clients = Clients::start(&python);
    let base = format!("ws://{}/chat", lb.addr);
    let open = clients.cmd(
        json!({"cmd": "reconnect_room", "base": base, "room": room}),
        Duration::from_secs(30),
    );
    assert_eq!(open["backend"], "ws-1", "{open}");
    assert_eq!(owner_of(&lb, &room).await, "ws-0", "still ws-0's");
    let retries = lb.status().await["retries"].as_u64().unwrap();
    assert_eq!(retries, retries_before + 1);
}

// ---- WebSockets over HTTP/2 (RFC 8441), with hyper's HTTP/2 client and tokio-tungstenite ----

type H2Sender = hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>;
type H2Socket =
    tokio_tungstenite::WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

/// One HTTP/2 (`h2c`, prior knowledge) connection to `addr` with hyper's client.
async fn h2_connection(addr: std::net::SocketAddr) -> H2Sender {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    sender
}

/// An ordinary `GET path` on the connection: its status and body.
async fn h2_get(sender: &mut H2Sender, authority: &str, path: &str) -> (u16, String) {
    use http_body_util::BodyExt as _;
    let req = http::Request::get(format!("http://{authority}{path}"))
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// An extended CONNECT (`:protocol` given) for `path`: the WebSocket on its stream once the
/// answer is 200, else the answer's status and body.
async fn h2_websocket(
    sender: &mut H2Sender,
    authority: &str,
    path: &str,
    protocol: &'static str,
) -> Result<H2Socket, (u16, String)> {
    use http_body_util::BodyExt as _;
    let mut req = http::Request::connect(format!("http://{authority}{path}"))
        .header("sec-websocket-version", "13")
        .body(http_body_util::Empty::new())
        .unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static(protocol));
    let mut resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("an answer within 10 s")
        .expect("lb takes an extended CONNECT (it sent SETTINGS_ENABLE_CONNECT_PROTOCOL)");
    if resp.status() != http::StatusCode::OK {
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        return Err((status, String::from_utf8_lossy(&body).into_owned()));
    }
    assert!(
        !resp.headers().contains_key("sec-websocket-accept"),
        "{:?}",
        resp.headers()
    );
    let upgraded = hyper::upgrade::on(&mut resp).await.unwrap();
    Ok(tokio_tungstenite::WebSocketStream::from_raw_socket(
        hyper_util::rt::TokioIo::new(upgraded),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await)
}

/// Send `text` on `ws` and read the echo (`None` when the socket closed or failed instead).
async fn round_trip(ws: &mut H2Socket, text: &str) -> Option<String> {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::text(text)).await.ok()?;
    let reply = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("an echo or a close within 10 s");
    match reply {
        Some(Ok(Message::Text(t))) => Some(t.as_str().to_owned()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn websockets_over_one_http2_connection_land_on_their_owners_and_rehome_alone() {
    let Some(python) =
        python("websockets_over_one_http2_connection_land_on_their_owners_and_rehome_alone")
    else {
        return;
    };
    let names = ["ws-0", "ws-1", "ws-2"];
    let echoes: Vec<Echo> = names.iter().map(|n| Echo::start(&python, n)).collect();
    let lb = lb_for(
        &echoes.iter().collect::<Vec<_>>(),
        "[proxy]\nclient_idle_timeout_ms = 500\n[log]\naccess = \"stdout\"\naccess_format = \"json\"\n",
    );
    all_up(&lb, 3).await;
    let authority = lb.addr.to_string();
    let mut h2 = h2_connection(lb.addr).await;
    // An ordinary request first (the answer comes after lb's SETTINGS).
    assert_eq!(
        h2_get(&mut h2, &authority, "/healthz").await,
        (200, "OK\n".into())
    );

    // Twelve WebSockets in twelve rooms, multiplexed on that one connection: each on its
    // room's owner, echoing.
    let rooms: Vec<String> = (0..12).map(|i| format!("h2-room-{i}")).collect();
    let mut sockets = Vec::new();
    for room in &rooms {
        let mut ws = h2_websocket(
            &mut h2,
            &authority,
            &format!("/chat?room={room}"),
            "websocket",
        )
        .await
        .unwrap_or_else(|e| panic!("room {room}: {e:?}"));
        let reply = round_trip(&mut ws, &format!("hello {room}")).await.unwrap();
        let owner = owner_of(&lb, room).await;
        assert_eq!(reply, format!("{owner} hello {room}"));
        sockets.push((room.clone(), owner, ws));
    }
    let owners: BTreeSet<&String> = sockets.iter().map(|(_, o, _)| o).collect();
    assert!(owners.len() >= 2, "every room on one backend: {owners:?}");
    assert_eq!(tunnels_metric(&lb, "lb_tunnels_open").await, 12);
    // Ordinary requests on the same connection are answered while the tunnels are open.
    assert_eq!(h2_get(&mut h2, &authority, "/healthz").await.0, 200);

    // Silent for three times the client idle timeout: the connection and its tunnels stay.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for (room, owner, ws) in &mut sockets {
        assert_eq!(
            round_trip(ws, "still").await,
            Some(format!("{owner} still")),
            "room {room} after the client idle timeout"
        );
    }

    // /rm of the owner of the first room: its tunnels close after the drain time (3 s), the
    // others and the connection go on.
    let victim = sockets[0].1.clone();
    let removed_at = Instant::now();
    let rm = lb
        .send(
            "DELETE",
            "/rm",
            json!({"n": 1, "hostnames": [victim]})
                .to_string()
                .as_bytes(),
            &[],
        )
        .await;
    assert_eq!(rm.status, 200, "{}", rm.body);
    for (room, owner, ws) in &mut sockets {
        if *owner == victim {
            // Read until the close: bounded by the drain time and a margin.
            use futures_util::StreamExt as _;
            let ended = tokio::time::timeout(Duration::from_secs(15), async {
                loop {
                    match ws.next().await {
                        Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_)))
                        | Some(Err(_))
                        | None => break,
                        Some(Ok(_)) => {}
                    }
                }
            })
            .await;
            assert!(ended.is_ok(), "room {room}'s tunnel to {victim} still open");
            assert!(
                removed_at.elapsed() >= Duration::from_millis(2900),
                "room {room} closed before the drain time"
            );
        }
    }
    for (room, owner, ws) in &mut sockets {
        if *owner != victim {
            assert_eq!(
                round_trip(ws, "after").await,
                Some(format!("{owner} after")),
                "room {room}"
            );
        }
    }
    // The same connection still serves requests and new WebSockets: a reconnect for the first
    // room lands on its new owner.
    assert_eq!(h2_get(&mut h2, &authority, "/healthz").await.0, 200);
    let room = &sockets[0].0;
    let mut again = h2_websocket(
        &mut h2,
        &authority,
        &format!("/chat?room={room}"),
        "websocket",
    )
    .await
    .unwrap();
    let now_owner = owner_of(&lb, room).await;
    assert_ne!(now_owner, victim);
    assert_eq!(
        round_trip(&mut again, "back").await,
        Some(format!("{now_owner} back"))
    );
    let closed = sockets.iter().filter(|(_, o, _)| *o == victim).count();
    let survivors = (sockets.len() - closed) as u64;
    eventually(
        Duration::from_secs(10),
        "the closed tunnels uncounted",
        || async { (tunnels_metric(&lb, "lb_tunnels_open").await == survivors + 1).then_some(()) },
    )
    .await;
    // Each closed tunnel was logged once, as the HTTP/2 request it was: a 200 with its bytes.
    let logged = eventually(
        Duration::from_secs(10),
        "the closed tunnels logged",
        || async {
            let lines: Vec<Value> = lb
                .stdout()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|l| l["method"] == "CONNECT")
                .collect();
            (lines.len() == closed).then_some(lines)
        },
    )
    .await;
    for line in &logged {
        assert_eq!(line["status"], 200, "{line}");
        assert_eq!(line["proto"], "HTTP/2", "{line}");
        assert_eq!(line["replica"], victim.as_str(), "{line}");
        assert!(line["bytes_in"].as_u64().unwrap() > 0, "{line}");
        assert!(line["bytes"].as_u64().unwrap() > 0, "{line}");
        assert!(
            line["path"].as_str().unwrap().starts_with("/chat?room="),
            "{line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http2_connect_is_refused_clearly_unless_it_is_a_websocket_the_replica_takes() {
    let Some(python) =
        python("an_http2_connect_is_refused_clearly_unless_it_is_a_websocket_the_replica_takes")
    else {
        return;
    };
    let echo = Echo::start(&python, "ws-0");
    let lb = lb_for(&[&echo], "");
    all_up(&lb, 1).await;
    let authority = lb.addr.to_string();
    let mut h2 = h2_connection(lb.addr).await;
    assert_eq!(h2_get(&mut h2, &authority, "/healthz").await.0, 200);

    // Another :protocol: 501 naming it.
    let Err((status, body)) =
        h2_websocket(&mut h2, &authority, "/chat?room=a", "x-telepathy").await
    else {
        panic!("a tunnel for x-telepathy");
    };
    assert_eq!(status, 501, "{body}");
    assert!(body.contains("x-telepathy"), "{body}");

    // The replica refuses the WebSocket: its status reaches the client.
    let Err((status, body)) =
        h2_websocket(&mut h2, &authority, "/refuse?room=a", "websocket").await
    else {
        panic!("a tunnel the replica refused");
    };
    assert_eq!((status, body.as_str()), (403, "refused\n"));

    // A plain CONNECT (no :protocol): 405, as over HTTP/1.1.
    let req = http::Request::connect("127.0.0.1:9")
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), h2.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 405);

    // The connection still carries a WebSocket after all that.
    let mut ws = h2_websocket(&mut h2, &authority, "/chat?room=a", "websocket")
        .await
        .unwrap();
    assert_eq!(round_trip(&mut ws, "hi").await, Some("ws-0 hi".into()));
}

// ---- WebSockets and TLS: wss:// at lb's TLS listener, and tunnels to backends over TLS ----

/// `lb tls self-signed` for `127.0.0.1` into `dir`: (ca.pem, cert.pem, key.pem).
fn self_signed(dir: &std::path::Path) -> (String, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lb"))
        .args([
            "tls",
            "self-signed",
            "--name",
            "127.0.0.1",
            "--name",
            "localhost",
            "--out",
        ])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lb tls self-signed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    (path("ca.pem"), path("cert.pem"), path("key.pem"))
}

/// Every socket of `answer` (an "open") on its room's owner; the rooms' backends.
async fn on_owners(lb: &Lb, answer: &Value) -> BTreeSet<String> {
    let sockets = opened(answer);
    let mut backends = BTreeSet::new();
    for (room, backend) in sockets.values() {
        assert_eq!(*backend, owner_of(lb, room).await, "room {room}");
        backends.insert(backend.clone());
    }
    backends
}

#[tokio::test(flavor = "multi_thread")]
async fn wss_through_lbs_tls_listener_reaches_the_rooms_owners() {
    let Some(python) = python("wss_through_lbs_tls_listener_reaches_the_rooms_owners") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = self_signed(dir.path());
    let echoes: Vec<Echo> = ["ws-0", "ws-1"]
        .iter()
        .map(|n| Echo::start(&python, n))
        .collect();
    let lb = lb_for(
        &echoes.iter().collect::<Vec<_>>(),
        &format!(
            "[tls]\nlisten = \"127.0.0.1:0\"\n[[tls.certificates]]\ncert = \"{cert}\"\nkey = \"{key}\"\n"
        ),
    );
    all_up(&lb, 2).await;
    let https = lb.https.expect("lb's TLS listener");
    let mut clients = Clients::start(&python);
    clients.cmd(json!({"cmd": "trust", "ca": ca}), Duration::from_secs(10));
    let open = clients.cmd(
        json!({"cmd": "open", "base": format!("wss://{https}/chat"), "sockets": 8, "rooms": 8}),
        Duration::from_secs(60),
    );
    on_owners(&lb, &open).await;
    let echo = clients.cmd(json!({"cmd": "echo"}), Duration::from_secs(60));
    assert_eq!(echo["ok"].as_object().unwrap().len(), 8, "{echo}");
    assert_eq!(tunnels_metric(&lb, "lb_tunnels_open").await, 8);

    // And over HTTP/2 by ALPN on the same listener (RFC 8441 inside TLS).
    let mut h2 = h2_over_tls(https, &ca).await;
    // An ordinary request first (the answer comes after lb's SETTINGS).
    assert_eq!(h2_get(&mut h2, "localhost", "/healthz").await.0, 200);
    let mut ws = h2_websocket(&mut h2, "localhost", "/chat?room=tls-h2", "websocket")
        .await
        .unwrap();
    let owner = owner_of(&lb, "tls-h2").await;
    assert_eq!(round_trip(&mut ws, "hi").await, Some(format!("{owner} hi")));
}

/// One HTTP/2 connection to `lb`'s TLS listener at `addr` (ALPN `h2` only, trusting `ca`).
async fn h2_over_tls(addr: std::net::SocketAddr, ca: &str) -> H2Sender {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_file(ca).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .expect("a TLS handshake within 10 s")
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    sender
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tunnel_to_a_backend_over_tls_echoes() {
    let Some(python) = python("a_tunnel_to_a_backend_over_tls_echoes") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = self_signed(dir.path());
    let process = Process::start(
        Command::new(&python).args([ECHO, "--name", "wss-0", "--cert", &cert, "--key", &key]),
    );
    let line = process.line(Duration::from_secs(20));
    let port: u16 = line
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("ws_echo.py said {line:?}"));
    let lb = Lb::start(&format!(
        "[ring]\nkey = \"query:room\"\n\
         [health]\npath = \"/healthz\"\ninterval_ms = 100\ntimeout_ms = 1000\nfall = 2\nrise = 1\n\
         [[replicas]]\nhostname = \"wss-0\"\nid = 1\naddress = \"127.0.0.1:{port}\"\ntls = true\nca = \"{ca}\"\n"
    ));
    all_up(&lb, 1).await;
    let mut clients = Clients::start(&python);
    let open = clients.cmd(
        json!({"cmd": "open", "base": format!("ws://{}/chat", lb.addr), "sockets": 4, "rooms": 2}),
        Duration::from_secs(60),
    );
    assert_eq!(
        on_owners(&lb, &open).await,
        BTreeSet::from(["wss-0".to_owned()])
    );
    let echo = clients.cmd(json!({"cmd": "echo"}), Duration::from_secs(60));
    assert_eq!(echo["ok"].as_object().unwrap().len(), 4, "{echo}");
    drop(process);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_closes_http2_websockets_at_the_end_of_the_drain() {
    let Some(python) = python("sigterm_closes_http2_websockets_at_the_end_of_the_drain") else {
        return;
    };
    let echo = Echo::start(&python, "ws-0");
    let mut lb = lb_for(&[&echo], "");
    all_up(&lb, 1).await;
    let authority = lb.addr.to_string();
    let mut h2 = h2_connection(lb.addr).await;
    assert_eq!(h2_get(&mut h2, &authority, "/healthz").await.0, 200);
    let mut sockets = Vec::new();
    for room in ["a", "b"] {
        let mut ws = h2_websocket(
            &mut h2,
            &authority,
            &format!("/chat?room={room}"),
            "websocket",
        )
        .await
        .unwrap();
        assert_eq!(round_trip(&mut ws, "hi").await, Some("ws-0 hi".into()));
        sockets.push(ws);
    }
    let signalled = Instant::now();
    common::signal(lb.pid(), libc::SIGTERM);
    // Still carrying within the drain (3 s; checked only if the check ends within it).
    let mut early = 0;
    for ws in &mut sockets {
        early += usize::from(round_trip(ws, "drain").await.is_some());
    }
    if signalled.elapsed() < Duration::from_millis(2500) {
        assert_eq!(early, 2, "a tunnel closed before the end of the drain");
    }
    for ws in &mut sockets {
        use futures_util::StreamExt as _;
        let ended = tokio::time::timeout(Duration::from_secs(15), async {
            while let Some(Ok(message)) = ws.next().await {
                if message.is_close() {
                    break;
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "an HTTP/2 WebSocket outlived the drain");
    }
    assert!(signalled.elapsed() >= Duration::from_millis(2900));
    let status = lb.signal_and_wait(0, Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "lb did not exit 0 after the drain: {status:?}\n{}",
        lb.log()
    );
}
