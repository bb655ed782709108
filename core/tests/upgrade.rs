//! Binary upgrades (SIGUSR2): the new `lb` takes the listening sockets and the replicas, the old
//! one drains and exits; clients see nothing. A new binary that fails leaves the old serving.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::upgrade::{serving, status, upgrade, Successor};
use common::{alive, eventually, signal, Lb, Traffic, THREE};

/// `lb` at a path of its own the test may replace: a hard link beside the built binary (a
/// copy would be a file open for writing, which another test's fork may hold while this one
/// runs it: "text file busy").
fn copy_of_lb() -> (tempfile::TempDir, PathBuf) {
    let built = Path::new(env!("CARGO_BIN_EXE_lb"));
    let dir = tempfile::tempdir_in(built.parent().unwrap()).unwrap();
    let path = dir.path().join("lb");
    std::fs::hard_link(built, &path).unwrap();
    (dir, path)
}

/// Put the built `lb` back at `path` (a new link renamed over it).
fn reinstall_lb(path: &Path) {
    let new = path.with_extension("new");
    std::fs::hard_link(env!("CARGO_BIN_EXE_lb"), &new).unwrap();
    std::fs::rename(&new, path).unwrap();
}

/// Put `contents` (executable) at `path` the way an install does: a new file renamed over the
/// old (a running binary cannot be written in place).
fn install(path: &Path, contents: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    let new = path.with_extension("new");
    std::fs::write(&new, contents).unwrap();
    std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&new, path).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn three_upgrades_under_traffic_lose_no_request_and_keep_every_replica() {
    let (_dir, program) = copy_of_lb();
    let lb = Arc::new(Lb::start_program(&program, THREE));
    let successor = Successor::default();
    let first = serving(&lb).await;
    assert_eq!(first, (lb.pid(), 1));
    let mut replicas = lb.replica_pids().await;
    replicas.sort();
    assert_eq!(replicas.len(), 3);

    let traffic = Traffic::start(&lb, 8);
    for generation in 2..=4 {
        let (pid, now) = upgrade(&lb, &successor).await;
        assert_eq!(now, generation);
        assert!(alive(pid));
        // Requests go on through the new one before the next upgrade.
        let served = lb.served().await;
        eventually(Duration::from_secs(10), "requests served", || async {
            (lb.served().await > served + 50).then_some(())
        })
        .await;
    }
    // Each new generation answered more than 50 of the clients' requests (waited for above).
    let answered = traffic.finish_all_ok(150).await;
    eprintln!("{answered} requests, all 200, across 3 upgrades");

    // The same replica processes, adopted three times; none was restarted.
    let mut after = lb.replica_pids().await;
    after.sort();
    assert_eq!(after, replicas);
    let status = lb.status().await;
    assert!(status["vacancies"].as_array().unwrap().is_empty());
    assert!(
        status["config"]["last_error"].is_null(),
        "{}",
        status["config"]["last_error"]
    );

    // They still die with the last lb, however it ends.
    let last = successor.take().unwrap();
    signal(last, libc::SIGKILL);
    eventually(Duration::from_secs(10), "every replica gone", || async {
        replicas.iter().all(|(_, pid)| !alive(*pid)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_binary_that_fails_leaves_the_old_one_serving() {
    let (_dir, program) = copy_of_lb();
    let lb = Lb::start_program(&program, THREE);
    let successor = Successor::default();
    let replicas = lb.replica_pids().await;
    // A build that exits at start.
    install(&program, b"#!/bin/sh\necho 'a broken build' >&2\nexit 3\n");
    signal(lb.pid(), libc::SIGUSR2);
    let error = lb.last_error(Duration::from_secs(40)).await;
    assert!(error.contains("upgrade failed"), "{error}");
    assert!(error.contains("exited before it was ready"), "{error}");
    assert!(error.contains("exit status: 3"), "{error}");
    assert!(error.contains("goes on serving"), "{error}");
    assert!(
        lb.log().contains("a broken build"),
        "the new binary's own words are in the log"
    );
    // Still the same process, serving with the same replicas.
    assert_eq!(serving(&lb).await, (lb.pid(), 1));
    for _ in 0..20 {
        let id = fastrand::u32(100_000..1_000_000).to_string();
        let answer = lb.send("GET", "/home", b"", &[("X-Request-Id", &id)]).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    assert_eq!(lb.replica_pids().await, replicas);

    // A good build then upgrades as usual.
    reinstall_lb(&program);
    let (_, generation) = upgrade(&lb, &successor).await;
    assert_eq!(generation, 2);
    let mut after = lb.replica_pids().await;
    after.sort();
    let mut before = replicas;
    before.sort();
    assert_eq!(after, before);
}

/// The TLS and admin listeners are handed over too: HTTPS clients opening a connection per
/// request and the admin address are served throughout two upgrades, on the same addresses.
#[tokio::test(flavor = "multi_thread")]
async fn the_tls_and_admin_listeners_are_handed_over() {
    let certs = tempfile::tempdir().unwrap();
    lb::self_signed(&["localhost".to_owned()], certs.path()).unwrap();
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[tls]\nlisten = \"127.0.0.1:0\"\n\
         [[tls.certificates]]\ncert = \"{}\"\nkey = \"{}\"\n{THREE}",
        certs.path().join("cert.pem").display(),
        certs.path().join("key.pem").display(),
    );
    let (_dir, program) = copy_of_lb();
    let lb = Arc::new(Lb::start_program(&program, &config));
    let successor = Successor::default();
    let (admin, https) = (lb.admin.unwrap(), lb.https.unwrap());
    eventually(Duration::from_secs(20), "three replicas", || async {
        (status(&lb).await["replicas"].as_array().unwrap().len() == 3).then_some(())
    })
    .await;
    // HTTPS clients, a new TLS connection per request, without pause.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ok = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ca = certs.path().join("ca.pem");
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (stop, ok, failed, ca) = (
                Arc::clone(&stop),
                Arc::clone(&ok),
                Arc::clone(&failed),
                ca.clone(),
            );
            std::thread::spawn(move || {
                let start = std::time::Instant::now();
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && start.elapsed() < Duration::from_secs(120)
                {
                    let id = fastrand::u32(100_000..1_000_000).to_string();
                    let counter =
                        match common::fetch_https(https.port(), "localhost", &ca, "/home", &id) {
                            Some(_) => &ok,
                            None => &failed,
                        };
                    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    let https_ok = || ok.load(std::sync::atomic::Ordering::Relaxed);
    let traffic = Traffic::start(&lb, 4);
    for generation in 2..=3 {
        let (_, now) = upgrade(&lb, &successor).await;
        assert_eq!(now, generation);
        let st = status(&lb).await;
        assert_eq!(st["tls"]["listen"], https.to_string());
        assert_eq!(st["listen"], lb.addr.to_string());
        // Both kinds of clients are served by the new process before the next step.
        let (served, before) = (served_by_now(&lb).await, https_ok());
        eventually(
            Duration::from_secs(30),
            "requests through the new lb",
            || async {
                (served_by_now(&lb).await > served + 50 && https_ok() >= before + 5).then_some(())
            },
        )
        .await;
    }
    traffic.finish_all_ok(1).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    let (ok, failed) = (
        https_ok(),
        failed.load(std::sync::atomic::Ordering::Relaxed),
    );
    assert_eq!(
        failed,
        0,
        "{failed} of {} HTTPS requests failed",
        ok + failed
    );
    // The admin address is the same one, answering.
    let answer = lb.send_to(admin, "GET", "/rep", b"", &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

/// Requests the serving lb's replicas answered (per process: counters restart at an upgrade).
async fn served_by_now(lb: &Lb) -> u64 {
    status(lb).await["replicas"].as_array().map_or(0, |rs| {
        rs.iter().filter_map(|r| r["requests"].as_u64()).sum()
    })
}

/// A new binary that starts but never says it is ready is stopped after 30 s; the old one
/// serves meanwhile and after, and says why.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_binary_that_never_gets_ready_is_stopped() {
    let (_dir, program) = copy_of_lb();
    let lb = Lb::start_program(&program, THREE);
    install(&program, b"#!/bin/sh\nexec sleep 300\n");
    signal(lb.pid(), libc::SIGUSR2);
    // Served while it waits.
    for _ in 0..10 {
        let answer = lb.get("/home").await;
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    let error = lb.last_error(Duration::from_secs(60)).await;
    assert!(
        error.contains("was not ready within 30s; it was stopped"),
        "{error}"
    );
    assert_eq!(serving(&lb).await, (lb.pid(), 1));
    let answer = lb.get("/home").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

/// SIGTERM while an upgrade waits for the new process: lb shuts down and takes the new process
/// with it (nothing of lb is left running).
#[tokio::test(flavor = "multi_thread")]
async fn a_shutdown_during_an_upgrade_stops_the_new_process() {
    let (_dir, program) = copy_of_lb();
    let mut lb = Lb::start_program(&program, THREE);
    let replicas = lb.replica_pids().await;
    install(&program, b"#!/bin/sh\nexec sleep 300\n");
    signal(lb.pid(), libc::SIGUSR2);
    let new: u32 = eventually(Duration::from_secs(20), "the new process", || async {
        let log = lb.log();
        let line = log
            .lines()
            .find(|l| l.contains("waiting for it to be ready"))?;
        line.split("pid=")
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
    .await;
    assert!(alive(new));
    let status = lb.signal_and_wait(libc::SIGTERM, Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    eventually(
        Duration::from_secs(10),
        "the new process stopped",
        || async { (!alive(new)).then_some(()) },
    )
    .await;
    for (name, pid) in replicas {
        assert!(!alive(pid), "{name} (pid {pid}) outlived lb");
    }
    lb.addr = "127.0.0.1:9".parse().unwrap(); // nothing to talk to any more
}
