//! Ring lookup and build times, the same for Maglev and rendezvous, and a plugin's H against the
//! built-in (`cargo bench -p lb-balance`). Compare results side by side within one run; absolute
//! numbers depend on the machine.
// criterion_group! and criterion_main! generate undocumented public functions.
#![allow(missing_docs)]

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lb_balance::hash::{RingHash, SpecHash};
use lb_balance::ring::{self, Probing, RingParams};
use lb_balance::{Algorithm, Balancer};

fn params(slots: u32) -> RingParams {
    RingParams {
        slots,
        virtual_nodes: 9,
        probing: Probing::Linear,
    }
}

/// Random 6-digit request ids, the assignment's traffic.
fn request_ids() -> Vec<u64> {
    let mut rng = fastrand::Rng::with_seed(42);
    (0..4096).map(|_| rng.u64(100_000..1_000_000)).collect()
}

fn lookup(c: &mut Criterion) {
    let ids = request_ids();
    let mut group = c.benchmark_group("ring lookup");
    for (slots, replicas) in [(512u32, 3u64), (65_536, 1_000)] {
        let servers: Vec<u64> = (1..=replicas).collect();
        let ring = ring::build(params(slots), Arc::new(SpecHash), &servers).unwrap();
        group.bench_with_input(
            BenchmarkId::new(format!("M={slots}"), format!("N={replicas}")),
            &ring,
            |b, ring| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) & 4095;
                    black_box(ring.lookup(black_box(ids[i])))
                })
            },
        );
    }
    group.finish();
}

fn build(c: &mut Criterion) {
    let servers: Vec<u64> = (1..=1_000).collect();
    let mut group = c.benchmark_group("ring build");
    group.sample_size(30);
    for probing in [Probing::Linear, Probing::Quadratic] {
        let p = RingParams {
            probing,
            ..params(65_536)
        };
        group.bench_function(format!("M=65536 N=1000 {probing}"), |b| {
            b.iter(|| ring::build(p, Arc::new(SpecHash), black_box(&servers)).unwrap())
        });
    }
    group.finish();
}

/// Build the `spec` plugin (cargo does not build cdylibs for benches) and load it.
fn spec_plugin() -> Arc<dyn RingHash> {
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-build-bench");
    let status = std::process::Command::new(env!("CARGO"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "lb-hash-spec",
            "--target-dir",
        ])
        .arg(&target)
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building the spec plugin failed");
    lb_balance::plugin::resolve("spec", &[target.join("release")]).expect("load the spec plugin")
}

/// Every algorithm at Maglev's usual M = 65 537: the lookup is the same table read whatever
/// filled the table; building differs (ring O(M + N·K), Maglev O(M log M), rendezvous O(M·N)).
fn algorithms(c: &mut Criterion) {
    let ids = request_ids();
    let p = params(65_537);
    let mut group = c.benchmark_group("algorithm lookup");
    for algorithm in Algorithm::ALL {
        let servers: Vec<u64> = (1..=100).collect();
        let table = Balancer::new(algorithm, p)
            .place(Arc::new(SpecHash), &servers)
            .unwrap();
        group.bench_with_input(
            BenchmarkId::new(algorithm.name(), "M=65537 N=100"),
            &table,
            |b, table| {
                let mut i = 0;
                b.iter(|| {
                    i = (i + 1) & 4095;
                    black_box(table.lookup(black_box(ids[i])))
                })
            },
        );
    }
    group.finish();
    let mut group = c.benchmark_group("algorithm build");
    group.sample_size(10);
    for replicas in [10u64, 100] {
        let servers: Vec<u64> = (1..=replicas).collect();
        for algorithm in Algorithm::ALL {
            let balancer = Balancer::new(algorithm, p);
            group.bench_with_input(
                BenchmarkId::new(algorithm.name(), format!("M=65537 N={replicas}")),
                &servers,
                |b, servers| {
                    b.iter(|| {
                        balancer
                            .place(Arc::new(SpecHash), black_box(servers))
                            .unwrap()
                    })
                },
            );
        }
    }
    group.finish();
}

fn plugin_call(c: &mut Criterion) {
    let ids = request_ids();
    let builtin: Arc<dyn RingHash> = Arc::new(SpecHash);
    let plugin = spec_plugin();
    let mut group = c.benchmark_group("H(r)");
    for (name, hash) in [("built-in spec", builtin), ("spec plugin", plugin)] {
        group.bench_function(name, |b| {
            let mut i = 0;
            b.iter(|| {
                i = (i + 1) & 4095;
                black_box(hash.request(black_box(ids[i])))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, lookup, build, algorithms, plugin_call);
criterion_main!(benches);
