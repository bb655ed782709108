//! The control plane cannot be stalled or killed: hostile saves of `lb.toml` (huge values,
//! hundreds of thousands of keys, oversized or special files, tables that take seconds to
//! build), a panic inside the controller — none of them keeps a failed replica from being
//! replaced, replaces a healthy one, or stops `/add` and `/rm` from working.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, save_by_rename, signal, Lb, Traffic};

/// Three replicas with fast heartbeats (and a `[ring]` table to edit).
const BASE: &str = r#"
[ring]
slots = 512

[health]
interval_ms = 100
timeout_ms = 300
fall = 3

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

/// How long a replaced replica may take here: far more than it needs (well under a second),
/// far less than a controller stalled by a hostile file takes (minutes, or forever).
const REPLACED_WITHIN: Duration = Duration::from_secs(15);

/// Server id → pid of every replica in the ring.
async fn pids(lb: &Lb) -> BTreeMap<u64, u64> {
    lb.status().await["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["id"].as_u64().unwrap(),
                r["handle"]["pid"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// [`BASE`] with the replicas that run now (replacements have new names).
async fn current(lb: &Lb) -> String {
    let mut text = BASE[..BASE.find("[[replicas]]").unwrap()].to_owned();
    for r in lb.status().await["replicas"].as_array().unwrap() {
        text.push_str(&format!(
            "[[replicas]]\nhostname = \"{}\"\nid = {}\n",
            r["hostname"].as_str().unwrap(),
            r["id"]
        ));
    }
    text
}

/// Kill replica `id` with SIGKILL and wait for the same id to serve from a new process, every
/// other replica keeping its process. Returns the new pid.
async fn kill_and_see_it_replaced(lb: &Lb, id: u64, what: &str) {
    let before = pids(lb).await;
    let victim = before[&id];
    signal(victim as u32, libc::SIGKILL);
    let after = eventually(
        REPLACED_WITHIN,
        &format!("replica {id} replaced after {what}"),
        || async {
            let now = pids(lb).await;
            (now.len() == before.len() && now.get(&id).is_some_and(|&p| p != victim)).then_some(now)
        },
    )
    .await;
    for (other, pid) in &before {
        if *other != id {
            assert_eq!(
                after.get(other),
                Some(pid),
                "healthy replica {other} was replaced after {what}; log:\n{}",
                lb.log()
            );
        }
    }
}

/// The assignment's API still answers: one replica added and removed again.
async fn api_works(lb: &Lb, what: &str) {
    let added = lb
        .ok("POST", "/add", br#"{"n": 1, "hostnames": ["Probe"]}"#)
        .await;
    assert_eq!(added.status, 200, "/add after {what}: {}", added.body);
    let removed = lb
        .ok("DELETE", "/rm", br#"{"n": 1, "hostnames": ["Probe"]}"#)
        .await;
    assert_eq!(removed.status, 200, "/rm after {what}: {}", removed.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_saves_never_stall_failover_or_the_api() {
    let lb = Arc::new(Lb::start(BASE));
    let path = lb.config.clone();
    let traffic = Traffic::start(&lb, 4);
    // Each is refused (with the reason in config.last_error) or, for the last, applied; while
    // each is being read, checked or built, a replica is killed. Each is made from the file as
    // it is then (replacements have new names, written back to it).
    let huge_value =
        |base: &str| format!("{base}\n[proxy]\nworkers = \"{}\"\n", "x".repeat(70_000));
    let many_keys = |base: &str| {
        let mut text = format!("{base}\n[limits]\n");
        let mut i = 0;
        while text.len() < 1_000_000 {
            text.push_str(&format!("k{i} = 1\n"));
            i += 1;
        }
        text
    };
    let oversized = |base: &str| format!("{base}\n# {}\n", "x".repeat(2 << 20));
    let slow_build =
        |base: &str| base.replace("slots = 512", "algorithm = \"rendezvous\"\nslots = 4194304");
    type Make = Box<dyn Fn(&str) -> String>;
    let cases: [(&str, Make, Option<&str>); 4] = [
        (
            "a 70 000-byte value",
            Box::new(huge_value),
            Some("invalid type"),
        ),
        (
            "100 000 unknown keys",
            Box::new(many_keys),
            Some("more problems not shown"),
        ),
        (
            "a 2 MiB file",
            Box::new(oversized),
            Some("at most 1048576 bytes"),
        ),
        ("a table of 4 194 304 slots", Box::new(slow_build), None),
    ];
    let mut id = 1;
    for (what, make, refused) in cases {
        save_by_rename(&path, &make(&current(&lb).await));
        kill_and_see_it_replaced(&lb, id, what).await;
        if let Some(reason) = refused {
            let error = eventually(REPLACED_WITHIN, &format!("{what} refused"), || async {
                let status = lb.status().await;
                status["config"]["last_error"]["message"]
                    .as_str()
                    .filter(|m| m.contains(reason))
                    .map(str::to_owned)
            })
            .await;
            assert!(
                error.len() < 20_000,
                "the message is bounded: {} bytes",
                error.len()
            );
        } else {
            let ring = eventually(REPLACED_WITHIN, "the large table published", || async {
                let ring = lb.status().await["ring"].clone();
                (ring["slots"] == 4_194_304).then_some(ring)
            })
            .await;
            assert_eq!(ring["algorithm"], "rendezvous");
        }
        api_works(&lb, what).await;
        id = id % 3 + 1;
    }
    // A FIFO saved as the file: refused without being opened (opening one blocks).
    let fifo = path.with_extension("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    std::fs::rename(&fifo, &path).unwrap();
    kill_and_see_it_replaced(&lb, id, "a FIFO").await;
    eventually(REPLACED_WITHIN, "the FIFO refused", || async {
        let status = lb.status().await;
        status["config"]["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not a regular file"))
            .then_some(())
    })
    .await;
    let good = current(&lb).await;
    std::fs::remove_file(&path).unwrap();
    save_by_rename(&path, &good);
    eventually(REPLACED_WITHIN, "the good file applied", || async {
        let status = lb.status().await;
        status["config"]["last_error"].is_null().then_some(())
    })
    .await;
    let answers = traffic.finish().await;
    let failed: Vec<_> = answers.iter().filter(|a| a.status != 200).collect();
    assert!(answers.len() > 100, "traffic flowed: {}", answers.len());
    assert!(
        failed.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        failed.len(),
        answers.len(),
        failed.first()
    );
    assert_eq!(lb.metric("lb_control_panics_total").await, 0);
    assert_eq!(
        lb.metric("lb_replica_restarts_total").await,
        5,
        "exactly the five killed"
    );
}

/// A panic while applying a saved file (injected with `LB_FAILPOINTS=apply`, debug builds only)
/// is caught, logged and counted; the controller keeps its state and keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panic_in_the_controller_is_caught_and_it_keeps_working() {
    let lb = Lb::start_with_env(BASE, &[("LB_FAILPOINTS", "apply")]);
    let before = pids(&lb).await;
    save_by_rename(
        &lb.config,
        &BASE.replace("interval_ms = 100", "interval_ms = 150"),
    );
    eventually(REPLACED_WITHIN, "the panic caught and counted", || async {
        (lb.metric("lb_control_panics_total").await == 1).then_some(())
    })
    .await;
    let status = lb.status().await;
    let error = status["config"]["last_error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.contains("internal error while handling a saved configuration"),
        "{status}"
    );
    assert!(lb.log().contains("failpoint apply"), "the panic is logged");
    assert_eq!(pids(&lb).await, before, "nothing was restarted");
    kill_and_see_it_replaced(&lb, 2, "a panic").await;
    api_works(&lb, "a panic").await;
    assert_eq!(lb.rep().await.0, 3);
}
