//! What readers see: an immutable [`Snapshot`] of the ring and its replicas, published by the
//! controller through an [`ArcSwap`]. The proxy's hot path only ever `load()`s it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use arc_swap::ArcSwap;
use http::header::HeaderValue;
use http::uri::Authority;
use serde::Serialize;

use lb_balance::Placement;

use crate::config::key::KeyRule;
use crate::config::{BackendTls, Protocol};
use crate::metrics::{Metrics, ReplicaMetrics};

pub(crate) mod health;
pub(crate) mod tls;
pub(crate) mod tunnels;

/// A replica in the ring, with counters the proxy updates in place. (Its heartbeat counters are
/// kept beside it, in [`Shared::health`].)
#[derive(Debug)]
pub(crate) struct Backend {
    /// Hostname, as `/home` reports it.
    pub hostname: String,
    /// Server id on the ring.
    pub id: u64,
    /// Where it is reached: `host:port`.
    pub addr: String,
    /// `addr` as a URI authority, built once (for a TLS backend with its settings' id as user
    /// info: [`Backend::with_tls`]).
    pub authority: Authority,
    /// Whether it is a backend by address (a service `lb` fronts but did not start).
    pub by_address: bool,
    /// How its supervisor refers to it, as `/_lb/status` shows it (`handle`); opaque here (the
    /// controller keeps the supervisor's handle itself).
    pub described: lb_views::status::Handle,
    /// Which incarnation of its server id it is: a number no other backend of this process has
    /// (the same backend moved to a new address or setting keeps it). The health checker names
    /// the replica it gives up on by it.
    pub incarnation: u64,
    /// Set when the controller takes it out of the ring as failed (not when it is removed on
    /// purpose): requests waiting on it that are safe to repeat go to the next replica.
    pub failed: AtomicBool,
    /// Requests being proxied to it right now.
    pub in_flight: AtomicUsize,
    /// Requests proxied to it so far.
    pub requests: AtomicU64,
    /// Whether bodiless `GET`/`HEAD` requests to it may be pipelined (with `[proxy]
    /// pipelining` on): on for replicas `lb` runs, off by default for backends by address.
    pub pipelining: bool,
    /// How `lb` speaks TLS to it (a backend by address with `tls = true`), else `None`: plain
    /// HTTP. A TLS backend never goes over the batching client (plain TCP): its `pipelining`
    /// is off.
    pub tls: Option<Arc<BackendTls>>,
    /// What `lb` speaks to it (`protocol` of a backend by address): HTTP/1.1, or HTTP/2 over
    /// one multiplexed connection per worker (then never pipelined).
    pub protocol: Protocol,
    /// Its counters for `/_lb/metrics` (one block per worker thread), given when it is first
    /// published in a snapshot.
    pub metrics: OnceLock<Arc<ReplicaMetrics>>,
}

impl Backend {
    /// A backend for a freshly started replica (`by_address`: a backend by address;
    /// `described`: its supervisor's handle, for `/_lb/status`), with a new incarnation; `None`
    /// if `addr` is not a valid `host:port`.
    pub(crate) fn new(
        hostname: String,
        id: u64,
        addr: String,
        by_address: bool,
        described: lb_views::status::Handle,
    ) -> Option<Self> {
        static INCARNATIONS: AtomicU64 = AtomicU64::new(1);
        let authority = Authority::try_from(addr.as_str()).ok()?;
        Some(Backend {
            hostname,
            id,
            addr,
            authority,
            by_address,
            described,
            incarnation: INCARNATIONS.fetch_add(1, Ordering::Relaxed),
            failed: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            pipelining: true,
            tls: None,
            protocol: Protocol::Http1,
            metrics: OnceLock::new(),
        })
    }

    /// `self` as the same incarnation as `of` (the same backend at a new address or setting).
    pub(crate) fn incarnation_of(self, of: &Backend) -> Self {
        Backend {
            incarnation: of.incarnation,
            ..self
        }
    }

    /// The same backend with pipelining `on` or off.
    pub(crate) fn with_pipelining(self, on: bool) -> Self {
        Backend {
            pipelining: on,
            ..self
        }
    }

    /// The same backend spoken to over TLS with `tls` (`None`: plain HTTP); with TLS, never
    /// pipelined, and its [`Backend::authority`] carries the settings' id as user info
    /// (`7@10.0.0.5:8443`, never sent: the connector dials the host and port, `Host` is the
    /// client's) so that hyper pools its connections apart from those made under other
    /// settings — a reload that changes them never reuses an old connection.
    pub(crate) fn with_tls(self, tls: Option<Arc<BackendTls>>) -> Self {
        let authority = match &tls {
            Some(tls) => Authority::try_from(format!("{}@{}", tls.id, self.addr))
                .unwrap_or_else(|_| self.authority.clone()),
            None => Authority::try_from(self.addr.as_str()).unwrap_or(self.authority.clone()),
        };
        Backend {
            pipelining: self.pipelining && tls.is_none(),
            tls,
            authority,
            ..self
        }
    }

    /// The same backend spoken to in `protocol`; over HTTP/2, never pipelined. Over HTTP/2 with
    /// TLS (`h2`) its authority loses the settings' id again ([`Backend::with_tls`]): hyper's
    /// HTTP/2 client sends the URI's authority as `:authority`, which may not carry user info
    /// (RFC 9113 §8.3.1). Its pooled connection is then kept across a reload that changes its
    /// TLS settings, until it closes (README, "gRPC and HTTP/2 to backends").
    pub(crate) fn with_protocol(self, protocol: Protocol) -> Self {
        let authority = match protocol {
            Protocol::H2 => {
                Authority::try_from(self.addr.as_str()).unwrap_or(self.authority.clone())
            }
            Protocol::Http1 | Protocol::H2c => self.authority.clone(),
        };
        Backend {
            pipelining: self.pipelining && !protocol.is_http2(),
            protocol,
            authority,
            ..self
        }
    }

    /// Its counters, once it has been published.
    #[inline]
    pub(crate) fn counters(&self) -> Option<&ReplicaMetrics> {
        self.metrics.get().map(|m| &**m)
    }

    /// Whether it is a backend by address (a service `lb` did not start).
    pub(crate) fn is_address(&self) -> bool {
        self.by_address
    }

    /// Count a request as in flight until the guard is dropped.
    pub(crate) fn begin_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }
}

/// Keeps a request counted in [`Backend::in_flight`] while alive.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Backend>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Release);
    }
}

/// A server id that should have a replica but has none running: its replica died, or it did not
/// start. It is retried with backoff.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Vacancy {
    /// The server id the replica will get.
    pub id: u64,
    /// The hostname the next attempt uses (a dead replica's replacement gets a new random one).
    pub hostname: String,
    /// Attempts that failed so far.
    pub failed_attempts: u32,
    /// Why the replica died or the last attempt failed.
    pub reason: String,
    /// For a backend by address (down until its health checks pass again): its `HOST:PORT`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Its pipelining setting, if the configuration gives one.
    #[serde(skip)]
    pub pipelining: Option<bool>,
    /// A backend by address spoken to over TLS: its settings.
    #[serde(skip)]
    pub tls: Option<Arc<BackendTls>>,
    /// What `lb` speaks to it (a backend by address).
    #[serde(skip)]
    pub protocol: Protocol,
}

/// A problem with the configuration file, and when it was seen.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Issue {
    /// What went wrong.
    pub message: String,
    /// When (RFC 3339, UTC).
    pub at: String,
}

impl Issue {
    /// An issue seen now.
    pub(crate) fn now(message: impl Into<String>) -> Self {
        Issue {
            message: message.into(),
            at: timestamp(),
        }
    }
}

/// The current time, RFC 3339 in UTC with milliseconds.
pub(crate) fn timestamp() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// How the configuration file is being followed (shown in `/_lb/status`).
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct ConfigStatus {
    /// The file, or "(embedded default)".
    pub path: String,
    /// Whether changes to the file are followed and replica changes written back to it.
    pub live: bool,
    /// Where hash plugins are looked up, in order.
    pub plugin_dirs: Vec<std::path::PathBuf>,
    /// When the file was last applied.
    pub last_applied: Option<String>,
    /// Why the latest version of the file was refused (the previous one keeps running).
    pub last_error: Option<Issue>,
    /// Fields changed in the file that take effect only after a restart.
    pub needs_restart: Vec<String>,
    /// Why the replica list could not be written back, if the last attempt failed.
    pub write_error: Option<Issue>,
}

/// One consistent view of the ring and its replicas.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// The slot → member table; member `k` is `backends[k]`.
    pub placement: Placement,
    /// Replicas in the ring, sorted by server id.
    pub backends: Vec<Arc<Backend>>,
    /// Ids waiting for a replacement replica.
    pub vacancies: Vec<Vacancy>,
    /// What requests are hashed by (`[ring] key`, `key_fallback`).
    pub key: KeyRule,
    /// Consistent hashing with bounded loads (`[ring] bounded_load`): a request goes to the first
    /// replica in its slot's order whose requests in flight are below
    /// ⌈c · (all in flight + 1) · w / Σw⌉ (`w` its weight in the table). `None`: off.
    pub bounded_load: Option<f64>,
    /// Configured weights other than 1, by server id (the table's own, [`Placement::weights`],
    /// are what requests are placed by).
    pub weights: BTreeMap<u64, u32>,
}

impl Snapshot {
    /// The member that serves a request for `slot` whose owner is `owner`: the owner, or with
    /// bounded loads the first member in the slot's order ([`Placement::next_member`]) below the
    /// cap. Someone always is (the cap exceeds the average), so the walk ends early.
    pub(crate) fn serving(&self, slot: u32, owner: usize) -> usize {
        let Some(c) = self.bounded_load else {
            return owner;
        };
        let load = |m: usize| self.backends[m].in_flight.load(Ordering::Relaxed);
        let weights = self.placement.weights();
        let weight = |m: usize| f64::from(weights.get(m).copied().unwrap_or(1));
        let total_weight = (self.placement.weight_sum() as f64).max(1.0);
        let total: usize = (0..self.backends.len()).map(load).sum();
        // A member's cap is its weight's part of c · (total + 1); with every weight 1 that is
        // c · (total + 1) / N. f64 is exact far beyond any number of requests in flight.
        let fill = c * (total + 1) as f64 / total_weight;
        let cap = |m: usize| (fill * weight(m)).ceil() as usize;
        if load(owner) < cap(owner) {
            return owner;
        }
        self.placement
            .next_member(slot, |m| load(m) >= cap(m))
            .unwrap_or(owner)
    }
}

impl Snapshot {
    /// The hostnames `/rep` lists, by server id: replicas in the ring and backends by address
    /// that are down (configured, out of the ring until their health checks pass).
    pub(crate) fn listed(&self) -> Vec<&str> {
        let mut listed: Vec<(u64, &str)> = self
            .backends
            .iter()
            .map(|b| (b.id, b.hostname.as_str()))
            .chain(
                self.vacancies
                    .iter()
                    .filter(|v| v.address.is_some())
                    .map(|v| (v.id, v.hostname.as_str())),
            )
            .collect();
        listed.sort_unstable();
        listed.into_iter().map(|(_, name)| name).collect()
    }
}

/// Where `lb` listens now: the bound addresses, moved live by the data plane when a save
/// changes them (`data/live.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Listening {
    /// Address the proxy listens on.
    pub listen: SocketAddr,
    /// Address `/add`, `/rm` and `/_lb/*` are served on when `[admin] listen` moves them.
    pub admin: Option<SocketAddr>,
    /// Address of the TLS listener (`[tls] listen`), if any.
    pub tls: Option<SocketAddr>,
}

impl Listening {
    /// Every address: a backend at any of them would be `lb` itself.
    pub(crate) fn all(&self) -> Vec<SocketAddr> {
        std::iter::once(self.listen)
            .chain(self.admin)
            .chain(self.tls)
            .collect()
    }
}

/// Facts about the process (its addresses move with the listeners).
#[derive(Debug)]
pub(crate) struct Meta {
    /// Where it listens now (stored by the data plane only).
    pub listening: Arc<ArcSwap<Listening>>,
    /// The supervisor's kind.
    pub supervisor: &'static str,
    /// When the load balancer started.
    pub started: Instant,
    /// The same moment on the wall clock.
    pub started_at: std::time::SystemTime,
    /// 1 for an `lb` started by hand, one more at each binary upgrade.
    pub generation: u64,
    /// Threads serving requests (traffic workers and the admin address's thread).
    pub workers: usize,
    /// The configuration file's folder: what relative paths given to the REST API (an `/add`'s
    /// `ca`) are relative to, as in the file.
    pub base_dir: std::path::PathBuf,
}

impl Meta {
    /// Every address `lb` listens on now (the traffic listener, the admin one, the TLS one): a
    /// backend at any of them would be `lb` itself.
    pub(crate) fn addresses(&self) -> Vec<SocketAddr> {
        self.listening.load().all()
    }
}

/// The mark `lb` puts on every request it sends (proxied requests on both forwarding paths, and
/// its own health checks): a `Via` field (RFC 9110 §7.6.3) naming this process with a random
/// 64-bit id, `1.1 lb-<16 hex digits>`. A request that arrives already carrying it has been
/// through this `lb` before: a loop, answered 508 instead of being sent round again. Another
/// `lb` in a chain has another id.
#[derive(Debug)]
pub(crate) struct Via {
    /// The field value, built once (cloning it copies no bytes).
    value: HeaderValue,
    /// `lb-<id>`: what is looked for in a request's `Via` fields.
    token: &'static str,
}

impl Via {
    /// This process's mark (chosen at random on first use).
    pub(crate) fn mine() -> &'static Via {
        static MINE: OnceLock<Via> = OnceLock::new();
        MINE.get_or_init(|| Via::with_id(random_id()))
    }

    /// The mark with `id` (tests; [`Via::mine`] picks one at random). Its text is leaked, to
    /// be a `'static` field value: meant for once per process.
    pub(crate) fn with_id(id: u64) -> Via {
        let value: &'static str = Box::leak(format!("1.1 lb-{id:016x}").into_boxed_str());
        Via {
            value: HeaderValue::from_static(value),
            token: &value[4..],
        }
    }

    /// The `Via` field value: `1.1 lb-<id>`.
    #[inline]
    pub(crate) fn value(&self) -> &HeaderValue {
        &self.value
    }

    /// Whether any of `headers`' `Via` fields carries this mark. Costs one lookup for a request
    /// without `Via`.
    #[inline]
    pub(crate) fn is_in(&self, headers: &http::HeaderMap) -> bool {
        let token = self.token.as_bytes();
        headers.get_all(http::header::VIA).iter().any(|v| {
            v.as_bytes()
                .windows(token.len())
                .any(|w| w.eq_ignore_ascii_case(token))
        })
    }
}

/// 64 bits no other process is likely to pick: the standard library's per-process random hash
/// keys (seeded from the OS), over the process id and the time.
fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    std::process::id().hash(&mut hasher);
    std::time::SystemTime::now().hash(&mut hasher);
    hasher.finish()
}

/// Everything readers share: the current snapshot and fixed facts.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The current snapshot (swapped whole by the controller).
    pub snapshot: ArcSwap<Snapshot>,
    /// The configuration file's state (swapped whole by the controller).
    pub config: ArcSwap<ConfigStatus>,
    /// Fixed facts.
    pub meta: Meta,
    /// Requests sent again to the next replica because theirs could not take them.
    pub retries: AtomicU64,
    /// The counters `/_lb/metrics` shows.
    pub metrics: Metrics,
    /// The heartbeat counters of the replicas in the ring (written by the health checker only).
    pub health: health::HealthBook,
    /// The TLS settings of the backends in the ring that speak TLS, by the address they are
    /// dialled at ([`Backend::addr`]); stored by the controller before each snapshot, read by
    /// the connector of the data plane and of the heartbeats (`crate::connect`).
    pub backend_tls: Arc<ArcSwap<TlsTable>>,
    /// The certificates the TLS listener serves (swapped whole by the controller).
    pub certs: Arc<tls::CertStore>,
    /// The open WebSocket tunnels by replica, and the signal that tells them the ring changed
    /// (touched only by tunnels, never by the plain request path).
    pub tunnels: Arc<tunnels::Tunnels>,
    /// The admin token the protected routes need (`[admin] token`, or `LB_ADMIN_TOKEN`); `None`:
    /// open. Stored by the controller at start and on every applied configuration, read by the
    /// API on each protected request (so a changed token holds on open connections too).
    pub admin_token: arc_swap::ArcSwapOption<String>,
}

/// TLS settings by backend address (`HOST:PORT`).
pub(crate) type TlsTable = std::collections::HashMap<String, Arc<BackendTls>>;

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    /// HTTP/2 backends are never pipelined; over TLS (`h2`) their authority carries no user
    /// info (it becomes the `:authority` they are sent), over HTTP/1.1 it keeps the settings' id.
    #[test]
    fn a_backends_protocol_sets_its_pipelining_and_authority() {
        let backend = || {
            Backend::new(
                "api-1".into(),
                1,
                "127.0.0.1:8443".into(),
                true,
                lb_views::status::Handle::default(),
            )
            .unwrap()
            .with_pipelining(true)
        };
        let tls = |protocol| {
            let dir = std::path::Path::new(".");
            let built = BackendTls::build("127.0.0.1:8443", None, None, false, dir, protocol);
            Some(Arc::new(built.unwrap()))
        };
        let h1 = backend().with_protocol(Protocol::Http1);
        assert!(h1.pipelining);
        let h2c = backend().with_protocol(Protocol::H2c);
        assert!(!h2c.pipelining);
        assert_eq!(h2c.authority.as_str(), "127.0.0.1:8443");
        let h1_tls = backend()
            .with_tls(tls(Protocol::Http1))
            .with_protocol(Protocol::Http1);
        assert!(h1_tls.authority.as_str().ends_with("@127.0.0.1:8443"));
        let h2 = backend()
            .with_tls(tls(Protocol::H2))
            .with_protocol(Protocol::H2);
        assert_eq!(h2.authority.as_str(), "127.0.0.1:8443");
        assert!(!h2.pipelining);
    }

    #[test]
    fn a_request_carries_the_mark_only_when_one_of_its_via_fields_names_it() {
        let mark = Via::with_id(0xfeed_0000_0000_beef);
        assert_eq!(mark.value(), "1.1 lb-feed00000000beef");
        let with = |values: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(http::header::VIA, HeaderValue::from_static(v));
            }
            mark.is_in(&headers)
        };
        assert!(!with(&[]));
        assert!(!with(&["1.1 lb-feed00000000beee", "1.0 fred"]));
        assert!(with(&["1.1 lb-feed00000000beef"]));
        assert!(with(&["1.0 fred, 1.1 lb-feed00000000beef (lb)", "1.1 x"]));
        assert!(with(&["1.1 x", "HTTP/1.1 LB-FEED00000000BEEF"]));
        // Another lb in a chain is not this one.
        let other = Via::with_id(1);
        let mut headers = HeaderMap::new();
        headers.append(http::header::VIA, other.value().clone());
        assert!(!mark.is_in(&headers) && other.is_in(&headers));
        assert_ne!(Via::mine().value(), other.value());
    }
}
