//! The measured table of docs/ALGORITHMS.md: balance and disruption of the ring, Maglev and
//! rendezvous over the same number of slots.
//!
//! ```sh
//! cargo run --release -p lb-balance --example algorithms            # M = 65537
//! cargo run --release -p lb-balance --example algorithms -- 509     # another M (a prime)
//! ```
//!
//! For N = 3, 5, 10, 50 replicas (server ids 1..=N) and every algorithm it prints, as Markdown:
//!
//! - max/avg slots: the largest share of slots any replica owns over the average 1/N;
//! - max/avg requests: the same for the 900 000 six-digit request ids 100000..=999999 routed
//!   with the assignment's `H(r) = r² + 2r + 17`;
//! - removing one: the share of slots whose owner changed, as the mean and the worst over every
//!   choice of the removed replica (the ideal mean is 1/N), and the worst share that moved
//!   *beyond* the removed replica's own slots (ideal: 0);
//! - adding replica N + 1: the share of slots that moved (ideal: 1/(N + 1) when balanced), and
//!   the share that moved between old replicas instead of to the new one (ideal: 0).
//!
//! The share of slots that move is the share of keys that move when keys spread evenly over the
//! slots. The ring uses `K = 9` virtual nodes and linear probing with the assignment's `Φ`.
//! Maglev is left out when M is not a prime.
// An example binary: its items need no documentation.
#![allow(missing_docs)]

use std::sync::Arc;

use lb_balance::compare::{moved, owner_ids};
use lb_balance::hash::SpecHash;
use lb_balance::ring::{Probing, RingParams};
use lb_balance::{Algorithm, Balancer, Placement};

fn table(algorithm: Algorithm, slots: u32, ids: &[u64]) -> Placement {
    let params = RingParams {
        slots,
        virtual_nodes: 9,
        probing: Probing::Linear,
    };
    Balancer::new(algorithm, params)
        .place(Arc::new(SpecHash), ids)
        .expect("the table builds")
}

fn max_over_avg(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    let max = *counts.iter().max().unwrap_or(&0);
    max as f64 * counts.len() as f64 / total as f64
}

fn main() {
    let slots: u32 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("M is a number"))
        .unwrap_or(65_537);
    println!("M = {slots}");
    println!();
    println!(
        "| N | algorithm | max/avg slots | max/avg requests | removing one: moved, mean (worst) | beyond its own slots (worst) | adding one: moved | between old replicas |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for n in [3u64, 5, 10, 50] {
        let ids: Vec<u64> = (1..=n).collect();
        for algorithm in Algorithm::ALL {
            if algorithm == Algorithm::Maglev && !lb_balance::maglev::is_prime(slots) {
                continue;
            }
            let full = table(algorithm, slots, &ids);
            let slot_counts: Vec<u64> = full.slot_counts().into_iter().map(u64::from).collect();
            let mut requests = vec![0u64; ids.len()];
            for r in 100_000..=999_999u64 {
                requests[full.lookup(r).expect("members")] += 1;
            }
            let before = owner_ids(&full);
            let removals: Vec<_> = ids
                .iter()
                .map(|&gone| {
                    let rest: Vec<u64> = ids.iter().copied().filter(|&id| id != gone).collect();
                    moved(&before, &owner_ids(&table(algorithm, slots, &rest)), gone)
                })
                .collect();
            let mean = removals.iter().map(|r| r.all).sum::<f64>() / removals.len() as f64;
            let worst = removals.iter().map(|r| r.all).fold(0.0, f64::max);
            let worst_beyond = removals.iter().map(|r| r.beyond).fold(0.0, f64::max);
            let grown: Vec<u64> = (1..=n + 1).collect();
            let added = moved(&before, &owner_ids(&table(algorithm, slots, &grown)), n + 1);
            println!(
                "| {n} | {algorithm} | {:.3} | {:.3} | {:.2} % ({:.2} %) | {:.2} % | {:.2} % | {:.2} % |",
                max_over_avg(&slot_counts),
                max_over_avg(&requests),
                100.0 * mean,
                100.0 * worst,
                100.0 * worst_beyond,
                100.0 * added.all,
                100.0 * added.beyond,
            );
        }
    }
}
