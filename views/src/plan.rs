//! `POST /_lb/plan` and `lb plan`: what a change of the replica set, the weights or the ring's
//! parameters would move, before it is made.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// The whole view.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Plan {
    /// The algorithm after the change.
    pub algorithm: String,
    /// `M` after the change.
    pub slots: u32,
    /// The hash functions' name after the change.
    pub hash: String,
    /// Slots whose owner changes (tables of the same size; 0 otherwise).
    pub slots_moved: u64,
    /// The share of requests whose replica changes (0 to 1).
    pub requests_moved: f64,
    /// The least share any change to these shares must move: what the replicas that grow gain.
    pub requests_minimum: f64,
    /// Every replica before or after, by server id.
    pub replicas: Vec<PlanReplica>,
    /// What moves from one replica to another, by (from, to) server id.
    pub moves: Vec<PlanMove>,
    /// Per slot, the hostname of the replica that owns it after the change (as `/_lb/ring`
    /// would show it).
    pub owners: Vec<String>,
}

/// One replica in a [`Plan`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PlanReplica {
    /// Its hostname.
    pub hostname: String,
    /// Its server id.
    pub id: u64,
    /// Its weight before (0: not in the ring).
    pub weight_before: u32,
    /// Its weight after (0: not in the ring).
    pub weight_after: u32,
    /// Slots it owns before.
    pub slots_before: u64,
    /// Slots it owns after.
    pub slots_after: u64,
    /// Its share of the requests before (0 to 1).
    pub share_before: f64,
    /// Its share of the requests after.
    pub share_after: f64,
    /// The share of all requests that come to it from other replicas.
    pub keys_in: f64,
    /// The share of all requests that leave it for other replicas.
    pub keys_out: f64,
}

/// Requests moving from one replica to another in a [`Plan`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PlanMove {
    /// The hostname that served them (empty: nobody, an empty ring).
    pub from: String,
    /// The hostname that serves them after.
    pub to: String,
    /// Slots that move.
    pub slots: u64,
    /// The share of all requests that moves.
    pub requests: f64,
}

impl Plan {
    /// The plan as a table for a terminal: per replica its share before → after and the keys
    /// it gains and loses, then the total moved against the least possible.
    pub fn table(&self) -> String {
        let pct = |x: f64| format!("{:.2}%", x * 100.0);
        let mut out = format!(
            "{:<24} {:>4} {:>10}    {:>10} {:>8} {:>10} {:>10}\n",
            "replica", "id", "before", "after", "weight", "keys in", "keys out"
        );
        for r in &self.replicas {
            let weight = if r.weight_before == r.weight_after {
                r.weight_after.to_string()
            } else {
                format!("{}→{}", r.weight_before, r.weight_after)
            };
            let _ = writeln!(
                out,
                "{:<24} {:>4} {:>10} →  {:>10} {:>8} {:>10} {:>10}",
                r.hostname,
                r.id,
                pct(r.share_before),
                pct(r.share_after),
                weight,
                pct(r.keys_in),
                pct(r.keys_out)
            );
        }
        let ratio = if self.requests_minimum > 0.0 {
            format!(
                " ({:.2}× the minimum)",
                self.requests_moved / self.requests_minimum
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "moved: {} of requests, {} of {} slots{ratio}; the least any change to these shares moves: {}",
            pct(self.requests_moved),
            self.slots_moved,
            self.slots,
            pct(self.requests_minimum)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_reads_back_and_prints_one_line_per_replica_and_the_total() {
        let plan = Plan {
            algorithm: "maglev".into(),
            slots: 7,
            hash: "spec".into(),
            slots_moved: 2,
            requests_moved: 0.25,
            requests_minimum: 0.2,
            replicas: vec![
                PlanReplica {
                    hostname: "Server 1".into(),
                    id: 1,
                    weight_before: 1,
                    weight_after: 2,
                    slots_before: 3,
                    slots_after: 5,
                    share_before: 0.5,
                    share_after: 0.7,
                    keys_in: 0.25,
                    keys_out: 0.05,
                },
                PlanReplica {
                    hostname: "Server 2".into(),
                    id: 2,
                    weight_before: 1,
                    weight_after: 1,
                    ..PlanReplica::default()
                },
            ],
            moves: vec![PlanMove {
                from: "Server 2".into(),
                to: "Server 1".into(),
                slots: 2,
                requests: 0.25,
            }],
            owners: vec!["Server 1".into(); 7],
        };
        let json = serde_json::to_string(&plan).unwrap();
        assert_eq!(serde_json::from_str::<Plan>(&json).unwrap(), plan);
        let table = plan.table();
        assert_eq!(table.lines().count(), 4, "{table}");
        assert!(table.contains("1→2"), "{table}");
        assert!(table.contains("50.00% →      70.00%"), "{table}");
        assert!(
            table.contains("moved: 25.00% of requests, 2 of 7 slots (1.25× the minimum)"),
            "{table}"
        );
    }
}
