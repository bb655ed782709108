//! The controller's decisions as pure functions: given the running set and what is wanted (a new
//! `lb.toml`, an `/add`, an `/rm`), say what to start, stop and swap. No I/O, no clock, no
//! processes: the controller carries the plans out, and these are unit-tested on their own
//! (`reconcile/tests.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use lb_balance::{Balancer, RingHash};

use crate::config::Config;

use super::command::{AddedTls, ControlError, ScaleRequest};
use super::supervisor::ReplicaSpec;

/// The replica set as the controller holds it: server id → hostname, for replicas in the ring
/// and for vacancies (ids waiting for a replacement).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Members {
    /// Replicas in the ring.
    pub(crate) running: BTreeMap<u64, String>,
    /// Ids without a running replica, with the hostname the next attempt uses.
    pub(crate) vacant: BTreeMap<u64, String>,
    /// Ids and names reserved by `/add`s still starting their replicas.
    pub(crate) adding: BTreeMap<u64, String>,
    /// The configured `HOST:PORT` of every running or vacant backend by address.
    pub(crate) addresses: BTreeMap<u64, String>,
    /// Weights other than 1, by server id.
    pub(crate) weights: BTreeMap<u64, u32>,
}

impl Members {
    /// Whether a replica or a vacancy uses `name`.
    pub(crate) fn name_taken(&self, name: &str) -> bool {
        self.running
            .values()
            .chain(self.vacant.values())
            .chain(self.adding.values())
            .any(|n| n == name)
    }

    fn id_taken(&self, id: u64) -> bool {
        self.running.contains_key(&id)
            || self.vacant.contains_key(&id)
            || self.adding.contains_key(&id)
    }

    /// A random hostname in the assignment's style (`S` and six digits) that neither a member
    /// nor `also_taken` uses.
    pub(crate) fn random_hostname(&self, also_taken: &[String], rng: &mut fastrand::Rng) -> String {
        loop {
            let name = format!("S{}", rng.u32(100_000..1_000_000));
            if !self.name_taken(&name) && !also_taken.contains(&name) {
                return name;
            }
        }
    }
}

/// What to do so that the running set matches a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Running replicas to take out of the ring, drain and stop: ids no longer listed, or listed
    /// with another hostname (a different replica).
    pub(crate) stop: Vec<u64>,
    /// Vacancies to give up for the same reasons.
    pub(crate) forget: Vec<u64>,
    /// Replicas to start; they join the ring after their first heartbeat.
    pub(crate) start: Vec<ReplicaSpec>,
    /// The algorithm and parameters to build tables with from now on (swapped with the
    /// remaining replicas in one snapshot).
    pub(crate) balancer: Balancer,
    /// Fields that changed but take effect only after a restart.
    pub(crate) needs_restart: Vec<&'static str>,
}

/// Plan the change from `members` to `desired`. Replicas are matched by server id, hostname
/// *and* address (a backend that moved is another backend); `startup` is the configuration the
/// process started with (for fields that need a restart).
pub(crate) fn reconcile(members: &Members, desired: &Config, startup: &Config) -> Plan {
    let wanted: BTreeMap<u64, &crate::config::ReplicaEntry> = desired
        .replicas
        .iter()
        .map(|r| (*r.id.get_ref(), r))
        .collect();
    let same = |id: &u64, name: &String, entry: &crate::config::ReplicaEntry| {
        entry.hostname.get_ref() == name
            && entry.address() == members.addresses.get(id).map(String::as_str)
    };
    let unwanted = |(id, name): (&u64, &String)| {
        (!wanted.get(id).is_some_and(|e| same(id, name, e))).then_some(*id)
    };
    let stop: Vec<u64> = members.running.iter().filter_map(unwanted).collect();
    let forget: Vec<u64> = members.vacant.iter().filter_map(unwanted).collect();
    let start = wanted
        .iter()
        .filter(|(id, entry)| {
            let kept =
                |set: &BTreeMap<u64, String>| set.get(id).is_some_and(|n| same(id, n, entry));
            !kept(&members.running) && !kept(&members.vacant)
        })
        .map(|(&id, entry)| ReplicaSpec {
            hostname: entry.hostname.get_ref().clone(),
            id,
            address: entry.address().map(str::to_owned),
            pipelining: entry.pipelining,
            tls: entry.tls_settings.clone(),
            protocol: entry.protocol(),
            weight: entry.weight(),
        })
        .collect();
    let mut needs_restart = Vec::new();
    if desired.supervisor != startup.supervisor {
        needs_restart.push("supervisor");
    }
    // `[proxy]` (workers too), `[log]`, `[plugins]`, the admin token, the TLS handshake rules
    // and the listeners' addresses are live (`Config::front`, the controller's `apply`);
    // a listener that appears or goes away is not.
    if desired.admin.listen.is_some() != startup.admin.listen.is_some() {
        needs_restart.push("admin.listen");
    }
    if desired.tls_listen().is_some() != startup.tls_listen().is_some() {
        needs_restart.push("tls.listen");
    }
    Plan {
        stop,
        forget,
        start,
        balancer: desired.balancer(),
        needs_restart,
    }
}

impl Plan {
    /// Keep only what concerns `ids`: the rest of the replica set is left as it is.
    pub(crate) fn only(&mut self, ids: &BTreeSet<u64>) {
        self.stop.retain(|id| ids.contains(id));
        self.forget.retain(|id| ids.contains(id));
        self.start.retain(|spec| ids.contains(&spec.id));
    }
}

/// Shared membership: the server ids a saved file changes relative to `base`, the replica list
/// (id → hostname) of the file version this load balancer last wrote or applied — entries
/// added, removed or renamed by whoever saved it. A save expresses only that change: ids it did
/// not touch keep whatever the runtime says, so a file text older than a listing (saved before
/// this load balancer wrote the listing's change back) never undoes the listing.
pub(crate) fn file_touched(base: &FileList, desired: &Config) -> BTreeSet<u64> {
    let saved: BTreeMap<u64, &String> = desired
        .replicas
        .iter()
        .map(|r| (*r.id.get_ref(), r.hostname.get_ref()))
        .collect();
    let changed = base
        .iter()
        .filter(|(id, (name, _))| saved.get(id) != Some(&name))
        .map(|(id, _)| *id);
    let added = saved.keys().filter(|id| !base.contains_key(id)).copied();
    changed.chain(added).collect()
}

/// A file's replica list as a shared membership compares saves with it: id → (hostname,
/// weight).
pub(crate) type FileList = BTreeMap<u64, (String, u32)>;

/// The replicas of `desired` whose weight a save changed relative to `base` (entries new to
/// the file included), with the weight saved: the only weights a save speaks for when the
/// replica set is shared — every other replica keeps the weight the runtime lists.
pub(crate) fn weights_touched(base: &FileList, desired: &Config) -> BTreeMap<u64, u32> {
    desired
        .replicas
        .iter()
        .map(|r| (*r.id.get_ref(), r.weight()))
        .filter(|(id, weight)| base.get(id).map(|(_, w)| w) != Some(weight))
        .collect()
}

/// How many of `wanted` more replicas fit in a ring that already holds `base` (the capacity
/// rule of `balancer`, e.g. `K·N ≤ M`).
pub(crate) fn room(balancer: &Balancer, base: usize, wanted: usize) -> usize {
    let mut room = wanted;
    while room > 0 && balancer.check_capacity(base + room).is_err() {
        room -= 1;
    }
    room
}

/// What a configuration change does, in words for the log: replicas added and removed (from
/// `plan`, named as `members` knows them) and every setting that differs between `old` and
/// `new`, as `name old → new`.
pub(crate) fn changes(old: &Config, new: &Config, members: &Members, plan: &Plan) -> Vec<String> {
    let mut out = Vec::new();
    for id in &plan.stop {
        if let Some(name) = members.running.get(id) {
            out.push(format!("replica {name} removed (id {id})"));
        }
    }
    for id in &plan.forget {
        if let Some(name) = members.vacant.get(id) {
            out.push(format!("replacement {name} for id {id} no longer wanted"));
        }
    }
    for spec in &plan.start {
        match &spec.address {
            Some(address) => out.push(format!(
                "backend {} at {address} added (id {})",
                spec.hostname, spec.id
            )),
            None => out.push(format!("replica {} added (id {})", spec.hostname, spec.id)),
        }
    }
    for entry in &new.replicas {
        let id = *entry.id.get_ref();
        let kept = members
            .running
            .get(&id)
            .or_else(|| members.vacant.get(&id))
            .filter(|_| !plan.stop.contains(&id) && !plan.forget.contains(&id));
        let before = members.weights.get(&id).copied().unwrap_or(1);
        if let Some(name) = kept {
            if before != entry.weight() {
                out.push(format!(
                    "replica {name} weight {before} → {} (id {id})",
                    entry.weight()
                ));
            }
        }
    }
    let mut field = |name: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{name} {a} → {b}"));
        }
    };
    field(
        "algorithm",
        old.ring.algorithm.get_ref().to_string(),
        new.ring.algorithm.get_ref().to_string(),
    );
    let (o, n) = (old.ring_params(), new.ring_params());
    field("slots", o.slots.to_string(), n.slots.to_string());
    field(
        "virtual_nodes",
        o.virtual_nodes.to_string(),
        n.virtual_nodes.to_string(),
    );
    field("probing", o.probing.to_string(), n.probing.to_string());
    field(
        "hash",
        old.ring.hash.get_ref().clone(),
        new.ring.hash.get_ref().clone(),
    );
    field(
        "key",
        old.ring.key.get_ref().to_string(),
        new.ring.key.get_ref().to_string(),
    );
    field(
        "key_fallback",
        old.ring.key_fallback.to_string(),
        new.ring.key_fallback.to_string(),
    );
    field(
        "bounded_load",
        old.ring.bounded_load.get_ref().to_string(),
        new.ring.bounded_load.get_ref().to_string(),
    );
    field(
        "slow_start_ms",
        old.ring.slow_start_ms.get_ref().to_string(),
        new.ring.slow_start_ms.get_ref().to_string(),
    );
    let (o, n) = (&old.health, &new.health);
    for (name, a, b) in [
        ("health.interval_ms", o.interval_ms, n.interval_ms),
        ("health.timeout_ms", o.timeout_ms, n.timeout_ms),
        ("health.fall", u64::from(o.fall), u64::from(n.fall)),
        ("health.rise", u64::from(o.rise), u64::from(n.rise)),
        (
            "health.start_timeout_ms",
            o.start_timeout_ms,
            n.start_timeout_ms,
        ),
        (
            "health.drain_timeout_ms",
            o.drain_timeout_ms,
            n.drain_timeout_ms,
        ),
    ] {
        field(name, a.to_string(), b.to_string());
    }
    field("health.path", o.path.clone(), n.path.clone());
    field("health.kind", o.kind.to_string(), n.kind.to_string());
    field(
        "health.grpc_service",
        format!("{:?}", o.grpc_service.as_deref().unwrap_or("")),
        format!("{:?}", n.grpc_service.as_deref().unwrap_or("")),
    );
    field(
        "plugins.dirs",
        format!("{:?}", old.plugins.dirs),
        format!("{:?}", new.plugins.dirs),
    );
    field("listen", old.listen.to_string(), new.listen.to_string());
    field(
        "limits.max_replicas",
        old.limits.max_replicas.to_string(),
        new.limits.max_replicas.to_string(),
    );
    field(
        "proxy.workers",
        old.proxy.workers.to_string(),
        new.proxy.workers.to_string(),
    );
    field(
        "proxy.pipelining",
        old.proxy.pipelining.to_string(),
        new.proxy.pipelining.to_string(),
    );
    field(
        "proxy.trust_forwarded_for",
        old.proxy.trust_forwarded_for.to_string(),
        new.proxy.trust_forwarded_for.to_string(),
    );
    field(
        "supervisor",
        format!("{:?}", old.supervisor),
        format!("{:?}", new.supervisor),
    );
    out
}

/// Plan an `/add` (refused beyond `max_replicas` in all): new replicas get the lowest free
/// server ids (so removing a replica and adding one back restores the ring), the names asked
/// for, then `Server <id>` (or a random name if that one is taken); the first ones get the
/// addresses asked for (backends by address), the rest are replicas to start. Refused if a name
/// or an address is taken or the ring has no room for them.
pub(crate) fn plan_add(
    members: &Members,
    request: &ScaleRequest,
    balancer: &Balancer,
    hash: &Arc<dyn RingHash>,
    max_replicas: usize,
    rng: &mut fastrand::Rng,
) -> Result<Vec<ReplicaSpec>, ControlError> {
    let have = members.running.len() + members.vacant.len() + members.adding.len();
    if have + request.n > max_replicas {
        return Err(ControlError::TooMany {
            wanted: have + request.n,
            max: max_replicas,
        });
    }
    if let Some(name) = request.hostnames.iter().find(|n| members.name_taken(n)) {
        return Err(ControlError::NameTaken(name.clone()));
    }
    let address_taken = |a: &String| {
        members
            .addresses
            .values()
            .any(|b| b.eq_ignore_ascii_case(a))
    };
    if let Some(address) = request.addresses.iter().find(|a| address_taken(a)) {
        return Err(ControlError::AddressTaken(address.clone()));
    }
    let ids: Vec<u64> = (1u64..)
        .filter(|&id| !members.id_taken(id))
        .take(request.n)
        .collect();
    let all: Vec<u64> = members
        .running
        .keys()
        .chain(members.vacant.keys())
        .chain(members.adding.keys())
        .chain(&ids)
        .copied()
        .collect();
    // Weights: the members' own, then the request's by position (1 for the rest).
    let mut asked = request.weights.iter().copied();
    let weights: Vec<u32> = all
        .iter()
        .map(|id| match members.weights.get(id) {
            _ if ids.contains(id) => asked.next().unwrap_or(1),
            Some(&w) => w,
            None => 1,
        })
        .collect();
    balancer
        .place_weighted(Arc::clone(hash), &all, &weights)
        .map_err(|source| ControlError::NoRoom {
            n: request.n,
            source,
        })?;
    let mut names = request.hostnames.clone();
    for &id in &ids[names.len()..] {
        let readable = format!("Server {id}");
        let name = if members.name_taken(&readable) || names.contains(&readable) {
            members.random_hostname(&names, rng)
        } else {
            readable
        };
        names.push(name);
    }
    let mut addresses = request.addresses.iter().cloned();
    let mut protocols = request.protocols.iter().copied();
    let mut weights = request.weights.iter().copied();
    let mut tls = request
        .tls
        .iter()
        .map(|t| t.as_ref().and_then(AddedTls::built));
    Ok(names
        .into_iter()
        .zip(ids)
        .map(|(hostname, id)| ReplicaSpec {
            hostname,
            id,
            address: addresses.next(),
            pipelining: None,
            tls: tls.next().flatten().cloned(),
            protocol: protocols.next().unwrap_or_default(),
            weight: weights.next().unwrap_or(1),
        })
        .collect())
}

/// Plan an `/rm`: the ids of the replicas named, then of others picked at random until there
/// are `n`. Refused if `n` exceeds the replicas running or a name is not one of them.
pub(crate) fn plan_remove(
    members: &Members,
    request: &ScaleRequest,
    rng: &mut fastrand::Rng,
) -> Result<Vec<u64>, ControlError> {
    if request.n > members.running.len() {
        return Err(ControlError::TooFew {
            wanted: request.n,
            have: members.running.len(),
        });
    }
    let id_of = |name: &String| {
        members
            .running
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(&id, _)| id)
    };
    let mut victims = Vec::with_capacity(request.n);
    for name in &request.hostnames {
        match id_of(name) {
            Some(id) => victims.push(id),
            None => {
                return Err(ControlError::UnknownName {
                    name: name.clone(),
                    replicas: members.running.values().cloned().collect(),
                })
            }
        }
    }
    let mut others: Vec<u64> = members
        .running
        .keys()
        .copied()
        .filter(|id| !victims.contains(id))
        .collect();
    rng.shuffle(&mut others);
    victims.extend(others.into_iter().take(request.n - victims.len()));
    Ok(victims)
}

/// What a shared-membership listing (Swarm's labelled services) changes in the replica set.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct MembershipChange {
    /// Ids to take out of the ring: their service is gone, or now runs another hostname.
    pub(crate) gone: Vec<u64>,
    /// Replicas to find and join: services that appeared (or were renamed).
    pub(crate) new: Vec<ReplicaSpec>,
}

/// Compare a membership listing (`id → hostname`) with the replica set. Ids in `/add`s still
/// starting, and ids `settled` says this load balancer is changing itself (the listing was
/// asked for before its change was done), are left alone either way.
pub(crate) fn plan_membership(
    members: &Members,
    listed: &BTreeMap<u64, String>,
    settled: impl Fn(u64) -> bool,
) -> MembershipChange {
    let ours = |id: u64| settled(id) && !members.adding.contains_key(&id);
    let current: BTreeMap<u64, &String> = members
        .running
        .iter()
        .chain(&members.vacant)
        .filter(|(id, _)| ours(**id))
        .map(|(id, name)| (*id, name))
        .collect();
    let gone = current
        .iter()
        .filter(|(id, name)| listed.get(id) != Some(**name))
        .map(|(id, _)| *id)
        .collect();
    let new = listed
        .iter()
        .filter(|(id, name)| ours(**id) && current.get(id) != Some(name))
        .map(|(id, name)| ReplicaSpec::managed(name.clone(), *id))
        .collect();
    MembershipChange { gone, new }
}

#[cfg(test)]
mod tests;
