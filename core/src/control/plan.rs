//! Plans: what a change would move, before it is made (`POST /_lb/plan`, `lb plan`). Pure: a
//! table before, the parameters after, and [`lb_balance::compare::plan`] between them; nothing
//! here changes the running state.

use std::collections::BTreeMap;
use std::sync::Arc;

use lb_balance::compare;
use lb_balance::{Balancer, PlaceError, Placement, RingHash};
use lb_views::{Plan, PlanMove, PlanReplica};

use crate::config::Config;

/// The request ids a plan weighs slots by: every 6-digit id, as the assignment's clients send
/// them (each counts once, in the slot `H(id) mod M` of its table).
pub(crate) fn sample_keys() -> Vec<u64> {
    (100_000..1_000_000).collect()
}

/// A table's replicas and how to build it: what a plan compares.
#[derive(Clone)]
pub(crate) struct Side {
    /// The algorithm and its parameters.
    pub(crate) balancer: Balancer,
    /// H and Φ.
    pub(crate) hash: Arc<dyn RingHash>,
    /// The replicas in the ring: server id → (hostname, weight).
    pub(crate) replicas: BTreeMap<u64, (String, u32)>,
}

impl Side {
    /// The replicas `config` lists, with its ring and `hash`.
    pub(crate) fn of_config(config: &Config, hash: Arc<dyn RingHash>) -> Side {
        Side {
            balancer: config.balancer(),
            hash,
            replicas: config
                .replicas
                .iter()
                .map(|r| (*r.id.get_ref(), (r.hostname.get_ref().clone(), r.weight())))
                .collect(),
        }
    }

    /// Build its table. Blocking for large tables: run it off the controller.
    pub(crate) fn place(&self) -> Result<Placement, PlaceError> {
        let ids: Vec<u64> = self.replicas.keys().copied().collect();
        let weights: Vec<u32> = self.replicas.values().map(|(_, w)| *w).collect();
        self.balancer
            .place_weighted(Arc::clone(&self.hash), &ids, &weights)
    }
}

/// The plan from the table `before` (its replicas named by `before_names`) to `after`, built
/// from `after_side`, over `keys`.
pub(crate) fn view(
    before: &Placement,
    before_names: &BTreeMap<u64, String>,
    after: &Placement,
    after_side: &Side,
    keys: &[u64],
) -> Plan {
    let transfer = compare::plan(before, after, keys);
    let name = |id: u64| -> String {
        after_side
            .replicas
            .get(&id)
            .map(|(n, _)| n.clone())
            .or_else(|| before_names.get(&id).cloned())
            .unwrap_or_default()
    };
    // In whole weights: a table built while a replica ramps in counts in finer units, rounded
    // up here (a ramping replica shows at least 1).
    let weight_in = |table: &Placement, id: u64| {
        let scale = table.scale().max(1);
        table
            .server_ids()
            .iter()
            .position(|&i| i == id)
            .map_or(0, |k| table.weights()[k].div_ceil(scale))
    };
    let mut replicas: Vec<PlanReplica> = transfer
        .parts
        .iter()
        .map(|p| PlanReplica {
            hostname: name(p.id),
            id: p.id,
            weight_before: weight_in(before, p.id),
            weight_after: weight_in(after, p.id),
            slots_before: p.slots_before,
            slots_after: p.slots_after,
            share_before: p.requests_before,
            share_after: p.requests_after,
            keys_in: 0.0,
            keys_out: 0.0,
        })
        .collect();
    for m in &transfer.moves {
        for r in replicas.iter_mut() {
            if r.id == m.to {
                r.keys_in += m.requests;
            }
            if r.id == m.from {
                r.keys_out += m.requests;
            }
        }
    }
    let moves = transfer
        .moves
        .iter()
        .map(|m| PlanMove {
            from: if m.from == 0 {
                String::new()
            } else {
                name(m.from)
            },
            to: name(m.to),
            slots: m.slots,
            requests: m.requests,
        })
        .collect();
    let owners = compare::owner_ids(after).into_iter().map(name).collect();
    Plan {
        algorithm: after.balancer().name().to_owned(),
        slots: after.slots(),
        hash: after_side.hash.name().to_owned(),
        slots_moved: transfer.slots_moved,
        requests_moved: transfer.requests_moved,
        requests_minimum: transfer.requests_minimum,
        replicas,
        moves,
        owners,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_balance::hash::SpecHash;

    fn side(balancer: Balancer, replicas: &[(u64, &str, u32)]) -> Side {
        Side {
            balancer,
            hash: Arc::new(SpecHash),
            replicas: replicas
                .iter()
                .map(|&(id, name, w)| (id, (name.to_owned(), w)))
                .collect(),
        }
    }

    #[test]
    fn a_weight_change_with_rendezvous_moves_keys_only_to_that_replica() {
        let rendezvous = Balancer::Rendezvous { slots: 4096 };
        let before = side(rendezvous, &[(1, "a", 1), (2, "b", 1), (3, "c", 1)]);
        let after = side(rendezvous, &[(1, "a", 2), (2, "b", 1), (3, "c", 1)]);
        let names = before
            .replicas
            .iter()
            .map(|(id, (n, _))| (*id, n.clone()))
            .collect();
        let (b, a) = (before.place().unwrap(), after.place().unwrap());
        let plan = view(&b, &names, &a, &after, &[]);
        assert!(plan.moves.iter().all(|m| m.to == "a"), "{:?}", plan.moves);
        assert!(plan.slots_moved > 0);
        let a_part = &plan.replicas[0];
        assert_eq!((a_part.weight_before, a_part.weight_after), (1, 2));
        assert_eq!(a_part.keys_out, 0.0);
        assert!((a_part.keys_in - plan.requests_moved).abs() < 1e-9);
        // Only what a gains moves: the minimum.
        assert!((plan.requests_moved - plan.requests_minimum).abs() < 1e-9);
        assert_eq!(plan.owners.len(), 4096);
        let expected: Vec<String> = compare::owner_ids(&a)
            .iter()
            .map(|id| ["", "a", "b", "c"][*id as usize].to_owned())
            .collect();
        assert_eq!(plan.owners, expected);
    }

    #[test]
    fn an_added_replica_is_named_from_the_side_after_and_gains_what_others_lose() {
        let maglev = Balancer::Maglev { slots: 65_537 };
        let before = side(maglev, &[(1, "a", 1), (2, "b", 1)]);
        let after = side(maglev, &[(1, "a", 1), (2, "b", 1), (3, "new", 3)]);
        let names = BTreeMap::from([(1, "a".to_owned()), (2, "b".to_owned())]);
        let (b, a) = (before.place().unwrap(), after.place().unwrap());
        let plan = view(&b, &names, &a, &after, &sample_keys());
        let new = plan.replicas.iter().find(|r| r.id == 3).unwrap();
        assert_eq!(
            (new.hostname.as_str(), new.weight_before, new.weight_after),
            ("new", 0, 3)
        );
        // Weight 3 of 5: within a point of 60 % of the requests, all of them moved in.
        assert!((new.share_after - 0.6).abs() < 0.01, "{}", new.share_after);
        assert!((new.keys_in - new.share_after).abs() < 1e-9);
        let lost: f64 = plan.replicas.iter().map(|r| r.keys_out).sum();
        assert!((lost - plan.requests_moved).abs() < 1e-9);
        assert!(
            plan.requests_moved <= 1.25 * plan.requests_minimum,
            "{plan:?}"
        );
    }
}
