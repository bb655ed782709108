use super::*;
use crate::compare::owner_ids;
use crate::hash::SpecHash;
use crate::Algorithm;
use proptest::prelude::*;

fn spec() -> Arc<dyn RingHash> {
    Arc::new(SpecHash)
}

/// The rule itself, slot by slot: the id with the highest `(w(s, i), i)`.
fn naive(slots: u32, ids: &[u64]) -> Vec<u64> {
    (0..slots)
        .map(|s| *ids.iter().max_by_key(|&&i| (weight(s, i), i)).unwrap())
        .collect()
}

#[test]
fn tiny_table_of_ids_1_to_3_at_m_8() {
    // w(s, i) = splitmix64(splitmix64(i, 1), s + 1), computed independently (a Python
    // transcription of the formula) for the first slots:
    //   s   id 1                 id 2                 id 3                 highest
    //   0   0x5e41ab087439611e   0x64684c4f0fd784b4   0xbccdfd9c96a18897   id 3
    //   1   0xf18d6ce93d6cf1ee   0x15afa6cc98416e0c   0x97e4a26fa4bd44f2   id 1
    //   2   0x0b95f66d327e8d78   0xd79b1b9dbd70e170   0xa21c465b24694130   id 2
    //   3   0xc7061b1b93322ba9   0x8ea264d0125c8328   0xcb3579caf59441ae   id 3
    assert_eq!(weight(0, 3), 0xbccd_fd9c_96a1_8897);
    assert_eq!(weight(1, 1), 0xf18d_6ce9_3d6c_f1ee);
    assert_eq!(weight(2, 2), 0xd79b_1b9d_bd70_e170);
    assert_eq!(weight(3, 1), 0xc706_1b1b_9332_2ba9);
    let table = build(8, spec(), &[1, 2, 3]).unwrap();
    assert_eq!(owner_ids(&table), [3, 1, 2, 3, 2, 2, 3, 3]);
    assert_eq!(table.balancer(), Balancer::Rendezvous { slots: 8 });
    assert_eq!(table.balancer().algorithm(), Algorithm::Rendezvous);
    assert_eq!(table.virtual_slots(0), &[] as &[u32]);
    // H(3) = 32 ≡ 0 (mod 8) → id 3; H(1) = 20 ≡ 4 → id 2; H(0) = 17 ≡ 1 → id 1.
    for (r, id) in [(3, 3), (1, 2), (0, 1)] {
        assert_eq!(table.server_ids()[table.lookup(r).unwrap()], id, "r = {r}");
    }
}

#[test]
fn removing_a_replica_moves_exactly_its_keys_to_their_runners_up() {
    let ids: Vec<u64> = (1..=10).collect();
    let full = build(65_537, spec(), &ids).unwrap();
    let before = owner_ids(&full);
    for gone in [1u64, 4, 10] {
        let rest: Vec<u64> = ids.iter().copied().filter(|&id| id != gone).collect();
        let after = owner_ids(&build(65_537, spec(), &rest).unwrap());
        for (s, (&old, &new)) in before.iter().zip(&after).enumerate() {
            if old == gone {
                // Its runner-up: what next_member gives with the removed one ruled out.
                let runner_up = full.next_member(s as u32, |m| full.server_ids()[m] == gone);
                assert_eq!(
                    Some(new),
                    runner_up.map(|m| full.server_ids()[m]),
                    "slot {s}"
                );
            } else {
                assert_eq!(old, new, "slot {s} moved though its owner {old} stayed");
            }
        }
    }
}

#[test]
fn adding_a_replica_moves_keys_only_to_it() {
    let ten: Vec<u64> = (1..=10).collect();
    let before = owner_ids(&build(65_537, spec(), &ten).unwrap());
    let eleven: Vec<u64> = (1..=11).collect();
    let after = owner_ids(&build(65_537, spec(), &eleven).unwrap());
    let mut moved = 0;
    for (&old, &new) in before.iter().zip(&after) {
        if old != new {
            assert_eq!(new, 11);
            moved += 1;
        }
    }
    // Every slot the new replica owns moved to it.
    assert_eq!(moved, after.iter().filter(|&&id| id == 11).count());
    assert!(moved > 0);
}

#[test]
fn ten_replicas_share_the_slots_about_evenly() {
    let ids: Vec<u64> = (1..=10).collect();
    let table = build(65_537, spec(), &ids).unwrap();
    let counts = table.slot_counts();
    let avg = 65_537.0 / 10.0;
    let max = f64::from(*counts.iter().max().unwrap());
    // Each count is about Binomial(65 537, 1/10): σ ≈ 77, so ±5 % is ±8.5 σ.
    assert!(max / avg <= 1.05, "max/avg {}", max / avg);
    assert_eq!(counts.iter().sum::<u32>(), 65_537);
}

#[test]
fn next_member_follows_the_slots_preference_order() {
    // Slot 0 of ids 1..=3 (first test): w = id 3 > id 2 > id 1.
    let table = build(8, spec(), &[1, 2, 3]).unwrap();
    let id = |m: Option<usize>| m.map(|m| table.server_ids()[m]);
    assert_eq!(
        id(table.next_member(0, |_| false)),
        Some(3),
        "the owner first"
    );
    assert_eq!(id(table.next_member(0, |m| m == 2)), Some(2));
    assert_eq!(id(table.next_member(0, |m| m != 0)), Some(1));
    assert_eq!(table.next_member(0, |_| true), None);
    // A slot past M is taken mod M, like the other algorithms' walk.
    assert_eq!(id(table.next_member(8, |_| false)), Some(3));
    // With nothing ruled out it is always the owner.
    for s in 0..8 {
        assert_eq!(table.next_member(s, |_| false), table.owner_of_slot(s));
    }
}

#[test]
fn errors() {
    assert_eq!(build(0, spec(), &[1]).unwrap_err(), PlaceError::ZeroSlots);
    assert_eq!(
        build(2, spec(), &[1, 2, 3]).unwrap_err(),
        PlaceError::FewerSlotsThanReplicas {
            algorithm: Algorithm::Rendezvous,
            replicas: 3,
            slots: 2
        }
    );
    assert_eq!(
        build(8, spec(), &[0]).unwrap_err(),
        PlaceError::InvalidServerId
    );
    assert_eq!(
        build(8, spec(), &[5, 5]).unwrap_err(),
        PlaceError::DuplicateServerId(5)
    );
    // Any number of slots, prime or not.
    assert!(build(512, spec(), &[1, 2, 3]).is_ok());
    let empty = build(8, spec(), &[]).unwrap();
    assert!(empty.is_empty());
    assert_eq!(empty.next_member(0, |_| false), None);
}

proptest! {
    #[test]
    fn prop_table_is_the_highest_random_weight_rule(
        ids in prop::collection::btree_set(1u64..1000, 1..30)
            .prop_map(|s| s.into_iter().collect::<Vec<_>>())
            .prop_shuffle(),
        m in 30u32..600,
    ) {
        let table = build(m, spec(), &ids).unwrap();
        prop_assert_eq!(owner_ids(&table), naive(m, &ids));
    }

    #[test]
    fn prop_removal_moves_only_the_removed_replicas_slots(
        ids in prop::collection::btree_set(1u64..1000, 2..20)
            .prop_map(|s| s.into_iter().collect::<Vec<_>>()),
        pick in any::<prop::sample::Index>(),
        m in 20u32..600,
    ) {
        let gone = ids[pick.index(ids.len())];
        let rest: Vec<u64> = ids.iter().copied().filter(|&id| id != gone).collect();
        let before = owner_ids(&build(m, spec(), &ids).unwrap());
        let after = owner_ids(&build(m, spec(), &rest).unwrap());
        for (old, new) in before.into_iter().zip(after) {
            prop_assert!(old == new || old == gone);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Updating a table for replicas that left and joined gives exactly the table built anew.
    #[test]
    fn a_rebuild_equals_a_build(
        slots in 1u32..300,
        before in proptest::collection::btree_set(1u64..40, 1..12),
        after in proptest::collection::btree_set(1u64..40, 1..12),
    ) {
        let before: Vec<u64> = before.into_iter().filter(|_| true).collect();
        let after: Vec<u64> = after.into_iter().rev().collect(); // any member order
        prop_assume!(before.len() as u32 <= slots && after.len() as u32 <= slots);
        let old = build(slots, spec(), &before).unwrap();
        let balancer = Balancer::Rendezvous { slots };
        let updated = balancer.place_from(&old, Arc::clone(old.hash()), &after).unwrap();
        let fresh = build(slots, spec(), &after).unwrap();
        prop_assert_eq!(owner_ids(&updated), owner_ids(&fresh));
        prop_assert_eq!(updated.server_ids(), &after[..]);
        // And the same fallback order: the runner-up of every slot.
        for s in 0..slots {
            prop_assert_eq!(
                updated.next_member(s, |m| m == 0),
                fresh.next_member(s, |m| m == 0)
            );
        }
    }
}

#[test]
fn a_rebuild_costs_a_pass_per_change_not_per_replica() {
    let ids: Vec<u64> = (1..=64).collect();
    let balancer = Balancer::Rendezvous { slots: 1 << 16 };
    let old = build(1 << 16, spec(), &ids).unwrap();
    assert_eq!(balancer.build_cost(64), 64 << 16);
    let hash = Arc::clone(old.hash());
    assert_eq!(balancer.rebuild_cost(&old, &hash, &ids[1..]), 2 << 16);
    let more = [ids.clone(), vec![65]].concat();
    assert_eq!(balancer.rebuild_cost(&old, &hash, &more), 2 << 16);
    // Another size, or another hash: a full build.
    let other = Balancer::Rendezvous { slots: 1 << 15 };
    assert_eq!(other.rebuild_cost(&old, &hash, &ids), 64 << 15);
    assert_eq!(balancer.rebuild_cost(&old, &spec(), &ids), 64 << 16);
}
