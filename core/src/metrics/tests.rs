use std::time::Duration;

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn workers_count_apart_and_a_scrape_sums_them() {
    let metrics = Metrics::new(2);
    let (w0, w1) = (metrics.worker(), metrics.worker());
    assert_eq!((w0.index(), w1.index()), (0, 1));
    let s1 = metrics.replica("Server 1");
    for _ in 0..3 {
        s1.cells(&w0).record(200, ms(1));
    }
    s1.cells(&w1).record(200, ms(3));
    s1.cells(&w1).record(502, Duration::from_micros(50));
    s1.cells(&w1).error(UpstreamErrorKind::Connect);
    w0.unrouted().record(503, Duration::from_micros(20));

    let scrape = metrics.scrape();
    let s = &scrape.series["Server 1"];
    assert_eq!(s.codes, BTreeMap::from([(200, 4), (502, 1)]));
    assert_eq!(s.count(), 5);
    // 50 µs ≤ 100 µs; 1 ms ≤ 1 ms; 3 ms ≤ 5 ms.
    assert_eq!(s.buckets[0], 1);
    assert_eq!(s.buckets[3], 3);
    assert_eq!(s.buckets[5], 1);
    assert_eq!(s.sum_ns, 3_000_000 + 3_000_000 + 50_000);
    assert_eq!(s.errors, [1, 0, 0, 0, 0]);
    assert_eq!(scrape.series[""].codes, BTreeMap::from([(503, 1)]));
}

#[test]
fn durations_past_the_last_bound_go_to_inf() {
    let metrics = Metrics::new(1);
    let w = metrics.worker();
    let r = metrics.replica("A");
    r.cells(&w).record(200, Duration::from_secs(11));
    r.cells(&w).record(200, Duration::from_secs(10));
    let s = &metrics.scrape().series["A"];
    assert_eq!(s.buckets[BUCKETS - 1], 1);
    assert_eq!(s.buckets[BUCKETS - 2], 1);
}

#[test]
fn a_gone_replica_keeps_its_totals_and_a_new_one_of_the_same_name_adds_to_them() {
    let metrics = Metrics::new(1);
    let w = metrics.worker();
    let first = metrics.replica("S5");
    first.cells(&w).record(200, ms(1));
    first.cells(&w).record(200, ms(1));
    drop(first);
    let scrape = metrics.scrape();
    assert_eq!(scrape.series["S5"].codes[&200], 2, "kept after the drop");
    let second = metrics.replica("S5");
    second.cells(&w).record(200, ms(1));
    assert_eq!(metrics.scrape().series["S5"].codes[&200], 3);
    drop(second);
    assert_eq!(metrics.scrape().series["S5"].codes[&200], 3);
    assert!(lock(&metrics.registry).live.is_empty());
}

#[test]
fn more_than_sixteen_codes_are_all_counted() {
    let metrics = Metrics::new(1);
    let w = metrics.worker();
    let r = metrics.replica("A");
    for code in 200..240u16 {
        r.cells(&w).record(code, ms(1));
        r.cells(&w).record(code, ms(1));
    }
    let s = &metrics.scrape().series["A"];
    assert_eq!(s.codes.len(), 40);
    assert!(s.codes.values().all(|&n| n == 2));
}

#[test]
fn in_flight_is_begun_minus_done() {
    let metrics = Metrics::new(2);
    let (w0, w1) = (metrics.worker(), metrics.worker());
    w0.started();
    w0.started();
    w1.started();
    w0.finished();
    assert_eq!(metrics.scrape().in_flight, 2);
    w0.access_dropped();
    assert_eq!(metrics.scrape().access_dropped, 1);
    metrics.access_lost(3);
    assert_eq!(
        metrics.scrape().access_dropped,
        4,
        "lines the writer lost count too"
    );
    assert_eq!(metrics.access_dropped(), 1, "the queue's drops alone");
    w1.send_timeout();
    w0.send_timeout();
    assert_eq!(metrics.scrape().send_timeouts, 2);
}

#[test]
fn retired_hostnames_are_bounded() {
    let metrics = Metrics::new(1);
    let w = metrics.worker();
    for i in 0..MAX_RETIRED + 10 {
        let r = metrics.replica(&format!("S{i}"));
        r.cells(&w).record(200, ms(1));
    }
    let scrape = metrics.scrape();
    assert_eq!(scrape.series.len(), MAX_RETIRED);
    assert!(!scrape.series.contains_key("S0"), "the oldest is forgotten");
    assert!(scrape
        .series
        .contains_key(format!("S{}", MAX_RETIRED + 9).as_str()));
}

#[test]
fn reloads_and_restarts() {
    let metrics = Metrics::new(1);
    metrics.reload(true);
    metrics.reload(false);
    metrics.reload(false);
    metrics.restarted();
    assert_eq!(metrics.reloads(), (1, 2));
    assert_eq!(metrics.restarts(), 1);
}
