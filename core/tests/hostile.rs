//! Hostile or unlucky conditions that must not hurt anyone else (issue "hard to break").

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{eventually, Lb};

/// An `/add` whose replica never answers holds nothing up: a replica killed meanwhile is
/// replaced at once, and other `/add`s and `/rm`s are answered while the bad one is pending.
#[tokio::test(flavor = "multi_thread")]
async fn a_pending_add_never_delays_failover() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/slow_replica.py"
    );
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
