//! Requests land where the ring says, and a burst of concurrent requests all succeed.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::{Lb, THREE};
use futures_util::StreamExt;
use lb_balance::hash::{request_id_from_header, RingHash, SpecHash};

#[tokio::test(flavor = "multi_thread")]
async fn request_id_is_served_by_the_ring_owner_of_its_slot() {
    routes_by_ring(THREE).await;
}

/// The same with a connection per request instead of batching connections.
#[tokio::test(flavor = "multi_thread")]
async fn request_id_is_served_by_the_ring_owner_without_pipelining() {
    routes_by_ring(&format!("{THREE}\n[proxy]\npipelining = false\n")).await;
}

async fn routes_by_ring(config: &str) {
    let lb = Lb::start(config);
    let ring = lb.get("/_lb/ring").await.json();
    let slots = ring["slots"].as_u64().unwrap();
    let owners: Vec<String> = ring["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap().to_owned())
        .collect();
    let mut rng = fastrand::Rng::with_seed(7);
    let mut ids: Vec<String> = (0..300)
        .map(|_| rng.u64(100_000..=999_999).to_string())
        .collect();
    // Small ids, u64::MAX, and non-numeric ids (hashed with FNV-1a).
    ids.extend(
        [
            "0",
            "3",
            "5",
            "6",
            "10",
            "18446744073709551615",
            "abc",
            "user-42",
            " 77 ",
        ]
        .map(String::from),
    );
    let mut served = std::collections::HashSet::new();
    for id in &ids {
        let numeric = request_id_from_header(id.as_bytes());
        let slot = SpecHash.request(numeric) % slots;
        let expected = &owners[slot as usize];
        let got = lb.home(&[("X-Request-Id", id)]).await;
        assert_eq!(&got, expected, "X-Request-Id {id:?} (slot {slot})");
        served.insert(got);
    }
    // With 300 random ids every replica owns some of them (the spec split is ~84/5/11 %).
    assert_eq!(served.len(), 3, "{served:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_requests_at_200_in_flight_all_succeed() {
    let lb = Arc::new(Lb::start(THREE));
    let (_, names) = lb.rep().await;
    let total = 10_000usize;
    let counts: HashMap<String, usize> = futures_util::stream::iter(0..total)
        .map(|_| {
            let lb = Arc::clone(&lb);
            async move { lb.home(&[]).await }
        })
        .buffer_unordered(200)
        .fold(HashMap::new(), |mut counts, name| async move {
            *counts.entry(name).or_default() += 1;
            counts
        })
        .await;
    assert_eq!(counts.values().sum::<usize>(), total);
    for name in counts.keys() {
        assert!(names.contains(name), "{name} is not a replica");
    }
    // Random 6-digit ids through the spec hash: Server 1 owns most of the ring.
    assert!(counts["Server 1"] > counts["Server 2"], "{counts:?}");
    assert!(counts["Server 1"] > counts["Server 3"], "{counts:?}");
    let status = lb.status().await;
    let proxied: u64 = status["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(proxied, total as u64);
}
