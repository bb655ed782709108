use super::*;
use crate::compare::owner_ids;
use crate::hash::{HashError, SpecHash};
use crate::{Balancer, Placement};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use std::collections::{BTreeMap, BTreeSet};

fn spec() -> Arc<dyn RingHash> {
    Arc::new(SpecHash)
}

fn params(slots: u32, virtual_nodes: u32, probing: Probing) -> RingParams {
    RingParams {
        slots,
        virtual_nodes,
        probing,
    }
}

/// Test hash that piles every virtual node onto slot 0 (`Φ ≡ 0`) and uses `H(r) = r`, so
/// probe chains are long and easy to compute by hand.
#[derive(Debug)]
struct PileUp;

impl RingHash for PileUp {
    fn name(&self) -> &str {
        "pile-up"
    }
    fn request(&self, request_id: u64) -> u64 {
        request_id
    }
    fn virtual_node(&self, _server_id: u64, _replica: u64) -> Result<u64, HashError> {
        Ok(0)
    }
}

/// Virtual node slots keyed by server id.
fn slots_by_id(ring: &Placement) -> BTreeMap<u64, Vec<u32>> {
    (0..ring.len())
        .map(|m| (ring.server_ids()[m], ring.virtual_slots(m).to_vec()))
        .collect()
}

fn member_of(ring: &Placement, id: u64) -> usize {
    ring.server_ids()
        .iter()
        .position(|&x| x == id)
        .expect("id is a member")
}

// ---- hand-computed tables -------------------------------------------------------------

// Φ(i, j) = i² + j² + 2j + 25 = i² + 25 + j(j + 2); j(j + 2) for j = 0..9 is
// 0, 3, 8, 15, 24, 35, 48, 63, 80. All values are < 512, so "mod 512" is the identity.
// Server 1 (1 + 25 = 26): 26, 29, 34, 41, 50, 61, 74, 89, 106 — no collisions.
const SPEC_S1: [u32; 9] = [26, 29, 34, 41, 50, 61, 74, 89, 106];
// Server 2 (4 + 25 = 29): 29 is server 1's → 30; then 32, 37, 44, 53, 64, 77, 92, 109 (free).
const SPEC_S2: [u32; 9] = [30, 32, 37, 44, 53, 64, 77, 92, 109];
// Server 3 (9 + 25 = 34): 34 is server 1's → 35; 37 is server 2's → 38;
// then 42, 49, 58, 69, 82, 97, 114 (free).
const SPEC_S3: [u32; 9] = [35, 38, 42, 49, 58, 69, 82, 97, 114];

#[test]
fn spec_example_linear_slot_table() {
    let ring = build(RingParams::default(), spec(), &[1, 2, 3]).unwrap();
    assert_eq!(ring.len(), 3);
    assert_eq!(ring.virtual_slots(0), SPEC_S1);
    assert_eq!(ring.virtual_slots(1), SPEC_S2);
    assert_eq!(ring.virtual_slots(2), SPEC_S3);
    assert_eq!(ring.virtual_slots(3), &[] as &[u32]);
    assert_eq!(ring.owners().len(), 512);
    // Server 1 owns 115..=511 and 0..=26 (its vnode at 26 is the first after 114).
    assert!((115..512).all(|s| ring.owner_of_slot(s) == Some(0)));
    assert!((0..=26).all(|s| ring.owner_of_slot(s) == Some(0)));
    // Each vnode at v owns (previous vnode, v]:
    // server 1: 26 → 397 + 27 = 424, 29 → 27..=29 = 3, 34 → 33..=34 = 2, 41 → 39..=41 = 3,
    //   50 → 1, 61 → 59..=61 = 3, 74 → 70..=74 = 5, 89 → 83..=89 = 7, 106 → 98..=106 = 9;
    //   total 424 + 3 + 2 + 3 + 1 + 3 + 5 + 7 + 9 = 457.
    // server 2: 30 → 1, 32 → 2, 37 → 2, 44 → 2, 53/64/77/92/109 → 3 each; 1 + 6 + 15 = 22.
    // server 3: 35 → 1, 38 → 1, 42 → 1, 49/58/69/82/97/114 → 5 each; 3 + 30 = 33.
    // 457 + 22 + 33 = 512.
    let mut counts = [0usize; 3];
    for &m in ring.owners() {
        counts[m as usize] += 1;
    }
    assert_eq!(counts, [457, 22, 33]);
    // Every vnode slot is owned by its own member.
    for m in 0..3 {
        for &s in ring.virtual_slots(m) {
            assert_eq!(ring.owner_of_slot(s), Some(m));
        }
    }
    assert_eq!(ring.owner_of_slot(512), None);
    assert_eq!(ring.owner_of_slot(u32::MAX), None);
}

#[test]
fn spec_example_hand_lookups() {
    let ring = build(RingParams::default(), spec(), &[1, 2, 3]).unwrap();
    // (r, H(r) = r² + 2r + 17, member index of the first vnode at or after H(r))
    let cases = [
        (0, 17, 0),   // 0 + 0 + 17 = 17 → 26 (server 1)
        (1, 20, 0),   // 1 + 2 + 17 = 20 → 26 (server 1)
        (2, 25, 0),   // 4 + 4 + 17 = 25 → 26 (server 1)
        (3, 32, 1),   // 9 + 6 + 17 = 32 → 32 (server 2)
        (4, 41, 0),   // 16 + 8 + 17 = 41 → 41 (server 1)
        (5, 52, 1),   // 25 + 10 + 17 = 52 → 53 (server 2)
        (6, 65, 2),   // 36 + 12 + 17 = 65 → 69 (server 3)
        (7, 80, 2),   // 49 + 14 + 17 = 80 → 82 (server 3)
        (8, 97, 2),   // 64 + 16 + 17 = 97 → 97 (server 3)
        (9, 116, 0),  // 81 + 18 + 17 = 116 → past 114, wraps → 26 (server 1)
        (10, 137, 0), // 100 + 20 + 17 = 137 → past 114, wraps → 26 (server 1)
    ];
    for (r, slot, member) in cases {
        assert_eq!(ring.slot_of(r), slot, "slot of r={r}");
        assert_eq!(ring.lookup(r), Some(member), "lookup r={r}");
    }
    // r = 22: 484 + 44 + 17 = 545 = 512 + 33 → slot 33 → 34 (server 1).
    assert_eq!(ring.slot_of(22), 33);
    assert_eq!(ring.lookup(22), Some(0));
}

#[test]
fn member_indices_follow_input_order_but_layout_does_not() {
    let ring = build(RingParams::default(), spec(), &[3, 1, 2]).unwrap();
    assert_eq!(ring.server_ids(), &[3, 1, 2]);
    assert_eq!(ring.virtual_slots(0), SPEC_S3);
    assert_eq!(ring.virtual_slots(1), SPEC_S1);
    assert_eq!(ring.virtual_slots(2), SPEC_S2);
    assert_eq!(ring.lookup(0), Some(1)); // server 1
    assert_eq!(ring.lookup(5), Some(2)); // server 2
    assert_eq!(ring.lookup(6), Some(0)); // server 3
}

#[test]
fn spec_example_request_shares() {
    let ring = build(RingParams::default(), spec(), &[1, 2, 3]).unwrap();
    let mut counts = [0u64; 3];
    for r in 100_000u64..=999_999 {
        counts[ring.lookup(r).unwrap()] += 1;
    }
    let total: u64 = counts.iter().sum();
    assert_eq!(total, 900_000);
    let share = |m: usize| counts[m] as f64 / total as f64;
    assert!((0.80..=0.88).contains(&share(0)), "server 1: {}", share(0));
    assert!((0.03..=0.07).contains(&share(1)), "server 2: {}", share(1));
    assert!((0.08..=0.14).contains(&share(2)), "server 3: {}", share(2));
}

#[test]
fn quadratic_differs_from_linear_by_hand() {
    // PileUp: every vnode wants slot 0, H(r) = r. M = 16, K = 2, ids given as [2, 1].
    // Linear:    id 1: j0 → 0; j1 → 0 taken, 1.
    //            id 2: j0 → 0, 1 taken, 2; j1 → 0, 1, 2 taken, 3.
    // Quadratic: id 1: j0 → 0; j1 → 0 taken, 0 + 1² = 1.
    //            id 2: j0 → 0, 1 taken, 0 + 2² = 4; j1 → 0, 1, 4 taken, 0 + 3² = 9.
    let hash: Arc<dyn RingHash> = Arc::new(PileUp);
    let lin = build(params(16, 2, Probing::Linear), hash.clone(), &[2, 1]).unwrap();
    let quad = build(params(16, 2, Probing::Quadratic), hash, &[2, 1]).unwrap();
    assert_eq!(lin.virtual_slots(1), &[0, 1]);
    assert_eq!(lin.virtual_slots(0), &[2, 3]);
    assert_eq!(quad.virtual_slots(1), &[0, 1]);
    assert_eq!(quad.virtual_slots(0), &[4, 9]);
    // Linear owners: 0, 1 → id 1; 2, 3 → id 2; 4..=15 wrap to slot 0 → id 1.
    let mut lin_expected = vec![1u64; 16];
    lin_expected[2] = 2;
    lin_expected[3] = 2;
    assert_eq!(owner_ids(&lin), lin_expected);
    // Quadratic owners: 0, 1 → id 1; 2..=4 → vnode 4, 5..=9 → vnode 9 (id 2);
    // 10..=15 wrap to slot 0 → id 1.
    let mut quad_expected = vec![1u64; 16];
    quad_expected[2..=9].fill(2);
    assert_eq!(owner_ids(&quad), quad_expected);
    // r = 5 → slot 5: linear wraps to id 1 (member 1); quadratic hits vnode 9, id 2 (member 0).
    assert_eq!(lin.lookup(5), Some(1));
    assert_eq!(quad.lookup(5), Some(0));
    // r = 21 → 21 mod 16 = 5: same answers.
    assert_eq!(quad.lookup(21), Some(0));
}

// ---- capacity and probe exhaustion ----------------------------------------------------

/// Φ that fails for server 2: building must fail with that error, not place anything.
#[derive(Debug)]
struct FailsForServer2;

impl RingHash for FailsForServer2 {
    fn name(&self) -> &str {
        "fails-for-2"
    }
    fn request(&self, request_id: u64) -> u64 {
        request_id
    }
    fn virtual_node(&self, server_id: u64, replica: u64) -> Result<u64, HashError> {
        if server_id == 2 {
            return Err(HashError {
                hash: self.name().into(),
                server_id,
                replica,
                reason: "panicked".into(),
            });
        }
        Ok(server_id * 10 + replica)
    }
}

#[test]
fn failing_virtual_node_hash_fails_the_build() {
    let hash: Arc<dyn RingHash> = Arc::new(FailsForServer2);
    let ok = build(params(64, 2, Probing::Linear), Arc::clone(&hash), &[1, 3]).unwrap();
    assert_eq!(ok.virtual_slots(1), [30, 31]);
    let err = build(params(64, 2, Probing::Linear), hash, &[1, 2, 3]).unwrap_err();
    match err {
        PlaceError::Hash(e) => assert_eq!((e.server_id, e.replica), (2, 0)),
        other => panic!("expected a hash error, got {other:?}"),
    }
}

#[test]
fn slot_counts_of_the_spec_example() {
    // Virtual nodes in slot order, and the arc each one serves (previous node + 1 ..= itself):
    // 26 S1 115..=511 + 0..=26 (424) | 29 S1 3 | 30 S2 1 | 32 S2 2 | 34 S1 2 | 35 S3 1 |
    // 37 S2 2 | 38 S3 1 | 41 S1 3 | 42 S3 1 | 44 S2 2 | 49 S3 5 | 50 S1 1 | 53 S2 3 |
    // 58 S3 5 | 61 S1 3 | 64 S2 3 | 69 S3 5 | 74 S1 5 | 77 S2 3 | 82 S3 5 | 89 S1 7 |
    // 92 S2 3 | 97 S3 5 | 106 S1 9 | 109 S2 3 | 114 S3 5
    // S1 = 424+3+2+3+1+3+5+7+9 = 457, S2 = 1+2+2+2+3+3+3+3+3 = 22, S3 = 1+1+1+5·6 = 33.
    let ring = build(RingParams::default(), Arc::new(SpecHash), &[1, 2, 3]).unwrap();
    assert_eq!(ring.slot_counts(), [457, 22, 33]);
    let empty = build(RingParams::default(), Arc::new(SpecHash), &[]).unwrap();
    assert!(empty.slot_counts().is_empty());
}

#[test]
fn too_many_virtual_nodes() {
    let ids: Vec<u64> = (1..=60).collect();
    let err = build(RingParams::default(), spec(), &ids).unwrap_err();
    assert_eq!(
        err,
        PlaceError::TooManyVirtualNodes {
            replicas: 60,
            virtual_nodes: 9,
            slots: 512
        }
    );
    // 60 × 9 = 540 > 512.
    assert_eq!(
        err.to_string(),
        "K·N > M: 60 replicas × 9 virtual nodes = 540 exceeds 512 slots"
    );
    // 56 × 9 = 504 ≤ 512 is fine; 57 × 9 = 513 is one too many.
    assert!(build(RingParams::default(), spec(), &ids[..56]).is_ok());
    assert_eq!(
        build(RingParams::default(), spec(), &ids[..57]).unwrap_err(),
        PlaceError::TooManyVirtualNodes {
            replicas: 57,
            virtual_nodes: 9,
            slots: 512
        }
    );
}

#[test]
fn exactly_full_ring_fills_every_slot() {
    // K·N = 9 × 3 = 27 = M.
    let ring = build(params(27, 9, Probing::Linear), spec(), &[1, 2, 3]).unwrap();
    let mut all: Vec<u32> = (0..3)
        .flat_map(|m| ring.virtual_slots(m).to_vec())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..27).collect::<Vec<u32>>());
    for m in 0..3 {
        for &s in ring.virtual_slots(m) {
            assert_eq!(ring.owner_of_slot(s), Some(m));
        }
    }
    // 64 × 8 = 512 = M with the defaults' M.
    let ids: Vec<u64> = (1..=64).collect();
    let ring = build(params(512, 8, Probing::Linear), spec(), &ids).unwrap();
    let used: BTreeSet<u32> = (0..64)
        .flat_map(|m| ring.virtual_slots(m).to_vec())
        .collect();
    assert_eq!(used.len(), 512);
}

#[test]
fn quadratic_probe_exhaustion_with_spec_hash() {
    // M = 4, K = 4, id 1 (K·N = M). Φ(1, j) = 26, 29, 34, 41 ≡ 2, 1, 2, 1 (mod 4).
    // Quadratic: j0 → 2; j1 → 1; j2 → 2 taken, 2 + 1 = 3; j3 → 1 taken, 1 + 1 = 2 taken,
    // 1 + 4 ≡ 1 taken, 1 + 9 ≡ 2 taken — k² mod 4 ∈ {0, 1}, so slot 0 (1 + 3) is unreachable.
    let err = build(params(4, 4, Probing::Quadratic), spec(), &[1]).unwrap_err();
    assert_eq!(
        err,
        PlaceError::ProbeExhausted {
            server_id: 1,
            replica: 3
        }
    );
    let msg = err.to_string();
    assert!(msg.contains("virtual node 3 of server 1"), "{msg}");
    assert!(msg.contains("linear probing"), "{msg}");
    // Linear: j3 → 1, 2, 3 taken, 1 + 3 = 4 ≡ 0.
    let lin = build(params(4, 4, Probing::Linear), spec(), &[1]).unwrap();
    assert_eq!(lin.virtual_slots(0), &[2, 1, 3, 0]);
}

#[test]
fn quadratic_probe_exhaustion_power_of_two() {
    // PileUp, M = 16: squares mod 16 are {0, 1, 4, 9} (0², 1², 2², 3², then 4² = 16 ≡ 0,
    // 5² = 25 ≡ 9, 6² = 36 ≡ 4, 7² = 49 ≡ 1, 8² = 64 ≡ 0, and (16 − k)² ≡ k²).
    // With K = 5 the fifth vnode (j = 4) finds 0, 1, 4, 9 all taken while 12 slots are free.
    let err = build(params(16, 5, Probing::Quadratic), Arc::new(PileUp), &[1]).unwrap_err();
    assert_eq!(
        err,
        PlaceError::ProbeExhausted {
            server_id: 1,
            replica: 4
        }
    );
    // K = 4 just fits into the reachable slots.
    let ok = build(params(16, 4, Probing::Quadratic), Arc::new(PileUp), &[1]).unwrap();
    assert_eq!(ok.virtual_slots(0), &[0, 1, 4, 9]);
}

#[test]
fn quadratic_probe_exhaustion_terminates_on_larger_ring() {
    // PileUp, M = 1024, K = M: only the quadratic residues mod 1024 are reachable from 0, so
    // placement fails at j = (number of distinct k² mod 1024) instead of looping forever.
    let m = 1024u64;
    let reachable: BTreeSet<u64> = (0..m).map(|k| k * k % m).collect();
    assert!(reachable.len() < 1024);
    let err = build(
        params(1024, 1024, Probing::Quadratic),
        Arc::new(PileUp),
        &[7],
    )
    .unwrap_err();
    assert_eq!(
        err,
        PlaceError::ProbeExhausted {
            server_id: 7,
            replica: reachable.len() as u32
        }
    );
}

// ---- validation -----------------------------------------------------------------------

#[test]
fn validation_errors() {
    let p = RingParams::default();
    assert_eq!(
        build(RingParams { slots: 0, ..p }, spec(), &[1]).unwrap_err(),
        PlaceError::ZeroSlots
    );
    // Zero slots is reported even for an empty id list or alongside other problems.
    assert_eq!(
        build(RingParams { slots: 0, ..p }, spec(), &[]).unwrap_err(),
        PlaceError::ZeroSlots
    );
    assert_eq!(
        build(
            RingParams {
                slots: 0,
                virtual_nodes: 0,
                ..p
            },
            spec(),
            &[0]
        )
        .unwrap_err(),
        PlaceError::ZeroSlots
    );
    assert_eq!(
        build(
            RingParams {
                virtual_nodes: 0,
                ..p
            },
            spec(),
            &[1]
        )
        .unwrap_err(),
        PlaceError::ZeroVirtualNodes
    );
    assert_eq!(
        build(p, spec(), &[1, 0, 2]).unwrap_err(),
        PlaceError::InvalidServerId
    );
    assert_eq!(
        build(p, spec(), &[3, 1, 3]).unwrap_err(),
        PlaceError::DuplicateServerId(3)
    );
    assert_eq!(
        PlaceError::ZeroSlots.to_string(),
        "slots must be at least 1"
    );
    assert_eq!(
        PlaceError::ZeroVirtualNodes.to_string(),
        "virtual_nodes must be at least 1"
    );
    assert_eq!(
        PlaceError::InvalidServerId.to_string(),
        "server ids start at 1"
    );
    assert!(PlaceError::DuplicateServerId(3).to_string().contains('3'));
}

#[test]
fn empty_ring() {
    let ring = build(RingParams::default(), spec(), &[]).unwrap();
    assert!(ring.is_empty());
    assert_eq!(ring.len(), 0);
    assert!(ring.owners().is_empty());
    assert_eq!(ring.lookup(0), None);
    assert_eq!(ring.lookup(u64::MAX), None);
    assert_eq!(ring.owner_of_slot(0), None);
    assert_eq!(ring.virtual_slots(0), &[] as &[u32]);
    assert_eq!(ring.virtual_slots(usize::MAX), &[] as &[u32]);
    // slot_of still works (it does not depend on members).
    assert_eq!(ring.slot_of(3), 32);
}

#[test]
fn huge_ids_and_requests_do_not_panic() {
    let ids = [u64::MAX, u64::MAX - 1, 1];
    let ring = build(RingParams::default(), spec(), &ids).unwrap();
    // Φ(u64::MAX, j) ≡ (−1)² + j² + 2j + 25 = Φ(1, j), so id u64::MAX collides with id 1 on
    // every home slot; id 1 is placed first and keeps the hand-computed slots.
    assert_eq!(ring.virtual_slots(2), SPEC_S1);
    // H(u64::MAX) ≡ 1 − 2 + 17 = 16 → first vnode ≥ 16 is 26 (id 1, member 2).
    assert_eq!(ring.slot_of(u64::MAX), 16);
    assert_eq!(ring.lookup(u64::MAX), Some(2));
    let big = build(params(1 << 22, 1, Probing::Quadratic), spec(), &ids).unwrap();
    assert_eq!(big.owners().len(), 1 << 22);
    assert!(big.lookup(u64::MAX).is_some());
}

#[test]
fn params_probing_display_and_serde() {
    let p = RingParams::default();
    assert_eq!(
        (p.slots, p.virtual_nodes, p.probing),
        (512, 9, Probing::Linear)
    );
    assert_eq!(Probing::default(), Probing::Linear);
    assert_eq!(Probing::Linear.to_string(), "linear");
    assert_eq!(Probing::Quadratic.to_string(), "quadratic");
    use serde::de::value::{Error, StrDeserializer};
    use serde::de::IntoDeserializer;
    use serde::Deserialize;
    let de = |s: &'static str| -> Result<Probing, Error> {
        let d: StrDeserializer<'_, Error> = s.into_deserializer();
        Probing::deserialize(d)
    };
    assert_eq!(de("linear"), Ok(Probing::Linear));
    assert_eq!(de("quadratic"), Ok(Probing::Quadratic));
    assert!(de("Linear").is_err());
    assert!(de("cubic").is_err());
}

#[test]
fn ring_is_shareable() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<Placement>();
    let ring = build(RingParams::default(), spec(), &[1]).unwrap();
    assert_eq!(ring.hash().name(), "spec");
    assert_eq!(ring.balancer(), Balancer::Ring(RingParams::default()));
}

// ---- properties -----------------------------------------------------------------------

/// Build with the spec hash; `Ok(None)` when quadratic probing is exhausted (the only
/// acceptable error here), a test failure for anything else.
fn try_build(p: RingParams, ids: &[u64]) -> Result<Option<Placement>, TestCaseError> {
    match build(p, spec(), ids) {
        Ok(ring) => Ok(Some(ring)),
        Err(PlaceError::ProbeExhausted { server_id, replica })
            if p.probing == Probing::Quadratic =>
        {
            prop_assert!(ids.contains(&server_id));
            prop_assert!(replica < p.virtual_nodes);
            Ok(None)
        }
        Err(e) => Err(TestCaseError::fail(format!("unexpected error: {e}"))),
    }
}

/// Naive owner: the vnode with the smallest clockwise distance (v − s) mod M.
fn naive_owner(ring: &Placement, slot: u32) -> Option<usize> {
    let m = ring.slots();
    (0..ring.len())
        .flat_map(|member| ring.virtual_slots(member).iter().map(move |&v| (v, member)))
        .min_by_key(|&(v, _)| (v + m - slot) % m)
        .map(|(_, member)| member)
}

fn fits(n: usize, k: u32, m: u32) -> bool {
    n as u64 * u64::from(k) <= u64::from(m)
}

fn probing() -> impl Strategy<Value = Probing> {
    prop_oneof![Just(Probing::Linear), Just(Probing::Quadratic)]
}

/// Distinct ids from 1..200, 0..20 of them, in random order.
fn ids() -> impl Strategy<Value = Vec<u64>> {
    prop::collection::btree_set(1u64..200, 0..20)
        .prop_map(|set| set.into_iter().collect::<Vec<_>>())
        .prop_shuffle()
}

fn ring_params() -> impl Strategy<Value = RingParams> {
    (16u32..2048, 1u32..10, probing()).prop_map(|(m, k, p)| params(m, k, p))
}

proptest! {
    #[test]
    fn prop_vnodes_distinct_and_owner_table_matches_naive(ids in ids(), p in ring_params()) {
        prop_assume!(fits(ids.len(), p.virtual_nodes, p.slots));
        let Some(ring) = try_build(p, &ids)? else { return Ok(()) };
        prop_assert_eq!(ring.server_ids(), &ids[..]);
        let mut all = BTreeSet::new();
        for member in 0..ring.len() {
            let slots = ring.virtual_slots(member);
            prop_assert_eq!(slots.len(), p.virtual_nodes as usize);
            for &s in slots {
                prop_assert!(s < p.slots);
                prop_assert!(all.insert(s), "slot {} used twice", s);
            }
        }
        prop_assert_eq!(all.len(), ids.len() * p.virtual_nodes as usize);
        if ids.is_empty() {
            prop_assert!(ring.owners().is_empty());
        } else {
            prop_assert_eq!(ring.owners().len(), p.slots as usize);
        }
        for s in 0..p.slots {
            prop_assert_eq!(ring.owner_of_slot(s), naive_owner(&ring, s), "slot {}", s);
        }
        for r in [0u64, 1, 12345, u64::MAX] {
            prop_assert_eq!(ring.lookup(r), naive_owner(&ring, ring.slot_of(r)));
        }
    }

    #[test]
    fn prop_order_independent(
        (ids, permuted) in ids().prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle())),
        p in ring_params(),
    ) {
        prop_assume!(fits(ids.len(), p.virtual_nodes, p.slots));
        let a = try_build(p, &ids)?;
        let b = try_build(p, &permuted)?;
        match (a, b) {
            (Some(a), Some(b)) => {
                prop_assert_eq!(owner_ids(&a), owner_ids(&b));
                prop_assert_eq!(slots_by_id(&a), slots_by_id(&b));
            }
            (None, None) => {
                // Same failing vnode, too.
                prop_assert_eq!(
                    build(p, spec(), &ids).unwrap_err(),
                    build(p, spec(), &permuted).unwrap_err()
                );
            }
            _ => prop_assert!(false, "one order built and the other did not"),
        }
    }

    #[test]
    fn prop_add_larger_id_then_remove_it(
        ids in ids(),
        extra in 0u64..50,
        at in any::<Index>(),
        p in ring_params(),
    ) {
        prop_assume!(fits(ids.len() + 1, p.virtual_nodes, p.slots));
        let new = ids.iter().copied().max().unwrap_or(0) + 1 + extra;
        let mut grown = ids.clone();
        grown.insert(at.index(ids.len() + 1), new);

        let before = try_build(p, &ids)?;
        let after = try_build(p, &grown)?;
        let (before, after) = match (before, after) {
            (Some(b), Some(a)) => (b, a),
            // The new id is placed last, so everything before it is placed identically:
            // if the smaller ring is exhausted, the larger one must be too.
            (None, after) => {
                prop_assert!(after.is_none());
                return Ok(());
            }
            // Adding may exhaust quadratic probing; nothing more to compare.
            (Some(_), None) => return Ok(()),
        };

        // Existing members keep exactly their vnode slots.
        let mut after_slots = slots_by_id(&after);
        let new_slots = after_slots.remove(&new).unwrap();
        prop_assert_eq!(new_slots.len(), p.virtual_nodes as usize);
        prop_assert_eq!(&slots_by_id(&before), &after_slots);

        // Every slot whose owner changed is now owned by the new id.
        let old_owners = owner_ids(&before);
        let new_owners = owner_ids(&after);
        for s in 0..p.slots as usize {
            if old_owners.get(s) != new_owners.get(s) {
                prop_assert_eq!(new_owners[s], new, "slot {}", s);
            }
        }
        // And the new id's own vnode slots are among those it owns.
        for &s in &new_slots {
            prop_assert_eq!(after.owner_of_slot(s), Some(member_of(&after, new)));
        }

        // Removing it again (from the list in reverse order) gives exactly the old ring.
        let shrunk: Vec<u64> = grown.iter().rev().copied().filter(|&x| x != new).collect();
        let again = try_build(p, &shrunk)?;
        prop_assert!(again.is_some());
        let again = again.unwrap();
        prop_assert_eq!(owner_ids(&again), old_owners);
        prop_assert_eq!(slots_by_id(&again), slots_by_id(&before));
    }

    #[test]
    fn prop_remove_any_id(ids in ids(), pick in any::<Index>(), p in ring_params()) {
        prop_assume!(!ids.is_empty());
        prop_assume!(fits(ids.len(), p.virtual_nodes, p.slots));
        let x = ids[pick.index(ids.len())];
        let rest: Vec<u64> = ids.iter().copied().filter(|&id| id != x).collect();
        let (Some(full), Some(reduced)) = (try_build(p, &ids)?, try_build(p, &rest)?) else {
            return Ok(());
        };

        let full_slots = slots_by_id(&full);
        let reduced_slots = slots_by_id(&reduced);
        // Members placed before x are untouched; "displaced" members are those whose vnode
        // slot sets differ between the two rings.
        let mut displaced = BTreeSet::new();
        for (&id, slots) in &reduced_slots {
            let before: BTreeSet<u32> = full_slots[&id].iter().copied().collect();
            let after: BTreeSet<u32> = slots.iter().copied().collect();
            if id < x {
                prop_assert_eq!(&full_slots[&id], slots, "id {} < removed {}", id, x);
            }
            if before != after {
                displaced.insert(id);
            }
        }

        let old_owners = owner_ids(&full);
        let new_owners = owner_ids(&reduced);
        if rest.is_empty() {
            prop_assert!(new_owners.is_empty());
            return Ok(());
        }
        for s in 0..p.slots as usize {
            let (old, new) = (old_owners[s], new_owners[s]);
            prop_assert_ne!(new, x);
            if old == x || old == new {
                continue;
            }
            prop_assert!(
                displaced.contains(&old) || displaced.contains(&new),
                "slot {} moved from {} to {}; displaced = {:?}", s, old, new, displaced
            );
        }
    }
}

#[test]
fn next_member_walks_clockwise_past_ruled_out_members() {
    let ring = build(RingParams::default(), spec(), &[1, 2, 3]).unwrap();
    // Slot 32 is server 2's virtual node (SPEC_S2); slots 33..=34 go to server 1's node at 34,
    // 35 is server 3's; slots after 114 wrap around to server 1's node at 26.
    assert_eq!(ring.next_member(32, |_| false), Some(1));
    assert_eq!(ring.next_member(32, |m| m == 1), Some(0));
    assert_eq!(ring.next_member(32, |m| m == 1 || m == 0), Some(2));
    assert_eq!(ring.next_member(511, |m| m == 0), Some(1), "wraps around");
    assert_eq!(ring.next_member(32, |_| true), None);
    let empty = build(RingParams::default(), spec(), &[]).unwrap();
    assert_eq!(empty.next_member(0, |_| false), None);
}

// ---- algorithm = "ring" is today's ring, bit for bit ----------------------------------

/// 64-bit FNV-1a of the owners' server ids, 8 little-endian bytes each.
fn owners_digest(ring: &Placement) -> u64 {
    owner_ids(ring)
        .iter()
        .flat_map(|id| id.to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
}

#[test]
fn ring_tables_are_pinned() {
    // Digests of whole owner tables (server ids 1..=N), computed outside this crate by a
    // straight Python transcription of SPEC §2 (Φ, probing, clockwise owner), before Maglev
    // and rendezvous were added: the ring the `algorithm` setting selects is the same ring.
    let cases = [
        (512, 9, Probing::Linear, 3, 0x0f5f_37d4_b107_0807),
        (512, 9, Probing::Linear, 10, 0xc3bd_5797_d623_e529),
        (512, 9, Probing::Quadratic, 10, 0x3aa7_b741_f13e_da4d),
        (65_537, 9, Probing::Linear, 10, 0x1059_65ff_9fb1_fa28),
        (1024, 7, Probing::Quadratic, 50, 0x58f2_35c3_2f0f_7fa5),
    ];
    for (m, k, probing, n, digest) in cases {
        let p = params(m, k, probing);
        let ids: Vec<u64> = (1..=n).collect();
        let direct = build(p, spec(), &ids).unwrap();
        let chosen = Balancer::new(crate::Algorithm::Ring, p)
            .place(spec(), &ids)
            .unwrap();
        assert_eq!(
            owners_digest(&direct),
            digest,
            "M {m} K {k} {probing} N {n}"
        );
        assert_eq!(direct.owners(), chosen.owners());
        for member in 0..ids.len() {
            assert_eq!(direct.virtual_slots(member), chosen.virtual_slots(member));
        }
        assert_eq!(chosen.balancer(), Balancer::Ring(p));
        assert_eq!(chosen.balancer().algorithm(), crate::Algorithm::Ring);
    }
}

#[test]
fn algorithms_by_name() {
    use crate::Algorithm;
    let names: Vec<&str> = Algorithm::ALL.iter().map(|a| a.name()).collect();
    assert_eq!(names, ["ring", "maglev", "rendezvous"]);
    assert_eq!(Algorithm::default(), Algorithm::Ring);
    let p = params(65_537, 3, Probing::Quadratic);
    assert_eq!(
        Balancer::new(Algorithm::Maglev, p),
        Balancer::Maglev { slots: 65_537 }
    );
    assert_eq!(
        Balancer::new(Algorithm::Rendezvous, p),
        Balancer::Rendezvous { slots: 65_537 }
    );
    for a in Algorithm::ALL {
        let b = Balancer::new(a, p);
        assert_eq!(b.algorithm(), a);
        assert_eq!(b.to_string(), a.to_string());
        assert_eq!(b.slots(), 65_537);
        assert_eq!(b.ring_params().is_some(), a == Algorithm::Ring);
    }
    use serde::de::value::{Error, StrDeserializer};
    use serde::de::IntoDeserializer;
    use serde::Deserialize;
    let de = |s: &'static str| -> Result<Algorithm, Error> {
        let d: StrDeserializer<'_, Error> = s.into_deserializer();
        Algorithm::deserialize(d)
    };
    assert_eq!(de("maglev"), Ok(Algorithm::Maglev));
    assert_eq!(de("rendezvous"), Ok(Algorithm::Rendezvous));
    assert!(de("Maglev").is_err());
    assert!(de("hrw").is_err());
}
