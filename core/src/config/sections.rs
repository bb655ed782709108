//! The sections of `lb.toml` as types, with their defaults: [`Config`] (the whole file) and
//! its `[ring]`, `[health]`, `[supervisor]`, `[plugins]`, `[proxy]`, `[admin]`, `[limits]`,
//! `[log]`, `[tls]` (its type in `tls.rs`) sections and `[[replicas]]` entries, and what the rest of `lb` reads from them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use lb_balance::ring::{Probing, RingParams};
use lb_balance::{Algorithm, Balancer};

use super::acme::AcmeSettings;
use super::backend_tls::{BackendTls, Protocol};
use super::key::{KeyFallback, KeyRule, KeySource};
use super::tls::{CertificateFiles, TlsSection};

/// Largest number of slots a table may have (2²²; the largest prime within it, for Maglev, is
/// 4 194 301).
pub(crate) const MAX_SLOTS: u32 = 1 << 22;

/// A whole `lb.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Address the load balancer listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Ring parameters.
    #[serde(default)]
    pub ring: RingSection,
    /// Heartbeat settings.
    #[serde(default)]
    pub health: HealthSection,
    /// How replicas are run.
    #[serde(default)]
    pub supervisor: SupervisorSection,
    /// Where hash plugins are looked up.
    #[serde(default)]
    pub plugins: PluginsSection,
    /// The data path.
    #[serde(default)]
    pub proxy: ProxySection,
    /// Who may use the load balancer's own endpoints, and where they are served.
    #[serde(default)]
    pub admin: AdminSection,
    /// Limits that protect the machine.
    #[serde(default)]
    pub limits: LimitsSection,
    /// The access log.
    #[serde(default)]
    pub log: LogSection,
    /// HTTPS from clients ([`super::tls`]); absent: none.
    #[serde(default)]
    pub tls: Option<TlsSection>,
    /// The replicas, each with its hostname and server id.
    #[serde(default)]
    pub replicas: Vec<ReplicaEntry>,
    /// The text this was parsed from (for line and column of later errors).
    #[serde(skip)]
    pub(super) text: String,
    /// The directory relative paths in the file are relative to.
    #[serde(skip)]
    pub(super) base_dir: PathBuf,
}

/// `[proxy]`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ProxySection {
    /// Threads serving requests, each with its own event loop, listening socket
    /// (`SO_REUSEPORT`) and connection pool; 0 means one per CPU core.
    pub workers: usize,
    /// Send bodiless `GET`/`HEAD` requests over batching connections that may pipeline
    /// ([`crate::upstream`]); `false` gives every request a connection of its own.
    pub pipelining: bool,
    /// A client must send a whole request head within this long, counted from its first byte (on
    /// a new connection: from the accept); otherwise `lb` answers 408 and closes the connection
    /// (a new connection that sent nothing is closed without an answer). Slow-loris protection.
    pub client_header_timeout_ms: u64,
    /// A keep-alive connection with no request in progress on which nothing is received or
    /// sent for this long is closed, without an answer.
    pub client_idle_timeout_ms: u64,
    /// A response to which the client takes no byte for this long (its socket accepts nothing)
    /// is cut: the client connection is closed and the replica's connection let go (nginx's
    /// `send_timeout`).
    pub client_send_timeout_ms: u64,
    /// Most client connections open at once, over all workers; beyond it `lb` stops accepting
    /// (new connections wait in the kernel's queue) until one closes. 0: no limit.
    pub max_connections: usize,
    /// How many other replicas (next in ring order) a bodiless `GET`/`HEAD` is sent to when its
    /// replica could not take it (connection refused or closed before any answer). 0: none.
    pub retries: usize,
    /// How long a replica may take to start its response (the head; a body may stream longer).
    /// Beyond it a bodiless `GET`/`HEAD` goes to the next replica (within `retries`), anything
    /// else is answered 504.
    pub response_timeout_ms: u64,
    /// How long connecting to a replica may take; then the request goes to the next replica
    /// (`GET`/`HEAD`, within `retries`) or gets a 502.
    pub connect_timeout_ms: u64,
    /// Every client is a proxy `lb` trusts: the first address of its `X-Forwarded-For` is the
    /// client's (for the `client_ip` key), and the `X-Forwarded-Proto` and `X-Forwarded-Host`
    /// it sends are passed on instead of replaced.
    pub trust_forwarded_for: bool,
    /// HTTP/2 from clients: most streams (requests) open at once on one connection (the
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` `lb` announces); a client opening more gets them
    /// refused (`REFUSED_STREAM`).
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2: the largest request header list (names, values and 32 bytes a field, as
    /// RFC 9113 counts it) `lb` takes; a bigger one (or a CONTINUATION flood) ends the
    /// connection.
    pub h2_max_header_list_size: u32,
    /// HTTP/2: the flow-control window of each stream (request body bytes a client may send
    /// ahead of `lb` reading them).
    pub h2_initial_stream_window: u32,
    /// HTTP/2: the flow-control window of a whole connection.
    pub h2_initial_connection_window: u32,
    /// HTTP/2: send a PING when a connection received nothing for this long, and close it when
    /// no answer comes within 20 s. 0: no pings.
    pub h2_keepalive_interval_ms: u64,
    /// A WebSocket tunnel (after `101 Switching Protocols`) on which no byte goes either way
    /// for this long is closed. Tunnels get this instead of `client_idle_timeout_ms`.
    pub tunnel_idle_timeout_ms: u64,
}

impl Default for ProxySection {
    fn default() -> Self {
        ProxySection {
            workers: 0,
            pipelining: true,
            client_header_timeout_ms: 10_000,
            client_idle_timeout_ms: 60_000,
            client_send_timeout_ms: 60_000,
            max_connections: 10_000,
            retries: 1,
            response_timeout_ms: 30_000,
            connect_timeout_ms: 2_000,
            trust_forwarded_for: false,
            h2_max_concurrent_streams: 100,
            h2_max_header_list_size: 32 * 1024,
            h2_initial_stream_window: 1024 * 1024,
            h2_initial_connection_window: 2 * 1024 * 1024,
            h2_keepalive_interval_ms: 30_000,
            tunnel_idle_timeout_ms: 3_600_000,
        }
    }
}

impl ProxySection {
    /// The number of worker threads to run.
    pub(crate) fn worker_count(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// `[admin]`: protection of `/add`, `/rm` and the `/_lb/` routes that change state or reveal
/// processes (`/_lb/status`, `/_lb/plugins`). `/rep` and `/_lb/ring` stay open.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AdminSection {
    /// When not empty, those routes need `Authorization: Bearer <token>`. The environment
    /// variable `LB_ADMIN_TOKEN` overrides it.
    pub token: String,
    /// Serve `/add`, `/rm` and `/_lb/*` on this address only (not on `listen`).
    pub listen: Option<SocketAddr>,
}

impl std::fmt::Debug for AdminSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSection")
            .field("token", &if self.token.is_empty() { "" } else { "(set)" })
            .field("listen", &self.listen)
            .finish()
    }
}

impl AdminSection {
    /// The token in force: `LB_ADMIN_TOKEN` if set and not empty, else `token`; `None` if
    /// neither.
    pub(crate) fn effective_token(&self) -> Option<String> {
        std::env::var("LB_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .or_else(|| Some(self.token.clone()).filter(|t| !t.is_empty()))
    }
}

/// `[limits]`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LimitsSection {
    /// Most replicas (running, starting and vacant together) `/add` and the file may ask for.
    pub max_replicas: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection { max_replicas: 64 }
    }
}

/// `[log]`: the access log, one line per proxied request. Live: a changed target or format is
/// used for requests from then on.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LogSection {
    /// Where the lines go: `"off"` (the default), `"stdout"`, or a file (appended to, relative
    /// to the configuration file's directory, reopened on SIGHUP).
    pub access: Spanned<String>,
    /// How a line is written.
    pub access_format: AccessFormat,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            access: Spanned::new(0..0, "off".to_owned()),
            access_format: AccessFormat::default(),
        }
    }
}

/// How access log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum AccessFormat {
    /// `key=value` pairs, strings quoted and escaped (logfmt).
    #[default]
    Text,
    /// One JSON object.
    Json,
}

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AccessTarget {
    /// Nowhere: no line is made.
    Off,
    /// The standard output.
    Stdout,
    /// This file, appended to.
    File(PathBuf),
}

/// `[plugins]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PluginsSection {
    /// Directories searched first for `liblb_hash_NAME.so` (relative to the file's directory).
    pub dirs: Vec<PathBuf>,
}

/// The address `lb` listens on when the file does not say: `127.0.0.1:5000`.
pub(super) fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5000))
}

/// `[ring]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RingSection {
    /// Which algorithm fills the slot → replica table (docs/ALGORITHMS.md).
    pub algorithm: Spanned<Algorithm>,
    /// M, the number of slots.
    pub slots: Spanned<u32>,
    /// K, virtual nodes per replica (the ring's only; checked but not used by the others).
    pub virtual_nodes: Spanned<u32>,
    /// Collision resolution (the ring's only; not used by the others).
    pub probing: Probing,
    /// Name of the hash functions (H and Φ).
    pub hash: Spanned<String>,
    /// What a request is hashed by ([`key`]).
    pub key: Spanned<KeySource>,
    /// What a request that lacks its key is hashed by.
    pub key_fallback: KeyFallback,
    /// Consistent hashing with bounded loads: the factor `c` (≥ 1); 0 is off.
    pub bounded_load: Spanned<f64>,
    /// Slow start: a replica joining the ring (new, replaced, back after failing) ramps its
    /// weight up over this many milliseconds (at most [`MAX_SLOW_START_MS`]); 0 is off.
    pub slow_start_ms: Spanned<u64>,
}

/// The longest `[ring] slow_start_ms`: an hour.
pub(crate) const MAX_SLOW_START_MS: u64 = 3_600_000;

impl Default for RingSection {
    fn default() -> Self {
        let p = RingParams::default();
        RingSection {
            algorithm: Spanned::new(0..0, Algorithm::default()),
            slots: Spanned::new(0..0, p.slots),
            virtual_nodes: Spanned::new(0..0, p.virtual_nodes),
            probing: p.probing,
            hash: Spanned::new(0..0, "spec".to_owned()),
            key: Spanned::new(0..0, KeySource::default()),
            key_fallback: KeyFallback::default(),
            bounded_load: Spanned::new(0..0, 0.0),
            slow_start_ms: Spanned::new(0..0, 0),
        }
    }
}

impl RingSection {
    /// The ring parameters this section describes (`virtual_nodes` and `probing` are used by
    /// the ring only).
    pub(crate) fn params(&self) -> RingParams {
        RingParams {
            slots: *self.slots.get_ref(),
            virtual_nodes: *self.virtual_nodes.get_ref(),
            probing: self.probing,
        }
    }

    /// How long a joining replica ramps in, when slow start is on.
    pub(crate) fn slow_start(&self) -> Option<std::time::Duration> {
        let ms = *self.slow_start_ms.get_ref();
        (ms > 0).then(|| std::time::Duration::from_millis(ms.min(MAX_SLOW_START_MS)))
    }

    /// The bounded-loads factor, when on.
    pub(crate) fn bounded_load(&self) -> Option<f64> {
        let c = *self.bounded_load.get_ref();
        (c > 0.0).then_some(c)
    }

    /// What requests are hashed by.
    pub(crate) fn key_rule(&self) -> KeyRule {
        KeyRule {
            source: self.key.get_ref().clone(),
            fallback: self.key_fallback,
        }
    }
}

/// `[health]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct HealthSection {
    /// What the health checks of backends by address are ([`HealthKind`]); the replicas `lb`
    /// runs are always asked `GET /heartbeat`.
    pub kind: HealthKind,
    /// The path the health checks of backends by address ask for with `GET` (a 200 is healthy)
    /// with `kind = "http"`; the replicas `lb` runs are always asked `/heartbeat`.
    pub path: String,
    /// With `kind = "grpc"`: the service asked about (`HealthCheckRequest.service`); not given
    /// (or `""`): the server as a whole.
    pub grpc_service: Option<String>,
    /// Time between two heartbeats to a replica.
    pub interval_ms: u64,
    /// How long one heartbeat may take.
    pub timeout_ms: u64,
    /// Misses in a row after which a replica is dead and replaced.
    pub fall: u32,
    /// Successful checks in a row after which a backend by address joins the ring (again).
    pub rise: u32,
    /// How long a new replica may take to answer its first heartbeat.
    pub start_timeout_ms: u64,
    /// How long `/rm` waits for in-flight requests of a removed replica before stopping it.
    pub drain_timeout_ms: u64,
}

/// What a health check of a backend by address is (`[health] kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum HealthKind {
    /// `GET path` answered 200.
    #[default]
    Http,
    /// The standard `grpc.health.v1.Health/Check` over HTTP/2 answered SERVING.
    Grpc,
    /// A TCP connection (and the TLS handshake of a `tls = true` backend) completes.
    Tcp,
}

impl std::fmt::Display for HealthKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HealthKind::Http => "http",
            HealthKind::Grpc => "grpc",
            HealthKind::Tcp => "tcp",
        })
    }
}

/// One health check as the prober runs it: the kind with what it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HealthCheck<'a> {
    /// `GET` this path; healthy on 200.
    Http(&'a str),
    /// `grpc.health.v1.Health/Check` for this service (`""`: the server); healthy on SERVING.
    Grpc(&'a str),
    /// A connection (and a TLS handshake) completes.
    Tcp,
}

impl HealthSection {
    /// The check of a backend: by its `kind` for a backend by address; the assignment's
    /// `GET /heartbeat` for the replicas `lb` runs (their contract, whatever the file says).
    pub(crate) fn check(&self, by_address: bool) -> HealthCheck<'_> {
        if !by_address {
            return HealthCheck::Http("/heartbeat");
        }
        match self.kind {
            HealthKind::Http => HealthCheck::Http(&self.path),
            HealthKind::Grpc => HealthCheck::Grpc(self.grpc_service.as_deref().unwrap_or("")),
            HealthKind::Tcp => HealthCheck::Tcp,
        }
    }
}

impl Default for HealthSection {
    fn default() -> Self {
        HealthSection {
            kind: HealthKind::Http,
            path: "/heartbeat".into(),
            grpc_service: None,
            interval_ms: 500,
            timeout_ms: 300,
            fall: 2,
            rise: 2,
            start_timeout_ms: 10_000,
            drain_timeout_ms: 10_000,
        }
    }
}

/// Which supervisor runs the replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SupervisorKind {
    /// Child processes on loopback (the embedded default).
    #[default]
    Process,
    /// Docker containers on a bridge network.
    Docker,
    /// Docker Swarm services on an overlay network, shared by every load balancer with the
    /// same `instance` (membership lives in Swarm; Swarm restarts failed tasks).
    Swarm,
}

/// How the load balancer reaches replica containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum AddressMode {
    /// By alias when the load balancer itself runs in a container, else by IP.
    #[default]
    Auto,
    /// By the container's network alias (the load balancer is on the same network).
    Alias,
    /// By the container's IP address on the network (the load balancer is on the host; with
    /// `kind = "swarm"`: the task's overlay address, for a load balancer on the overlay).
    Ip,
    /// `kind = "swarm"` only: the node's address and the task's host-mode published port (the
    /// load balancer runs on a host, outside the overlay network).
    Published,
}

/// `[supervisor]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct SupervisorSection {
    /// Which supervisor.
    pub kind: SupervisorKind,
    /// Process supervisor: program and leading arguments that run one replica. The supervisor
    /// appends `--hostname NAME --listen-fd 3`. Empty: `lb` re-executes itself (`lb replica`).
    pub command: Vec<String>,
    /// Docker: the replica image.
    pub image: String,
    /// Docker: the network replicas join (created if missing).
    pub network: String,
    /// Docker: this load balancer's name in the ownership label of its containers.
    pub instance: String,
    /// Docker: how replicas are reached.
    pub address: AddressMode,
}

impl Default for SupervisorSection {
    fn default() -> Self {
        SupervisorSection {
            kind: SupervisorKind::Process,
            command: Vec::new(),
            image: "lb-replica:latest".into(),
            network: "net1".into(),
            instance: "lb".into(),
            address: AddressMode::Auto,
        }
    }
}

/// One `[[replicas]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplicaEntry {
    /// The replica's hostname (what `/home` reports).
    pub hostname: Spanned<String>,
    /// Its server id `i` in Φ(i, j).
    pub id: Spanned<u64>,
    /// `HOST:PORT` of a service `lb` did not start (a backend by address): `lb` health-checks
    /// it and never starts, stops or replaces it. Absent: a replica the supervisor runs.
    #[serde(default)]
    pub address: Option<Spanned<String>>,
    /// Whether bodiless `GET`/`HEAD` requests may be pipelined on its connections (with
    /// `[proxy] pipelining` on). Default: on for replicas `lb` runs, off for backends by address.
    #[serde(default)]
    pub pipelining: Option<bool>,
    /// A backend by address only: speak TLS to it (default off).
    #[serde(default)]
    pub tls: Option<Spanned<bool>>,
    /// With `tls = true`: the name sent as SNI and verified (default: the host of `address`).
    #[serde(default)]
    pub server_name: Option<Spanned<String>>,
    /// With `tls = true`: a PEM file of the roots its certificate must chain to, relative to
    /// the file's folder (default: the system's roots).
    #[serde(default)]
    pub ca: Option<Spanned<String>>,
    /// With `tls = true`: DANGER, `false` accepts any certificate (default `true`).
    #[serde(default)]
    pub tls_verify: Option<Spanned<bool>>,
    /// A backend by address only: what `lb` speaks to it, `http1` (default), `h2c` (HTTP/2 in
    /// clear text, no `tls`) or `h2` (HTTP/2 over TLS: `tls = true`).
    #[serde(default)]
    pub protocol: Option<Spanned<Protocol>>,
    /// Its weight: an integer from 1 to [`lb_balance::MAX_WEIGHT`] (default 1); a replica of
    /// weight `w` serves about `w/Σw` of the slots. Checked by `validate` (an `i64` here so that
    /// 0 and negative numbers are told with their place, not as a type error).
    #[serde(default)]
    pub weight: Option<Spanned<i64>>,
    /// The TLS settings built from the four above when the file was read (`tls = true` only).
    #[serde(skip)]
    pub tls_settings: Option<Arc<BackendTls>>,
}

impl ReplicaEntry {
    /// The configured address, for a backend by address.
    pub(crate) fn address(&self) -> Option<&str> {
        self.address.as_ref().map(|a| a.get_ref().as_str())
    }

    /// What `lb` speaks to it (`protocol`; default `http1`).
    pub(crate) fn protocol(&self) -> Protocol {
        self.protocol
            .as_ref()
            .map_or_else(Protocol::default, |p| *p.get_ref())
    }

    /// Its weight (`weight`; default 1). Only meaningful for a checked file: a weight out of
    /// range there is a problem, here 1.
    pub(crate) fn weight(&self) -> u32 {
        self.weight
            .as_ref()
            .and_then(|w| u32::try_from(*w.get_ref()).ok())
            .filter(|w| (1..=lb_balance::MAX_WEIGHT).contains(w))
            .unwrap_or(1)
    }

    /// Whether it asks for TLS (`tls = true`).
    pub(crate) fn wants_tls(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| *t.get_ref())
    }
}

/// What the data plane takes live from each applied configuration: the `[proxy]` settings, the
/// access log, the TLS listener's handshake rules and the listeners' addresses. The controller publishes it; the workers
/// serve new connections (and requests) by the latest one, open connections keep theirs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FrontSettings {
    /// `[proxy]` (`workers` is read at start only).
    pub proxy: ProxySection,
    /// `[log] access`, resolved.
    pub access_target: AccessTarget,
    /// `[log] access_format`.
    pub access_format: AccessFormat,
    /// `[tls] min_version` (TLS 1.2 without `[tls]`: no listener uses it then).
    pub tls_min_version: super::tls::MinVersion,
    /// `[tls] redirect_http`.
    pub redirect_http: bool,
    /// `listen`.
    pub listen: SocketAddr,
    /// `[admin] listen`.
    pub admin_listen: Option<SocketAddr>,
    /// `[tls] listen`.
    pub tls_listen: Option<SocketAddr>,
}

impl Config {
    /// The settings the data plane follows live ([`FrontSettings`]).
    pub(crate) fn front(&self) -> FrontSettings {
        FrontSettings {
            proxy: self.proxy,
            access_target: self.access_log(),
            access_format: self.log.access_format,
            tls_min_version: self.tls.as_ref().map(|t| t.min_version).unwrap_or_default(),
            redirect_http: self.tls.as_ref().is_some_and(|t| t.redirect_http),
            listen: self.listen,
            admin_listen: self.admin.listen,
            tls_listen: self.tls_listen(),
        }
    }

    /// Where `[log] access` sends lines (a relative path is relative to the file's directory).
    pub(crate) fn access_log(&self) -> AccessTarget {
        match self.log.access.get_ref().as_str() {
            "off" => AccessTarget::Off,
            "stdout" => AccessTarget::Stdout,
            path => AccessTarget::File(self.base_dir.join(path)),
        }
    }

    /// The ring parameters.
    pub(crate) fn ring_params(&self) -> RingParams {
        self.ring.params()
    }

    /// The addresses the file says `lb` listens on: `listen`, `[admin] listen` and
    /// `[tls] listen` if set.
    pub(crate) fn listening(&self) -> Vec<SocketAddr> {
        std::iter::once(self.listen)
            .chain(self.admin.listen)
            .chain(self.tls_listen())
            .collect()
    }

    /// The balancing algorithm and its parameters.
    pub(crate) fn balancer(&self) -> Balancer {
        Balancer::new(*self.ring.algorithm.get_ref(), self.ring_params())
    }

    /// The folder relative paths in the file are relative to (the file's own).
    pub(crate) fn base_dir(&self) -> &std::path::Path {
        &self.base_dir
    }

    /// The certificate files of `[tls]`, in order (paths relative to the file's directory);
    /// empty without `[tls]`.
    pub(crate) fn certificate_files(&self) -> Vec<CertificateFiles> {
        self.tls
            .iter()
            .flat_map(|tls| &tls.certificates)
            .map(|entry| CertificateFiles {
                cert: self.base_dir.join(entry.cert.get_ref()),
                key: self.base_dir.join(entry.key.get_ref()),
            })
            .collect()
    }

    /// `[tls.acme]` as the ACME task runs on it, when it is there.
    pub(crate) fn acme_settings(&self) -> Option<AcmeSettings> {
        let acme = self.tls.as_ref()?.acme.as_ref()?;
        Some(acme.settings(&self.base_dir))
    }

    /// The TLS listen address, when `[tls]` is there.
    pub(crate) fn tls_listen(&self) -> Option<SocketAddr> {
        self.tls.as_ref().map(|tls| tls.listen)
    }
}
