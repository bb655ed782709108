//! Consistent hashing with bounded loads (`[ring] bounded_load`): a hot key no longer sends every
//! request to one replica once it has more than its share in flight.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;

use common::Lb;

/// Three slow replicas (100 ms per `/home`), so that requests pile up in flight.
fn config(bounded_load: &str) -> String {
    format!(
        r#"
[ring]
bounded_load = {bounded_load}
[health]
interval_ms = 100
[supervisor]
command = ["python3", "{}", "--slow-ms", "100"]
[[replicas]]
hostname = "Server 1"
id = 1
[[replicas]]
hostname = "Server 2"
id = 2
[[replicas]]
hostname = "Server 3"
id = 3
"#,
        common::SLOW_REPLICA
    )
}

/// 48 clients at once, all with the same key, 4 requests each: who served how many.
async fn hot_key(lb: &Arc<Lb>) -> BTreeMap<String, usize> {
    futures_util::stream::iter(0..192)
        .map(|_| {
            let lb = Arc::clone(lb);
            async move {
                let a = lb
                    .send("GET", "/home", b"", &[("X-Request-Id", "4242")])
                    .await;
                assert_eq!(a.status, 200, "{}", a.body);
                common::served_by(&a.body)
            }
        })
        .buffer_unordered(48)
        .fold(BTreeMap::new(), |mut counts, name| async move {
            *counts.entry(name).or_default() += 1;
            counts
        })
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hot_key_spreads_only_with_bounded_loads() {
    // Off: the key's owner takes all of it.
    let lb = Arc::new(Lb::start(&config("0")));
    let counts = hot_key(&lb).await;
    assert_eq!(counts.len(), 1, "{counts:?}");

    // c = 1.25: no replica holds more than ⌈1.25 · (in flight + 1) / 3⌉ = 21 of 48 in flight, so
    // the busiest one's share falls from 100 % to about c/N (42 %).
    let lb = Arc::new(Lb::start(&config("1.25")));
    assert_eq!(lb.get("/_lb/ring").await.json()["bounded_load"], 1.25);
    let counts = hot_key(&lb).await;
    eprintln!("hot key with bounded_load = 1.25: {counts:?}");
    let busiest = counts.values().copied().max().unwrap_or(0);
    assert_eq!(counts.values().sum::<usize>(), 192);
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(
        busiest * 100 <= 192 * 55,
        "the busiest replica served {busiest} of 192: {counts:?}"
    );
}

/// A bad factor is refused with its line and column, and the running setting stays.
#[tokio::test(flavor = "multi_thread")]
async fn a_bad_factor_is_refused_and_the_setting_can_change_live() {
    let lb = Lb::start(&config("0"));
    std::fs::write(&lb.config, config("0.5")).unwrap();
    common::eventually(
        std::time::Duration::from_secs(10),
        "the refusal",
        || async {
            let status = lb.status().await;
            let message = status["config"]["last_error"]["message"]
                .as_str()?
                .to_owned();
            message.contains("bounded_load").then_some(message)
        },
    )
    .await;
    std::fs::write(&lb.config, config("1.5")).unwrap();
    common::eventually(
        std::time::Duration::from_secs(10),
        "the change applied",
        || async {
            lb.log()
                .contains("configuration change: bounded_load 0 → 1.5")
                .then_some(())
        },
    )
    .await;
}
