//! JSON views under the reserved `/_lb/` prefix, built from one snapshot.

use std::sync::atomic::Ordering;

use serde::Serialize;

use lb_balance::Balancer;

use crate::state::{ConfigStatus, Handle, Shared, Snapshot, Vacancy, Via};

#[derive(Serialize)]
struct RingInfo<'a> {
    /// "ring", "maglev" or "rendezvous".
    algorithm: &'static str,
    slots: u32,
    /// `K` of the ring; 0 for the algorithms without virtual nodes.
    virtual_nodes: u32,
    /// The ring's probing; "none" for the algorithms that never probe.
    probing: String,
    hash: &'a str,
    key: String,
    key_fallback: String,
    /// `[ring] bounded_load`'s factor; `null` when off.
    bounded_load: Option<f64>,
}

fn ring_info(snapshot: &Snapshot) -> RingInfo<'_> {
    let balancer = snapshot.placement.balancer();
    let (virtual_nodes, probing) = match balancer {
        Balancer::Ring(p) => (p.virtual_nodes, p.probing.to_string()),
        Balancer::Maglev { .. } | Balancer::Rendezvous { .. } => (0, "none".to_owned()),
    };
    RingInfo {
        algorithm: balancer.name(),
        slots: balancer.slots(),
        virtual_nodes,
        probing,
        hash: snapshot.placement.hash().name(),
        key: snapshot.key.source.to_string(),
        key_fallback: snapshot.key.fallback.to_string(),
        bounded_load: snapshot.bounded_load,
    }
}

/// `GET /_lb/status`: replicas with health and supervisor handles, vacancies, ring parameters
/// and where the configuration came from.
pub(crate) fn status(shared: &Shared) -> Vec<u8> {
    #[derive(Serialize)]
    struct Replica<'a> {
        hostname: &'a str,
        id: u64,
        /// "managed" (lb runs it) or "address" (a service lb fronts).
        kind: &'static str,
        /// "up" (in the ring) or "down" (a backend by address waiting for its health checks).
        health: &'static str,
        address: String,
        healthy: bool,
        missed_heartbeats: u32,
        handle: &'a Handle,
        pipelining: bool,
        in_flight: usize,
        requests: u64,
    }
    #[derive(Serialize)]
    struct Status<'a> {
        listen: String,
        /// The `Via` value this process marks forwarded requests and health checks with.
        via: &'a str,
        supervisor: &'a str,
        uptime_ms: u128,
        #[serde(rename = "N")]
        n: usize,
        replicas: Vec<Replica<'a>>,
        retries: u64,
        vacancies: &'a [Vacancy],
        ring: RingInfo<'a>,
        config: &'a ConfigStatus,
    }
    let snapshot = shared.snapshot.load();
    let config = shared.config.load();
    let replicas = snapshot
        .backends
        .iter()
        .map(|b| {
            let missed = b.missed.load(Ordering::Relaxed);
            Replica {
                hostname: &b.hostname,
                id: b.id,
                kind: if b.is_address() { "address" } else { "managed" },
                health: "up",
                address: b.addr.clone(),
                healthy: missed == 0,
                missed_heartbeats: missed,
                handle: &b.handle,
                pipelining: b.pipelining,
                in_flight: b.in_flight.load(Ordering::Relaxed),
                requests: b.requests.load(Ordering::Relaxed),
            }
        })
        .collect::<Vec<_>>();
    // Backends by address that are down are listed too (they are configured, as in `/rep`).
    let down: Vec<(&Vacancy, Handle)> = snapshot
        .vacancies
        .iter()
        .filter_map(|v| Some((v, Handle::Address(v.address.clone()?))))
        .collect();
    let mut replicas = replicas;
    replicas.extend(down.iter().map(|(v, handle)| Replica {
        hostname: &v.hostname,
        id: v.id,
        kind: "address",
        health: "down",
        address: v.address.clone().unwrap_or_default(),
        healthy: false,
        missed_heartbeats: 0,
        handle,
        pipelining: v.pipelining.unwrap_or(false),
        in_flight: 0,
        requests: 0,
    }));
    replicas.sort_by_key(|r| r.id);
    let status = Status {
        listen: shared.meta.listen.to_string(),
        via: Via::mine().value().to_str().unwrap_or_default(),
        supervisor: shared.meta.supervisor,
        uptime_ms: shared.meta.started.elapsed().as_millis(),
        n: snapshot.listed().len(),
        replicas,
        retries: shared.retries.load(Ordering::Relaxed),
        vacancies: &snapshot.vacancies,
        ring: ring_info(&snapshot),
        config: &config,
    };
    serde_json::to_vec(&status).expect("status serializes")
}

/// `GET /_lb/ring`: parameters, each replica's virtual-node slots (empty for Maglev and
/// rendezvous, which have none) and the owner of every slot.
pub(crate) fn ring(snapshot: &Snapshot) -> Vec<u8> {
    #[derive(Serialize)]
    struct Member<'a> {
        hostname: &'a str,
        id: u64,
        slots: &'a [u32],
    }
    #[derive(Serialize)]
    struct RingView<'a> {
        #[serde(flatten)]
        info: RingInfo<'a>,
        replicas: Vec<Member<'a>>,
        owners: Vec<&'a str>,
    }
    let view = RingView {
        info: ring_info(snapshot),
        replicas: snapshot
            .backends
            .iter()
            .enumerate()
            .map(|(k, b)| Member {
                hostname: &b.hostname,
                id: b.id,
                slots: snapshot.placement.virtual_slots(k),
            })
            .collect(),
        owners: snapshot
            .placement
            .owners()
            .iter()
            .map(|&k| snapshot.backends[k as usize].hostname.as_str())
            .collect(),
    };
    serde_json::to_vec(&view).expect("ring serializes")
}

/// `GET /_lb/plugins`: the compiled-in hashes and every plugin file in the search path, by name
/// (listing never loads a library; those loaded because a configuration selected them show
/// their description, ABI version or error), with the one the ring uses marked active. Reads
/// directories: call it off the async workers.
pub(crate) fn plugins(shared: &Shared) -> Vec<u8> {
    #[derive(Serialize)]
    struct Entry {
        #[serde(flatten)]
        info: lb_balance::plugin::PluginInfo,
        builtin: bool,
        active: bool,
    }
    #[derive(Serialize)]
    struct Plugins {
        active: String,
        abi_version: u32,
        search_path: Vec<std::path::PathBuf>,
        plugins: Vec<Entry>,
    }
    let active = shared.snapshot.load().placement.hash().name().to_owned();
    let search_path = shared.config.load().plugin_dirs.clone();
    let builtin = lb_balance::hash::BUILTIN_HASHES
        .iter()
        .map(|&name| lb_balance::plugin::PluginInfo {
            name: name.to_owned(),
            description: Some("compiled into lb".to_owned()),
            abi_version: None,
            path: None,
            error: None,
            loaded: true,
        })
        .map(|info| (info, true));
    let found = lb_balance::plugin::list(&search_path)
        .into_iter()
        .map(|info| (info, false));
    let plugins = builtin
        .chain(found)
        .map(|(info, builtin)| Entry {
            // Compiled-in names win over plugin files of the same name.
            active: info.name == active
                && (builtin || lb_balance::hash::builtin(&info.name).is_none())
                && info.error.is_none(),
            info,
            builtin,
        })
        .collect();
    let view = Plugins {
        active,
        abi_version: lb_balance::plugin::ABI_VERSION,
        search_path,
        plugins,
    };
    serde_json::to_vec(&view).expect("plugins serialize")
}
