//! The labels that make a Swarm service one of an instance's replicas, and what a listing of
//! them keeps: the replica a service's labels describe ([`spec_from_labels`]), one service per
//! server id and per hostname ([`distinct`]), its weight ([`WEIGHT_LABEL`], [`weight_label`]),
//! and the name lb gives a replica's service ([`service_name`]). Pure functions, unit-tested
//! here.

use std::collections::HashMap;

use super::super::engine::{HOSTNAME_LABEL, ID_LABEL};
use super::super::ReplicaSpec;
use crate::config::check_hostname;

/// Label naming the load-balancer instance a service (and its task's container) belongs to.
pub(crate) const INSTANCE_LABEL: &str = "io.lb.swarm.instance";

/// Label holding a replica's weight on the ring (1..=[`lb_balance::MAX_WEIGHT`]; absent: 1). On
/// the service only, not its task's container: changing it re-places the ring of every load
/// balancer of the instance without restarting the task.
pub(crate) const WEIGHT_LABEL: &str = "io.lb.weight";

/// The service name of server id `id` of `instance`.
pub(crate) fn service_name(instance: &str, id: u64) -> String {
    format!("{instance}-{id}")
}

/// The engine's filter for what carries the instance label of `instance`.
pub(super) fn label_filter(instance: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_owned(),
        vec![format!("{INSTANCE_LABEL}={instance}")],
    )])
}

/// A service's weight label: `Ok(w)` for a weight `lb.toml` would accept (or 1 when there is
/// none), `Err(value)` for one it would not (the replica then weighs 1, and the listing says
/// why once).
pub(super) fn weight_label(labels: &HashMap<String, String>) -> Result<u32, String> {
    let Some(value) = labels.get(WEIGHT_LABEL) else {
        return Ok(1);
    };
    value
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|w| (1..=lb_balance::MAX_WEIGHT).contains(w))
        .ok_or_else(|| value.chars().take(64).collect())
}

/// The replica a service's labels describe, when they are complete and valid (a hostname
/// `lb.toml` would accept, an id from 1), with its weight ([`weight_label`]; 1 when the label is
/// not a valid weight). Anyone with the engine's API can label a service.
pub(super) fn spec_from_labels(labels: &HashMap<String, String>) -> Option<ReplicaSpec> {
    let hostname = labels.get(HOSTNAME_LABEL)?;
    check_hostname(hostname).ok()?;
    // An id lb.toml can hold (a TOML integer), so that the write-back keeps it.
    let id = labels
        .get(ID_LABEL)?
        .parse::<u64>()
        .ok()
        .filter(|&id| id > 0 && i64::try_from(id).is_ok())?;
    Some(ReplicaSpec::managed(hostname.clone(), id).weighing(weight_label(labels).unwrap_or(1)))
}

/// A listing of the instance's services: the replicas (with their service ids), by id, and the
/// services left out because they repeat another's server id or hostname.
pub(super) struct Listing {
    /// The replicas kept, with their service ids.
    pub(super) kept: Vec<(ReplicaSpec, String)>,
    /// The services left out, with the replica each describes.
    pub(super) repeated: Vec<(ReplicaSpec, String)>,
    /// Services kept whose weight label is not a weight (service id, the label's value).
    pub(super) bad_weights: Vec<(String, String)>,
}

/// One service per server id and per hostname: the first by id wins, the rest are left out
/// (two replicas with one name could not be told apart by `/rm`).
/// `bad_weights` (services whose weight label is not a weight) is passed on to the listing.
pub(super) fn distinct(
    found: Vec<(ReplicaSpec, String)>,
    bad_weights: Vec<(String, String)>,
) -> Listing {
    let mut ids = std::collections::BTreeSet::new();
    let mut names = std::collections::BTreeSet::new();
    let (kept, repeated) = found.into_iter().partition(|(spec, _)| {
        let fresh = !ids.contains(&spec.id) && !names.contains(&spec.hostname);
        if fresh {
            ids.insert(spec.id);
            names.insert(spec.hostname.clone());
        }
        fresh
    });
    Listing {
        kept,
        repeated,
        bad_weights,
    }
}

/// The services of `repeated` that are not in `before` (service ids): what to warn about once.
pub(super) fn newly_repeated<'a>(
    repeated: &'a [(ReplicaSpec, String)],
    before: &std::collections::BTreeSet<String>,
) -> Vec<&'a (ReplicaSpec, String)> {
    repeated
        .iter()
        .filter(|(_, service)| !before.contains(service))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_make_a_replica_only_when_complete_and_valid() {
        let labels = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let full = labels(&[(HOSTNAME_LABEL, "Server 1"), (ID_LABEL, "7")]);
        assert_eq!(
            spec_from_labels(&full),
            Some(ReplicaSpec::managed("Server 1", 7))
        );
        assert_eq!(spec_from_labels(&labels(&[(ID_LABEL, "7")])), None);
        for bad in [
            "0",
            "-1",
            "x",
            "",
            "9223372036854775808",
            "18446744073709551615",
        ] {
            let l = labels(&[(HOSTNAME_LABEL, "a"), (ID_LABEL, bad)]);
            assert_eq!(spec_from_labels(&l), None, "id {bad:?}");
        }
    }

    /// `io.lb.weight`: what lb.toml accepts as a weight, or the replica weighs 1 and the
    /// listing can say which value it did not take (cut to 64 characters).
    #[test]
    fn the_weight_label_is_a_weight_or_one() {
        let with = |weight: Option<&str>| -> HashMap<String, String> {
            let mut l = HashMap::from([
                (HOSTNAME_LABEL.to_owned(), "a".to_owned()),
                (ID_LABEL.to_owned(), "3".to_owned()),
            ]);
            if let Some(w) = weight {
                l.insert(WEIGHT_LABEL.to_owned(), w.to_owned());
            }
            l
        };
        assert_eq!(weight_label(&with(None)), Ok(1));
        assert_eq!(weight_label(&with(Some("4"))), Ok(4));
        assert_eq!(weight_label(&with(Some(" 1000 "))), Ok(1000));
        assert_eq!(spec_from_labels(&with(Some("7"))).unwrap().weight, 7);
        let long = "9".repeat(100);
        for bad in ["0", "-2", "1001", "2.5", "x", "", long.as_str()] {
            let labels = with(Some(bad));
            let refused = weight_label(&labels).unwrap_err();
            assert_eq!(refused, bad.chars().take(64).collect::<String>());
            // Still the replica, at weight 1.
            let spec = spec_from_labels(&labels).unwrap();
            assert_eq!((spec.id, spec.weight), (3, 1), "{bad:?}");
        }
    }

    #[test]
    fn one_service_per_id_and_per_hostname() {
        let found = vec![
            (ReplicaSpec::managed("a", 1), "s1".to_owned()),
            (ReplicaSpec::managed("b", 1), "s2".to_owned()),
            (ReplicaSpec::managed("a", 2), "s3".to_owned()),
            (ReplicaSpec::managed("c", 3), "s4".to_owned()),
        ];
        let listing = distinct(found, Vec::new());
        let kept: Vec<&str> = listing.kept.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(kept, ["s1", "s4"]);
        let repeated: Vec<&str> = listing.repeated.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(repeated, ["s2", "s3"]);
    }

    /// The "repeats a server id" warning comes once per service left out, not every listing.
    #[test]
    fn a_repeated_id_is_warned_about_once() {
        let repeated = vec![
            (ReplicaSpec::managed("b", 1), "s2".to_owned()),
            (ReplicaSpec::managed("a", 2), "s3".to_owned()),
        ];
        let none = std::collections::BTreeSet::new();
        assert_eq!(newly_repeated(&repeated, &none).len(), 2);
        let seen: std::collections::BTreeSet<String> =
            repeated.iter().map(|(_, s)| s.clone()).collect();
        assert!(newly_repeated(&repeated, &seen).is_empty());
        let one: std::collections::BTreeSet<String> = ["s2".to_owned()].into();
        assert_eq!(newly_repeated(&repeated, &one)[0].1, "s3");
    }

    #[test]
    fn hostile_labels_make_no_replica() {
        for hostname in ["", "a\nb", &"x".repeat(10_000)] {
            let labels = HashMap::from([
                (HOSTNAME_LABEL.to_owned(), hostname.to_owned()),
                (ID_LABEL.to_owned(), "1".to_owned()),
            ]);
            assert_eq!(spec_from_labels(&labels), None, "{hostname:?}");
        }
    }

    #[test]
    fn service_names_carry_instance_and_id() {
        assert_eq!(service_name("lb-swarm", 12), "lb-swarm-12");
    }
}
