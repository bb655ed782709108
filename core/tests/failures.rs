//! Replicas that die or hang are replaced with the same server id; replicas never outlive the
//! load balancer; a replica that cannot start is rolled back.

mod common;

use std::time::Duration;

use common::{alive, eventually, Lb, THREE};

#[tokio::test(flavor = "multi_thread")]
async fn killed_replica_is_replaced_with_a_new_name_and_the_same_id() {
    let lb = Lb::start(THREE);
    let ring_before = lb.get("/_lb/ring").await.json();
    let (victim, pid) = lb.replica_pids().await.remove(1);
    common::signal(pid, libc::SIGKILL);
    let names = eventually(
        Duration::from_secs(10),
        "N back to 3 without the victim",
        || async {
            let (n, names) = lb.rep().await;
            (n == 3 && !names.contains(&victim)).then_some(names)
        },
    )
    .await;
    assert_eq!(names[0], "Server 1");
    assert_eq!(names[2], "Server 3");
    let replacement = &names[1];
    // Same server id, so the same virtual-node slots: no other replica's keys moved.
    let ring_after = lb.get("/_lb/ring").await.json();
    assert_eq!(ring_after["replicas"][1]["id"], 2);
    assert_eq!(
        ring_after["replicas"][1]["slots"],
        ring_before["replicas"][1]["slots"]
    );
    assert_eq!(ring_after["replicas"][1]["hostname"], replacement.as_str());
    for id in 0..200u32 {
        let id = id.to_string();
        let got = lb.home(&[("X-Request-Id", &id)]).await;
        assert!(names.contains(&got), "{got}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn home_keeps_answering_while_a_replica_is_killed() {
    let lb = Lb::start(THREE);
    let (_, pid) = lb.replica_pids().await.remove(0);
    let mut ok = 0;
    let mut failed = Vec::new();
    for i in 0..600u32 {
        if i == 100 {
            common::signal(pid, libc::SIGKILL);
        }
        let a = lb.get("/home").await;
        if a.status == 200 {
            ok += 1;
        } else {
            failed.push((a.status, a.body));
        }
    }
    // The LB learns of the exit at once and takes the replica out of the ring; at most the
    // requests already on their way to it can fail.
    assert!(failed.len() <= 3, "{} failed: {failed:?}", failed.len());
    assert_eq!(ok + failed.len(), 600);
    let (n, _) = eventually(Duration::from_secs(10), "N back to 3", || async {
        let rep = lb.rep().await;
        (rep.0 == 3).then_some(rep)
    })
    .await;
    assert_eq!(n, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn hung_replica_is_found_by_heartbeats_and_replaced() {
    let lb = Lb::start(THREE);
    let (victim, pid) = lb.replica_pids().await.remove(2);
    // A stopped process keeps its socket open but answers nothing: only heartbeats notice.
    common::signal(pid, libc::SIGSTOP);
    let names = eventually(
        Duration::from_secs(15),
        "the hung replica replaced",
        || async {
            let (n, names) = lb.rep().await;
            (n == 3 && !names.contains(&victim)).then_some(names)
        },
    )
    .await;
    assert_eq!(&names[..2], ["Server 1", "Server 2"]);
    eventually(
        Duration::from_secs(15),
        "the hung process stopped",
        || async { (!alive(pid)).then_some(()) },
    )
    .await;
    assert!(lb.log().contains("heartbeats missed"), "{}", lb.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_die_with_the_load_balancer() {
    let mut lb = Lb::start(THREE);
    let pids = lb.replica_pids().await;
    assert_eq!(pids.len(), 3);
    common::signal(lb.pid(), libc::SIGKILL);
    eventually(Duration::from_secs(10), "every replica gone", || async {
        pids.iter().all(|(_, pid)| !alive(*pid)).then_some(())
    })
    .await;
    lb.addr = "127.0.0.1:9".parse().unwrap(); // nothing to talk to any more
}

#[tokio::test(flavor = "multi_thread")]
async fn graceful_shutdown_stops_replicas() {
    let lb = Lb::start(THREE);
    let pids = lb.replica_pids().await;
    drop(lb); // SIGTERM, waits for exit
    for (name, pid) in pids {
        assert!(!alive(pid), "{name} (pid {pid}) outlived lb");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn replica_that_never_answers_is_rolled_back() {
    // A "replica" that runs but never listens: sh ignores the arguments lb appends.
    let lb = Lb::start(
        r#"
[health]
start_timeout_ms = 300
[supervisor]
command = ["sh", "-c", "exec sleep 30", "replica"]
"#,
    );
    let a = lb
        .send("POST", "/add", br#"{"n": 2, "hostnames": ["A"]}"#, &[])
        .await;
    assert_eq!(a.status, 500, "{}", a.body);
    let v = a.json();
    assert_eq!(v["status"], "failure");
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains("did not answer its first heartbeat"),
        "{message}"
    );
    assert!(message.contains("nothing was added"), "{message}");
    assert_eq!(lb.rep().await, (0, vec![]));
    assert_eq!(lb.status().await["replicas"], serde_json::json!([]));
}

/// `/rm` takes a replica out of the ring at once but stops it only after the requests already
/// sent to it have finished. The fixture replica takes 600 ms per `/home` and dies on SIGTERM
/// without finishing anything, so any request not drained would fail.
#[tokio::test(flavor = "multi_thread")]
async fn rm_lets_in_flight_requests_finish() {
    let fixture = common::SLOW_REPLICA;
    let lb = std::sync::Arc::new(Lb::start(&format!(
        r#"
[supervisor]
command = ["python3", "{fixture}"]
[[replicas]]
hostname = "Slow 1"
id = 1
[[replicas]]
hostname = "Slow 2"
id = 2
"#
    )));
    // Request ids the ring sends to "Slow 1".
    let ring = lb.get("/_lb/ring").await.json();
    let owners = ring["owners"].as_array().unwrap();
    let ids: Vec<String> = (0..10_000u64)
        .filter(|id| {
            use lb_balance::hash::RingHash;
            owners[(lb_balance::hash::SpecHash.request(*id) % 512) as usize] == "Slow 1"
        })
        .take(8)
        .map(|id| id.to_string())
        .collect();
    assert_eq!(ids.len(), 8);
    let requests: Vec<_> = ids
        .into_iter()
        .map(|id| {
            let lb = std::sync::Arc::clone(&lb);
            tokio::spawn(
                async move { lb.send("GET", "/home", b"", &[("X-Request-Id", &id)]).await },
            )
        })
        .collect();
    // Remove "Slow 1" once all eight are in flight to it.
    eventually(Duration::from_secs(10), "8 requests in flight", || async {
        let s = lb.status().await;
        (s["replicas"][0]["in_flight"] == 8).then_some(())
    })
    .await;
    let rm = lb
        .send(
            "DELETE",
            "/rm",
            br#"{"n": 1, "hostnames": ["Slow 1"]}"#,
            &[],
        )
        .await;
    assert_eq!(rm.status, 200, "{}", rm.body);
    for request in requests {
        let a = request.await.unwrap();
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(common::served_by(&a.body), "Slow 1");
    }
    assert_eq!(lb.rep().await, (1, vec!["Slow 2".to_owned()]));
}

/// A replica that answers its first heartbeat and then dies, again and again, is restarted with
/// exponential backoff — not in a tight loop — and shown as a crash loop in `/_lb/status`.
#[tokio::test(flavor = "multi_thread")]
async fn crash_looping_replica_is_backed_off() {
    let fixture = common::SLOW_REPLICA;
    let lb = Lb::start(&format!(
        r#"
[health]
interval_ms = 100
[supervisor]
command = ["python3", "{fixture}", "--slow-ms", "0", "--die-after-ms", "300"]
[[replicas]]
hostname = "Flaky"
id = 1
"#
    ));
    let started = std::time::Instant::now();
    let vacancy = eventually(
        Duration::from_secs(30),
        "4 quick deaths in a row",
        || async {
            let s = lb.status().await;
            let v = s["vacancies"][0].clone();
            (v["failed_attempts"].as_u64() >= Some(4)).then_some(v)
        },
    )
    .await;
    assert!(
        vacancy["reason"].as_str().unwrap().contains("crash loop"),
        "{vacancy}"
    );
    assert_eq!(vacancy["id"], 1);
    // Each death after the first waits 100 ms × 2^streak before the next start:
    // 400 + 800 ms at least before the fourth death, on top of four 300 ms lifetimes.
    assert!(
        started.elapsed() >= Duration::from_millis(2400),
        "{:?}",
        started.elapsed()
    );
    let starts = lb.log().matches("replica started").count();
    assert!(starts <= 6, "{starts} starts: not backed off\n{}", lb.log());
}

/// A replica that hangs (SIGSTOP) holds no request that can be repeated past the moment it
/// leaves the ring: requests already waiting on it go to the new owner then — long before the
/// response timeout (30 s by default) — on both forwarding paths. A POST waiting on it is not
/// sent again: it gets its 504 when the response timeout ends.
#[tokio::test(flavor = "multi_thread")]
async fn a_hung_replicas_waiting_requests_move_when_it_leaves_the_ring() {
    for pipelining in [true, false] {
        // Heartbeats every 500 ms, out after two misses: the requests below reach the stopped
        // replica well before it leaves the ring.
        let lb = std::sync::Arc::new(Lb::start(&format!(
            "[proxy]\npipelining = {pipelining}\nresponse_timeout_ms = 8000\n{}",
            THREE.replace("interval_ms = 100", "interval_ms = 500")
        )));
        let pid = lb.pid_of("Server 1").await;
        common::signal(pid, libc::SIGSTOP);
        let start = std::time::Instant::now();
        // Server 1 owns 84 % of the ring: most of these ids are its.
        let gets: Vec<_> = (0..12u64)
            .map(|i| {
                let lb = std::sync::Arc::clone(&lb);
                tokio::spawn(async move {
                    let id = (200_000 + i * 7_919).to_string();
                    let answer = lb.send("GET", "/home", b"", &[("X-Request-Id", &id)]).await;
                    (answer, start.elapsed())
                })
            })
            .collect();
        let post = {
            let lb = std::sync::Arc::clone(&lb);
            // H(0) = 17: slot 17 is Server 1's.
            tokio::spawn(async move {
                lb.send("POST", "/home", b"{}", &[("X-Request-Id", "0")])
                    .await
            })
        };
        for get in gets {
            let (answer, took) = get.await.unwrap();
            assert_eq!(
                answer.status, 200,
                "pipelining {pipelining}: {}",
                answer.body
            );
            assert_ne!(common::served_by(&answer.body), "Server 1");
            // Answered while Server 1 is still stopped, hence not by waiting for it, and well
            // before the 8 s response timeout.
            assert!(
                took < Duration::from_secs(5),
                "pipelining {pipelining}: a GET waited {took:?}"
            );
        }
        let post = post.await.unwrap();
        assert_eq!(post.status, 504, "pipelining {pipelining}: {}", post.body);
        common::signal(pid, libc::SIGCONT);
        assert!(lb.status().await["retries"].as_u64().unwrap() > 0);
    }
}

/// A request that could not reach its replica (connection refused) goes to the next replica in
/// ring order whatever its method and body, since none of it was sent: a POST on the streaming
/// path, a GET on the batching one. The control run with `retries = 0` shows the refusals.
#[tokio::test(flavor = "multi_thread")]
async fn requests_refused_by_their_replica_go_to_the_next_one() {
    for retries in [1, 0] {
        // "Refuse 1" closes its listening socket 1 s after start and stays alive; with 20
        // heartbeats to miss it stays in the ring for seconds while refusing connections.
        let lb = Lb::start(&common::refusing_three(&format!(
            "[proxy]\nretries = {retries}\n"
        )));
        let status = lb.status().await;
        let addr: std::net::SocketAddr = status["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["hostname"] == "Refuse 1")
            .and_then(|r| r["address"].as_str())
            .unwrap()
            .parse()
            .unwrap();
        eventually(Duration::from_secs(10), "Refuse 1 refusing", || async {
            std::net::TcpStream::connect(addr).is_err().then_some(())
        })
        .await;
        let mut answers = Vec::new();
        // H(0) = 17 and most other small ids fall in Refuse 1's 84 % of the ring.
        for id in 0..10u32 {
            let id = id.to_string();
            let headers = [("X-Request-Id", id.as_str())];
            answers.push(lb.send("POST", "/home", b"{\"x\": 1}", &headers).await);
            answers.push(lb.send("GET", "/home", b"", &headers).await);
        }
        let (n, names) = lb.rep().await;
        assert!(
            n == 3 && names.contains(&"Refuse 1".to_owned()),
            "{names:?}"
        );
        let refused = answers
            .iter()
            .filter(|a| a.status == 502 && a.body.contains("onnect"))
            .count();
        if retries == 1 {
            for answer in &answers {
                assert_eq!(answer.status, 200, "{}", answer.body);
                assert_ne!(common::served_by(&answer.body), "Refuse 1");
            }
        } else {
            assert!(refused >= 10, "only {refused} refused: {answers:?}");
        }
    }
}

/// A client whose chunked request body is malformed gets a 400 that says so, not a 502.
#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_chunked_request_body_is_a_400() {
    use std::io::Write;
    let lb = Lb::start(THREE);
    let mut stream = std::net::TcpStream::connect(lb.addr).unwrap();
    stream
        .write_all(
            b"POST /home HTTP/1.1\r\nHost: lb\r\nX-Request-Id: 5\r\n\
              Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\nzz\r\n\r\n",
        )
        .unwrap();
    let got = common::read_response(&mut stream, Duration::from_secs(10)).expect("an answer");
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    assert!(got.contains("request body"), "{got}");
}
