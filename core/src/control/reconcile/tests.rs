use std::collections::BTreeMap;
use std::sync::Arc;

use lb_balance::hash::SpecHash;
use lb_balance::ring::{Probing, RingParams};
use lb_balance::{Balancer, RingError, RingHash};

use super::*;

fn config(extra: &str, replicas: &[(u64, &str)]) -> Config {
    let mut text = String::from(extra);
    for (id, name) in replicas {
        text.push_str(&format!(
            "\n[[replicas]]\nhostname = \"{name}\"\nid = {id}\n"
        ));
    }
    Config::parse(&text).expect("test config is valid")
}

fn set(entries: &[(u64, &str)]) -> BTreeMap<u64, String> {
    entries.iter().map(|&(id, n)| (id, n.to_owned())).collect()
}

fn members(running: &[(u64, &str)], vacant: &[(u64, &str)]) -> Members {
    Members {
        running: set(running),
        vacant: set(vacant),
        adding: BTreeMap::new(),
        addresses: BTreeMap::new(),
        weights: BTreeMap::new(),
    }
}

fn spec(id: u64, hostname: &str) -> ReplicaSpec {
    ReplicaSpec::managed(hostname, id)
}

fn spec_hash() -> Arc<dyn RingHash> {
    Arc::new(SpecHash)
}

fn scale(n: usize, hostnames: &[&str]) -> ScaleRequest {
    ScaleRequest {
        n,
        hostnames: hostnames.iter().map(|s| s.to_string()).collect(),
        addresses: Vec::new(),
        tls: Vec::new(),
        protocols: Vec::new(),
        weights: Vec::new(),
    }
}

/// Backends by address: the same entry is kept whatever its health; a changed address is another
/// backend (out, then in once healthy); an entry that stops being one is replaced by a replica.
#[test]
fn backends_by_address_are_matched_by_their_address_too() {
    let file = |address: &str| {
        Config::parse(&format!(
            "[[replicas]]\nhostname = \"api-1\"\nid = 1\naddress = \"{address}\"\n\
             [[replicas]]\nhostname = \"Server 2\"\nid = 2\n"
        ))
        .unwrap()
    };
    let mut running = members(&[(1, "api-1"), (2, "Server 2")], &[]);
    running.addresses.insert(1, "10.0.0.5:80".into());
    let plan = reconcile(&running, &file("10.0.0.5:80"), &file("10.0.0.5:80"));
    assert_eq!((plan.stop.len(), plan.start.len()), (0, 0), "{plan:?}");

    let plan = reconcile(&running, &file("10.0.0.6:80"), &file("10.0.0.5:80"));
    assert_eq!(plan.stop, [1]);
    assert_eq!(
        plan.start,
        [ReplicaSpec {
            hostname: "api-1".into(),
            id: 1,
            address: Some("10.0.0.6:80".into()),
            pipelining: None,
            tls: None,
            protocol: crate::config::Protocol::Http1,
            weight: 1,
        }]
    );

    // Down (vacant) with the same address: kept waiting, nothing restarted.
    let mut down = members(&[(2, "Server 2")], &[(1, "api-1")]);
    down.addresses.insert(1, "10.0.0.5:80".into());
    let plan = reconcile(&down, &file("10.0.0.5:80"), &file("10.0.0.5:80"));
    assert_eq!((plan.forget.len(), plan.start.len()), (0, 0), "{plan:?}");

    // The same name and id without an address: a replica lb runs now.
    let plain = config("", &[(1, "api-1"), (2, "Server 2")]);
    let plan = reconcile(&running, &plain, &plain);
    assert_eq!(plan.stop, [1]);
    assert_eq!(plan.start, [spec(1, "api-1")]);
}

#[test]
fn add_pairs_addresses_with_the_first_new_entries_and_refuses_taken_ones() {
    let mut m = members(&THREE, &[]);
    m.addresses.insert(3, "127.0.0.1:9003".into());
    let ring = Balancer::Ring(RingParams::default());
    let mut request = scale(3, &["api-4"]);
    request.addresses = vec!["127.0.0.1:9004".into(), "Backend.Local:80".into()];
    let specs = plan_add(
        &m,
        &request,
        &ring,
        &spec_hash(),
        64,
        &mut fastrand::Rng::with_seed(1),
    )
    .unwrap();
    let got: Vec<_> = specs
        .iter()
        .map(|s| (s.id, s.hostname.as_str(), s.address.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            (4, "api-4", Some("127.0.0.1:9004")),
            (5, "Server 5", Some("Backend.Local:80")),
            (6, "Server 6", None),
        ]
    );
    request.addresses = vec!["127.0.0.1:9003".into()];
    assert_eq!(
        plan_add(
            &m,
            &request,
            &ring,
            &spec_hash(),
            64,
            &mut fastrand::Rng::with_seed(1)
        ),
        Err(ControlError::AddressTaken("127.0.0.1:9003".into()))
    );
}

const THREE: [(u64, &str); 3] = [(1, "Server 1"), (2, "Server 2"), (3, "Server 3")];

#[test]
fn the_same_file_plans_nothing() {
    let file = config("", &THREE);
    let plan = reconcile(&members(&THREE, &[]), &file, &file);
    assert_eq!(plan.stop, Vec::<u64>::new());
    assert_eq!(plan.forget, Vec::<u64>::new());
    assert_eq!(plan.start, Vec::new());
    assert_eq!(plan.needs_restart, Vec::<&str>::new());
    assert_eq!(plan.balancer, Balancer::Ring(RingParams::default()));
}

#[test]
fn removed_renamed_and_new_entries() {
    let startup = config("", &THREE);
    // id 1 gone, id 2 renamed (a different replica), id 3 kept, id 7 new.
    let file = config("", &[(2, "B"), (3, "Server 3"), (7, "G")]);
    let plan = reconcile(&members(&THREE, &[]), &file, &startup);
    assert_eq!(plan.stop, vec![1, 2]);
    assert_eq!(plan.start, vec![spec(2, "B"), spec(7, "G")]);
    assert!(plan.forget.is_empty());
}

#[test]
fn vacancies_are_kept_only_while_listed_with_their_name() {
    let startup = config("", &THREE);
    // Vacancy 2 is waiting as "S123456"; the file still lists the failed replica's old name,
    // so that is a different replica: forget the vacancy and start the listed one.
    let running = [(1, "Server 1"), (3, "Server 3")];
    let now = members(&running, &[(2, "S123456"), (4, "D")]);
    let file = config(
        "",
        &[(1, "Server 1"), (2, "Server 2"), (3, "Server 3"), (4, "D")],
    );
    let plan = reconcile(&now, &file, &startup);
    assert!(plan.stop.is_empty());
    assert_eq!(plan.forget, vec![2]);
    assert_eq!(plan.start, vec![spec(2, "Server 2")]);
}

#[test]
fn ring_changes_swap_and_restart_fields_are_reported() {
    let startup = config("", &THREE);
    let file = config(
        "listen = \"127.0.0.1:6000\"\n[proxy]\nworkers = 3\npipelining = false\n[plugins]\ndirs = [\"/tmp\"]\n[admin]\ntoken = \"t\"\nlisten = \"127.0.0.1:6001\"\n[log]\naccess = \"stdout\"\n[ring]\nvirtual_nodes = 4\nprobing = \"quadratic\"\n",
        &THREE,
    );
    let plan = reconcile(&members(&THREE, &[]), &file, &startup);
    // Workers, pipelining, the plugin directories, the token, the access log and the listen
    // address are live; a new admin listener is not.
    assert_eq!(plan.needs_restart, vec!["admin.listen"]);
    assert_eq!(
        plan.balancer,
        Balancer::Ring(RingParams {
            slots: 512,
            virtual_nodes: 4,
            probing: Probing::Quadratic,
        })
    );
    assert!(plan.stop.is_empty() && plan.start.is_empty());
}

#[test]
fn add_takes_the_lowest_free_ids_and_names_the_rest() {
    // Ids 1 and 3 run, 4 is vacant: the next ids are 2, 5, 6.
    let now = members(&[(1, "Server 1"), (3, "Server 3")], &[(4, "S100000")]);
    let balancer = Balancer::Ring(RingParams::default());
    let mut rng = fastrand::Rng::with_seed(7);
    let plan = plan_add(
        &now,
        &scale(3, &["X"]),
        &balancer,
        &spec_hash(),
        64,
        &mut rng,
    )
    .unwrap();
    assert_eq!(
        plan,
        vec![spec(2, "X"), spec(5, "Server 5"), spec(6, "Server 6")]
    );
}

#[test]
fn add_avoids_a_readable_name_in_use() {
    // "Server 2" is taken by the replica with id 1, so id 2 gets a random S-name.
    let now = members(&[(1, "Server 2")], &[]);
    let balancer = Balancer::Ring(RingParams::default());
    let mut rng = fastrand::Rng::with_seed(7);
    let plan = plan_add(&now, &scale(1, &[]), &balancer, &spec_hash(), 64, &mut rng).unwrap();
    assert_eq!(plan.len(), 1);
    assert_eq!(plan[0].id, 2);
    let name = &plan[0].hostname;
    assert!(name.starts_with('S') && name.len() == 7, "{name}");
    assert!(name[1..]
        .parse::<u32>()
        .is_ok_and(|n| (100_000..1_000_000).contains(&n)));
}

#[test]
fn add_refuses_taken_names_and_full_rings() {
    let now = members(&THREE, &[(4, "S4")]);
    let balancer = Balancer::Ring(RingParams::default());
    let mut rng = fastrand::Rng::with_seed(1);
    for taken in ["Server 2", "S4"] {
        assert_eq!(
            plan_add(
                &now,
                &scale(1, &[taken]),
                &balancer,
                &spec_hash(),
                64,
                &mut rng
            ),
            Err(ControlError::NameTaken(taken.to_owned()))
        );
    }
    // M = 40, K = 9: four members fit (36), five do not; the vacancy counts.
    let small = Balancer::Ring(RingParams {
        slots: 40,
        virtual_nodes: 9,
        probing: Probing::Linear,
    });
    assert!(plan_add(
        &members(&THREE, &[]),
        &scale(1, &[]),
        &small,
        &spec_hash(),
        64,
        &mut rng
    )
    .is_ok());
    assert_eq!(
        plan_add(&now, &scale(1, &[]), &small, &spec_hash(), 64, &mut rng),
        Err(ControlError::NoRoom {
            n: 1,
            source: RingError::TooManyVirtualNodes {
                replicas: 5,
                virtual_nodes: 9,
                slots: 40,
            },
        })
    );
}

#[test]
fn remove_takes_named_replicas_first_then_random_ones() {
    let now = members(&[(1, "A"), (2, "B"), (3, "C"), (4, "D")], &[(5, "E")]);
    for seed in 0..20 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let victims = plan_remove(&now, &scale(3, &["C"]), &mut rng).unwrap();
        assert_eq!(victims.len(), 3);
        assert_eq!(victims[0], 3);
        assert!(victims[1] != victims[2] && victims[1..].iter().all(|id| [1, 2, 4].contains(id)));
    }
}

#[test]
fn remove_refuses_too_many_and_unknown_names() {
    // A vacancy is not a running replica: it can be neither counted nor named.
    let now = members(&[(1, "A"), (2, "B")], &[(3, "C")]);
    let mut rng = fastrand::Rng::with_seed(3);
    assert_eq!(
        plan_remove(&now, &scale(3, &[]), &mut rng),
        Err(ControlError::TooFew { wanted: 3, have: 2 })
    );
    assert_eq!(
        plan_remove(&now, &scale(1, &["C"]), &mut rng),
        Err(ControlError::UnknownName {
            name: "C".to_owned(),
            replicas: vec!["A".to_owned(), "B".to_owned()],
        })
    );
}

#[test]
fn changes_are_described_for_the_log() {
    let old = config("", &THREE);
    let new = config(
        "[ring]\nvirtual_nodes = 12\nhash = \"murmur3\"\nkey = \"cookie:sid\"\n\
         key_fallback = \"client_ip\"\n[health]\nfall = 3\n",
        &[(2, "Server 2"), (3, "Server 3"), (5, "S5")],
    );
    let now = members(&THREE, &[]);
    let plan = reconcile(&now, &new, &old);
    assert_eq!(
        changes(&old, &new, &now, &plan),
        [
            "replica Server 1 removed (id 1)",
            "replica S5 added (id 5)",
            "virtual_nodes 9 → 12",
            "hash spec → murmur3",
            "key header:X-Request-Id → cookie:sid",
            "key_fallback random → client_ip",
            "health.fall 2 → 3",
        ]
    );
    assert!(changes(&old, &old, &now, &reconcile(&now, &old, &old)).is_empty());

    let grpc = config(
        "[health]\nkind = \"grpc\"\ngrpc_service = \"shard\"\n",
        &THREE,
    );
    let plan = reconcile(&now, &grpc, &old);
    assert_eq!(
        changes(&old, &grpc, &now, &plan),
        [
            "health.kind http → grpc",
            "health.grpc_service \"\" → \"shard\""
        ]
    );
    // Live, like the rest of [health]: nothing waits for a restart.
    assert!(plan.needs_restart.is_empty(), "{:?}", plan.needs_restart);
}

#[test]
fn ids_and_names_of_adds_still_starting_are_taken() {
    let mut now = members(&[(1, "Server 1")], &[]);
    now.adding = set(&[(2, "X")]);
    let balancer = Balancer::Ring(RingParams::default());
    let mut rng = fastrand::Rng::with_seed(5);
    assert_eq!(
        plan_add(
            &now,
            &scale(1, &["X"]),
            &balancer,
            &spec_hash(),
            64,
            &mut rng
        ),
        Err(ControlError::NameTaken("X".to_owned()))
    );
    let plan = plan_add(&now, &scale(1, &[]), &balancer, &spec_hash(), 64, &mut rng).unwrap();
    assert_eq!(plan, vec![spec(3, "Server 3")]);
}

#[test]
fn add_refuses_to_go_beyond_max_replicas() {
    let mut now = members(&THREE, &[(4, "S4")]);
    now.adding = set(&[(5, "S5")]);
    let balancer = Balancer::Ring(RingParams::default());
    let mut rng = fastrand::Rng::with_seed(9);
    assert!(plan_add(&now, &scale(1, &[]), &balancer, &spec_hash(), 6, &mut rng).is_ok());
    assert_eq!(
        plan_add(&now, &scale(2, &[]), &balancer, &spec_hash(), 6, &mut rng),
        Err(ControlError::TooMany { wanted: 7, max: 6 })
    );
}

#[test]
fn the_hash_key_and_trusting_forwarded_for_change_live() {
    let startup = config("", &THREE);
    let now = members(&THREE, &[]);
    let file = config(
        "[ring]\nkey = \"path\"\nkey_fallback = \"client_ip\"\n",
        &THREE,
    );
    let plan = reconcile(&now, &file, &startup);
    assert!(plan.needs_restart.is_empty(), "{:?}", plan.needs_restart);
    assert!(plan.stop.is_empty() && plan.start.is_empty());
    let file = config("[proxy]\ntrust_forwarded_for = true\n", &THREE);
    let plan = reconcile(&now, &file, &startup);
    assert!(plan.needs_restart.is_empty(), "{:?}", plan.needs_restart);
    assert_eq!(
        changes(&startup, &file, &now, &plan),
        ["proxy.trust_forwarded_for false → true"]
    );
}

#[test]
fn a_change_of_algorithm_swaps_the_balancer_live_and_is_logged() {
    let startup = config("", &THREE);
    let now = members(&THREE, &[]);
    let maglev = config("[ring]\nalgorithm = \"maglev\"\nslots = 65537\n", &THREE);
    let plan = reconcile(&now, &maglev, &startup);
    assert_eq!(plan.balancer, Balancer::Maglev { slots: 65_537 });
    assert!(plan.stop.is_empty() && plan.start.is_empty());
    assert!(plan.needs_restart.is_empty());
    assert_eq!(
        changes(&startup, &maglev, &now, &plan),
        ["algorithm ring → maglev", "slots 512 → 65537"]
    );
    let rendezvous = config(
        "[ring]\nalgorithm = \"rendezvous\"\nslots = 65537\n",
        &THREE,
    );
    let plan = reconcile(&now, &rendezvous, &startup);
    assert_eq!(plan.balancer, Balancer::Rendezvous { slots: 65_537 });
    assert_eq!(
        changes(&maglev, &rendezvous, &now, &plan),
        ["algorithm maglev → rendezvous"]
    );
    // /add checks room with the algorithm in force: Maglev needs N ≤ M.
    let small = Balancer::Maglev { slots: 3 };
    let mut rng = fastrand::Rng::with_seed(1);
    let err = plan_add(&now, &scale(1, &[]), &small, &spec_hash(), 64, &mut rng).unwrap_err();
    assert!(
        matches!(
            err,
            ControlError::NoRoom {
                source: RingError::FewerSlotsThanReplicas { .. },
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_membership_listing_adds_removes_and_renames() {
    let m = members(&[(1, "a"), (2, "b")], &[(3, "c")]);
    let all = |_: u64| true;
    // The same set: nothing.
    let same = set(&[(1, "a"), (2, "b"), (3, "c")]);
    assert_eq!(plan_membership(&m, &same, all), MembershipChange::default());
    // 2 gone, 4 new, 3 renamed (out under its old name, in under the new one).
    let listed = set(&[(1, "a"), (3, "z"), (4, "d")]);
    let change = plan_membership(&m, &listed, all);
    assert_eq!(change.gone, [2, 3]);
    assert_eq!(
        change.new,
        [ReplicaSpec::managed("z", 3), ReplicaSpec::managed("d", 4)]
    );
}

#[test]
fn a_membership_listing_leaves_ids_being_changed_here_alone() {
    let mut m = members(&[(1, "a"), (2, "b")], &[]);
    m.adding.insert(5, "e".into());
    // The listing was asked for before this lb's /rm of 2 (or of 6) was done, and while /add
    // of 5 is still starting: it speaks for none of them.
    let listed = set(&[(1, "a"), (2, "b"), (6, "f"), (7, "g")]);
    let change = plan_membership(&m, &set(&[(1, "a")]), |id| id != 2);
    assert_eq!(
        change,
        MembershipChange::default(),
        "2 kept: its removal is ours"
    );
    let change = plan_membership(&m, &listed, |id| id != 6);
    assert_eq!(change.new, [ReplicaSpec::managed("g", 7)]);
    assert!(change.gone.is_empty(), "5 (adding) untouched");
    // 6 was just removed here; a listing from before still shows it: not joined again.
    assert!(!change.new.iter().any(|s| s.id == 6));
    // Without the guard, 2 would go.
    let change = plan_membership(&m, &set(&[(1, "a")]), |_| true);
    assert_eq!(change.gone, [2]);
}

/// The save race of shared membership: a file saved before this lb wrote a listing's change
/// back (the listing added 4 and removed 2 meanwhile) must not undo it. Only the ids the save
/// itself changed relative to the version lb last wrote or applied are acted on.
#[test]
fn a_shared_file_save_acts_only_on_the_ids_it_changed() {
    // What lb last wrote: 1, 2, 3. The swarm since: 2 removed (another lb's /rm), 4 added
    // (another lb's /add); lb has not written that back yet.
    let base: FileList = set(&[(1, "a"), (2, "b"), (3, "c")])
        .into_iter()
        .map(|(id, name)| (id, (name, 1)))
        .collect();
    let now = members(&[(1, "a"), (3, "c"), (4, "d")], &[]);
    // A save that changed only a setting: the old replica list, nothing to do.
    let save = config(
        "[health]\ninterval_ms = 250",
        &[(1, "a"), (2, "b"), (3, "c")],
    );
    let mut plan = reconcile(&now, &save, &save);
    assert_eq!(
        (plan.stop.clone(), plan.start.len()),
        (vec![4], 1),
        "absolute: {plan:?}"
    );
    plan.only(&file_touched(&base, &save));
    assert!(
        plan.stop.is_empty() && plan.forget.is_empty() && plan.start.is_empty(),
        "{plan:?}"
    );

    // A save that removes 3, renames 1 and adds 5: exactly that, 2 and 4 left to the swarm.
    let save = config("", &[(1, "z"), (2, "b"), (5, "e")]);
    let touched = file_touched(&base, &save);
    assert_eq!(touched, BTreeSet::from([1, 3, 5]));
    let mut plan = reconcile(&now, &save, &save);
    plan.only(&touched);
    assert_eq!(plan.stop, [1, 3]);
    assert_eq!(plan.start, [spec(1, "z"), spec(5, "e")]);

    // Vacancies follow the same rule.
    let waiting = members(&[(1, "a")], &[(3, "c"), (4, "d")]);
    let save = config("", &[(1, "a"), (2, "b")]);
    let mut plan = reconcile(&waiting, &save, &save);
    plan.only(&file_touched(&base, &save));
    assert_eq!(plan.forget, [3], "{plan:?}");
    assert!(plan.start.is_empty(), "2 is not re-created: {plan:?}");
}

/// A shared save speaks for a weight only where it changed it (or lists a new entry): the
/// others keep what the runtime lists, even when the saved text is older than the listing.
#[test]
fn a_shared_file_save_speaks_only_for_the_weights_it_changed() {
    let base: FileList = [(1, ("a".to_owned(), 1)), (2, ("b".to_owned(), 3))].into();
    let save = Config::parse(
        "[[replicas]]\nhostname = \"a\"\nid = 1\nweight = 4\n\
         [[replicas]]\nhostname = \"b\"\nid = 2\nweight = 3\n\
         [[replicas]]\nhostname = \"c\"\nid = 5\n",
    )
    .unwrap();
    assert_eq!(
        weights_touched(&base, &save),
        BTreeMap::from([(1, 4), (5, 1)])
    );
    // Nothing changed: nothing to speak for (2 keeps a weight of 3 the runtime may have changed).
    let same = Config::parse(
        "[[replicas]]\nhostname = \"a\"\nid = 1\n\
         [[replicas]]\nhostname = \"b\"\nid = 2\nweight = 3\n",
    )
    .unwrap();
    assert!(weights_touched(&base, &same).is_empty());
    // Weight 1 written out or left out is the same weight.
    assert_eq!(file_touched(&base, &same), BTreeSet::new());
}

#[test]
fn room_counts_what_fits_in_the_ring() {
    let ring = |slots: u32| {
        Balancer::Ring(RingParams {
            slots,
            virtual_nodes: 9,
            probing: Probing::Linear,
        })
    };
    // K·N ≤ M: 27 slots hold 3 replicas of 9 virtual nodes.
    assert_eq!(room(&ring(27), 0, 5), 3);
    assert_eq!(room(&ring(27), 2, 5), 1);
    assert_eq!(room(&ring(27), 3, 5), 0);
    assert_eq!(room(&ring(512), 3, 5), 5);
    assert_eq!(room(&ring(27), 0, 0), 0);
}

#[test]
fn a_changed_weight_is_logged_and_keeps_the_replica() {
    let old = config("", &THREE);
    let new = Config::parse(
        "[[replicas]]\nhostname = \"Server 1\"\nid = 1\nweight = 4\n\
         [[replicas]]\nhostname = \"Server 2\"\nid = 2\n\
         [[replicas]]\nhostname = \"Server 3\"\nid = 3\n",
    )
    .unwrap();
    let mut now = members(&THREE, &[]);
    now.weights.insert(2, 3);
    let plan = reconcile(&now, &new, &old);
    assert!(plan.stop.is_empty() && plan.start.is_empty(), "{plan:?}");
    assert_eq!(
        changes(&old, &new, &now, &plan),
        [
            "replica Server 1 weight 1 → 4 (id 1)",
            "replica Server 2 weight 3 → 1 (id 2)"
        ]
    );
}

#[test]
fn add_counts_weights_against_the_rings_room() {
    // K = 4, M = 16: three replicas of weight 1 hold 12 virtual nodes.
    let balancer = Balancer::Ring(RingParams {
        slots: 16,
        virtual_nodes: 4,
        probing: Probing::Linear,
    });
    let now = members(&THREE, &[]);
    let mut rng = fastrand::Rng::with_seed(7);
    let mut request = scale(1, &[]);
    assert!(plan_add(&now, &request, &balancer, &spec_hash(), 64, &mut rng).is_ok());
    request.weights = vec![2];
    let refused = plan_add(&now, &request, &balancer, &spec_hash(), 64, &mut rng);
    assert!(
        matches!(
            refused,
            Err(ControlError::NoRoom {
                n: 1,
                source: RingError::TooMuchWeight {
                    total_weight: 5,
                    ..
                }
            })
        ),
        "{refused:?}"
    );
    // The members' own weights count too.
    let mut heavy = members(&THREE[..2], &[]);
    heavy.weights.insert(1, 2);
    request.weights = vec![1];
    assert!(plan_add(&heavy, &request, &balancer, &spec_hash(), 64, &mut rng).is_ok());
    heavy.weights.insert(2, 2);
    assert!(plan_add(&heavy, &request, &balancer, &spec_hash(), 64, &mut rng).is_err());
}
