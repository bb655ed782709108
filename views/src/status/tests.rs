//! `/_lb/status` and `/_lb/ring` bodies as `lb` writes them, read back and written again.

use std::borrow::Cow;

use super::*;
use crate::ring::{Member, RingTable};

/// A status body byte for byte as `lb` writes it (compact, fields in this order): a process,
/// a container, a Swarm task and a backend by address that is down, a vacancy, a refused file.
const STATUS: &str = concat!(
    r#"{"listen":"127.0.0.1:5000","via":"1.1 lb-3f2a","supervisor":"process","uptime_ms":1234,"process":{"pid":4242,"generation":3,"started":"2025-01-01T00:00:00Z"},"N":4,"#,
    r#""replicas":["#,
    r#"{"hostname":"Server 1","id":1,"kind":"managed","health":"up","address":"127.0.0.1:40001","healthy":true,"missed_heartbeats":0,"handle":{"pid":42},"pipelining":true,"in_flight":2,"requests":10,"tls":null,"tunnels":3,"weight":1,"effective_weight":0.25},"#,
    r#"{"hostname":"Server 2","id":2,"kind":"managed","health":"up","address":"10.0.0.2:5000","healthy":false,"missed_heartbeats":1,"handle":{"container_id":"c0ffee"},"pipelining":false,"in_flight":0,"requests":0,"tls":null,"tunnels":0,"weight":2},"#,
    r#"{"hostname":"Server 3","id":3,"kind":"managed","health":"up","address":"10.0.0.3:5000","healthy":true,"missed_heartbeats":0,"handle":{"swarm_task":{"service":"s1","task":"t1","container_id":"c2"}},"pipelining":true,"in_flight":0,"requests":3,"tls":null,"tunnels":0,"weight":1},"#,
    r#"{"hostname":"web","id":5,"kind":"address","health":"down","address":"127.0.0.1:9000","healthy":false,"missed_heartbeats":0,"handle":{"address":"127.0.0.1:9000"},"pipelining":false,"in_flight":0,"requests":0,"tls":{"server_name":"web.internal","verify":true},"tunnels":0,"weight":1}],"#,
    r#""retries":7,"#,
    r#""vacancies":[{"id":4,"hostname":"S4","failed_attempts":2,"reason":"exited"},{"id":5,"hostname":"web","failed_attempts":0,"reason":"down","address":"127.0.0.1:9000"}],"#,
    r#""ring":{"algorithm":"ring","slots":512,"virtual_nodes":9,"probing":"linear","hash":"spec","key":"header:X-Request-Id","key_fallback":"random","bounded_load":null},"#,
    r#""config":{"path":"config/lb.local.toml","live":true,"plugin_dirs":["plugins","/usr/lib/lb"],"last_applied":"2025-01-01T00:00:00.000Z","last_error":{"message":"line 1, column 1: bad","at":"2025-01-01T00:00:01.000Z"},"needs_restart":["listen"],"write_error":null},"#,
    r#""tls":{"listen":"127.0.0.1:5443","certificates":[{"names":["site.test","*.site.test"],"cert":"certs/site.pem","not_after":"2027-01-01T00:00:00Z","days_left":29}]},"#,
    r#""http2":{"connections_open":3,"streams_in_flight":7}}"#,
);

#[test]
fn a_status_reads_as_the_analysis_uses_it_and_writes_back_byte_for_byte() {
    let status: Status = serde_json::from_str(STATUS).unwrap();
    assert_eq!(status.id_of("Server 2"), Some(2));
    assert_eq!(status.id_of("S9"), None);
    assert_eq!((status.n, status.retries), (4, Some(7)));
    let process = status.process.as_ref().unwrap();
    assert_eq!((process.pid, process.generation), (4242, 3));
    assert_eq!(status.via.as_deref(), Some("1.1 lb-3f2a"));
    let handles: Vec<_> = status.replicas.iter().map(|r| &r.handle).collect();
    assert_eq!((handles[0].pid, handles[0].container()), (Some(42), None));
    assert_eq!(handles[1].container(), Some("c0ffee"));
    assert_eq!(handles[2].container(), Some("c2"));
    assert_eq!(handles[2].swarm_task.as_ref().unwrap().service, "s1");
    assert_eq!((handles[3].pid, handles[3].container()), (None, None));
    assert_eq!(handles[3].address.as_deref(), Some("127.0.0.1:9000"));
    assert_eq!(
        (status.replicas[3].kind, status.replicas[3].health),
        (Kind::Address, Health::Down)
    );
    assert_eq!(
        status.vacancies[1].address.as_deref(),
        Some("127.0.0.1:9000")
    );
    assert_eq!(status.ring.algorithm, "ring");
    assert_eq!(status.ring.bounded_load, None);
    assert_eq!(status.config.plugin_dirs, ["plugins", "/usr/lib/lb"]);
    assert_eq!(
        status.config.last_error.as_ref().unwrap().message,
        "line 1, column 1: bad"
    );
    let tls = status.replicas[3].tls.as_ref().unwrap();
    assert_eq!(
        (tls.server_name.as_str(), tls.verify),
        ("web.internal", true)
    );
    assert!(status.replicas[0].tls.is_none());
    assert_eq!(
        (
            status.http2.connections_open,
            status.http2.streams_in_flight
        ),
        (3, 7)
    );
    assert_eq!(status.replicas[0].tunnels, 3);
    assert_eq!(
        (status.replicas[0].weight, status.replicas[1].weight),
        (1, 2)
    );
    let listener = status.tls.as_ref().unwrap();
    assert_eq!(listener.certificates[0].names, ["site.test", "*.site.test"]);
    assert_eq!(listener.certificates[0].days_left, 29);
    assert_eq!(serde_json::to_string(&status).unwrap(), STATUS);
}

#[test]
fn a_status_written_from_borrowed_text_is_the_same_bytes() {
    let owned: Status = serde_json::from_str(STATUS).unwrap();
    fn text(s: &str) -> Cow<'_, str> {
        Cow::Borrowed(s)
    }
    fn issue(i: &Issue) -> Issue<Cow<'_, str>> {
        Issue {
            message: text(&i.message),
            at: text(&i.at),
        }
    }
    let borrowed: Status<Cow<'_, str>> = Status {
        listen: text(&owned.listen),
        via: owned.via.as_deref().map(text),
        supervisor: text(&owned.supervisor),
        uptime_ms: owned.uptime_ms,
        process: owned.process.as_ref().map(|p| ProcessInfo {
            pid: p.pid,
            generation: p.generation,
            started: text(&p.started),
        }),
        n: owned.n,
        replicas: owned
            .replicas
            .iter()
            .map(|r| ReplicaStatus {
                hostname: text(&r.hostname),
                id: r.id,
                kind: r.kind,
                health: r.health,
                address: text(&r.address),
                healthy: r.healthy,
                missed_heartbeats: r.missed_heartbeats,
                handle: Handle {
                    pid: r.handle.pid,
                    container_id: r.handle.container_id.as_deref().map(text),
                    address: r.handle.address.as_deref().map(text),
                    swarm_task: r.handle.swarm_task.as_ref().map(|t| SwarmTask {
                        service: text(&t.service),
                        task: text(&t.task),
                        container_id: text(&t.container_id),
                    }),
                },
                pipelining: r.pipelining,
                in_flight: r.in_flight,
                requests: r.requests,
                tls: r.tls.as_ref().map(|t| BackendTlsInfo {
                    server_name: text(&t.server_name),
                    verify: t.verify,
                }),
                protocol: r.protocol.as_deref().map(text),
                tunnels: r.tunnels,
                weight: r.weight,
                effective_weight: r.effective_weight,
            })
            .collect(),
        retries: owned.retries,
        vacancies: owned
            .vacancies
            .iter()
            .map(|v| Vacancy {
                id: v.id,
                hostname: text(&v.hostname),
                failed_attempts: v.failed_attempts,
                reason: text(&v.reason),
                address: v.address.as_deref().map(text),
            })
            .collect(),
        ring: RingInfo {
            algorithm: text(&owned.ring.algorithm),
            slots: owned.ring.slots,
            virtual_nodes: owned.ring.virtual_nodes,
            probing: text(&owned.ring.probing),
            hash: text(&owned.ring.hash),
            key: text(&owned.ring.key),
            key_fallback: text(&owned.ring.key_fallback),
            bounded_load: owned.ring.bounded_load,
        },
        config: ConfigInfo {
            path: text(&owned.config.path),
            live: owned.config.live,
            plugin_dirs: owned.config.plugin_dirs.iter().map(|d| text(d)).collect(),
            last_applied: owned.config.last_applied.as_deref().map(text),
            last_error: owned.config.last_error.as_ref().map(issue),
            needs_restart: owned.config.needs_restart.iter().map(|f| text(f)).collect(),
            write_error: owned.config.write_error.as_ref().map(issue),
        },
        tls: owned.tls.as_ref().map(|t| TlsInfo {
            listen: text(&t.listen),
            certificates: t
                .certificates
                .iter()
                .map(|c| CertificateInfo {
                    names: c.names.iter().map(|n| text(n)).collect(),
                    cert: text(&c.cert),
                    not_after: text(&c.not_after),
                    days_left: c.days_left,
                })
                .collect(),
        }),
        http2: owned.http2,
    };
    assert_eq!(serde_json::to_string(&borrowed).unwrap(), STATUS);
}

#[test]
fn a_status_from_an_older_lb_reads_with_defaults() {
    let old = r#"{"replicas":[{"hostname":"a","id":1,"handle":{"pid":7}}],"ring":{"slots":512,"virtual_nodes":9,"probing":"linear","hash":"spec"}}"#;
    let status: Status = serde_json::from_str(old).unwrap();
    assert_eq!(status.replicas[0].handle.pid, Some(7));
    assert!(!status.replicas[0].healthy);
    assert_eq!(
        (status.retries, status.via, status.ring.bounded_load),
        (None, None, None)
    );
    assert_eq!(status.config, ConfigInfo::default());
    // What every reader needs is required.
    assert!(serde_json::from_str::<Status>(r#"{"replicas":[]}"#).is_err());
}

/// A page of the table as `lb` writes it, and the whole table (no `from`, `count`).
#[test]
fn a_ring_table_reads_and_writes_back_byte_for_byte() {
    let page = concat!(
        r#"{"algorithm":"ring","slots":8,"virtual_nodes":2,"probing":"quadratic","hash":"spec","key":"cookie:sid","key_fallback":"client_ip","bounded_load":1.25,"#,
        r#""replicas":[{"hostname":"a","id":1,"slots":[0,5],"weight":1},{"hostname":"b","id":2,"slots":[2,6,7,1],"weight":2}],"#,
        r#""from":2,"count":3,"owners":["b","b","b"]}"#
    );
    let table: RingTable = serde_json::from_str(page).unwrap();
    assert_eq!(
        (table.slots, table.from, table.count),
        (8, Some(2), Some(3))
    );
    assert_eq!(table.replicas[1].slots, [2, 6, 7, 1]);
    assert_eq!(table.replicas[1].weight, 2);
    assert_eq!(serde_json::to_string(&table).unwrap(), page);
    let slots = [0u32, 5];
    let lent: RingTable<&str, &[u32]> = RingTable {
        algorithm: "maglev",
        slots: 3,
        virtual_nodes: 0,
        probing: "none",
        hash: "spec",
        key: "path",
        key_fallback: "random",
        bounded_load: None,
        replicas: vec![Member {
            hostname: "a",
            id: 1,
            slots: &slots[..0],
            weight: 3,
        }],
        from: None,
        count: None,
        owners: vec!["a", "a", "a"],
    };
    let whole = serde_json::to_string(&lent).unwrap();
    assert_eq!(
        whole,
        r#"{"algorithm":"maglev","slots":3,"virtual_nodes":0,"probing":"none","hash":"spec","key":"path","key_fallback":"random","bounded_load":null,"replicas":[{"hostname":"a","id":1,"slots":[],"weight":3}],"owners":["a","a","a"]}"#
    );
    let read: RingTable = serde_json::from_str(&whole).unwrap();
    assert_eq!(
        (read.hash.as_str(), read.owners.len(), read.from),
        ("spec", 3, None)
    );
}
