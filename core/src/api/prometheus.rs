//! `GET /_lb/metrics`: every counter `lb` keeps, the ring's state and the process' facts, in
//! the Prometheus text exposition format (version 0.0.4).

use std::sync::atomic::Ordering;

use crate::metrics::exposition::{Exposition, Kind};
use crate::metrics::{process, Scrape, UpstreamErrorKind, BUCKETS_NS};
use crate::state::Shared;

/// The page a scrape gets. Reads `/proc/self`: call it off the async workers.
pub(crate) fn metrics(shared: &Shared) -> String {
    // The controller's counters before the snapshot: it counts a change after publishing it,
    // so a page that shows a restart (or reload) also shows the ring after it.
    let (applied, refused) = shared.metrics.reloads();
    let restarts = shared.metrics.restarts();
    let control_panics = shared.metrics.control_panics();
    let scrape = shared.metrics.scrape();
    let snapshot = shared.snapshot.load();
    let mut page = Exposition::new();

    page.family(
        "lb_requests_total",
        Kind::Counter,
        "Proxied requests by the replica that answered (or was tried last; \"\" when lb answered \
         before choosing one) and the HTTP status sent to the client (499: the client went away \
         before the response began).",
    );
    for (replica, totals) in &scrape.series {
        for (code, n) in &totals.codes {
            let code = code.to_string();
            page.sample(
                "lb_requests_total",
                &[("replica", replica), ("code", &code)],
                *n,
            );
        }
    }

    page.family(
        "lb_request_duration_seconds",
        Kind::Histogram,
        "Time from a proxied request's head until its response body was done, as the client saw \
         it.",
    );
    let bounds: Vec<f64> = BUCKETS_NS.iter().map(|&ns| ns as f64 / 1e9).collect();
    for (replica, totals) in &scrape.series {
        page.histogram(
            "lb_request_duration_seconds",
            &[("replica", replica)],
            &bounds,
            &totals.buckets,
            totals.sum_ns as f64 / 1e9,
        );
    }

    page.family(
        "lb_upstream_errors_total",
        Kind::Counter,
        "Attempts on a replica that got no usable answer: connect (could not connect), reset \
         (the connection closed or failed before or during the response), timeout (no response \
         within response_timeout_ms, or the replica failed its health checks meanwhile), \
         bad_response (not valid HTTP), tls (the TLS handshake with a backend by address failed).",
    );
    for (replica, totals) in scrape.series.iter().filter(|(r, _)| !r.is_empty()) {
        for (kind, n) in UpstreamErrorKind::ALL.iter().zip(totals.errors) {
            page.sample(
                "lb_upstream_errors_total",
                &[("replica", replica), ("kind", kind.label())],
                n,
            );
        }
    }

    page.family(
        "lb_upstream_retries_total",
        Kind::Counter,
        "Requests sent again to the next replica in ring order because theirs could not take \
         them.",
    );
    page.sample(
        "lb_upstream_retries_total",
        &[],
        shared.retries.load(Ordering::Relaxed),
    );

    // Replicas in the ring are up; configured ones waiting (a replacement starting, a backend by
    // address failing its health checks) are down.
    let mut replicas: Vec<(u64, &str, bool, u64)> = Vec::new();
    let slots = snapshot.placement.slot_counts();
    for (b, owned) in snapshot.backends.iter().zip(&slots) {
        replicas.push((b.id, &b.hostname, true, u64::from(*owned)));
    }
    for v in &snapshot.vacancies {
        replicas.push((v.id, &v.hostname, false, 0));
    }
    replicas.sort_unstable();
    page.family(
        "lb_replica_up",
        Kind::Gauge,
        "1 for a replica in the ring, 0 for a configured one out of it (starting, or failing its \
         health checks).",
    );
    for (_, hostname, up, _) in &replicas {
        page.sample("lb_replica_up", &[("replica", hostname)], u64::from(*up));
    }
    page.family(
        "lb_ring_slots",
        Kind::Gauge,
        "Slots of the ring a replica owns (it serves the request ids that hash to them).",
    );
    for (_, hostname, _, owned) in &replicas {
        page.sample("lb_ring_slots", &[("replica", hostname)], *owned);
    }
    page.family(
        "lb_replica_weight",
        Kind::Gauge,
        "A replica's weight ([[replicas]] weight, /add's weights): it serves about w/Σw of the \
         slots.",
    );
    for (id, hostname, _, _) in &replicas {
        let weight = snapshot.weights.get(id).copied().unwrap_or(1);
        page.sample(
            "lb_replica_weight",
            &[("replica", hostname)],
            u64::from(weight),
        );
    }
    page.family(
        "lb_replicas",
        Kind::Gauge,
        "N, the number of replicas /rep lists.",
    );
    page.sample("lb_replicas", &[], snapshot.listed().len() as u64);

    page.family(
        "lb_config_reloads_total",
        Kind::Counter,
        "Configuration changes by result: saves of the file, SIGHUP, /add and /rm.",
    );
    page.sample("lb_config_reloads_total", &[("result", "success")], applied);
    page.sample("lb_config_reloads_total", &[("result", "failure")], refused);
    page.family(
        "lb_replica_restarts_total",
        Kind::Counter,
        "Replicas replaced after they exited or failed their health checks.",
    );
    page.sample("lb_replica_restarts_total", &[], restarts);
    page.family(
        "lb_control_panics_total",
        Kind::Counter,
        "Panics caught in the control plane (controller, health checks, file reads); each was logged and the control plane kept running.",
    );
    page.sample("lb_control_panics_total", &[], control_panics);
    page.family(
        "lb_inflight_requests",
        Kind::Gauge,
        "Proxied requests in progress (head read, response not done).",
    );
    page.sample("lb_inflight_requests", &[], scrape.in_flight);
    page.family(
        "lb_access_log_dropped_total",
        Kind::Counter,
        "Access log lines dropped because the writer could not keep up or could not write them \
         (a full disk).",
    );
    page.sample("lb_access_log_dropped_total", &[], scrape.access_dropped);
    page.family(
        "lb_client_send_timeouts_total",
        Kind::Counter,
        "Client connections closed because the client took none of a response for \
         client_send_timeout_ms.",
    );
    page.sample("lb_client_send_timeouts_total", &[], scrape.send_timeouts);
    tls_families(&mut page, shared, &scrape);
    let http2: [(&str, Kind, &str, u64); 4] = [
        (
            "lb_http2_connections_open",
            Kind::Gauge,
            "HTTP/2 client connections open (h2 by ALPN, h2c by prior knowledge).",
            scrape.http2.open,
        ),
        (
            "lb_http2_connections_total",
            Kind::Counter,
            "HTTP/2 client connections begun.",
            scrape.http2.total,
        ),
        (
            "lb_http2_streams_in_flight",
            Kind::Gauge,
            "HTTP/2 streams (requests) in progress.",
            scrape.http2.streams,
        ),
        (
            "lb_http2_protocol_errors_total",
            Kind::Counter,
            "HTTP/2 client connections ended by a protocol error (garbage after the preface, a \
             rapid reset or CONTINUATION flood, a broken limit).",
            scrape.http2.errors,
        ),
    ];
    for (name, kind, help, value) in http2 {
        page.family(name, kind, help);
        page.sample(name, &[], value);
    }
    let tunnels = shared.tunnels.counts();
    page.family(
        "lb_tunnels_open",
        Kind::Gauge,
        "WebSocket tunnels open now, by the replica they go to.",
    );
    for (hostname, count) in &tunnels {
        page.sample("lb_tunnels_open", &[("replica", &**hostname)], count.open);
    }
    page.family(
        "lb_tunnels_total",
        Kind::Counter,
        "WebSocket tunnels opened (a replica's 101 to an Upgrade: websocket), by replica.",
    );
    for (hostname, count) in &tunnels {
        page.sample("lb_tunnels_total", &[("replica", &**hostname)], count.total);
    }

    let facts = process::read();
    let gauges: [(&str, Kind, &str, Option<f64>); 5] = [
        (
            "process_cpu_seconds_total",
            Kind::Counter,
            "Total user and system CPU time spent in seconds.",
            facts.cpu_seconds,
        ),
        (
            "process_open_fds",
            Kind::Gauge,
            "Number of open file descriptors.",
            facts.open_fds.map(|n| n as f64),
        ),
        (
            "process_max_fds",
            Kind::Gauge,
            "Maximum number of open file descriptors.",
            facts.max_fds.map(|n| n as f64),
        ),
        (
            "process_resident_memory_bytes",
            Kind::Gauge,
            "Resident memory size in bytes.",
            facts.resident_memory_bytes.map(|n| n as f64),
        ),
        (
            "process_start_time_seconds",
            Kind::Gauge,
            "Start time of the process since unix epoch in seconds.",
            facts.start_time_seconds,
        ),
    ];
    for (name, kind, help, value) in gauges {
        if let Some(value) = value {
            page.family(name, kind, help);
            page.sample(name, &[], value);
        }
    }
    page.finish()
}

/// The TLS families: handshakes by version, failures by reason, certificate reloads, and each
/// served certificate's seconds until its notAfter.
fn tls_families(page: &mut Exposition, shared: &Shared, scrape: &Scrape) {
    use crate::metrics::tls::{HandshakeError, VERSIONS};
    page.family(
        "lb_tls_handshakes_total",
        Kind::Counter,
        "TLS handshakes completed on the HTTPS listener, by protocol version.",
    );
    for (version, n) in VERSIONS.iter().zip(scrape.tls_handshakes) {
        page.sample("lb_tls_handshakes_total", &[("version", version)], n);
    }
    page.family(
        "lb_tls_handshake_errors_total",
        Kind::Counter,
        "TLS handshakes that failed (timeout, protocol, no_certificate, eof, other).",
    );
    for (why, n) in HandshakeError::ALL.iter().zip(scrape.tls_errors) {
        page.sample(
            "lb_tls_handshake_errors_total",
            &[("reason", why.label())],
            n,
        );
    }
    let (ok, error) = shared.metrics.tls_reloads.get();
    page.family(
        "lb_tls_reloads_total",
        Kind::Counter,
        "Certificate reloads, applied (ok) or refused (error: the old certificates stay).",
    );
    page.sample("lb_tls_reloads_total", &[("result", "ok")], ok);
    page.sample("lb_tls_reloads_total", &[("result", "error")], error);
    let (ok, error) = shared.metrics.acme_orders.get();
    page.family(
        "lb_acme_orders_total",
        Kind::Counter,
        "ACME orders ([tls.acme]): certificates issued (ok) or orders that failed (error: the served certificate stays).",
    );
    page.sample("lb_acme_orders_total", &[("result", "ok")], ok);
    page.sample("lb_acme_orders_total", &[("result", "error")], error);
    let set = shared.certs.load();
    page.family(
        "lb_tls_certificate_expiry_seconds",
        Kind::Gauge,
        "Seconds until each served certificate's notAfter (negative: expired), by its first DNS name.",
    );
    let now = crate::config::unix_now();
    let mut named = std::collections::HashSet::new();
    // One series per name: of two certificates with the same first name, the first (the one
    // SNI picks) is shown.
    for cert in set.info.iter().filter(|c| named.insert(c.name.as_str())) {
        page.sample(
            "lb_tls_certificate_expiry_seconds",
            &[("name", &cert.name)],
            (cert.not_after - now) as f64,
        );
    }
}
