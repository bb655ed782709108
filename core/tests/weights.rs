//! Weights and plans, live: replicas of weights 1:2:3 share a Maglev table of 65 537 slots
//! within 0.1 point of 1/6, 2/6, 3/6 and requests follow it; a weight changed in the file
//! re-places the ring exactly as `POST /_lb/plan` said it would; an `/add` with weights lands
//! slot for slot on the owners its plan showed, and `lb plan` agrees with the endpoint; bad
//! weights and bad plan bodies are refused with what was wrong, nothing changed.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, Lb};
use lb_balance::hash::{RingHash, SpecHash};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(30);
const SLOTS: usize = 65_537;

/// Maglev over 65 537 slots, fast heartbeats, and the replicas `(id, weight)`.
fn config(weights: &[(u64, u32)]) -> String {
    let mut text = format!(
        "[ring]\nalgorithm = \"maglev\"\nslots = {SLOTS}\n\
         [health]\ninterval_ms = 100\ntimeout_ms = 200\n"
    );
    for (id, weight) in weights {
        text.push_str(&format!(
            "\n[[replicas]]\nhostname = \"Server {id}\"\nid = {id}\nweight = {weight}\n"
        ));
    }
    text
}

async fn ring(lb: &Lb) -> Value {
    let a = lb.get("/_lb/ring").await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.json()
}

fn owners(v: &Value) -> Vec<String> {
    v["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap().to_owned())
        .collect()
}

fn shares(owners: &[String]) -> BTreeMap<String, f64> {
    let mut counts: BTreeMap<String, f64> = BTreeMap::new();
    for o in owners {
        *counts.entry(o.clone()).or_default() += 1.0 / owners.len() as f64;
    }
    counts
}

async fn plan(lb: &Lb, body: Value) -> Value {
    let a = lb
        .send("POST", "/_lb/plan", body.to_string().as_bytes(), &[])
        .await;
    assert_eq!(a.status, 200, "{body}: {}", a.body);
    a.json()
}

async fn weights_in_status(lb: &Lb) -> BTreeMap<String, u64> {
    lb.status().await["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["hostname"].as_str().unwrap().to_owned(),
                r["weight"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn weights_share_the_table_and_plans_predict_every_change() {
    let lb = Arc::new(Lb::start(&config(&[(1, 1), (2, 2), (3, 3)])));
    let first = ring(&lb).await;
    let table = owners(&first);
    assert_eq!(table.len(), SLOTS);
    for (name, share) in shares(&table) {
        let id: f64 = name.trim_start_matches("Server ").parse().unwrap();
        assert!(
            (share - id / 6.0).abs() < 0.001,
            "{name}: {share} for weight {id} of 6"
        );
    }
    let listed: Vec<u64> = first["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["weight"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, [1, 2, 3]);
    assert_eq!(
        weights_in_status(&lb).await,
        BTreeMap::from([
            ("Server 1".to_owned(), 1),
            ("Server 2".to_owned(), 2),
            ("Server 3".to_owned(), 3)
        ])
    );

    // 10 000 random ids, 8 clients at a time: each is served by owners[H(id) mod M].
    let mut clients = Vec::new();
    for client in 0..8u64 {
        let lb = Arc::clone(&lb);
        let table = table.clone();
        clients.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(client);
            for _ in 0..1250 {
                let id = rng.u64(100_000..=999_999);
                let slot = SpecHash.request(id) % SLOTS as u64;
                let got = lb.home(&[("X-Request-Id", &id.to_string())]).await;
                assert_eq!(got, table[slot as usize], "X-Request-Id {id}");
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }

    // A weight changed in the file: planned first, then saved; the ring becomes the plan.
    let heavier = config(&[(1, 2), (2, 2), (3, 3)]);
    let planned = plan(&lb, json!({ "config": heavier })).await;
    let server_1 = &planned["replicas"][0];
    assert_eq!(
        (&server_1["weight_before"], &server_1["weight_after"]),
        (&json!(1), &json!(2))
    );
    assert!(server_1["keys_in"].as_f64().unwrap() > 0.0);
    let moved = planned["requests_moved"].as_f64().unwrap();
    let minimum = planned["requests_minimum"].as_f64().unwrap();
    assert!(
        moved <= 1.25 * minimum,
        "maglev moved {moved}, the minimum is {minimum}"
    );
    assert_eq!(owners(&ring(&lb).await), table, "a plan changes nothing");
    std::fs::write(&lb.config, &heavier).unwrap();
    let replaced = eventually(DEADLINE, "the new weight in the ring", || async {
        let r = ring(&lb).await;
        (r["replicas"][0]["weight"] == 2).then_some(r)
    })
    .await;
    assert_eq!(owners(&replaced), owners(&planned));
    assert_eq!(weights_in_status(&lb).await["Server 1"], 2);
    assert!(
        lb.log()
            .contains("configuration change: replica Server 1 weight 1 → 2 (id 1)"),
        "{}",
        lb.log()
    );

    // An /add with a weight: its plan is the ring after it, slot for slot.
    let add = json!({ "n": 1, "weights": [4] });
    let planned = plan(&lb, json!({ "add": add })).await;
    let new = planned["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["hostname"] == "Server 4")
        .expect("the plan names the new replica as /add will")
        .clone();
    assert_eq!(
        (&new["weight_before"], &new["weight_after"]),
        (&json!(0), &json!(4))
    );
    lb.ok("POST", "/add", add.to_string().as_bytes()).await;
    let after = eventually(DEADLINE, "Server 4 in the ring", || async {
        let r = ring(&lb).await;
        (r["replicas"].as_array().unwrap().len() == 4).then_some(r)
    })
    .await;
    assert_eq!(owners(&after), owners(&planned));
    assert_eq!(weights_in_status(&lb).await["Server 4"], 4);
    let metrics = lb.get("/_lb/metrics").await.body;
    assert!(
        metrics.contains("lb_replica_weight{replica=\"Server 4\"} 4\n"),
        "{metrics}"
    );
    let written = std::fs::read_to_string(&lb.config).unwrap();
    assert!(written.contains("weight = 4"), "{written}");

    // `lb plan` asks the same endpoint and agrees with it.
    let url = format!("http://{}", lb.addr);
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_lb"))
        .args([
            "plan",
            "--json",
            "--weight",
            "Server 3=1",
            "--rm",
            "Server 2",
            "--url",
            &url,
        ])
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let from_cli: Value = serde_json::from_slice(&cli.stdout).unwrap();
    let from_api = plan(
        &lb,
        json!({ "rm": { "n": 1, "hostnames": ["Server 2"] }, "weights": { "Server 3": 1 } }),
    )
    .await;
    assert_eq!(from_cli, from_api);
    assert!(!owners(&from_api).contains(&"Server 2".to_owned()));
    let table = std::process::Command::new(env!("CARGO_BIN_EXE_lb"))
        .args(["plan", "--add", "2", "--url", &url])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.status.success(),
        "{}",
        String::from_utf8_lossy(&table.stderr)
    );
    assert!(
        printed.contains("Server 5") && printed.contains("Server 6"),
        "{printed}"
    );
    assert!(printed.contains("moved: "), "{printed}");

    // Bad input: a clear 400, nothing changed.
    let before = owners(&ring(&lb).await);
    for (path, body, says) in [
        (
            "/add",
            r#"{"n": 1, "weights": [0]}"#,
            "weights[0] must be an integer from 1 to 1000, got 0",
        ),
        ("/add", r#"{"n": 1, "weights": [-1]}"#, "got -1"),
        ("/add", r#"{"n": 1, "weights": [1001]}"#, "got 1001"),
        ("/add", r#"{"n": 1, "weights": [2.5]}"#, "got 2.5"),
        (
            "/add",
            r#"{"n": 1, "weights": [1, 1]}"#,
            "'weights' lists 2 weights for n = 1",
        ),
        ("/_lb/plan", r#"{"n": 1}"#, "unknown field 'n'"),
        ("/_lb/plan", r#"[1]"#, "a plan body is"),
        (
            "/_lb/plan",
            r#"{"rm": {"n": 1}}"#,
            "must name every replica it removes",
        ),
        ("/_lb/plan", r#"{"config": "[ring\n"}"#, "line 1"),
        (
            "/_lb/plan",
            r#"{"config": "[[replicas]]\nhostname = \"a\"\nid = 1\nweight = 0\n"}"#,
            "line 4, column 10",
        ),
        (
            "/_lb/plan",
            r#"{"weights": {"Nobody": 2}}"#,
            "hostname 'Nobody' is not a replica",
        ),
    ] {
        let a = lb.send("POST", path, body.as_bytes(), &[]).await;
        assert_eq!(a.status, 400, "{path} {body}: {}", a.body);
        assert!(a.body.contains(says), "{path} {body}: {}", a.body);
    }
    assert_eq!(lb.rep().await.0, 4);
    assert_eq!(owners(&ring(&lb).await), before);

    // A bad weight saved in the file: refused with its place, the running ring kept.
    let text = std::fs::read_to_string(&lb.config).unwrap();
    std::fs::write(&lb.config, text.replace("weight = 4", "weight = 0")).unwrap();
    let error = lb.last_error(DEADLINE).await;
    assert!(
        error.contains("weight must be an integer from 1 to 1000, not 0"),
        "{error}"
    );
    assert!(error.contains("line "), "{error}");
    assert_eq!(owners(&ring(&lb).await), before);
    assert_eq!(weights_in_status(&lb).await["Server 4"], 4);
}

/// The `effective_weight` of `hostname` in `/_lb/status` (`None`: it has its whole weight).
async fn effective_weight(lb: &Lb, hostname: &str) -> Option<f64> {
    let status = lb.status().await;
    let replica = status["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["hostname"] == hostname)
        .unwrap_or_else(|| panic!("no {hostname} in {status}"))
        .clone();
    replica["effective_weight"].as_f64()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_replica_takes_its_weight_gradually_with_slow_start() {
    let text = config(&[(1, 1), (2, 1), (3, 1)])
        .replace("slots = 65537\n", "slots = 65537\nslow_start_ms = 6000\n");
    let lb = Arc::new(Lb::start(&text));
    // The first replicas of a ring start whole: nobody else serves their keys.
    assert_eq!(effective_weight(&lb, "Server 1").await, None);
    let traffic = common::Traffic::start(&lb, 4);
    lb.ok("POST", "/add", br#"{"n": 1, "weights": [2]}"#).await;
    let mut seen = Vec::new();
    let started = std::time::Instant::now();
    loop {
        match effective_weight(&lb, "Server 4").await {
            Some(w) => {
                if seen.last() != Some(&w) {
                    seen.push(w);
                }
            }
            None => break,
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the ramp did not end: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // It rose step by step from a small part of its weight of 2, never down.
    assert!(seen.len() >= 3, "{seen:?}");
    assert!(seen[0] > 0.0 && seen[0] <= 1.0, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    assert!(seen.iter().all(|&w| w < 2.0), "{seen:?}");
    // Over: the table gives it its whole weight (2 of 5), and no client saw an error.
    let table = owners(&ring(&lb).await);
    let share = shares(&table)["Server 4"];
    assert!((share - 0.4).abs() < 0.001, "{share}");
    traffic.finish_all_ok(1).await;
    assert!(lb.log().contains("slow start"), "{}", lb.log());
}
