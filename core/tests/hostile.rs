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

/// With `[admin] token`, `/add`, `/rm`, `/_lb/status` and `/_lb/plugins` need it; `/rep`,
/// `/_lb/ring` and proxied paths do not.
#[tokio::test(flavor = "multi_thread")]
async fn the_admin_token_protects_what_changes_state_or_reveals_processes() {
    let lb = Lb::start(&format!("[admin]\ntoken = \"s3cret\"\n{}", common::THREE));
    let bearer = [("Authorization", "Bearer s3cret")];
    for (method, path, body) in [
        ("POST", "/add", r#"{"n": 1}"#),
        ("DELETE", "/rm", r#"{"n": 1}"#),
        ("GET", "/_lb/status", ""),
        ("GET", "/_lb/plugins", ""),
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
    assert_eq!(lb.get("/home").await.status, 200);
    let added = lb.send("POST", "/add", br#"{"n": 1}"#, &bearer).await;
    assert_eq!(added.status, 200, "{}", added.body);
    assert_eq!(
        lb.send("GET", "/_lb/status", b"", &bearer).await.status,
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
    for path in ["/_lb/status", "/_lb/ring"] {
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
