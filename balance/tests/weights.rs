//! Weights: a replica of weight `w` serves about `w/Σw` of the slots in every algorithm, a
//! weight change moves little, bad weights are refused, and weights of 1 change nothing.

use std::sync::Arc;

use lb_balance::compare::owner_ids;
use lb_balance::hash::SpecHash;
use lb_balance::ring::RingParams;
use lb_balance::{Balancer, PlaceError, MAX_WEIGHT};

const MAGLEV: Balancer = Balancer::Maglev { slots: 65_537 };
const RENDEZVOUS: Balancer = Balancer::Rendezvous { slots: 65_537 };

/// Each member's share of the slots, in member order.
fn shares(balancer: Balancer, ids: &[u64], weights: &[u32]) -> Vec<f64> {
    let table = balancer
        .place_weighted(Arc::new(SpecHash), ids, weights)
        .unwrap();
    let m = f64::from(table.slots());
    table
        .slot_counts()
        .iter()
        .map(|&c| f64::from(c) / m)
        .collect()
}

#[test]
fn weights_one_to_three_share_the_slots_one_to_three() {
    let ids = [1, 2, 3];
    let weights = [1, 2, 3];
    let want = [1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0];
    for (balancer, within) in [(MAGLEV, 0.001), (RENDEZVOUS, 0.01)] {
        let got = shares(balancer, &ids, &weights);
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= within,
                "{balancer}: shares {got:?}, want {want:?} within {within}"
            );
        }
    }
    // The ring places K·w virtual nodes per replica.
    let ring = Balancer::Ring(RingParams::default())
        .place_weighted(Arc::new(SpecHash), &ids, &weights)
        .unwrap();
    for (member, &w) in weights.iter().enumerate() {
        assert_eq!(ring.virtual_slots(member).len(), 9 * w as usize);
    }
    assert_eq!(ring.weights(), &weights);
}

#[test]
fn the_rings_extra_virtual_nodes_continue_phi() {
    // Server 1 (weight 1) places Φ(1, 0..9) first; server 2 (weight 2) then Φ(2, j) for
    // j = 0..18. Φ(i, j) = i² + j² + 2j + 25 (mod 512): server 1 at 26, 29, 34, 41, 50, 61, 74,
    // 89, 106; server 2 at 29 (taken → 30), 32, 37, 44, 53, 64, 77, 92, 109, 128, 149, 172,
    // 197, 224, 253, 284, 317, 352.
    let ring = Balancer::Ring(RingParams::default())
        .place_weighted(Arc::new(SpecHash), &[1, 2], &[1, 2])
        .unwrap();
    assert_eq!(ring.virtual_slots(0), [26, 29, 34, 41, 50, 61, 74, 89, 106]);
    assert_eq!(
        ring.virtual_slots(1),
        [30, 32, 37, 44, 53, 64, 77, 92, 109, 128, 149, 172, 197, 224, 253, 284, 317, 352]
    );
}

#[test]
fn weights_of_one_build_the_same_tables_as_none() {
    let ids = [4, 1, 7, 2, 9];
    for balancer in [
        Balancer::Ring(RingParams::default()),
        Balancer::Maglev { slots: 509 },
        Balancer::Rendezvous { slots: 512 },
    ] {
        let plain = balancer.place(Arc::new(SpecHash), &ids).unwrap();
        let ones = balancer
            .place_weighted(Arc::new(SpecHash), &ids, &[1; 5])
            .unwrap();
        assert_eq!(owner_ids(&plain), owner_ids(&ones), "{balancer}");
        // Equal weights other than 1 too (rendezvous scores by hash alone then).
        let twos = balancer
            .place_weighted(Arc::new(SpecHash), &ids, &[2; 5])
            .unwrap();
        if !matches!(balancer, Balancer::Ring(_)) {
            assert_eq!(owner_ids(&plain), owner_ids(&twos), "{balancer}");
        }
    }
}

#[test]
fn a_weight_change_with_rendezvous_moves_slots_only_to_that_replica() {
    let ids = [1, 2, 3, 4, 5];
    let before = RENDEZVOUS.place(Arc::new(SpecHash), &ids).unwrap();
    let after = RENDEZVOUS
        .place_weighted(Arc::new(SpecHash), &ids, &[1, 1, 2, 1, 1])
        .unwrap();
    let (before, after) = (owner_ids(&before), owner_ids(&after));
    let mut moved = 0;
    for (b, a) in before.iter().zip(&after) {
        if b != a {
            assert_eq!(
                *a, 3,
                "a slot moved from {b} to {a}, not to the reweighted replica"
            );
            moved += 1;
        }
    }
    // 3 goes from 1/5 to 2/6 of the slots: about 13.3 % of them move.
    let share = f64::from(moved) / 65_537.0;
    assert!((share - (2.0 / 6.0 - 1.0 / 5.0)).abs() < 0.01, "{share}");
}

#[test]
fn a_weight_change_with_maglev_moves_at_most_a_quarter_more_than_needed() {
    let ids = [1, 2, 3, 4, 5];
    let before = MAGLEV.place(Arc::new(SpecHash), &ids).unwrap();
    let after = MAGLEV
        .place_weighted(Arc::new(SpecHash), &ids, &[1, 1, 2, 1, 1])
        .unwrap();
    let gained = i64::from(after.slot_counts()[2]) - i64::from(before.slot_counts()[2]);
    let moved = owner_ids(&before)
        .iter()
        .zip(owner_ids(&after))
        .filter(|(b, a)| **b != *a)
        .count() as i64;
    assert!(gained > 0);
    assert!(
        moved as f64 <= 1.25 * gained as f64,
        "{moved} slots moved where {gained} had to"
    );
}

#[test]
fn bad_weights_are_refused_with_the_reason() {
    let ring = Balancer::Ring(RingParams::default());
    for weight in [0, MAX_WEIGHT + 1] {
        let err = ring
            .place_weighted(Arc::new(SpecHash), &[1, 2], &[1, weight])
            .unwrap_err();
        assert_eq!(
            err,
            PlaceError::InvalidWeight {
                server_id: 2,
                weight
            }
        );
        assert!(err.to_string().contains("from 1 to 1000"), "{err}");
    }
    assert_eq!(
        MAGLEV
            .place_weighted(Arc::new(SpecHash), &[1, 2], &[1, 2, 3])
            .unwrap_err(),
        PlaceError::WeightCount {
            replicas: 2,
            weights: 3
        }
    );
    // K·Σw > M: 9 × (50 + 7) = 513 > 512.
    let err = ring
        .place_weighted(Arc::new(SpecHash), &[1, 2], &[50, 7])
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "K·Σw > M: total weight 57 × 9 virtual nodes = 513 exceeds 512 slots"
    );
    assert_eq!(ring.check_weighted_capacity(&[50, 6]), Ok(()));
    assert!(ring.check_weighted_capacity(&[50, 7]).is_err());
}

#[test]
fn a_weighted_rendezvous_table_falls_back_by_score() {
    // A slot's fallback is the member it would go to if its owner left: the table without it.
    let ids = [1, 2, 3, 4];
    let weights = [3, 1, 2, 1];
    let table = Balancer::Rendezvous { slots: 512 }
        .place_weighted(Arc::new(SpecHash), &ids, &weights)
        .unwrap();
    for slot in 0..512 {
        let owner = table.owner_of_slot(slot).unwrap();
        let next = table.next_member(slot, |m| m == owner).unwrap();
        let (rest, rest_weights): (Vec<u64>, Vec<u32>) = ids
            .iter()
            .zip(weights)
            .enumerate()
            .filter(|&(m, _)| m != owner)
            .map(|(_, (&id, w))| (id, w))
            .unzip();
        let without = Balancer::Rendezvous { slots: 512 }
            .place_weighted(Arc::new(SpecHash), &rest, &rest_weights)
            .unwrap();
        assert_eq!(ids[next], owner_ids(&without)[slot as usize], "slot {slot}");
    }
}

#[test]
fn scaled_weights_are_fractions_of_a_weight_and_whole_ones_give_the_same_tables() {
    let ring = Balancer::Ring(RingParams {
        slots: 4096,
        virtual_nodes: 8,
        ..RingParams::default()
    });
    let ids = [1, 2, 3];
    for balancer in [ring, MAGLEV, RENDEZVOUS] {
        let whole = balancer
            .place_weighted(Arc::new(SpecHash), &ids, &[1, 2, 3])
            .unwrap();
        let scaled = balancer
            .place_scaled(Arc::new(SpecHash), &ids, &[1000, 2000, 3000], 1000)
            .unwrap();
        assert_eq!(scaled.scale(), 1000);
        assert_eq!(owner_ids(&scaled), owner_ids(&whole), "{balancer}");
        assert_eq!((whole.weight_sum(), scaled.weight_sum()), (6, 6000));
        // Scale 1 is place_weighted itself.
        let one = balancer
            .place_scaled(Arc::new(SpecHash), &ids, &[1, 2, 3], 1)
            .unwrap();
        assert_eq!((one.scale(), owner_ids(&one)), (1, owner_ids(&whole)));
    }
    // A quarter of a weight of 1 on the ring: 2 of its 8 virtual nodes, the first two.
    let quarter = ring
        .place_scaled(Arc::new(SpecHash), &ids, &[250, 1000, 1000], 1000)
        .unwrap();
    let full = ring.place(Arc::new(SpecHash), &ids).unwrap();
    assert_eq!(quarter.virtual_slots(0).len(), 2);
    assert_eq!(quarter.virtual_slots(0), &full.virtual_slots(0)[..2]);
    // Maglev and rendezvous: a tenth of a weight of 1 next to two of 1 serves about 1/21.
    for balancer in [MAGLEV, RENDEZVOUS] {
        let table = balancer
            .place_scaled(Arc::new(SpecHash), &ids, &[100, 1000, 1000], 1000)
            .unwrap();
        let share = f64::from(table.slot_counts()[0]) / f64::from(table.slots());
        assert!((share - 1.0 / 21.0).abs() < 0.01, "{balancer}: {share}");
    }
    // Rendezvous: a growing weight only takes slots.
    let small = RENDEZVOUS
        .place_scaled(Arc::new(SpecHash), &ids, &[100, 1000, 1000], 1000)
        .unwrap();
    let larger = RENDEZVOUS
        .place_scaled(Arc::new(SpecHash), &ids, &[600, 1000, 1000], 1000)
        .unwrap();
    for (before, after) in owner_ids(&small).iter().zip(owner_ids(&larger)) {
        assert!(*before == after || after == 1, "{before} → {after}");
    }
    // The limit scales too.
    assert!(matches!(
        MAGLEV.place_scaled(
            Arc::new(SpecHash),
            &ids,
            &[1, 1, MAX_WEIGHT * 1000 + 1],
            1000
        ),
        Err(PlaceError::InvalidWeight { .. })
    ));
}
