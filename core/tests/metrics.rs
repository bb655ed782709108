//! `GET /_lb/metrics`: exact counts for known traffic, one count per request whatever its
//! retries, `replica=""` for requests `lb` answers itself, configuration reloads and replica
//! restarts, and a page `promtool check metrics` accepts.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{eventually, Lb, THREE};

const DEADLINE: Duration = Duration::from_secs(15);

/// One scrape: every sample by its name and labels as written (`name{a="x",b="y"}`).
#[derive(Debug, Clone)]
struct Scrape {
    samples: BTreeMap<String, f64>,
    text: String,
}

impl Scrape {
    /// A sample's value; 0 when it is not there (a counter that has not counted yet).
    fn value(&self, key: &str) -> f64 {
        self.samples.get(key).copied().unwrap_or(0.0)
    }

    /// Sum of the samples of `name` whose labels contain every one of `labels`.
    fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.samples
            .iter()
            .filter(|(k, _)| {
                k.split('{').next() == Some(name) && labels.iter().all(|l| k.contains(l))
            })
            .map(|(_, v)| v)
            .sum()
    }
}

async fn scrape(lb: &Lb) -> Scrape {
    let answer = lb.get("/_lb/metrics").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.headers["content-type"], "text/plain; version=0.0.4",
        "the exposition format's content type"
    );
    let mut samples = BTreeMap::new();
    for line in answer.body.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').expect("name and value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
        assert!(
            samples.insert(key.to_owned(), value).is_none(),
            "duplicate sample {key}"
        );
    }
    Scrape {
        samples,
        text: answer.body,
    }
}

fn requests(replica: &str, code: u16) -> String {
    format!("lb_requests_total{{replica=\"{replica}\",code=\"{code}\"}}")
}

fn histogram_count(replica: &str) -> String {
    format!("lb_request_duration_seconds_count{{replica=\"{replica}\"}}")
}

/// `promtool check metrics` on `page`: passes, or (without promtool) skips with a notice unless
/// `LB_REQUIRE_PROMTOOL=1` (scripts/test.sh sets it and installs promtool).
fn promtool_check(page: &str) {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if std::env::var("LB_REQUIRE_PROMTOOL").as_deref() == Ok("1") {
                panic!("promtool is not installed and LB_REQUIRE_PROMTOOL=1 (apt-get install prometheus)");
            }
            eprintln!("skipping the promtool check: promtool is not installed");
            return;
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n---- page ----\n{page}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Known traffic gives exact counter deltas by replica and status, a histogram whose `_count`
/// is the number of requests, and a page promtool accepts.
#[tokio::test(flavor = "multi_thread")]
async fn known_traffic_gives_exact_counts_and_a_valid_page() {
    let lb = Lb::start(THREE);
    let before = scrape(&lb).await;
    let mut expected: BTreeMap<(String, u16), u64> = BTreeMap::new();
    for id in 0..60u32 {
        let id = (id * 7919).to_string();
        let name = lb.home(&[("X-Request-Id", &id)]).await;
        *expected.entry((name, 200)).or_default() += 1;
    }
    // The owner of request id `id`: H(id) = id² + 2·id + 17 (the spec hash) picks its slot.
    let ring = lb.get("/_lb/ring").await.json();
    let owner = |id: u64| {
        let slot = (id * id + 2 * id + 17) % 512;
        ring["owners"][slot as usize].as_str().unwrap().to_owned()
    };
    // A path the replicas do not have: their 404 is answered 400, counted as such.
    for id in 0..5u64 {
        let answer = lb
            .send("GET", "/nothing", b"", &[("X-Request-Id", &id.to_string())])
            .await;
        assert_eq!(answer.status, 400);
        *expected.entry((owner(id), 400)).or_default() += 1;
    }
    // POSTs go over the streaming path; the replicas answer them 405.
    for _ in 0..4 {
        let answer = lb
            .send("POST", "/home", b"{}", &[("X-Request-Id", "3")])
            .await;
        assert_eq!(answer.status, 405);
        *expected.entry((owner(3), 405)).or_default() += 1;
    }
    let after = scrape(&lb).await;
    let mut total = 0;
    for ((replica, code), n) in &expected {
        let key = requests(replica, *code);
        assert_eq!(
            after.value(&key) - before.value(&key),
            *n as f64,
            "{key}\n{}",
            after.text
        );
        total += n;
    }
    assert_eq!(
        after.sum("lb_requests_total", &[]) - before.sum("lb_requests_total", &[]),
        total as f64,
        "no other request counted (the scrapes and /_lb/ring are not)"
    );
    for name in ["Server 1", "Server 2", "Server 3"] {
        let served: u64 = expected
            .iter()
            .filter(|((r, _), _)| r == name)
            .map(|(_, n)| n)
            .sum();
        let key = histogram_count(name);
        assert_eq!(
            after.value(&key) - before.value(&key),
            served as f64,
            "{key}"
        );
        let inf = format!("lb_request_duration_seconds_bucket{{replica=\"{name}\",le=\"+Inf\"}}");
        assert_eq!(after.value(&inf), after.value(&key));
        assert_eq!(
            after.value(&format!("lb_replica_up{{replica=\"{name}\"}}")),
            1.0
        );
        for kind in ["connect", "reset", "timeout", "bad_response", "tls"] {
            let key = format!("lb_upstream_errors_total{{replica=\"{name}\",kind=\"{kind}\"}}");
            assert_eq!(after.samples.get(&key), Some(&0.0), "{key}");
        }
    }
    assert_eq!(after.sum("lb_ring_slots", &[]), 512.0);
    assert_eq!(after.value("lb_replicas"), 3.0);
    assert_eq!(after.value("lb_inflight_requests"), 0.0);
    assert_eq!(after.value("lb_upstream_retries_total"), 0.0);
    for name in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_cpu_seconds_total",
        "process_start_time_seconds",
    ] {
        assert!(after.value(name) > 0.0, "{name}\n{}", after.text);
    }
    promtool_check(&after.text);
}

/// Requests `lb` answers before choosing a replica are counted under `replica=""`.
#[tokio::test(flavor = "multi_thread")]
async fn requests_without_a_replica_are_counted_under_an_empty_replica() {
    let lb = Lb::start("");
    for _ in 0..3 {
        assert_eq!(lb.get("/home").await.status, 503);
    }
    let page = scrape(&lb).await;
    assert_eq!(page.value(&requests("", 503)), 3.0, "{}", page.text);
    assert_eq!(page.value(&histogram_count("")), 3.0);
    assert_eq!(page.value("lb_replicas"), 0.0);
    assert!(
        !page.text.contains("lb_upstream_errors_total{replica=\"\""),
        "no upstream errors for requests that never went upstream"
    );
    promtool_check(&page.text);
}

/// A request that a refusing replica could not take goes to the next one: counted once, under
/// the replica that answered, with the retry and the connect error counted apart.
#[tokio::test(flavor = "multi_thread")]
async fn retried_requests_are_counted_once_under_the_replica_that_answered() {
    // "Refuse 1" refuses connections while it stays in the ring (common::refusing_three).
    let lb = Lb::start(&common::refusing_three(""));
    let addr: std::net::SocketAddr = lb.status().await["replicas"]
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
    let before = scrape(&lb).await;
    let mut served: BTreeMap<String, u64> = BTreeMap::new();
    // H(0) = 17 and most other small ids fall in Refuse 1's 84 % of the ring.
    for id in 0..10u32 {
        let id = id.to_string();
        for method in ["GET", "POST"] {
            let answer = lb
                .send(method, "/home", b"", &[("X-Request-Id", &id)])
                .await;
            assert_eq!(answer.status, 200, "{}", answer.body);
            *served.entry(common::served_by(&answer.body)).or_default() += 1;
        }
    }
    assert!(!served.contains_key("Refuse 1"));
    let after = scrape(&lb).await;
    let delta = |key: &str| after.value(key) - before.value(key);
    assert_eq!(
        after.sum("lb_requests_total", &[]) - before.sum("lb_requests_total", &[]),
        20.0,
        "one count per request\n{}",
        after.text
    );
    for (name, n) in &served {
        assert_eq!(delta(&requests(name, 200)), *n as f64, "{name}");
    }
    let retries = delta("lb_upstream_retries_total");
    assert!(retries >= 10.0, "{retries} retries");
    assert_eq!(
        delta("lb_upstream_errors_total{replica=\"Refuse 1\",kind=\"connect\"}"),
        retries,
        "each retry follows one refused attempt\n{}",
        after.text
    );
    promtool_check(&after.text);
}

/// No answer in time, no retry left: a 504 under the replica, and a timeout.
#[tokio::test(flavor = "multi_thread")]
async fn a_timeout_is_counted_as_a_504_and_an_upstream_timeout() {
    let lb = Lb::start(common::NO_RETRY_NO_WAIT);
    let pid = lb.pid_of("Server 1").await;
    common::signal(pid, libc::SIGSTOP);
    // H(0) = 17: slot 17 belongs to Server 1.
    let answer = lb.send("GET", "/home", b"", &[("X-Request-Id", "0")]).await;
    common::signal(pid, libc::SIGCONT);
    assert_eq!(answer.status, 504, "{}", answer.body);
    let page = scrape(&lb).await;
    assert_eq!(page.value(&requests("Server 1", 504)), 1.0, "{}", page.text);
    assert_eq!(
        page.value("lb_upstream_errors_total{replica=\"Server 1\",kind=\"timeout\"}"),
        1.0
    );
}

/// Saves of the file, SIGHUP, `/add` and `/rm` count as reloads, a refused save as a failure;
/// a killed replica's replacement as a restart.
#[tokio::test(flavor = "multi_thread")]
async fn reloads_and_restarts_are_counted() {
    let lb = Lb::start(THREE);
    let reloads = |page: &Scrape| {
        (
            page.value("lb_config_reloads_total{result=\"success\"}"),
            page.value("lb_config_reloads_total{result=\"failure\"}"),
        )
    };
    assert_eq!(reloads(&scrape(&lb).await), (0.0, 0.0));

    // A rejected save.
    let text = std::fs::read_to_string(&lb.config).unwrap();
    std::fs::write(&lb.config, format!("{text}\n[ring]\nslots = \"oops\"\n")).unwrap();
    eventually(DEADLINE, "a failed reload", || async {
        (reloads(&scrape(&lb).await) == (0.0, 1.0)).then_some(())
    })
    .await;
    // A good one.
    std::fs::write(
        &lb.config,
        text.replace("interval_ms = 100", "interval_ms = 150"),
    )
    .unwrap();
    eventually(DEADLINE, "a successful reload", || async {
        (reloads(&scrape(&lb).await) == (1.0, 1.0)).then_some(())
    })
    .await;
    // SIGHUP re-reads (unchanged: a successful reload that changes nothing).
    common::signal(lb.pid(), libc::SIGHUP);
    eventually(DEADLINE, "SIGHUP's reload", || async {
        (reloads(&scrape(&lb).await) == (2.0, 1.0)).then_some(())
    })
    .await;
    // /add and /rm; an /rm of a replica that is not there is refused.
    lb.ok("POST", "/add", br#"{"n": 1, "hostnames": ["S4"]}"#)
        .await;
    assert_eq!(
        lb.send("DELETE", "/rm", br#"{"n": 1, "hostnames": ["S9"]}"#, &[])
            .await
            .status,
        400
    );
    lb.ok("DELETE", "/rm", br#"{"n": 1, "hostnames": ["S4"]}"#)
        .await;
    let page = scrape(&lb).await;
    assert_eq!(reloads(&page), (4.0, 2.0), "{}", page.text);

    // A killed replica is replaced with a new name: one restart, the new one up.
    assert_eq!(
        page.value("lb_replica_restarts_total"),
        0.0,
        "no replica replaced yet; log:\n{}",
        lb.log()
    );
    let pid = lb.pid_of("Server 2").await;
    common::signal(pid, libc::SIGKILL);
    let page = eventually(DEADLINE, "a replacement in the ring", || async {
        let page = scrape(&lb).await;
        let up = page.sum("lb_replica_up", &[]);
        (page.value("lb_replica_restarts_total") == 1.0 && up == 3.0).then_some(page)
    })
    .await;
    assert!(
        !page.text.contains("lb_replica_up{replica=\"Server 2\"}"),
        "{}",
        page.text
    );
    promtool_check(&page.text);
}
