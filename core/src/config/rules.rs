//! The load balancer's own rules for a configuration, beyond what its types say: ranges,
//! duplicates, capacity (`K·N ≤ M`, `N ≤ M`), settings that do not fit the supervisor's kind,
//! backends by address that would be `lb` itself. Every broken rule is a [`Problem`] at the
//! place in the file it is about.

use std::collections::HashSet;
use std::sync::Arc;

use lb_balance::hash::{self, RingHash};
use lb_balance::{Algorithm, Balancer, RingError};

use super::backend_tls;
use super::backend_tls::Protocol;
use super::check;
use super::load::ConfigError;
use super::names::{check_address, check_hostname, check_instance};
use super::own;
use super::problem::Problem;
use super::sections::{
    AddressMode, Config, HealthKind, ReplicaEntry, SupervisorKind, MAX_SLOTS, MAX_SLOW_START_MS,
};

impl Config {
    /// Whether the configured replicas can be placed with `hash`. The ring is built (probing
    /// can fail even when `K·N ≤ M`); Maglev and rendezvous fill any table that has room, so
    /// only their capacity is checked — building a rendezvous table of millions of slots takes
    /// seconds, which a check must not.
    pub(super) fn check_placement(&self, hash: Arc<dyn RingHash>) -> Result<(), RingError> {
        match self.balancer() {
            balancer @ Balancer::Ring(_) => balancer
                .place_weighted(hash, &self.replica_ids(), &self.replica_weights())
                .map(drop),
            balancer => balancer.check_weighted_capacity(&self.replica_weights()),
        }
    }

    fn replica_ids(&self) -> Vec<u64> {
        self.replicas.iter().map(|r| *r.id.get_ref()).collect()
    }

    /// The listed replicas' weights, in the order of [`Config::replica_ids`].
    pub(crate) fn replica_weights(&self) -> Vec<u32> {
        self.replicas.iter().map(ReplicaEntry::weight).collect()
    }

    /// `[supervisor]` settings that do not fit its `kind`.
    fn supervisor_problems(&self) -> Vec<Problem> {
        let s = &self.supervisor;
        let mut problems = Vec::new();
        let at = |key: &str| check::key_offset(&self.text, "supervisor", key).unwrap_or(0);
        if s.address == AddressMode::Published && s.kind != SupervisorKind::Swarm {
            let at = at("address");
            problems.push(self.problem(
                at..at,
                "supervisor.address = \"published\" needs kind = \"swarm\"".into(),
            ));
        }
        if s.kind == SupervisorKind::Swarm {
            if let Err(why) = check_instance(&s.instance) {
                let at = at("instance");
                problems.push(self.problem(at..at, why));
            }
            if s.network.is_empty() || s.image.is_empty() {
                let at = at(if s.network.is_empty() {
                    "network"
                } else {
                    "image"
                });
                problems.push(self.problem(
                    at..at,
                    "supervisor.network and supervisor.image must not be empty".into(),
                ));
            }
        }
        problems
    }

    /// The TLS keys of one `[[replicas]]` entry, as far as they can be judged without reading
    /// a file: only on a backend by address, the others only with `tls = true`, a valid
    /// `server_name`, no pipelining (the batching client speaks plain TCP).
    fn backend_tls_problems(&self, r: &ReplicaEntry) -> Vec<Problem> {
        let mut problems = Vec::new();
        let keys = [
            ("tls", r.tls.as_ref().map(toml::Spanned::span)),
            (
                "server_name",
                r.server_name.as_ref().map(toml::Spanned::span),
            ),
            ("ca", r.ca.as_ref().map(toml::Spanned::span)),
            ("tls_verify", r.tls_verify.as_ref().map(toml::Spanned::span)),
        ];
        if r.address.is_none() {
            for (key, span) in keys {
                if let Some(span) = span {
                    problems.push(self.problem(
                        span,
                        format!(
                            "{key} applies only to a backend by address (an entry with address = \"HOST:PORT\")"
                        ),
                    ));
                }
            }
            return problems;
        }
        if !r.wants_tls() {
            for (key, span) in &keys[1..] {
                if let Some(span) = span {
                    problems.push(self.problem(
                        span.clone(),
                        format!("{key} needs tls = true on this entry"),
                    ));
                }
            }
            return problems;
        }
        if let Some(name) = &r.server_name {
            if let Err(e) = backend_tls::server_name(name.get_ref()) {
                problems.push(self.problem(name.span(), e.to_string()));
            }
        } else if let Some(address) = r.address() {
            if let Err(e) = backend_tls::server_name(backend_tls::host_of(address)) {
                let span = r.tls.as_ref().map_or(0..0, toml::Spanned::span);
                problems.push(
                    self.problem(span, format!("{e} (the host of address); set server_name")),
                );
            }
        }
        if r.pipelining == Some(true) {
            let span = r.tls.as_ref().map_or(0..0, toml::Spanned::span);
            problems.push(self.problem(
                span,
                "pipelining = true cannot be used with tls = true (the batching client speaks plain TCP)"
                    .into(),
            ));
        }
        problems
    }

    /// `protocol` on one `[[replicas]]` entry: only on a backend by address; `h2` needs
    /// `tls = true`, `h2c` forbids it; an HTTP/2 backend is never pipelined.
    fn protocol_problems(&self, r: &ReplicaEntry) -> Vec<Problem> {
        let Some(protocol) = &r.protocol else {
            return Vec::new();
        };
        let span = protocol.span();
        let why = match (*protocol.get_ref(), r.address.is_some(), r.wants_tls()) {
            (_, false, _) => Some(format!(
                "protocol = \"{}\" applies only to a backend by address (an entry with address = \"HOST:PORT\"); the replicas lb runs speak HTTP/1.1",
                protocol.get_ref().as_str()
            )),
            (Protocol::H2, true, false) => Some(
                "protocol = \"h2\" is HTTP/2 over TLS: it needs tls = true on this entry (for HTTP/2 in clear text, protocol = \"h2c\")"
                    .into(),
            ),
            (Protocol::H2c, true, true) => Some(
                "protocol = \"h2c\" is HTTP/2 in clear text: it cannot be used with tls = true (for HTTP/2 over TLS, protocol = \"h2\")"
                    .into(),
            ),
            (p, true, _) if p.is_http2() && r.pipelining == Some(true) => Some(format!(
                "pipelining = true cannot be used with protocol = \"{}\" (the batching client speaks HTTP/1.1)",
                p.as_str()
            )),
            _ => None,
        };
        why.map(|why| self.problem(span, why)).into_iter().collect()
    }

    /// `[tls]` rules that need no file: at least one certificate, an address of its own.
    pub(super) fn tls_problems(&self) -> Vec<Problem> {
        let Some(tls) = &self.tls else {
            return Vec::new();
        };
        let at = |key: &str| check::key_offset(&self.text, "tls", key).unwrap_or(0);
        let mut problems = Vec::new();
        if tls.certificates.is_empty() && tls.acme.is_none() {
            problems.push(Problem::pending(
                at("listen"),
                "[tls] needs at least one [[tls.certificates]] entry (cert = \"….pem\", key = \"….key\") \
                 or [tls.acme]; without certificates there is nothing to serve HTTPS with"
                    .into(),
            ));
        }
        if let Some(acme) = &tls.acme {
            problems.extend(acme.problems());
        }
        let plain = std::iter::once(self.listen).chain(self.admin.listen);
        for other in plain {
            // Port 0 (any free port) is never the same socket as another port 0.
            if other == tls.listen && other.port() != 0 {
                problems.push(Problem::pending(
                    at("listen"),
                    format!(
                        "tls.listen {} is also a plain HTTP listener's address",
                        tls.listen
                    ),
                ));
            }
        }
        problems
    }

    /// An error at `span` of the text.
    /// The `[proxy] h2_*` limits (HTTP/2 from clients): each in the range HTTP/2 allows and
    /// large enough to serve requests.
    fn http2_rules(&self, problems: &mut Vec<Problem>) {
        const MAX_WINDOW: u64 = (1 << 31) - 1;
        let p = &self.proxy;
        let rules: [(&str, u64, u64, u64); 4] = [
            (
                "h2_max_concurrent_streams",
                p.h2_max_concurrent_streams.into(),
                1,
                10_000,
            ),
            (
                "h2_max_header_list_size",
                p.h2_max_header_list_size.into(),
                1024,
                1 << 24,
            ),
            (
                "h2_initial_stream_window",
                p.h2_initial_stream_window.into(),
                65_535,
                MAX_WINDOW,
            ),
            (
                "h2_initial_connection_window",
                p.h2_initial_connection_window.into(),
                65_535,
                MAX_WINDOW,
            ),
        ];
        for (key, value, min, max) in rules {
            if !(min..=max).contains(&value) {
                let at = check::key_offset(&self.text, "proxy", key).unwrap_or(0);
                problems.push(self.problem(
                    at..at,
                    format!("proxy.{key} = {value} is outside {min}..={max}"),
                ));
            }
        }
    }

    pub(super) fn at(&self, span: std::ops::Range<usize>, message: String) -> ConfigError {
        ConfigError::Invalid(vec![Problem::at(&self.text, span.start, message)])
    }

    /// A problem at `span` of the text.
    fn problem(&self, span: std::ops::Range<usize>, message: String) -> Problem {
        Problem::pending(span.start, message)
    }

    /// Where in the file a table that could not be built is best pointed at: `virtual_nodes`
    /// for the ring's rules, `slots` for the others (or `algorithm` when `slots` is not in the
    /// file and the default does not suit the algorithm).
    pub(super) fn span_of(&self, error: &RingError) -> std::ops::Range<usize> {
        match error {
            RingError::SlotsNotPrime { .. } | RingError::FewerSlotsThanReplicas { .. } => {
                let slots = self.ring.slots.span();
                if slots.is_empty() {
                    self.ring.algorithm.span()
                } else {
                    slots
                }
            }
            // Too much weight for the ring: at `virtual_nodes` if the file sets it, else at the
            // heaviest replica's weight.
            RingError::TooMuchWeight { .. } if self.ring.virtual_nodes.span().is_empty() => self
                .replicas
                .iter()
                .filter_map(|r| r.weight.as_ref())
                .max_by_key(|w| *w.get_ref())
                .map_or_else(|| self.ring.virtual_nodes.span(), |w| w.span()),
            _ => self.ring.virtual_nodes.span(),
        }
    }

    /// The load balancer's own rules, every broken one.
    pub(super) fn validate(&self) -> Vec<Problem> {
        let mut problems = self.tls_problems();
        let c = *self.ring.bounded_load.get_ref();
        if !(c == 0.0 || (1.0..=100.0).contains(&c)) {
            problems.push(self.problem(
                self.ring.bounded_load.span(),
                format!(
                    "ring.bounded_load must be 0 (off) or a factor from 1.0 to 100.0 such as 1.25, not {c}"
                ),
            ));
        }
        let slow = *self.ring.slow_start_ms.get_ref();
        if slow > MAX_SLOW_START_MS {
            problems.push(self.problem(
                self.ring.slow_start_ms.span(),
                format!(
                    "ring.slow_start_ms must be from 0 (off) to {MAX_SLOW_START_MS} (an hour), not {slow}"
                ),
            ));
        }
        let slots = *self.ring.slots.get_ref();
        if slots == 0 || slots > MAX_SLOTS {
            problems.push(self.problem(
                self.ring.slots.span(),
                format!("ring.slots must be between 1 and {MAX_SLOTS}, not {slots}"),
            ));
        } else if *self.ring.algorithm.get_ref() == Algorithm::Maglev
            && !lb_balance::maglev::is_prime(slots)
        {
            let e = RingError::SlotsNotPrime { slots };
            problems.push(self.problem(self.span_of(&e), e.to_string()));
        }
        if *self.ring.virtual_nodes.get_ref() == 0 {
            problems.push(self.problem(
                self.ring.virtual_nodes.span(),
                "ring.virtual_nodes must be at least 1".into(),
            ));
        }
        let name = self.ring.hash.get_ref();
        let good_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !good_name {
            problems.push(self.problem(
                self.ring.hash.span(),
                format!("hash {name:?} must be a name of letters, digits, '-' and '_'"),
            ));
        }
        let h = &self.health;
        for (key, bad, rule) in [
            ("interval_ms", h.interval_ms < 10, "at least 10"),
            ("timeout_ms", h.timeout_ms == 0, "at least 1"),
            ("fall", h.fall == 0, "at least 1"),
            ("rise", h.rise == 0, "at least 1"),
            ("start_timeout_ms", h.start_timeout_ms < 100, "at least 100"),
        ] {
            if bad {
                let at = check::key_offset(&self.text, "health", key).unwrap_or(0);
                problems.push(self.problem(at..at, format!("health.{key} must be {rule}")));
            }
        }
        if let Err(why) = check_health_path(&h.path) {
            let at = check::key_offset(&self.text, "health", "path").unwrap_or(0);
            problems.push(self.problem(at..at, why));
        }
        if let Some(service) = &h.grpc_service {
            let at = check::key_offset(&self.text, "health", "grpc_service").unwrap_or(0);
            if h.kind != HealthKind::Grpc {
                problems.push(self.problem(
                    at..at,
                    format!(
                        "health.grpc_service is only for kind = \"grpc\" (the service a gRPC \
                         health check asks about); kind is \"{}\": remove grpc_service or set \
                         kind = \"grpc\"",
                        h.kind
                    ),
                ));
            } else if let Err(why) = check_grpc_service(service) {
                problems.push(self.problem(at..at, why));
            }
        }
        problems.extend(self.supervisor_problems());
        let mut names = HashSet::new();
        let mut ids = HashSet::new();
        let mut addresses = HashSet::new();
        for r in &self.replicas {
            if let Some(address) = &r.address {
                if self.supervisor.kind == SupervisorKind::Swarm {
                    problems.push(self.problem(
                        address.span(),
                        "backends by address cannot be listed with [supervisor] kind = \"swarm\": \
                         every replica is a Swarm service, so that every lb of the instance \
                         shares the ring"
                            .into(),
                    ));
                } else if let Err(why) = check_address(address.get_ref()) {
                    problems.push(self.problem(address.span(), why.to_string()));
                } else if !addresses.insert(address.get_ref().to_ascii_lowercase()) {
                    problems.push(self.problem(
                        address.span(),
                        format!("duplicate address {:?}", address.get_ref()),
                    ));
                } else if let Some(own) =
                    own::reached_listener(address.get_ref(), &self.listening(), &|_| false)
                {
                    problems.push(self.problem(
                        address.span(),
                        format!(
                            "address {:?} is lb's own listening address ({own}): requests would loop",
                            address.get_ref()
                        ),
                    ));
                }
            }
            problems.extend(self.backend_tls_problems(r));
            problems.extend(self.protocol_problems(r));
            if let Err(why) = check_hostname(r.hostname.get_ref()) {
                problems.push(self.problem(r.hostname.span(), why.to_string()));
            } else if !names.insert(r.hostname.get_ref()) {
                problems.push(self.problem(
                    r.hostname.span(),
                    format!("duplicate hostname {:?}", r.hostname.get_ref()),
                ));
            }
            if let Some(weight) = &r.weight {
                let w = *weight.get_ref();
                if !(1..=i64::from(lb_balance::MAX_WEIGHT)).contains(&w) {
                    problems.push(self.problem(
                        weight.span(),
                        format!(
                            "weight must be an integer from 1 to {}, not {w}",
                            lb_balance::MAX_WEIGHT
                        ),
                    ));
                }
            }
            if *r.id.get_ref() == 0 {
                problems.push(self.problem(r.id.span(), "replica ids start at 1".into()));
            } else if !ids.insert(*r.id.get_ref()) {
                problems
                    .push(self.problem(r.id.span(), format!("duplicate id {}", r.id.get_ref())));
            }
        }
        if self.proxy.connect_timeout_ms == 0 {
            let at = check::key_offset(&self.text, "proxy", "connect_timeout_ms").unwrap_or(0);
            problems
                .push(self.problem(at..at, "proxy.connect_timeout_ms must be at least 1".into()));
        }
        if self.proxy.response_timeout_ms == 0 {
            let at = check::key_offset(&self.text, "proxy", "response_timeout_ms").unwrap_or(0);
            problems.push(self.problem(
                at..at,
                "proxy.response_timeout_ms must be at least 1".into(),
            ));
        }
        if self.proxy.client_header_timeout_ms == 0 {
            let at =
                check::key_offset(&self.text, "proxy", "client_header_timeout_ms").unwrap_or(0);
            problems.push(self.problem(
                at..at,
                "proxy.client_header_timeout_ms must be at least 1".into(),
            ));
        }
        if self.proxy.client_idle_timeout_ms == 0 {
            let at = check::key_offset(&self.text, "proxy", "client_idle_timeout_ms").unwrap_or(0);
            problems.push(self.problem(
                at..at,
                "proxy.client_idle_timeout_ms must be at least 1".into(),
            ));
        }
        if self.proxy.tunnel_idle_timeout_ms == 0 {
            let at = check::key_offset(&self.text, "proxy", "tunnel_idle_timeout_ms").unwrap_or(0);
            problems.push(self.problem(
                at..at,
                "proxy.tunnel_idle_timeout_ms must be at least 1".into(),
            ));
        }
        if self.proxy.client_send_timeout_ms == 0 {
            let at = check::key_offset(&self.text, "proxy", "client_send_timeout_ms").unwrap_or(0);
            problems.push(self.problem(
                at..at,
                "proxy.client_send_timeout_ms must be at least 1".into(),
            ));
        }
        self.http2_rules(&mut problems);
        if self.replicas.len() > self.limits.max_replicas {
            let at = check::key_offset(&self.text, "limits", "max_replicas")
                .or_else(|| {
                    self.replicas
                        .get(self.limits.max_replicas)
                        .map(|r| r.id.span().start)
                })
                .unwrap_or(0);
            problems.push(self.problem(
                at..at,
                format!(
                    "{} replicas listed, more than limits.max_replicas = {}",
                    self.replicas.len(),
                    self.limits.max_replicas
                ),
            ));
        }
        if let Err(why) = check_access_log(self.log.access.get_ref()) {
            let span = self.log.access.span();
            let at = if span.is_empty() {
                check::key_offset(&self.text, "log", "access").unwrap_or(0)
            } else {
                span.start
            };
            problems.push(self.problem(at..at, why));
        }
        if self.admin.listen.is_some_and(|admin| admin == self.listen) {
            let at = check::key_offset(&self.text, "admin", "listen").unwrap_or(0);
            problems.push(self.problem(at..at, "admin.listen must differ from listen".into()));
        }
        // Capacity only matters for a valid ring and a valid replica list.
        if problems.is_empty() {
            // Capacity (K·N ≤ M for the ring, N ≤ M for the others) needs no hash; with a
            // compiled-in hash the whole table is built now.
            let capacity = match hash::builtin(name) {
                Some(hash) => self.check_placement(hash),
                None => self
                    .balancer()
                    .check_weighted_capacity(&self.replica_weights()),
            };
            if let Err(e) = capacity {
                problems.push(self.problem(self.span_of(&e), e.to_string()));
            }
        }
        problems
    }
}

/// The health check path: an absolute path (with an optional query) of printable ASCII without
/// spaces, at most 1024 bytes.
pub(super) fn check_health_path(path: &str) -> Result<(), String> {
    let printable = path.bytes().all(|b| b.is_ascii_graphic());
    if path.starts_with('/') && path.len() <= 1024 && printable && !path.contains('#') {
        Ok(())
    } else {
        Err(format!(
            "health.path {:?} must be an absolute path such as \"/heartbeat\" or \"/healthz\" \
             (printable ASCII, no spaces or '#', at most 1024 bytes)",
            path.chars().take(40).collect::<String>()
        ))
    }
}

/// The gRPC service a health check asks about: printable ASCII without spaces, at most 1024
/// bytes (`""`: the server as a whole).
pub(super) fn check_grpc_service(service: &str) -> Result<(), String> {
    if service.len() <= 1024 && service.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(format!(
            "health.grpc_service {:?} must be a gRPC service name such as \"shard\" or \
             \"pkg.Service\" (printable ASCII, no spaces, at most 1024 bytes), or \"\" for the \
             server as a whole",
            service.chars().take(40).collect::<String>()
        ))
    }
}

/// `[log] access`: `"off"`, `"stdout"` or the path of a file (not empty, not a directory's).
pub(super) fn check_access_log(access: &str) -> Result<(), String> {
    let shown: String = access.chars().take(60).collect();
    if access.trim().is_empty() {
        Err("log.access must be \"off\", \"stdout\" or the path of a file".into())
    } else if access.contains('\0') {
        Err(format!(
            "log.access {shown:?} must not contain a NUL character"
        ))
    } else if access.ends_with('/') || access.ends_with("/.") || access.ends_with("/..") {
        Err(format!(
            "log.access {shown:?} names a directory; give the path of a file in it"
        ))
    } else {
        Ok(())
    }
}
