use super::*;
use crate::compare::{moved_fraction, owner_ids};
use crate::error::nearest_primes;
use crate::hash::{HashError, SpecHash};
use crate::Algorithm;
use proptest::prelude::*;

fn spec() -> Arc<dyn RingHash> {
    Arc::new(SpecHash)
}

/// Fraction of slots whose owner (by server id) differs between two tables of the same size.
fn moved(a: &Placement, b: &Placement) -> f64 {
    moved_fraction(&owner_ids(a), &owner_ids(b))
}

/// Largest share of slots over the average share.
fn max_over_avg(table: &Placement) -> f64 {
    let counts = table.slot_counts();
    let max = f64::from(*counts.iter().max().unwrap());
    max / (f64::from(table.slots()) / counts.len() as f64)
}

// ---- hand-computed tables -------------------------------------------------------------

#[test]
fn primes() {
    let small: Vec<u32> = (0..40).filter(|&n| is_prime(n)).collect();
    assert_eq!(small, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37]);
    for p in [65_537, 509, 521, 4_194_301, 4_294_967_291] {
        assert!(is_prime(p), "{p}");
    }
    // 4 194 304 = 2²², 65 535 = 3·5·17·257, 4 294 967 295 = 3·5·17·257·65537, 961 = 31².
    for n in [512, 4_194_304, 65_535, 961, u32::MAX] {
        assert!(!is_prime(n), "{n}");
    }
    assert_eq!(nearest_primes(512), "the nearest primes are 509 and 521");
    assert_eq!(nearest_primes(1), "the nearest prime is 2");
    assert_eq!(nearest_primes(0), "the nearest prime is 2");
    // 4 294 967 291 is the largest prime below 2³²; nothing above it fits a u32.
    assert_eq!(nearest_primes(u32::MAX), "the nearest prime is 4294967291");
}

#[test]
fn the_papers_example_fill() {
    // Eisenbud et al., NSDI 2016, Table 1: M = 7, three backends with
    // B0: offset 3, skip 4 → preference list 3 0 4 1 5 2 6
    // B1: offset 0, skip 2 →                 0 2 4 6 1 3 5
    // B2: offset 3, skip 1 →                 3 4 5 6 0 1 2
    // Turn 1: B0 takes 3; B1 takes 0; B2 wants 3 (taken) → 4.
    // Turn 2: B0 wants 0 (taken) → 4 (taken) → 1; B1 takes 2; B2 takes 5.
    // Turn 3: B0 wants 5 (taken) → 2 (taken) → 6, the last free slot.
    // Table: 0 B1, 1 B0, 2 B1, 3 B0, 4 B2, 5 B2, 6 B0 — the paper's "before" row.
    assert_eq!(
        fill(7, &[(3, 4), (0, 2), (3, 1)], &[1, 1, 1]),
        [1, 0, 1, 0, 2, 2, 0]
    );
    // B1 removed (B0 is list 0, B2 list 1):
    // Turn 1: B0 takes 3; B2 wants 3 → 4. Turn 2: B0 takes 0; B2 takes 5.
    // Turn 3: B0 wants 4 (taken) → 1; B2 takes 6. Turn 4: B0 wants 5, 2 → 2.
    // Table: B0 B0 B0 B0 B2 B2 B2. B1's slots 0 and 2 went to B0, and slot 6 moved from B0 to
    // B2 as well: Maglev's disruption is small, not minimal (3 of 7 slots moved where 2 had to).
    assert_eq!(fill(7, &[(3, 4), (3, 1)], &[1, 1]), [0, 0, 0, 0, 1, 1, 1]);
}

#[test]
fn preference_lists_of_ids_1_to_3_at_m_7() {
    // h1(i) = splitmix64(i, 1), h2(i) = splitmix64(i, 2) (values pinned in hash.rs's tests):
    // id 1: h1 = 0x910a2dec89025cc1 ≡ 2 (mod 7), h2 = 0xbeeb8da1658eec67 ≡ 1 (mod 6) → skip 2
    // id 2: h1 = 0x975835de1c9756ce ≡ 4,         h2 = 0xbfc846100bfc1e42 ≡ 2        → skip 3
    // id 3: h1 = 0x1d0b14e4db018fed ≡ 2,         h2 = 0xb3466f8a7b81a989 ≡ 3        → skip 4
    assert_eq!(preferences(1, 7), (2, 2));
    assert_eq!(preferences(2, 7), (4, 3));
    assert_eq!(preferences(3, 7), (2, 4));
}

#[test]
fn tiny_table_of_ids_1_to_3_at_m_7_by_hand() {
    // Preference lists (previous test):
    // id 1: 2 4 6 1 3 5 0
    // id 2: 4 0 3 6 2 5 1
    // id 3: 2 6 3 0 4 1 5
    // Turn 1: id 1 takes 2; id 2 takes 4; id 3 wants 2 (taken) → 6.
    // Turn 2: id 1 wants 4, 6 (taken) → 1; id 2 takes 0; id 3 takes 3.
    // Turn 3: id 1 wants 3 (taken) → 5, the last free slot.
    // Slots 0..7: id 2, 1, 1, 3, 2, 1, 3 — 3 + 2 + 2 slots: ⌈7/3⌉ and ⌊7/3⌋.
    let table = build(7, spec(), &[1, 2, 3]).unwrap();
    assert_eq!(owner_ids(&table), [2, 1, 1, 3, 2, 1, 3]);
    assert_eq!(table.slot_counts(), [3, 2, 2]);
    assert_eq!(table.balancer(), Balancer::Maglev { slots: 7 });
    assert_eq!(table.balancer().algorithm(), Algorithm::Maglev);
    // Lookups: H(r) = r² + 2r + 17 mod 7. H(3) = 32 ≡ 4 → id 2; H(0) = 17 ≡ 3 → id 3;
    // H(1) = 20 ≡ 6 → id 3; H(2) = 25 ≡ 4 → id 2; H(4) = 41 ≡ 6 → id 3; H(5) = 52 ≡ 3 → id 3;
    // H(6) = 65 ≡ 2 → id 1.
    for (r, slot, id) in [
        (3, 4, 2),
        (0, 3, 3),
        (1, 6, 3),
        (2, 4, 2),
        (4, 6, 3),
        (5, 3, 3),
        (6, 2, 1),
    ] {
        assert_eq!(table.slot_of(r), slot, "r = {r}");
        assert_eq!(table.server_ids()[table.lookup(r).unwrap()], id, "r = {r}");
    }
    // No virtual nodes.
    assert_eq!(table.virtual_slots(0), &[] as &[u32]);
}

#[test]
fn the_table_does_not_depend_on_the_order_of_ids() {
    let ids: Vec<u64> = (1..=10).collect();
    let a = build(65_537, spec(), &ids).unwrap();
    let mut shuffled = ids.clone();
    fastrand::Rng::with_seed(3).shuffle(&mut shuffled);
    let b = build(65_537, spec(), &shuffled).unwrap();
    assert_eq!(b.server_ids(), &shuffled[..]);
    assert_eq!(owner_ids(&a), owner_ids(&b));
    // And building again gives the same table.
    assert_eq!(
        owner_ids(&a),
        owner_ids(&build(65_537, spec(), &ids).unwrap())
    );
}

// ---- the targets: balance and disruption at N = 10, M = 65 537 ------------------------

#[test]
fn ten_replicas_are_balanced_within_one_percent() {
    let ids: Vec<u64> = (1..=10).collect();
    let table = build(65_537, spec(), &ids).unwrap();
    // 65 537 = 10 · 6553 + 7: seven replicas own 6554 slots, three own 6553.
    let mut counts = table.slot_counts();
    counts.sort_unstable();
    assert_eq!(
        counts,
        [6553, 6553, 6553, 6554, 6554, 6554, 6554, 6554, 6554, 6554]
    );
    let ratio = max_over_avg(&table);
    assert!(ratio <= 1.01, "max/avg {ratio}");
}

#[test]
fn removing_one_of_ten_moves_at_most_a_quarter_more_than_ideal() {
    let ids: Vec<u64> = (1..=10).collect();
    let full = build(65_537, spec(), &ids).unwrap();
    let ideal = 1.0 / 10.0;
    let mut worst = 0.0f64;
    for gone in &ids {
        let rest: Vec<u64> = ids.iter().copied().filter(|id| id != gone).collect();
        let fraction = moved(&full, &build(65_537, spec(), &rest).unwrap());
        // At least the removed replica's own slots move.
        assert!(fraction >= 6553.0 / 65_537.0, "id {gone}: {fraction}");
        worst = worst.max(fraction);
    }
    assert!(
        worst <= 1.25 * ideal,
        "worst removal moved {worst} of the keys (ideal {ideal})"
    );
}

#[test]
fn adding_an_eleventh_moves_at_most_a_quarter_more_than_ideal() {
    let ten: Vec<u64> = (1..=10).collect();
    let eleven: Vec<u64> = (1..=11).collect();
    let before = build(65_537, spec(), &ten).unwrap();
    let after = build(65_537, spec(), &eleven).unwrap();
    let fraction = moved(&before, &after);
    assert!(fraction <= 1.25 / 11.0, "adding moved {fraction}");
}

#[test]
fn every_replica_owns_the_floor_or_ceiling_of_m_over_n() {
    for (m, n) in [
        (7u32, 3u64),
        (13, 13),
        (509, 64),
        (65_537, 3),
        (65_537, 1000),
    ] {
        let ids: Vec<u64> = (1..=n).collect();
        let table = build(m, spec(), &ids).unwrap();
        let n = n as u32;
        for c in table.slot_counts() {
            assert!(c == m / n || c == m.div_ceil(n), "M {m} N {n}: {c}");
        }
    }
}

// ---- errors, hashes, retries ----------------------------------------------------------

#[test]
fn slots_must_be_prime_and_at_least_n() {
    assert_eq!(
        build(512, spec(), &[1]).unwrap_err(),
        PlaceError::SlotsNotPrime { slots: 512 }
    );
    // Checked even without members, before the ids.
    assert_eq!(
        build(512, spec(), &[0, 0]).unwrap_err(),
        PlaceError::SlotsNotPrime { slots: 512 }
    );
    assert_eq!(build(0, spec(), &[]).unwrap_err(), PlaceError::ZeroSlots);
    assert_eq!(
        build(1, spec(), &[]).unwrap_err(),
        PlaceError::SlotsNotPrime { slots: 1 }
    );
    let message = PlaceError::SlotsNotPrime { slots: 512 }.to_string();
    assert_eq!(
        message,
        "algorithm \"maglev\" needs a prime number of slots, not 512 (the nearest primes are \
         509 and 521; 65537 is the usual choice)"
    );
    assert_eq!(
        build(3, spec(), &[1, 2, 3, 4]).unwrap_err(),
        PlaceError::FewerSlotsThanReplicas {
            algorithm: Algorithm::Maglev,
            replicas: 4,
            slots: 3
        }
    );
    assert_eq!(
        PlaceError::FewerSlotsThanReplicas {
            algorithm: Algorithm::Maglev,
            replicas: 4,
            slots: 3
        }
        .to_string(),
        "algorithm \"maglev\" needs at least as many slots as replicas: 4 replicas > 3 slots"
    );
    assert!(build(3, spec(), &[1, 2, 3]).is_ok());
    assert_eq!(
        build(7, spec(), &[1, 0]).unwrap_err(),
        PlaceError::InvalidServerId
    );
    assert_eq!(
        build(7, spec(), &[2, 1, 2]).unwrap_err(),
        PlaceError::DuplicateServerId(2)
    );
    let empty = build(7, spec(), &[]).unwrap();
    assert!(empty.is_empty() && empty.owners().is_empty());
    assert_eq!(empty.lookup(3), None);
    assert_eq!(empty.next_member(0, |_| false), None);
}

/// `H(r) = r`, and a Φ that always fails: Maglev must never call Φ.
#[derive(Debug)]
struct NoPhi;

impl RingHash for NoPhi {
    fn name(&self) -> &str {
        "no-phi"
    }
    fn request(&self, request_id: u64) -> u64 {
        request_id
    }
    fn virtual_node(&self, server_id: u64, replica: u64) -> Result<u64, HashError> {
        Err(HashError {
            hash: "no-phi".into(),
            server_id,
            replica,
            reason: "Φ is the ring's".into(),
        })
    }
}

#[test]
fn the_plugin_gives_h_and_phi_is_never_used() {
    let table = build(7, Arc::new(NoPhi), &[1, 2, 3]).unwrap();
    assert_eq!(owner_ids(&table), [2, 1, 1, 3, 2, 1, 3]);
    // H(r) = r: request r lands on slot r mod 7.
    for r in 0..21u64 {
        assert_eq!(table.slot_of(r), (r % 7) as u32);
    }
    assert_eq!(table.hash().name(), "no-phi");
}

#[test]
fn next_member_walks_the_table_clockwise() {
    // Slots 0..7: id 2, 1, 1, 3, 2, 1, 3 (members 1, 0, 0, 2, 1, 0, 2 for ids [1, 2, 3]).
    let table = build(7, spec(), &[1, 2, 3]).unwrap();
    assert_eq!(table.next_member(1, |_| false), Some(0), "the owner first");
    assert_eq!(table.next_member(1, |m| m == 0), Some(2), "slot 3's id 3");
    assert_eq!(table.next_member(6, |m| m == 2), Some(1), "wraps to slot 0");
    assert_eq!(table.next_member(6, |m| m != 0), Some(0));
    assert_eq!(table.next_member(6, |_| true), None);
}

// ---- properties -----------------------------------------------------------------------

/// Some primes between 2 and 2000.
fn prime() -> impl Strategy<Value = u32> {
    (2u32..2000).prop_map(|n| (n..).find(|&p| is_prime(p)).unwrap())
}

proptest! {
    #[test]
    fn prop_full_balanced_and_order_independent(
        ids in prop::collection::btree_set(1u64..500, 1..40)
            .prop_map(|s| s.into_iter().collect::<Vec<_>>())
            .prop_shuffle(),
        m in prime(),
    ) {
        prop_assume!(ids.len() as u32 <= m);
        let table = build(m, spec(), &ids).unwrap();
        prop_assert_eq!(table.owners().len(), m as usize);
        let n = ids.len() as u32;
        for c in table.slot_counts() {
            prop_assert!(c == m / n || c == m.div_ceil(n));
        }
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        prop_assert_eq!(owner_ids(&table), owner_ids(&build(m, spec(), &sorted).unwrap()));
    }
}
