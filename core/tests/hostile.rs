//! Hostile or unlucky conditions that must not hurt anyone else (issue "hard to break").

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{eventually, Lb};

/// An `/add` whose replica never answers holds nothing up: a replica killed meanwhile is
/// replaced at once, and other `/add`s and `/rm`s are answered while the bad one is pending.
#[tokio::test(flavor = "multi_thread")]
async fn a_pending_add_never_delays_failover() {
    let fixture = common::SLOW_REPLICA;
    let lb = Arc::new(Lb::start(&format!(
        r#"
[health]
interval_ms = 100
start_timeout_ms = 6000
[supervisor]
command = ["python3", "{fixture}", "--slow-ms", "0", "--hang-prefix", "Hang"]
[[replicas]]
hostname = "Server 1"
id = 1
[[replicas]]
hostname = "Server 2"
id = 2
"#
    )));
    let pending = {
        let lb = Arc::clone(&lb);
        tokio::spawn(async move {
            lb.send("POST", "/add", br#"{"n": 1, "hostnames": ["Hang1"]}"#, &[])
                .await
        })
    };
    // The bad /add is under way (its id is reserved) ...
    eventually(Duration::from_secs(5), "the pending add", || async {
        lb.log().contains("Hang1").then_some(())
    })
    .await;
    // ... when a replica dies: replaced within 2 s, not after the add's 6 s.
    let (victim, pid) = lb.replica_pids().await.remove(0);
    let killed = Instant::now();
    common::signal(pid, libc::SIGKILL);
    let names = eventually(Duration::from_secs(2), "the replacement", || async {
        let (n, names) = lb.rep().await;
        (n == 2 && !names.contains(&victim)).then_some(names)
    })
    .await;
    assert!(killed.elapsed() < Duration::from_secs(2));
    // Other changes are answered meanwhile, with ids that do not collide with the pending one.
    let added = lb
        .ok("POST", "/add", br#"{"n": 1, "hostnames": ["Quick"]}"#)
        .await;
    assert!(added.body.contains("Quick"), "{}", added.body);
    lb.ok("DELETE", "/rm", br#"{"n": 1, "hostnames": ["Quick"]}"#)
        .await;
    assert!(!pending.is_finished(), "the bad add is still starting");
    let answer = pending.await.unwrap();
    assert_eq!(answer.status, 500, "{}", answer.body);
    assert!(answer.body.contains("nothing was added"), "{}", answer.body);
    assert_eq!(lb.rep().await.1, names);
}

/// Names a command line could read as options, or that are only dots and spaces, are refused.
#[tokio::test(flavor = "multi_thread")]
async fn hostnames_that_look_like_options_are_refused() {
    let lb = Lb::start(common::THREE);
    for name in ["-x", "--help", " ", ".", "..", " S1", "S1 "] {
        let body = format!(r#"{{"n": 1, "hostnames": ["{name}"]}}"#);
        let answer = lb.send("POST", "/add", body.as_bytes(), &[]).await;
        assert_eq!(answer.status, 400, "{name:?}: {}", answer.body);
    }
    let huge = "y".repeat(65_000);
    let body = format!(r#"{{"n": 1, "hostnames": ["{huge}"]}}"#);
    let answer = lb.send("POST", "/add", body.as_bytes(), &[]).await;
    assert_eq!(answer.status, 400);
    assert!(answer.body.len() < 300, "the name is not echoed whole");
    assert_eq!(lb.rep().await.0, 3);
}

/// With `[admin] token`, `/add`, `/rm`, `/_lb/status`, `/_lb/plugins` and `/_lb/metrics` need
/// it; `/rep`, `/_lb/ring`, the `/_lb/ui` page and proxied paths do not.
#[tokio::test(flavor = "multi_thread")]
async fn the_admin_token_protects_what_changes_state_or_reveals_processes() {
    let lb = Lb::start(&format!("[admin]\ntoken = \"s3cret\"\n{}", common::THREE));
    let bearer = [("Authorization", "Bearer s3cret")];
    for (method, path, body) in [
        ("POST", "/add", r#"{"n": 1}"#),
        ("DELETE", "/rm", r#"{"n": 1}"#),
        ("GET", "/_lb/status", ""),
        ("GET", "/_lb/plugins", ""),
        ("GET", "/_lb/metrics", ""),
    ] {
        for headers in [
            &[][..],
            &[("Authorization", "Bearer s3creT")],
            &[("Authorization", "s3cret")],
        ] {
            let answer = lb.send(method, path, body.as_bytes(), headers).await;
            assert_eq!(
                answer.status, 401,
                "{method} {path} {headers:?}: {}",
                answer.body
            );
            assert_eq!(answer.json()["status"], "failure");
            assert!(answer.headers.contains_key("www-authenticate"));
        }
    }
    assert_eq!(lb.rep().await.0, 3, "nothing changed");
    assert_eq!(lb.get("/_lb/ring").await.status, 200);
    assert_eq!(lb.get("/_lb/ui").await.status, 200);
    assert_eq!(lb.get("/home").await.status, 200);
    let added = lb.send("POST", "/add", br#"{"n": 1}"#, &bearer).await;
    assert_eq!(added.status, 200, "{}", added.body);
    assert_eq!(
        lb.send("GET", "/_lb/status", b"", &bearer).await.status,
        200
    );
    assert_eq!(
        lb.send("GET", "/_lb/metrics", b"", &bearer).await.status,
        200
    );
    let removed = lb.send("DELETE", "/rm", br#"{"n": 1}"#, &bearer).await;
    assert_eq!(removed.status, 200, "{}", removed.body);
}

/// `[admin] listen` moves `/add`, `/rm` and `/_lb/*` to an address of their own; `/rep` stays.
#[tokio::test(flavor = "multi_thread")]
async fn admin_routes_can_live_on_their_own_address() {
    let lb = Lb::start(&format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n{}",
        common::THREE
    ));
    let admin = lb.admin.expect("lb printed its admin address");
    assert_eq!(lb.get("/rep").await.status, 200);
    for path in ["/_lb/status", "/_lb/ring", "/_lb/ui", "/_lb/metrics"] {
        let answer = lb.get(path).await;
        assert_eq!(answer.status, 404, "{path} on the traffic port");
        assert!(answer.body.contains("admin address"), "{}", answer.body);
        assert_eq!(lb.send_to(admin, "GET", path, b"", &[]).await.status, 200);
    }
    let moved = lb.send("POST", "/add", br#"{"n": 1}"#, &[]).await;
    assert_eq!(moved.status, 404);
    let added = lb.send_to(admin, "POST", "/add", br#"{"n": 1}"#, &[]).await;
    assert_eq!(added.status, 200, "{}", added.body);
    // The admin address serves nothing else.
    assert_eq!(
        lb.send_to(admin, "GET", "/home", b"", &[]).await.status,
        404
    );
    assert!(lb.home(&[]).await.starts_with("Server "));
}

/// `[limits] max_replicas` caps `/add`.
#[tokio::test(flavor = "multi_thread")]
async fn add_stops_at_max_replicas() {
    let lb = Lb::start(&format!("[limits]\nmax_replicas = 4\n{}", common::THREE));
    let answer = lb.send("POST", "/add", br#"{"n": 2}"#, &[]).await;
    assert_eq!(answer.status, 400);
    assert!(
        answer.body.contains("limits.max_replicas is 4"),
        "{}",
        answer.body
    );
    assert_eq!(lb.rep().await.0, 3);
    lb.ok("POST", "/add", br#"{"n": 1}"#).await;
    assert_eq!(lb.rep().await.0, 4);
}

/// Read from `stream` until it closes or `limit` passes; what came, and whether it closed.
fn read_until_closed(stream: &mut std::net::TcpStream, limit: Duration) -> (String, bool) {
    use std::io::Read;
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (String::from_utf8_lossy(&got).into_owned(), true)
            }
            Err(_) => {}
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), false)
}

/// Client timeouts short enough for tests: 300 ms for a request head, 1.5 s between requests.
fn client_timeouts() -> String {
    format!(
        "[proxy]\nclient_header_timeout_ms = 300\nclient_idle_timeout_ms = 1500\n{}",
        common::THREE
    )
}

/// A request head left unfinished is answered 408 (in the failure shape, `Connection: close`)
/// after `client_header_timeout_ms`, and the connection closed; a connection on which nothing
/// was sent is closed after the same time, without an answer.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_request_head_is_answered_408_and_closed() {
    use std::io::Write;
    let lb = Lb::start(&client_timeouts());
    let mut slow = std::net::TcpStream::connect(lb.addr).unwrap();
    let mut silent = std::net::TcpStream::connect(lb.addr).unwrap();
    let start = Instant::now();
    slow.write_all(b"GET /rep HTTP/1.1\r\nHost: lb\r\nX-A: 1\r\n")
        .unwrap();
    let (answer, closed) = read_until_closed(&mut slow, Duration::from_secs(5));
    assert!(
        closed,
        "a half-sent head is not waited for forever: {answer:?}"
    );
    let took = start.elapsed();
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer:?}"
    );
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer:?}");
    let body = answer.split_once("\r\n\r\n").unwrap().1;
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["status"], "failure", "{body}");
    assert!(
        json["message"].as_str().unwrap().contains("300 ms"),
        "{body}"
    );
    assert!(took >= Duration::from_millis(300), "{took:?}");
    let (nothing, silent_closed) = read_until_closed(&mut silent, Duration::from_secs(5));
    assert!(silent_closed && nothing.is_empty(), "{nothing:?}");
    // A client that sends in time is served as usual.
    assert_eq!(lb.get("/rep").await.status, 200);
}

/// The header timeout bounds the whole head, not the gap between its bytes: a head trickled a
/// byte at a time is answered 408 all the same.
#[tokio::test(flavor = "multi_thread")]
async fn a_trickled_request_head_is_answered_408() {
    use std::io::{Read, Write};
    let lb = Lb::start(&client_timeouts());
    let mut stream = std::net::TcpStream::connect(lb.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(30)))
        .unwrap();
    let head = format!(
        "GET /rep HTTP/1.1\r\nHost: lb\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(500)
    );
    let start = Instant::now();
    let mut first = Vec::new();
    let mut buf = [0u8; 4096];
    // One byte every 30 ms or so: the head would take about 16 s whole.
    for byte in head.as_bytes() {
        if stream.write_all(&[*byte]).is_err() {
            break;
        }
        match stream.read(&mut buf) {
            Ok(n) => {
                first.extend_from_slice(&buf[..n]);
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(_) => {}
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still no answer after 5 s"
        );
    }
    let took = start.elapsed();
    let (rest, closed) = read_until_closed(&mut stream, Duration::from_secs(5));
    let answer = String::from_utf8_lossy(&first).into_owned() + &rest;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(closed, "{answer:?}");
    assert!(took >= Duration::from_millis(300), "{took:?}");
}

/// Between requests a keep-alive connection has `client_idle_timeout_ms`, not the header
/// timeout: still usable after three header timeouts, closed (without an answer) once idle for
/// the idle timeout.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_keep_alive_connection_lasts_the_idle_timeout() {
    use std::io::Write;
    let lb = Lb::start(&client_timeouts());
    let mut stream = std::net::TcpStream::connect(lb.addr).unwrap();
    let request = b"GET /rep HTTP/1.1\r\nHost: lb\r\n\r\n";
    stream.write_all(request).unwrap();
    let first =
        common::read_response(&mut stream, Duration::from_secs(5)).expect("the first answer");
    assert!(first.starts_with("HTTP/1.1 200"), "{first:?}");
    // Letting the header timeout pass three times over: nothing may happen meanwhile.
    std::thread::sleep(Duration::from_millis(900));
    stream.write_all(request).unwrap();
    let second =
        common::read_response(&mut stream, Duration::from_secs(5)).expect("the second answer");
    assert!(second.starts_with("HTTP/1.1 200"), "{second:?}");
    let idle = Instant::now();
    let (nothing, closed) = read_until_closed(&mut stream, Duration::from_secs(6));
    let took = idle.elapsed();
    assert!(closed && nothing.is_empty(), "{nothing:?}");
    assert!(took >= Duration::from_millis(1400), "closed after {took:?}");
}

/// A request whose replica takes longer than the idle timeout is in progress, not idle: it is
/// answered.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_slower_than_the_idle_timeout_is_answered() {
    use std::io::Write;
    let fixture = common::SLOW_REPLICA;
    let lb = Lb::start(&format!(
        r#"
[proxy]
client_header_timeout_ms = 300
client_idle_timeout_ms = 800
[supervisor]
command = ["python3", "{fixture}", "--slow-ms", "2000"]
[[replicas]]
hostname = "Slow"
id = 1
"#
    ));
    let mut stream = std::net::TcpStream::connect(lb.addr).unwrap();
    let start = Instant::now();
    stream
        .write_all(b"GET /home HTTP/1.1\r\nHost: lb\r\n\r\n")
        .unwrap();
    let answer = common::read_response(&mut stream, Duration::from_secs(10)).expect("an answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.contains("Hello from Server: Slow"), "{answer:?}");
    assert!(start.elapsed() >= Duration::from_millis(2000));
}

/// Requests with more header fields than lb could forward to a replica are refused (431), not
/// passed on to break a connection other clients' requests share.
#[tokio::test(flavor = "multi_thread")]
async fn too_many_header_fields_are_refused_before_a_replica_sees_them() {
    use std::io::Write;
    let lb = Lb::start(common::THREE);
    let request = |fields: usize| {
        let mut head = String::from("GET /home HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n");
        for i in 0..fields {
            head.push_str(&format!("X-Extra-{i}: {i}\r\n"));
        }
        head.push_str("\r\n");
        let mut stream = std::net::TcpStream::connect(lb.addr).unwrap();
        stream.write_all(head.as_bytes()).unwrap();
        read_until_closed(&mut stream, Duration::from_secs(5)).0
    };
    let answer = request(97);
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    // The most a client may send (96 with Host and Connection) still reaches the replica whole
    // with the fields lb adds (X-Forwarded-For, -Proto, -Host): within hyper's 100.
    for fields in [90, 94] {
        let answer = request(fields);
        assert!(answer.starts_with("HTTP/1.1 200"), "{fields}: {answer}");
        assert!(answer.contains("Hello from Server"), "{answer}");
    }
}

/// Beyond `max_connections` nothing more is accepted until a connection closes; the open files
/// limit is raised to the hard limit.
#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_limit_wait_their_turn() {
    use std::io::Write;
    let lb = Lb::start(&format!(
        "[proxy]\nworkers = 1\nmax_connections = 2\nclient_header_timeout_ms = 20000\n{}",
        common::THREE
    ));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", lb.pid())).unwrap();
    let files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        files[3], files[4],
        "soft limit raised to the hard one: {limits}"
    );

    let first = std::net::TcpStream::connect(lb.addr).unwrap();
    let _second = std::net::TcpStream::connect(lb.addr).unwrap();
    // The kernel hands connections over in order: these two are the ones accepted.
    let mut third = std::net::TcpStream::connect(lb.addr).unwrap();
    third
        .write_all(b"GET /rep HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (waiting, closed) = read_until_closed(&mut third, Duration::from_millis(700));
    assert!(
        waiting.is_empty() && !closed,
        "served beyond the limit: {waiting}"
    );
    drop(first);
    let (answer, _) = read_until_closed(&mut third, Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
}

/// A save of `lb.toml` made while an `/add` is starting its replica is not lost when the `/add`
/// writes its replica back: both end up in the file and in the ring.
#[tokio::test(flavor = "multi_thread")]
async fn a_save_during_an_add_is_not_lost() {
    let fixture = common::SLOW_REPLICA;
    let lb = Arc::new(Lb::start(&format!(
        r#"
[supervisor]
command = ["python3", "{fixture}", "--slow-ms", "0", "--start-delay-ms", "1500"]
[[replicas]]
hostname = "Server 1"
id = 1
"#
    )));
    let pending = {
        let lb = Arc::clone(&lb);
        tokio::spawn(async move {
            lb.send("POST", "/add", br#"{"n": 1, "hostnames": ["Added"]}"#, &[])
                .await
        })
    };
    eventually(Duration::from_secs(5), "the add under way", || async {
        lb.log().contains("Added").then_some(())
    })
    .await;
    let text = std::fs::read_to_string(&lb.config).unwrap();
    std::fs::write(
        &lb.config,
        format!("{text}\n[[replicas]]\nhostname = \"Saved\"\nid = 7\n"),
    )
    .unwrap();
    let answer = pending.await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.body);
    let names = eventually(Duration::from_secs(10), "both in the ring", || async {
        let (n, names) = lb.rep().await;
        (n == 3).then_some(names)
    })
    .await;
    assert!(names.contains(&"Added".to_owned()) && names.contains(&"Saved".to_owned()));
    let file = std::fs::read_to_string(&lb.config).unwrap();
    assert!(
        file.contains("\"Saved\"") && file.contains("\"Added\""),
        "{file}"
    );
}

/// A replica answering with a status outside 100–599 gets its client a 502, on both forwarding
/// paths, and the 502 is logged.
#[tokio::test(flavor = "multi_thread")]
async fn a_status_outside_the_rfc_range_is_a_logged_502() {
    let fixture = common::SLOW_REPLICA;
    for pipelining in [true, false] {
        let lb = Lb::start(&format!(
            r#"
[proxy]
pipelining = {pipelining}
[supervisor]
command = ["python3", "{fixture}", "--slow-ms", "0", "--home-status", "999"]
[[replicas]]
hostname = "Odd"
id = 1
"#
        ));
        let answer = lb.get("/home").await;
        assert_eq!(
            answer.status, 502,
            "pipelining {pipelining}: {}",
            answer.body
        );
        assert!(answer.body.contains("status code 999"), "{}", answer.body);
        eventually(Duration::from_secs(5), "the 502 in the log", || async {
            lb.log()
                .contains("502: replica did not answer")
                .then_some(())
        })
        .await;
    }
}

/// `kill -9` of the busiest replica under 16 clients without pause: no client sees an error —
/// requests that could not reach it go to the next replica in ring order.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_replica_costs_no_client_request() {
    let lb = Arc::new(Lb::start(common::THREE));
    let traffic = common::Traffic::start(&lb, 16);
    eventually(Duration::from_secs(20), "traffic flowing", || async {
        (lb.served().await > 2_000).then_some(())
    })
    .await;
    // Server 1 owns 84 % of the ring with the assignment's functions.
    let victim = "Server 1".to_owned();
    let pid = lb.pid_of(&victim).await;
    common::signal(pid, libc::SIGKILL);
    eventually(Duration::from_secs(10), "the replacement", || async {
        let (n, names) = lb.rep().await;
        (n == 3 && !names.contains(&victim)).then_some(())
    })
    .await;
    let after = lb.served().await;
    eventually(
        Duration::from_secs(20),
        "traffic after the replacement",
        || async { (lb.served().await > after + 2_000).then_some(()) },
    )
    .await;
    let answers = traffic.finish().await;
    let failed: Vec<_> = answers.iter().filter(|a| a.status != 200).collect();
    assert!(answers.len() > 4_000, "{}", answers.len());
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        answers.len(),
        failed.first()
    );
    assert!(lb.status().await["retries"].as_u64().is_some());
}

/// A replica that hangs (SIGSTOP) costs its clients one `response_timeout_ms`, not an error and
/// not the whole hang: GET/HEAD go to the next replica in ring order; other methods get a 504.
#[tokio::test(flavor = "multi_thread")]
async fn a_hung_replica_costs_one_response_timeout() {
    let lb = Arc::new(Lb::start(&format!(
        "[proxy]\nresponse_timeout_ms = 300\n{}",
        common::THREE
    )));
    let pid = lb.pid_of("Server 1").await;
    common::signal(pid, libc::SIGSTOP);
    // Ids 1..40: most belong to Server 1 (84 % of the ring).
    let clients: Vec<_> = (0..8u64)
        .map(|c| {
            let lb = Arc::clone(&lb);
            tokio::spawn(async move {
                let mut slowest = Duration::ZERO;
                let mut failed = Vec::new();
                for i in 0..5u64 {
                    let id = (100_000 + c * 1_000 + i).to_string();
                    let start = Instant::now();
                    let answer = lb.send("GET", "/home", b"", &[("X-Request-Id", &id)]).await;
                    slowest = slowest.max(start.elapsed());
                    if answer.status != 200 {
                        failed.push((answer.status, answer.body));
                    }
                }
                (slowest, failed)
            })
        })
        .collect();
    for client in clients {
        let (slowest, failed) = client.await.unwrap();
        assert!(failed.is_empty(), "{failed:?}");
        assert!(
            slowest < Duration::from_secs(2),
            "a request took {slowest:?}"
        );
    }
    common::signal(pid, libc::SIGCONT);
}

/// With no retries left, a replica that does not answer in time gets its client a 504.
#[tokio::test(flavor = "multi_thread")]
async fn no_answer_in_time_without_retries_is_a_504() {
    // Heartbeats rarely, so the hung replica is still in the ring when the request comes.
    let lb = Lb::start(common::NO_RETRY_NO_WAIT);
    let pid = lb.pid_of("Server 1").await;
    common::signal(pid, libc::SIGSTOP);
    // H(0) = 17: slot 17 belongs to Server 1.
    let start = Instant::now();
    let answer = lb.send("GET", "/home", b"", &[("X-Request-Id", "0")]).await;
    common::signal(pid, libc::SIGCONT);
    assert_eq!(answer.status, 504, "{}", answer.body);
    assert!(
        answer.body.contains("no response within 300 ms"),
        "{}",
        answer.body
    );
    assert!(start.elapsed() < Duration::from_secs(2));
}

/// A connection to `addr` with a small receive buffer, so that what its client does not read
/// backs up into `lb` after a few kilobytes.
fn small_window_client(addr: std::net::SocketAddr) -> std::net::TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(8 * 1024).unwrap();
    socket.connect(&addr.into()).unwrap();
    socket.into()
}

/// `lb` with `max_connections = 4`, a 400 ms send timeout and one test backend by address
/// (`pipelining` as given) whose `/big` is 64 MiB and `/steady` 10 MiB; up once the backend is.
async fn send_timeout_lb(pipelining: bool) -> (Lb, common::backend::Backend) {
    use common::backend::{ok, Backend, Reply, HEALTH};
    let backend = Backend::start(|path| match path {
        "/big" => Reply::Body(64 << 20),
        "/steady" => Reply::Body(10 << 20),
        _ => Reply::Raw(ok("small")),
    });
    let lb = Lb::start(&format!(
        "[proxy]\nworkers = 1\nmax_connections = 4\nclient_send_timeout_ms = 400\n{HEALTH}{}",
        backend.entry("big", 1, pipelining)
    ));
    eventually(Duration::from_secs(10), "the backend up", || async {
        (lb.rep().await.0 == 1 && lb.status().await["vacancies"].as_array()?.is_empty())
            .then_some(())
    })
    .await;
    (lb, backend)
}

/// Clients that ask for a large response and never read it cannot hold `max_connections`: each
/// is cut after `client_send_timeout_ms` without taking a byte (counted in
/// `lb_client_send_timeouts_total`), so a new client is answered. On both forwarding paths.
#[tokio::test(flavor = "multi_thread")]
async fn clients_that_stop_reading_are_cut_and_new_clients_answered() {
    use std::io::Write;
    for pipelining in [false, true] {
        let (lb, _backend) = send_timeout_lb(pipelining).await;
        // Twice the connection limit: the last four wait for the first four to go.
        let stalled: Vec<std::net::TcpStream> = (0..8)
            .map(|_| {
                let mut client = small_window_client(lb.addr);
                client
                    .write_all(b"GET /big HTTP/1.1\r\nHost: lb\r\n\r\n")
                    .unwrap();
                client
            })
            .collect();
        let mut fresh = std::net::TcpStream::connect(lb.addr).unwrap();
        fresh
            .write_all(b"GET /small HTTP/1.1\r\nHost: lb\r\n\r\n")
            .unwrap();
        let answers = common::backend::read_responses(&mut fresh, 1, Duration::from_secs(20));
        assert_eq!(
            answers,
            [(200, "small".to_owned())],
            "pipelining {pipelining}: a new client behind clients that do not read"
        );
        // Accepted only after all eight before it: at least four were cut; the rest follow.
        assert!(lb.metric("lb_client_send_timeouts_total").await >= 4);
        eventually(Duration::from_secs(20), "all eight cut", || async {
            (lb.metric("lb_client_send_timeouts_total").await == 8).then_some(())
        })
        .await;
        drop(stalled);
    }
}

/// A client that reads a response slowly but steadily — 10 MiB, more than the buffers between
/// it and the backend hold, so `lb`'s socket to it is full most of the time, in small reads
/// that take longer than the 400 ms send timeout in all — gets all of it.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_but_steady_reader_is_not_cut() {
    use std::io::{Read, Write};
    // The watchdog is the client side's: the same whichever path the response comes by.
    let (lb, _backend) = send_timeout_lb(true).await;
    let addr = lb.addr;
    let got = tokio::task::spawn_blocking(move || {
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        client
            .write_all(b"GET /steady HTTP/1.1\r\nHost: lb\r\n\r\n")
            .unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let started = Instant::now();
        let mut total = 0usize;
        let mut buf = vec![0u8; 16 * 1024];
        // Bounded: 10 MiB and its head, or a minute.
        while total < (10 << 20) + 1024 && started.elapsed() < Duration::from_secs(60) {
            match client.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
            // The pace of a slow reader.
            std::thread::sleep(Duration::from_millis(1));
        }
        total
    })
    .await
    .unwrap();
    assert!(got > 10 << 20, "cut after {got} bytes");
    assert_eq!(lb.metric("lb_client_send_timeouts_total").await, 0);
}

/// Under an open files limit too low for `max_connections` (two descriptors a connection),
/// `lb` lowers `max_connections` to what the limit allows, says so once with both numbers, and
/// clients beyond it wait their turn instead of getting "Too many open files".
#[tokio::test(flavor = "multi_thread")]
async fn max_connections_is_lowered_to_what_the_open_files_limit_allows() {
    use std::io::Write;
    const FILES: u64 = 256;
    let lb = Lb::start_with_open_files(
        &format!(
            "[proxy]\nworkers = 1\nmax_connections = 10000\nclient_header_timeout_ms = 20000\n\
             [limits]\nmax_replicas = 4\n{}",
            common::THREE
        ),
        FILES,
    );
    let log = eventually(Duration::from_secs(5), "the line that says so", || async {
        let log = lb.log();
        log.contains("max_connections lowered").then_some(log)
    })
    .await;
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("max_connections lowered"))
        .collect();
    assert_eq!(said.len(), 1, "{log}");
    // What is left of the open files after the listeners, replicas and health checks (the
    // arithmetic is `data/workers.rs`'s, unit-tested there).
    let allowed: usize = said[0]
        .split_once("allowed=")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no allowed= in {}", said[0]));
    assert!(allowed < 10_000 && allowed > 10, "{allowed}");
    assert!(
        said[0].contains("max_connections=10000")
            && said[0].contains(&format!("open_files={FILES}")),
        "{}",
        said[0]
    );

    // The allowed connections are taken (the kernel hands them over in order)...
    let mut held: Vec<std::net::TcpStream> = (0..allowed)
        .map(|_| std::net::TcpStream::connect(lb.addr).unwrap())
        .collect();
    // ... so the next one waits.
    let mut next = std::net::TcpStream::connect(lb.addr).unwrap();
    next.write_all(b"GET /rep HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (waiting, closed) = read_until_closed(&mut next, Duration::from_millis(700));
    assert!(
        waiting.is_empty() && !closed,
        "served beyond {allowed} connections: {waiting}"
    );
    held.pop();
    let (answer, _) = read_until_closed(&mut next, Duration::from_secs(5));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
}
