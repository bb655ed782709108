//! Everyday operation: running `lb` never changes a tracked file, signals behave like nginx's.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{alive, eventually, Lb};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn lb_check_in(dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_lb"))
        .arg("check")
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh clone, `lb` with no options, `/add`, `/rm`, a replica killed and replaced, a restart:
/// `git status` stays empty, and the changes survive the restart.
#[tokio::test(flavor = "multi_thread")]
async fn running_in_a_clone_never_changes_a_tracked_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let tmp = tempfile::tempdir().unwrap();
    let clone = tmp.path().join("clone");
    git(&root, &["clone", "--quiet", ".", clone.to_str().unwrap()]);
    let clean = |when: &str| {
        let status = git(&clone, &["status", "--porcelain", "--untracked-files=all"]);
        assert_eq!(status, "", "after {when}");
    };
    // Before the first start, `lb check` checks what lb would start with: the shipped default.
    assert!(lb_check_in(&clone).starts_with("config/lb.toml: ok (3 replicas"));

    let lb = Lb::start_in(&clone);
    assert_eq!(lb.status().await["config"]["path"], "config/lb.local.toml");
    lb.ok("POST", "/add", br#"{"n": 1, "hostnames": ["S5"]}"#)
        .await;
    lb.ok("DELETE", "/rm", br#"{"n": 1, "hostnames": ["Server 1"]}"#)
        .await;
    let (victim, pid) = lb.replica_pids().await.remove(0);
    common::signal(pid, libc::SIGKILL);
    let after = eventually(Duration::from_secs(20), "the replacement", || async {
        let (n, names) = lb.rep().await;
        (n == 3 && !names.contains(&victim)).then_some(names)
    })
    .await;
    clean("/add, /rm and a replacement");
    let runtime = std::fs::read_to_string(clone.join("config/lb.local.toml")).unwrap();
    assert!(runtime.contains("hostname = \"S5\""), "{runtime}");
    assert!(lb_check_in(&clone).starts_with("config/lb.local.toml: ok (3 replicas"));
    drop(lb);

    let again = Lb::start_in(&clone);
    assert_eq!(again.rep().await.1, after, "REST changes survive a restart");
    drop(again);
    clean("a restart");
}

/// SIGHUP re-reads the file and says so; `lb` and its replicas keep running.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_rereads_the_configuration_and_keeps_the_replicas() {
    let mut lb = Lb::start(common::THREE);
    let before = lb.replica_pids().await;
    assert_eq!(
        lb.signal_and_wait(libc::SIGHUP, Duration::from_millis(300)),
        None
    );
    eventually(Duration::from_secs(5), "the SIGHUP log line", || async {
        lb.log().contains("configuration unchanged").then_some(())
    })
    .await;
    assert!(lb.log().contains("SIGHUP: re-reading the configuration"));
    // Now a real change, with the file watcher's events on top: still applied once, said how.
    let text = std::fs::read_to_string(&lb.config).unwrap();
    assert!(text.contains("fall = 2\n"));
    std::fs::write(&lb.config, text.replace("fall = 2\n", "fall = 3\n")).unwrap();
    lb.signal_and_wait(libc::SIGHUP, Duration::ZERO);
    eventually(Duration::from_secs(5), "the change in the log", || async {
        lb.log()
            .contains("configuration change: health.fall 2 → 3")
            .then_some(())
    })
    .await;
    assert_eq!(lb.replica_pids().await, before);
    assert!(before.iter().all(|(_, pid)| alive(*pid)));
    assert_eq!(lb.get("/rep").await.status, 200);
}

/// SIGTERM: requests in flight finish, replicas stop, exit status 0.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_requests_finish_then_stops_everything() {
    let fixture = common::SLOW_REPLICA;
    let lb = Arc::new(Lb::start(&format!(
        r#"
[supervisor]
command = ["python3", "{fixture}", "--slow-ms", "700"]
[[replicas]]
hostname = "Slow 1"
id = 1
[[replicas]]
hostname = "Slow 2"
id = 2
"#
    )));
    let pids: Vec<u32> = lb
        .replica_pids()
        .await
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let requests: Vec<_> = (0..6)
        .map(|i| {
            let lb = Arc::clone(&lb);
            let id = (100_000 + i * 7).to_string();
            tokio::spawn(
                async move { lb.send("GET", "/home", b"", &[("X-Request-Id", &id)]).await },
            )
        })
        .collect();
    eventually(Duration::from_secs(5), "requests in flight", || async {
        let status = lb.status().await;
        let in_flight: u64 = status["replicas"]
            .as_array()?
            .iter()
            .filter_map(|r| r["in_flight"].as_u64())
            .sum();
        (in_flight == 6).then_some(())
    })
    .await;
    let exit = {
        // SIGTERM while 6 requests wait on 700 ms replicas; none may be cut off.
        let lb = Arc::clone(&lb);
        tokio::task::spawn_blocking(move || {
            common::signal(lb.pid(), libc::SIGTERM);
        })
    };
    exit.await.unwrap();
    for request in requests {
        let answer = request.await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let mut lb = Arc::into_inner(lb).expect("no other reference");
    let status = lb
        .signal_and_wait(0, Duration::from_secs(15))
        .expect("lb exited");
    assert_eq!(status.code(), Some(0), "{}", lb.log());
    for pid in pids {
        assert!(!alive(pid), "replica {pid} still runs");
    }
    let log = lb.log();
    assert!(log.contains("SIGTERM: shutting down"), "{log}");
}
