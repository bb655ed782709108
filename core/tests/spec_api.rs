//! SPEC §3, row by row, over real HTTP against a real `lb` with real replica processes; and every
//! case the assignment leaves open answers 400 (or 413) and changes nothing.

mod common;

use common::{Lb, THREE};

const REP_3: &str = r#"{"message": {"N": 3, "replicas": ["Server 1", "Server 2", "Server 3"]}, "status": "successful"}"#;

#[tokio::test(flavor = "multi_thread")]
async fn rep_is_byte_exact() {
    let lb = Lb::start(THREE);
    let a = lb.get("/rep").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["content-type"], "application/json");
    assert_eq!(a.body, REP_3);
}

#[tokio::test(flavor = "multi_thread")]
async fn add_with_and_without_hostnames() {
    let lb = Lb::start(THREE);
    let a = lb
        .ok(
            "POST",
            "/add",
            br#"{"n": 4, "hostnames": ["S5", "S4", "S10", "S11"]}"#,
        )
        .await;
    assert_eq!(
        a.body,
        r#"{"message": {"N": 7, "replicas": ["Server 1", "Server 2", "Server 3", "S5", "S4", "S10", "S11"]}, "status": "successful"}"#
    );
    // Missing names are generated; every new replica answers /home through the ring.
    lb.ok("POST", "/add", br#"{"n": 2}"#).await;
    let (n, names) = lb.rep().await;
    assert_eq!(n, 9);
    assert_eq!(names.len(), 9);
    let mut seen = std::collections::HashSet::new();
    for id in 0..3000u32 {
        seen.insert(lb.home(&[("X-Request-Id", &id.to_string())]).await);
    }
    for name in &seen {
        assert!(names.contains(name), "{name} served but not in /rep");
    }
    // Ids are the server ids: 4..=9 were taken in order of addition.
    let status = lb.status().await;
    let ids: Vec<u64> = status["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, (1..=9).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn add_error_row_is_byte_exact() {
    let lb = Lb::start(THREE);
    let a = lb
        .send(
            "POST",
            "/add",
            br#"{"n": 1, "hostnames": ["S5", "S4"]}"#,
            &[],
        )
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.body,
        r#"{"message": "<Error> Length of hostname list is more than newly added instances", "status": "failure"}"#
    );
    assert_eq!(lb.get("/rep").await.body, REP_3);
}

#[tokio::test(flavor = "multi_thread")]
async fn rm_named_and_random() {
    let lb = Lb::start(THREE);
    let before = lb.replica_pids().await;
    let a = lb
        .ok("DELETE", "/rm", br#"{"n": 2, "hostnames": ["Server 2"]}"#)
        .await;
    let v = a.json();
    assert_eq!(v["status"], "successful");
    assert_eq!(v["message"]["N"], 1);
    let left: Vec<&str> = v["message"]["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(left.len(), 1);
    assert_ne!(left[0], "Server 2");
    assert_eq!(lb.rep().await, (1, vec![left[0].to_owned()]));
    // The removed replicas' processes are gone once /rm answered.
    for (name, pid) in before {
        assert_eq!(common::alive(pid), name == left[0], "{name} (pid {pid})");
    }
    // All traffic now goes to the one left.
    for id in 0..50u32 {
        assert_eq!(lb.home(&[("X-Request-Id", &id.to_string())]).await, left[0]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rm_error_row_is_byte_exact() {
    let lb = Lb::start(THREE);
    let a = lb
        .send(
            "DELETE",
            "/rm",
            br#"{"n": 1, "hostnames": ["Server 1", "Server 2"]}"#,
            &[],
        )
        .await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.body,
        r#"{"message": "<Error> Length of hostname list is more than removable instances", "status": "failure"}"#
    );
    assert_eq!(lb.get("/rep").await.body, REP_3);
}

#[tokio::test(flavor = "multi_thread")]
async fn proxied_paths_and_unknown_paths() {
    let lb = Lb::start(THREE);
    let a = lb.get("/home").await;
    assert_eq!(a.status, 200);
    assert!(a
        .body
        .starts_with(r#"{"message": "Hello from Server: Server "#));
    assert!(a.body.ends_with(r#"", "status": "successful"}"#));
    let hb = lb.get("/heartbeat").await;
    assert_eq!((hb.status, hb.body.as_str()), (200, ""));
    // Query strings go through; routing uses the path only for the error message.
    assert_eq!(lb.get("/home?x=1&y=2").await.status, 200);
    let a = lb.get("/other").await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.body,
        r#"{"message": "<Error> '/other' endpoint does not exist in server replicas", "status": "failure"}"#
    );
    let a = lb.get("/deep/path?q=1").await;
    assert_eq!(a.status, 400);
    assert!(a.body.contains("'/deep/path' endpoint"), "{}", a.body);
    // Methods are forwarded as they are: the replica itself refuses POST /home.
    assert_eq!(lb.send("POST", "/home", b"x", &[]).await.status, 405);
}

#[tokio::test(flavor = "multi_thread")]
async fn open_cases_answer_400_and_change_nothing() {
    let lb = Lb::start(THREE);
    let big = format!(r#"{{"n": 1, "hostnames": ["{}"]}}"#, "x".repeat(70_000));
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        ("POST", "/add", b"not json".to_vec(), 400, "not valid JSON"),
        ("POST", "/add", b"".to_vec(), 400, "not valid JSON"),
        ("POST", "/add", b"[1, 2]".to_vec(), 400, "JSON object"),
        ("POST", "/add", br#"{"n": "2"}"#.to_vec(), 400, "integer"),
        ("POST", "/add", br#"{"n": 1.5}"#.to_vec(), 400, "integer"),
        ("POST", "/add", br#"{"n": 0}"#.to_vec(), 400, "at least 1"),
        ("POST", "/add", br#"{"n": -1}"#.to_vec(), 400, "at least 1"),
        (
            "POST",
            "/add",
            br#"{"n": 1000}"#.to_vec(),
            400,
            "at most 64",
        ),
        (
            "POST",
            "/add",
            br#"{"n": 2, "hostnames": ["A", "A"]}"#.to_vec(),
            400,
            "more than once",
        ),
        (
            "POST",
            "/add",
            br#"{"n": 1, "hostnames": ["Server 1"]}"#.to_vec(),
            400,
            "already a replica",
        ),
        (
            "POST",
            "/add",
            br#"{"n": 1, "hostnames": "S4"}"#.to_vec(),
            400,
            "list of strings",
        ),
        (
            "POST",
            "/add",
            br#"{"n": 1, "hostnames": [4]}"#.to_vec(),
            400,
            "list of strings",
        ),
        (
            "POST",
            "/add",
            br#"{"n": 1, "hostnames": ["bad/name"]}"#.to_vec(),
            400,
            "contains '/'",
        ),
        (
            "POST",
            "/add",
            format!(r#"{{"n": 1, "hostnames": ["{}"]}}"#, "y".repeat(64)).into_bytes(),
            400,
            "1 to 63",
        ),
        (
            "POST",
            "/add",
            br#"{"n": 1, "extra": true}"#.to_vec(),
            400,
            "unknown field 'extra'",
        ),
        // 3 + 60 replicas × 9 virtual nodes do not fit 512 slots.
        (
            "POST",
            "/add",
            br#"{"n": 60}"#.to_vec(),
            400,
            "exceeds 512 slots",
        ),
        (
            "POST",
            "/add",
            big.clone().into_bytes(),
            413,
            "larger than 65536",
        ),
        ("DELETE", "/rm", b"{".to_vec(), 400, "not valid JSON"),
        ("DELETE", "/rm", br#"{"n": 0}"#.to_vec(), 400, "at least 1"),
        ("DELETE", "/rm", br#"{"n": 4}"#.to_vec(), 400, "only 3"),
        (
            "DELETE",
            "/rm",
            br#"{"n": 1, "hostnames": ["S99"]}"#.to_vec(),
            400,
            "'S99' is not a replica",
        ),
        (
            "DELETE",
            "/rm",
            br#"{"n": 2, "hostnames": ["Server 1", "Server 1"]}"#.to_vec(),
            400,
            "more than once",
        ),
        (
            "DELETE",
            "/rm",
            br#"{"hostnames": ["Server 1"]}"#.to_vec(),
            400,
            "'n' is required",
        ),
        ("DELETE", "/rm", big.into_bytes(), 413, "larger than 65536"),
        ("GET", "/add", b"".to_vec(), 405, "accepts POST only"),
        ("POST", "/rm", b"".to_vec(), 405, "accepts DELETE only"),
        ("POST", "/rep", b"".to_vec(), 405, "accepts GET only"),
        ("GET", "/_lb/nothing", b"".to_vec(), 404, "not an endpoint"),
    ];
    for (method, path, body, status, needle) in cases {
        let a = lb.send(method, path, &body, &[]).await;
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        assert_eq!(a.status, status, "{method} {path} {shown}: {}", a.body);
        let v = a.json();
        assert_eq!(v["status"], "failure", "{}", a.body);
        let message = v["message"].as_str().unwrap();
        assert!(message.starts_with("<Error> "), "{message}");
        assert!(
            message.contains(needle),
            "{method} {path} {shown}: {message}"
        );
        assert_eq!(
            lb.get("/rep").await.body,
            REP_3,
            "after {method} {path} {shown}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn no_replicas_is_503_in_the_failure_shape() {
    let lb = Lb::start("");
    assert_eq!(
        lb.get("/rep").await.body,
        r#"{"message": {"N": 0, "replicas": []}, "status": "successful"}"#
    );
    let a = lb.get("/home").await;
    assert_eq!(a.status, 503);
    assert_eq!(a.json()["status"], "failure");
    // And it recovers once a replica is added.
    assert_eq!(
        lb.send("POST", "/add", br#"{"n": 1}"#, &[]).await.status,
        200
    );
    assert_eq!(lb.home(&[]).await, "Server 1");
}

#[tokio::test(flavor = "multi_thread")]
async fn status_and_ring_describe_the_running_state() {
    let lb = Lb::start(THREE);
    let s = lb.status().await;
    assert_eq!(s["N"], 3);
    assert_eq!(s["supervisor"], "process");
    assert_eq!(s["ring"]["slots"], 512);
    assert_eq!(s["ring"]["virtual_nodes"], 9);
    assert_eq!(s["ring"]["probing"], "linear");
    assert_eq!(s["ring"]["hash"], "spec");
    assert_eq!(s["config"]["path"], lb.config.display().to_string());
    for r in s["replicas"].as_array().unwrap() {
        let pid = r["handle"]["pid"].as_u64().unwrap() as u32;
        assert!(common::alive(pid));
        assert!(r["address"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert!(r["healthy"].is_boolean());
    }
    let ring = lb.get("/_lb/ring").await.json();
    assert_eq!(ring["slots"], 512);
    assert_eq!(ring["owners"].as_array().unwrap().len(), 512);
    // The assignment's Φ with linear probing, computed by hand (see ring.rs tests).
    let slots: Vec<Vec<u64>> = ring["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["slots"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_u64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(slots[0], [26, 29, 34, 41, 50, 61, 74, 89, 106]);
    assert_eq!(slots[1], [30, 32, 37, 44, 53, 64, 77, 92, 109]);
    assert_eq!(slots[2], [35, 38, 42, 49, 58, 69, 82, 97, 114]);
    assert_eq!(ring["owners"][0], "Server 1");
    assert_eq!(ring["owners"][115], "Server 1");
    assert_eq!(ring["owners"][114], "Server 3");
    assert_eq!(ring["owners"][27], "Server 1");
    assert_eq!(ring["owners"][30], "Server 2");
}
