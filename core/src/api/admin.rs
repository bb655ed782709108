//! JSON views under the reserved `/_lb/` prefix, built from one snapshot.

use std::sync::atomic::Ordering;

use serde::Serialize;

use lb_balance::Balancer;

use crate::state::{ConfigStatus, Shared, Snapshot, Vacancy, Via};

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
        handle: &'a serde_json::Value,
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
                handle: &b.described,
                pipelining: b.pipelining,
                in_flight: b.in_flight.load(Ordering::Relaxed),
                requests: b.requests.load(Ordering::Relaxed),
            }
        })
        .collect::<Vec<_>>();
    // Backends by address that are down are listed too (they are configured, as in `/rep`).
    let down: Vec<(&Vacancy, serde_json::Value)> = snapshot
        .vacancies
        .iter()
        .filter_map(|v| Some((v, serde_json::json!({ "address": v.address.clone()? }))))
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

/// Most slots' owners one page of `/_lb/ring` holds.
pub(crate) const MAX_PAGE: u32 = 65_536;

/// The part of the slot table one `/_lb/ring?from=F&count=C` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Page {
    /// The first slot.
    pub(crate) from: u32,
    /// How many slots, at most.
    pub(crate) count: u32,
}

/// The page a `/_lb/ring` query asks for, over a table of `slots` slots: `None` without
/// parameters (the whole table). `from` defaults to 0, `count` to [`MAX_PAGE`]; a page reaching
/// past the last slot ends there. Anything else is refused with the reason.
pub(crate) fn parse_page(query: Option<&str>, slots: u32) -> Result<Option<Page>, String> {
    let Some(query) = query.filter(|q| !q.is_empty()) else {
        return Ok(None);
    };
    let (mut from, mut count) = (None, None);
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (seen, max) = match name {
            "from" => (&mut from, u64::from(slots.saturating_sub(1))),
            "count" => (&mut count, u64::from(MAX_PAGE)),
            _ => {
                return Err(format!(
                    "unknown parameter '{}': /_lb/ring takes from and count",
                    name.chars().take(40).collect::<String>()
                ))
            }
        };
        if seen.is_some() {
            return Err(format!("{name} is given twice"));
        }
        let number =
            (!value.is_empty() && value.len() <= 10 && value.bytes().all(|b| b.is_ascii_digit()))
                .then(|| value.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| {
                    format!(
                        "{name} must be a whole number, not '{}'",
                        value.chars().take(20).collect::<String>()
                    )
                })?;
        if name == "count" && number == 0 {
            return Err("count must be at least 1".into());
        }
        if number > max {
            return Err(if name == "from" {
                format!("from {number} is past the last slot ({max}; the table has {slots})")
            } else {
                format!("count must be at most {MAX_PAGE}")
            });
        }
        // At most `max`, a u32.
        *seen = Some(number as u32);
    }
    Ok(Some(Page {
        from: from.unwrap_or(0),
        count: count.unwrap_or(MAX_PAGE),
    }))
}

/// `GET /_lb/ring`: parameters, each replica's virtual-node slots (empty for Maglev and
/// rendezvous, which have none) and the owner of every slot — or, with a `page`, of the slots
/// in it, saying which (`from`, `count`). The whole table can be megabytes: build it off the
/// async workers.
pub(crate) fn ring(snapshot: &Snapshot, page: Option<Page>) -> Vec<u8> {
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
        /// The first slot in `owners` (pages only).
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<u32>,
        /// How many slots `owners` holds (pages only).
        #[serde(skip_serializing_if = "Option::is_none")]
        count: Option<u32>,
        owners: Vec<&'a str>,
    }
    let table = snapshot.placement.owners();
    let (start, end) = match page {
        Some(Page { from, count }) => {
            let start = (from as usize).min(table.len());
            (start, start.saturating_add(count as usize).min(table.len()))
        }
        None => (0, table.len()),
    };
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
        from: page.map(|_| start as u32),
        count: page.map(|_| (end - start) as u32),
        owners: table[start..end]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_pages_are_read_from_the_query_and_bad_ones_refused_with_the_reason() {
        let page = |from, count| Ok(Some(Page { from, count }));
        assert_eq!(parse_page(None, 512), Ok(None));
        assert_eq!(parse_page(Some(""), 512), Ok(None));
        assert_eq!(parse_page(Some("from=10&count=5"), 512), page(10, 5));
        assert_eq!(parse_page(Some("count=5&from=511"), 512), page(511, 5));
        assert_eq!(parse_page(Some("from=7"), 512), page(7, MAX_PAGE));
        assert_eq!(parse_page(Some("count=65536"), 1 << 22), page(0, MAX_PAGE));
        for (query, says) in [
            ("from=512", "past the last slot (511; the table has 512)"),
            ("from=-1", "whole number"),
            ("from=1.5", "whole number"),
            ("from=", "whole number"),
            ("from", "whole number"),
            ("from=99999999999999999999", "whole number"),
            ("count=0", "at least 1"),
            ("count=65537", "at most 65536"),
            ("from=1&from=2", "twice"),
            ("page=2", "unknown parameter 'page'"),
            ("from=1&", "unknown parameter ''"),
        ] {
            let why = parse_page(Some(query), 512).expect_err(query);
            assert!(why.contains(says), "{query}: {why}");
        }
    }
}
