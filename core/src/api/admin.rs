//! JSON views under the reserved `/_lb/` prefix, built from one snapshot.

use std::borrow::Cow;
use std::sync::atomic::Ordering;

use lb_balance::Balancer;
use lb_views::status::{
    BackendTlsInfo, CertificateInfo, ConfigInfo, Handle as HandleView, Health, Http2Info,
    Issue as IssueView, Kind, ProcessInfo, ReplicaStatus, RingInfo, Status, SwarmTask, TlsInfo,
    Vacancy as VacancyView,
};
use lb_views::{Member, RingTable};
use serde::Serialize;

use crate::config::BackendTls;
use crate::state::tls::CertSet;
use crate::state::{ConfigStatus, Issue, Shared, Snapshot, Vacancy, Via};

/// Text a view lends from the snapshot or the configuration status.
type Text<'a> = Cow<'a, str>;

fn ring_info(snapshot: &Snapshot) -> RingInfo<Text<'_>> {
    let balancer = snapshot.placement.balancer();
    let (virtual_nodes, probing) = match balancer {
        Balancer::Ring(p) => (p.virtual_nodes, p.probing.to_string().into()),
        Balancer::Maglev { .. } | Balancer::Rendezvous { .. } => (0, "none".into()),
    };
    RingInfo {
        algorithm: balancer.name().into(),
        slots: balancer.slots(),
        virtual_nodes,
        probing,
        hash: snapshot.placement.hash().name().into(),
        key: snapshot.key.source.to_string().into(),
        key_fallback: snapshot.key.fallback.to_string().into(),
        bounded_load: snapshot.bounded_load,
    }
}

/// A backend's handle, lent to the view.
fn handle_view(handle: &HandleView) -> HandleView<Text<'_>> {
    HandleView {
        pid: handle.pid,
        container_id: handle.container_id.as_deref().map(Into::into),
        address: handle.address.as_deref().map(Into::into),
        swarm_task: handle.swarm_task.as_ref().map(|t| SwarmTask {
            service: t.service.as_str().into(),
            task: t.task.as_str().into(),
            container_id: t.container_id.as_str().into(),
        }),
    }
}

/// How `lb` speaks TLS to a backend, lent to the view.
fn backend_tls_view(tls: &BackendTls) -> BackendTlsInfo<Text<'_>> {
    BackendTlsInfo {
        server_name: tls.server_name.to_str(),
        verify: tls.verify,
    }
}

/// The TLS listener at `listen` and the certificates of `set`, with the days each has left at
/// `now` (seconds since the Unix epoch).
fn tls_view(listen: std::net::SocketAddr, set: &CertSet, now: i64) -> TlsInfo<Text<'_>> {
    TlsInfo {
        listen: listen.to_string().into(),
        certificates: set
            .info
            .iter()
            .map(|c| CertificateInfo {
                names: c.names.iter().map(|n| n.as_str().into()).collect(),
                cert: c.cert.to_string_lossy(),
                not_after: u64::try_from(c.not_after)
                    .ok()
                    .map(|s| std::time::UNIX_EPOCH + std::time::Duration::from_secs(s))
                    .map(|t| humantime::format_rfc3339_seconds(t).to_string())
                    .unwrap_or_default()
                    .into(),
                days_left: (c.not_after - now).div_euclid(86_400),
            })
            .collect(),
    }
}

fn issue_view(issue: &Issue) -> IssueView<Text<'_>> {
    IssueView {
        message: issue.message.as_str().into(),
        at: issue.at.as_str().into(),
    }
}

fn config_view(config: &ConfigStatus) -> ConfigInfo<Text<'_>> {
    ConfigInfo {
        path: config.path.as_str().into(),
        live: config.live,
        plugin_dirs: config
            .plugin_dirs
            .iter()
            .map(|dir| dir.to_string_lossy())
            .collect(),
        last_applied: config.last_applied.as_deref().map(Into::into),
        last_error: config.last_error.as_ref().map(issue_view),
        needs_restart: config
            .needs_restart
            .iter()
            .map(|f| f.as_str().into())
            .collect(),
        write_error: config.write_error.as_ref().map(issue_view),
    }
}

fn vacancy_view(vacancy: &Vacancy) -> VacancyView<Text<'_>> {
    VacancyView {
        id: vacancy.id,
        hostname: vacancy.hostname.as_str().into(),
        failed_attempts: vacancy.failed_attempts,
        reason: vacancy.reason.as_str().into(),
        address: vacancy.address.as_deref().map(Into::into),
    }
}

/// `GET /_lb/status`: replicas with health and supervisor handles, vacancies, ring parameters
/// and where the configuration came from.
pub(crate) fn status(shared: &Shared) -> Vec<u8> {
    let snapshot = shared.snapshot.load();
    let config = shared.config.load();
    let tunnels = shared.tunnels.counts();
    let table_weights = snapshot.placement.weights();
    let scale = f64::from(snapshot.placement.scale());
    let mut replicas = snapshot
        .backends
        .iter()
        .enumerate()
        .map(|(k, b)| {
            let missed = shared.health.missed_of(b);
            let weight = snapshot.weights.get(&b.id).copied().unwrap_or(1);
            // The table's weight for it, when it is not the configured one (slow start).
            let effective = table_weights
                .get(k)
                .map(|&w| f64::from(w) / scale)
                .filter(|&w| (w - f64::from(weight)).abs() > 1e-9);
            ReplicaStatus {
                hostname: b.hostname.as_str().into(),
                id: b.id,
                kind: if b.is_address() {
                    Kind::Address
                } else {
                    Kind::Managed
                },
                health: Health::Up,
                address: b.addr.as_str().into(),
                healthy: missed == 0,
                missed_heartbeats: missed,
                handle: handle_view(&b.described),
                pipelining: b.pipelining,
                in_flight: b.in_flight.load(Ordering::Relaxed),
                requests: b.requests.load(Ordering::Relaxed),
                tls: b.tls.as_deref().map(backend_tls_view),
                protocol: Some(b.protocol.as_str().into()),
                tunnels: tunnels.get(b.hostname.as_str()).map_or(0, |c| c.open),
                weight,
                effective_weight: effective,
            }
        })
        .collect::<Vec<_>>();
    // Backends by address that are down are listed too (they are configured, as in `/rep`).
    replicas.extend(snapshot.vacancies.iter().filter_map(|v| {
        let address = v.address.as_deref()?;
        Some(ReplicaStatus {
            hostname: v.hostname.as_str().into(),
            id: v.id,
            kind: Kind::Address,
            health: Health::Down,
            address: address.into(),
            healthy: false,
            missed_heartbeats: 0,
            handle: HandleView {
                address: Some(address.into()),
                ..HandleView::default()
            },
            pipelining: v.pipelining.unwrap_or(false),
            in_flight: 0,
            requests: 0,
            tls: v.tls.as_deref().map(backend_tls_view),
            protocol: Some(v.protocol.as_str().into()),
            tunnels: 0,
            weight: snapshot.weights.get(&v.id).copied().unwrap_or(1),
            effective_weight: None,
        })
    }));
    replicas.sort_by_key(|r| r.id);
    let certificates = shared.certs.load();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let listening = shared.meta.listening.load();
    let status = Status {
        listen: listening.listen.to_string().into(),
        via: Some(Via::mine().value().to_str().unwrap_or_default().into()),
        supervisor: shared.meta.supervisor.into(),
        uptime_ms: u64::try_from(shared.meta.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        process: Some(ProcessInfo {
            pid: std::process::id(),
            generation: shared.meta.generation,
            started: humantime::format_rfc3339_seconds(shared.meta.started_at)
                .to_string()
                .into(),
        }),
        n: snapshot.listed().len(),
        replicas,
        retries: Some(shared.retries.load(Ordering::Relaxed)),
        vacancies: snapshot.vacancies.iter().map(vacancy_view).collect(),
        ring: ring_info(&snapshot),
        config: config_view(&config),
        tls: listening
            .tls
            .map(|listen| tls_view(listen, &certificates, now)),
        http2: {
            let http2 = shared.metrics.http2();
            Http2Info {
                connections_open: http2.open,
                streams_in_flight: http2.streams,
            }
        },
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
    let table = snapshot.placement.owners();
    let (start, end) = match page {
        Some(Page { from, count }) => {
            let start = (from as usize).min(table.len());
            (start, start.saturating_add(count as usize).min(table.len()))
        }
        None => (0, table.len()),
    };
    let RingInfo {
        algorithm,
        slots,
        virtual_nodes,
        probing,
        hash,
        key,
        key_fallback,
        bounded_load,
    } = ring_info(snapshot);
    // Borrowed text throughout: the table may hold millions of owners.
    let view: RingTable<&str, &[u32]> = RingTable {
        algorithm: &algorithm,
        slots,
        virtual_nodes,
        probing: &probing,
        hash: &hash,
        key: &key,
        key_fallback: &key_fallback,
        bounded_load,
        replicas: snapshot
            .backends
            .iter()
            .enumerate()
            .map(|(k, b)| Member {
                hostname: b.hostname.as_str(),
                id: b.id,
                slots: snapshot.placement.virtual_slots(k),
                weight: snapshot.placement.weights().get(k).copied().unwrap_or(1),
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
