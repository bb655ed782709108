//! `lb.toml` is the source of truth: edits are applied live, bad files are refused without
//! disturbing anything, and REST changes are written back with the user's comments intact.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{eventually, save_by_rename, Lb, Traffic};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(15);

/// A configuration with comments, fast heartbeats, and the given replicas and ring.
fn config(replicas: &[(&str, u64)], virtual_nodes: u32, probing: &str) -> String {
    config_with(replicas, virtual_nodes, probing, "")
}

/// The same, with extra TOML (e.g. a `[supervisor]` section) after `[health]`.
fn config_with(replicas: &[(&str, u64)], virtual_nodes: u32, probing: &str, extra: &str) -> String {
    let mut text = format!(
        "# Managed by hand and by the load balancer.\n\
         [ring]\n\
         slots = 512 # M\n\
         virtual_nodes = {virtual_nodes}\n\
         probing = \"{probing}\"\n\
         \n\
         [health]\n\
         interval_ms = 100\n\
         timeout_ms = 200\n\
         {extra}\n"
    );
    for (hostname, id) in replicas {
        text.push_str(&format!(
            "\n# replica {id}\n[[replicas]]\nhostname = \"{hostname}\"\nid = {id}\n"
        ));
    }
    text
}

const S123: [(&str, u64); 3] = [("Server 1", 1), ("Server 2", 2), ("Server 3", 3)];

async fn ring(lb: &Lb) -> Value {
    lb.get("/_lb/ring").await.json()
}

async fn wait_for_ring(lb: &Lb, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(DEADLINE, what, || async {
        let r = ring(lb).await;
        check(&r).then_some(r)
    })
    .await
}

fn hostnames(ring: &Value) -> Vec<String> {
    ring["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["hostname"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn edits_add_remove_and_retune_live() {
    let lb = Lb::start(&config(&S123, 9, "linear"));
    // Add a replica.
    let four = [S123[0], S123[1], S123[2], ("Server 4", 4)];
    std::fs::write(&lb.config, config(&four, 9, "linear")).unwrap();
    wait_for_ring(&lb, "Server 4 in the ring", |r| hostnames(r).len() == 4).await;
    assert_eq!(
        lb.rep().await,
        (4, four.iter().map(|(h, _)| h.to_string()).collect())
    );
    // Remove one.
    let without_2 = [S123[0], S123[2], ("Server 4", 4)];
    std::fs::write(&lb.config, config(&without_2, 9, "linear")).unwrap();
    wait_for_ring(&lb, "Server 2 gone", |r| {
        hostnames(r) == ["Server 1", "Server 3", "Server 4"]
    })
    .await;
    // Change virtual_nodes.
    std::fs::write(&lb.config, config(&without_2, 5, "linear")).unwrap();
    let r = wait_for_ring(&lb, "5 virtual nodes", |r| r["virtual_nodes"] == 5).await;
    for replica in r["replicas"].as_array().unwrap() {
        assert_eq!(replica["slots"].as_array().unwrap().len(), 5);
    }
    // Change probing.
    std::fs::write(&lb.config, config(&without_2, 5, "quadratic")).unwrap();
    wait_for_ring(&lb, "quadratic probing", |r| r["probing"] == "quadratic").await;
    let status = lb.status().await;
    assert_eq!(status["config"]["last_error"], Value::Null);
    // Every request is served by a replica of the new ring.
    for id in 0..100u32 {
        let got = lb.home(&[("X-Request-Id", &id.to_string())]).await;
        assert!(
            ["Server 1", "Server 3", "Server 4"].contains(&got.as_str()),
            "{got}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_file_keeps_the_running_ring_until_a_valid_one() {
    let lb = Lb::start(&config(&S123, 9, "linear"));
    let before = ring(&lb).await;
    std::fs::write(
        &lb.config,
        "[ring]\nslots = 512\nvirtual_nodes = \"nine\"\n",
    )
    .unwrap();
    let error = eventually(DEADLINE, "the error in status", || async {
        let s = lb.status().await;
        let e = &s["config"]["last_error"];
        (!e.is_null()).then(|| e.clone())
    })
    .await;
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("line 3"), "{message}");
    assert!(error["at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(ring(&lb).await, before);
    assert_eq!(lb.rep().await.0, 3);
    lb.home(&[]).await;
    // K·N > M is refused just the same.
    std::fs::write(&lb.config, config(&S123, 200, "linear")).unwrap();
    eventually(DEADLINE, "the K·N > M error", || async {
        let s = lb.status().await;
        s["config"]["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("exceeds 512 slots"))
            .then_some(())
    })
    .await;
    assert_eq!(ring(&lb).await, before);
    // A valid file is applied and clears the error.
    std::fs::write(&lb.config, config(&S123, 7, "linear")).unwrap();
    wait_for_ring(&lb, "7 virtual nodes", |r| r["virtual_nodes"] == 7).await;
    assert_eq!(lb.status().await["config"]["last_error"], Value::Null);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_file_is_refused() {
    let lb = Lb::start(&config(&S123, 9, "linear"));
    let before = ring(&lb).await;
    std::fs::write(&lb.config, "").unwrap();
    eventually(DEADLINE, "the empty file refused", || async {
        let s = lb.status().await;
        s["config"]["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("is empty"))
            .then_some(())
    })
    .await;
    assert_eq!(ring(&lb).await, before);
    lb.home(&[]).await;
    // Writing the same configuration back is a change again, and clears the error.
    std::fs::write(&lb.config, config(&S123, 9, "linear")).unwrap();
    eventually(DEADLINE, "the error cleared", || async {
        lb.status().await["config"]["last_error"]
            .is_null()
            .then_some(())
    })
    .await;
    assert_eq!(ring(&lb).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn rename_and_symlink_swaps_are_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.toml");
    let b = dir.path().join("b.toml");
    let link = dir.path().join("lb.toml");
    std::fs::write(&a, config(&S123, 9, "linear")).unwrap();
    std::os::unix::fs::symlink(&a, &link).unwrap();
    let lb = Lb::start_file(&link);
    // An editor-style save of the file the link points to.
    save_by_rename(&a, &config(&S123, 8, "linear"));
    wait_for_ring(&lb, "8 virtual nodes", |r| r["virtual_nodes"] == 8).await;
    // Swap the link to another file (write a new link, rename it over the old one).
    std::fs::write(&b, config(&S123[..2], 6, "linear")).unwrap();
    let tmp_link = dir.path().join("lb.toml.new");
    std::os::unix::fs::symlink(&b, &tmp_link).unwrap();
    std::fs::rename(&tmp_link, &link).unwrap();
    wait_for_ring(&lb, "the swapped file", |r| {
        r["virtual_nodes"] == 6 && hostnames(r).len() == 2
    })
    .await;
    // Writes back go to the link's target; the link stays a link.
    lb.ok("POST", "/add", br#"{"n": 1, "hostnames": ["S9"]}"#)
        .await;
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(std::fs::read_to_string(&b)
        .unwrap()
        .contains("hostname = \"S9\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_changes_are_written_back_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    std::fs::write(&path, config(&S123, 9, "linear")).unwrap();
    let lb = Lb::start_file(&path);
    lb.ok("POST", "/add", br#"{"n": 1, "hostnames": ["S5"]}"#)
        .await;
    lb.ok("DELETE", "/rm", br#"{"n": 1, "hostnames": ["Server 2"]}"#)
        .await;
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("hostname = \"S5\"\nid = 4"), "{text}");
    assert!(!text.contains("Server 2"), "{text}");
    assert!(
        text.starts_with("# Managed by hand and by the load balancer."),
        "{text}"
    );
    assert!(text.contains("slots = 512 # M"), "{text}");
    assert!(text.contains("# replica 3"), "{text}");
    // The LB's own write is not mistaken for an edit.
    let status = lb.status().await;
    assert_eq!(status["config"]["last_error"], Value::Null);
    assert_eq!(status["config"]["write_error"], Value::Null);
    let before = ring(&lb).await;
    drop(lb);
    let lb = Lb::start_file(&path);
    assert_eq!(ring(&lb).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn replacement_of_a_dead_replica_is_written_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    std::fs::write(&path, config(&S123, 9, "linear")).unwrap();
    let lb = Lb::start_file(&path);
    let (victim, pid) = lb.replica_pids().await.remove(0);
    common::signal(pid, libc::SIGKILL);
    let text = eventually(DEADLINE, "the replacement in the file", || async {
        let text = std::fs::read_to_string(&path).unwrap();
        (!text.contains(&victim)).then_some(text)
    })
    .await;
    // The file names the replacement as soon as the victim is out; /rep lists it once it joined.
    let names = eventually(DEADLINE, "the replacement in the ring", || async {
        let (n, names) = lb.rep().await;
        (n == 3).then_some(names)
    })
    .await;
    assert_ne!(names[0], victim);
    assert!(
        text.contains(&format!("hostname = \"{}\"\nid = 1", names[0])),
        "{text}"
    );
}

/// `--listen` on the command line wins over the file: a save that changes `listen` moves
/// nothing, says why in `config.last_error`, and the rest of it is applied.
#[tokio::test(flavor = "multi_thread")]
async fn a_saved_listen_does_not_move_a_listener_given_on_the_command_line() {
    let lb = Lb::start(&config(&S123, 9, "linear"));
    let text = format!(
        "listen = \"127.0.0.1:5999\"\n{}",
        config(&S123, 8, "linear")
    );
    std::fs::write(&lb.config, text).unwrap();
    wait_for_ring(&lb, "8 virtual nodes", |r| r["virtual_nodes"] == 8).await;
    let error = lb.last_error(DEADLINE).await;
    assert!(error.contains("--listen 127.0.0.1:0"), "{error}");
    let status = lb.status().await;
    assert_eq!(status["config"]["needs_restart"], serde_json::json!([]));
    assert_eq!(status["listen"], lb.addr.to_string());
}

/// Clients send requests without pause while the file is rewritten 50 times, valid and invalid
/// alternating; every valid version adds or removes a replica and changes the ring. Every single
/// response must be a 200 from a replica. The replicas take 30 ms per request and die on SIGTERM
/// without finishing (tests/fixtures/slow_replica.py), so requests are always in flight when a
/// replica leaves: only a real drain keeps them all.
#[tokio::test(flavor = "multi_thread")]
async fn fifty_rewrites_under_traffic_drop_nothing() {
    let fixture = common::SLOW_REPLICA;
    let slow =
        format!("[supervisor]\ncommand = [\"python3\", \"{fixture}\", \"--slow-ms\", \"30\"]\n");
    let config = |replicas: &[(&str, u64)], k, probing| config_with(replicas, k, probing, &slow);
    let lb = Arc::new(Lb::start(&config(&S123, 9, "linear")));
    // Server 1 owns most of the ring (~84 % of request ids): it leaves and comes back 12 times.
    let other = [S123[1], S123[2], ("Server 4", 4)];
    let traffic = Traffic::start(&lb, 8);
    for round in 0..50 {
        if round % 2 == 1 {
            std::fs::write(&lb.config, format!("[ring\nbroken = {round}\n")).unwrap();
            eventually(DEADLINE, "the invalid file refused", || async {
                let s = lb.status().await;
                (!s["config"]["last_error"].is_null()).then_some(())
            })
            .await;
        } else if round % 4 == 0 {
            save_by_rename(&lb.config, &config(&other, 8, "quadratic"));
            wait_for_ring(&lb, "Server 1 out, Server 4 in, K = 8", |r| {
                r["virtual_nodes"] == 8 && hostnames(r) == ["Server 2", "Server 3", "Server 4"]
            })
            .await;
        } else {
            std::fs::write(&lb.config, config(&S123, 9, "linear")).unwrap();
            wait_for_ring(&lb, "Server 1 back, K = 9", |r| {
                r["virtual_nodes"] == 9 && hostnames(r) == ["Server 1", "Server 2", "Server 3"]
            })
            .await;
        }
    }
    let answers = traffic.finish().await;
    let mut served = std::collections::HashSet::new();
    for a in &answers {
        assert_eq!(a.status, 200, "{}", a.body);
        let name = common::served_by(&a.body);
        assert!(
            ["Server 1", "Server 2", "Server 3", "Server 4"].contains(&name.as_str()),
            "{name}"
        );
        served.insert(name);
    }
    let total = answers.len();
    assert!(total >= 200, "only {total} requests were sent");
    assert_eq!(served.len(), 4, "{served:?}");
    eprintln!("{total} requests, all 200, across 50 rewrites");
}

/// Turning pipelining off for one of lb's own replicas keeps that replica process: the same
/// backend with the new setting, never stopped and replaced.
#[tokio::test(flavor = "multi_thread")]
async fn a_pipelining_change_keeps_the_replica_process() {
    let lb = Lb::start(&config(&S123, 9, "linear"));
    let pid = lb.pid_of("Server 2").await;
    let text = std::fs::read_to_string(&lb.config).unwrap();
    let edited = text.replacen(
        "hostname = \"Server 2\"\nid = 2\n",
        "hostname = \"Server 2\"\nid = 2\npipelining = false\n",
        1,
    );
    assert_ne!(edited, text);
    std::fs::write(&lb.config, edited).unwrap();
    eventually(DEADLINE, "pipelining off for Server 2", || async {
        let status = lb.status().await;
        let replica = status["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["hostname"] == "Server 2")
            .cloned()?;
        (replica["pipelining"] == false).then_some(())
    })
    .await;
    // What must not happen can only be watched for: 500 ms is five heartbeat intervals, more
    // than a stop (a few ms after the change) and `fall` missed heartbeats take.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(common::alive(pid), "Server 2's process was stopped");
    assert_eq!(lb.pid_of("Server 2").await, pid);
    assert!(!lb.log().contains("replica failed"), "{}", lb.log());
    assert_eq!(lb.rep().await.0, 3);
}
