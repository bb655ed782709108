//! `[ring] algorithm`: the ring, Maglev and rendezvous each fill the slot → replica table; the
//! algorithm changes live (file save), requests follow `owners[H(id) mod M]` whatever it is,
//! switching back to the ring restores the very same table, and a bad algorithm or a Maglev
//! table whose size is not a prime is refused with line and column while the running table
//! stays.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::{eventually, Lb};
use lb_balance::hash::{RingHash, SpecHash};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(20);

/// Maglev wants a prime; every algorithm here uses the same M so that only the algorithm
/// changes between two versions of the file.
const SLOTS: u64 = 65_537;

/// Three replicas, fast heartbeats, and `ring` as the body of `[ring]`.
fn config(ring: &str) -> String {
    format!(
        "# Algorithms test.\n\
         [ring]\n\
         {ring}\n\
         [health]\n\
         interval_ms = 100\n\
         timeout_ms = 200\n\
         \n\
         [[replicas]]\nhostname = \"Server 1\"\nid = 1\n\
         [[replicas]]\nhostname = \"Server 2\"\nid = 2\n\
         [[replicas]]\nhostname = \"Server 3\"\nid = 3\n"
    )
}

fn with_algorithm(algorithm: &str) -> String {
    config(&format!("algorithm = \"{algorithm}\"\nslots = {SLOTS}"))
}

async fn ring(lb: &Lb) -> Value {
    let a = lb.get("/_lb/ring").await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.json()
}

async fn wait_for_algorithm(lb: &Lb, algorithm: &str) -> Value {
    eventually(DEADLINE, &format!("algorithm {algorithm}"), || async {
        let r = ring(lb).await;
        (r["algorithm"] == algorithm).then_some(r)
    })
    .await
}

fn owners(ring: &Value) -> Vec<String> {
    ring["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap().to_owned())
        .collect()
}

/// Slots per hostname.
fn counts(owners: &[String]) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for o in owners {
        *counts.entry(o.as_str()).or_default() += 1;
    }
    counts
}

/// Requests with numeric `X-Request-Id`s are served by `owners[H(id) mod M]`.
async fn routes_by_owners(lb: &Lb, ring: &Value, seed: u64) {
    let owners = owners(ring);
    let m = ring["slots"].as_u64().unwrap();
    assert_eq!(owners.len() as u64, m);
    let mut rng = fastrand::Rng::with_seed(seed);
    for _ in 0..60 {
        let id = rng.u64(100_000..=999_999);
        let slot = SpecHash.request(id) % m;
        let got = lb.home(&[("X-Request-Id", &id.to_string())]).await;
        assert_eq!(
            got, owners[slot as usize],
            "{}: X-Request-Id {id} (slot {slot})",
            ring["algorithm"]
        );
    }
}

async fn last_error(lb: &Lb) -> Value {
    lb.status().await["config"]["last_error"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_algorithm_changes_live_and_the_ring_comes_back_identical() {
    let lb = Lb::start(&config(&format!("slots = {SLOTS}")));
    let first = ring(&lb).await;
    assert_eq!(first["algorithm"], "ring");
    assert_eq!(first["virtual_nodes"], 9);
    assert_eq!(first["probing"], "linear");
    for replica in first["replicas"].as_array().unwrap() {
        assert_eq!(replica["slots"].as_array().unwrap().len(), 9);
    }
    routes_by_owners(&lb, &first, 1).await;

    // Ring → Maglev: a new table of the same shape; every replica owns ⌊M/3⌋ or ⌈M/3⌉ slots
    // (65 537 = 3 · 21 845 + 2).
    std::fs::write(&lb.config, with_algorithm("maglev")).unwrap();
    let maglev = wait_for_algorithm(&lb, "maglev").await;
    assert_eq!(maglev["slots"], SLOTS);
    assert_eq!(maglev["virtual_nodes"], 0);
    assert_eq!(maglev["probing"], "none");
    assert_eq!(maglev["hash"], "spec");
    for replica in maglev["replicas"].as_array().unwrap() {
        // No virtual nodes: which slots a replica serves is in `owners`.
        assert_eq!(replica["slots"], serde_json::json!([]));
    }
    let maglev_owners = owners(&maglev);
    assert_ne!(maglev_owners, owners(&first));
    for (name, count) in counts(&maglev_owners) {
        assert!((21_845..=21_846).contains(&count), "{name}: {count}");
    }
    routes_by_owners(&lb, &maglev, 2).await;
    assert!(
        lb.log()
            .contains("configuration change: algorithm ring → maglev"),
        "{}",
        lb.log()
    );
    assert_eq!(lb.status().await["ring"]["algorithm"], "maglev");

    // Maglev → rendezvous.
    std::fs::write(&lb.config, with_algorithm("rendezvous")).unwrap();
    let rendezvous = wait_for_algorithm(&lb, "rendezvous").await;
    let rendezvous_owners = owners(&rendezvous);
    assert_ne!(rendezvous_owners, maglev_owners);
    assert_eq!(counts(&rendezvous_owners).len(), 3);
    routes_by_owners(&lb, &rendezvous, 3).await;
    assert!(lb
        .log()
        .contains("configuration change: algorithm maglev → rendezvous"));

    // Back to the ring: the very same table and virtual nodes as at the start.
    std::fs::write(&lb.config, with_algorithm("ring")).unwrap();
    let again = wait_for_algorithm(&lb, "ring").await;
    assert_eq!(again, first);
    routes_by_owners(&lb, &again, 4).await;
    assert!(lb
        .log()
        .contains("configuration change: algorithm rendezvous → ring"));
    assert_eq!(last_error(&lb).await, Value::Null);

    // And Maglev again gives the same Maglev table: a pure function of the ids.
    std::fs::write(&lb.config, with_algorithm("maglev")).unwrap();
    assert_eq!(
        owners(&wait_for_algorithm(&lb, "maglev").await),
        maglev_owners
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_algorithm_or_a_non_prime_maglev_table_is_refused_and_the_table_stays() {
    let lb = Lb::start(&with_algorithm("maglev"));
    let before = ring(&lb).await;
    assert_eq!(before["algorithm"], "maglev");

    // Line 3 is `algorithm = "hrw"`; its value starts in column 13.
    std::fs::write(&lb.config, with_algorithm("hrw")).unwrap();
    let error = eventually(DEADLINE, "the unknown algorithm refused", || async {
        let e = last_error(&lb).await;
        (!e.is_null()).then_some(e)
    })
    .await;
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("line 3, column 13"), "{message}");
    assert!(
        message.contains("hrw") && message.contains("rendezvous"),
        "{message}"
    );
    assert_eq!(ring(&lb).await, before);
    routes_by_owners(&lb, &before, 5).await;

    // Maglev over 65 536 slots (not a prime): pointed at `slots` (line 4, column 9).
    std::fs::write(&lb.config, config("algorithm = \"maglev\"\nslots = 65536")).unwrap();
    let message = eventually(DEADLINE, "the non-prime table refused", || async {
        let e = last_error(&lb).await;
        e["message"]
            .as_str()
            .filter(|m| m.contains("prime"))
            .map(str::to_owned)
    })
    .await;
    assert!(message.contains("line 4, column 9"), "{message}");
    assert!(
        message.contains("the nearest primes are 65521 and 65537"),
        "{message}"
    );
    assert_eq!(ring(&lb).await, before);
    routes_by_owners(&lb, &before, 6).await;

    // A good file is applied and clears the error.
    std::fs::write(&lb.config, with_algorithm("rendezvous")).unwrap();
    wait_for_algorithm(&lb, "rendezvous").await;
    assert_eq!(last_error(&lb).await, Value::Null);
}

#[test]
fn lb_check_names_the_algorithm_and_refuses_a_non_prime_maglev_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lb.toml");
    let check = |text: &str| {
        std::fs::write(&path, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_lb"))
            .arg("check")
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, text) = check(&with_algorithm("maglev"));
    assert!(ok, "{text}");
    assert!(
        text.contains("ok (3 replicas, algorithm maglev, 65537 slots, hash \"spec\")"),
        "{text}"
    );
    let (ok, text) = check(&config("algorithm = \"maglev\""));
    assert!(!ok);
    assert!(
        text.contains("line 3, column 13: algorithm \"maglev\" needs a prime number of slots"),
        "{text}"
    );
}
