//! `GET /_lb/status`: the replicas with their health and supervisor handles, the vacancies, the
//! ring's parameters and how the configuration file is followed.
//!
//! `lb` writes every field; a reader gets the default for a field an older `lb` did not write.

use serde::{Deserialize, Serialize};

/// The whole view.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Status<S = String> {
    /// The address `lb` serves traffic on.
    #[serde(default)]
    pub listen: S,
    /// The `Via` value it marks the requests it forwards (and its health checks) with: a request
    /// carrying it came back through a loop.
    #[serde(default)]
    pub via: Option<S>,
    /// Which supervisor runs the replicas (`process`, `docker`, `swarm`).
    #[serde(default)]
    pub supervisor: S,
    /// Milliseconds since `lb` started.
    #[serde(default)]
    pub uptime_ms: u64,
    /// The process serving: its pid, generation (binary upgrades) and start time.
    #[serde(default)]
    pub process: Option<ProcessInfo<S>>,
    /// `N`: the replicas `/rep` lists (in the ring, and vacancies).
    #[serde(rename = "N", default)]
    pub n: usize,
    /// The replicas in the ring, and the backends by address that are down, by server id.
    pub replicas: Vec<ReplicaStatus<S>>,
    /// Requests sent on to another replica so far.
    #[serde(default)]
    pub retries: Option<u64>,
    /// Server ids waiting for a replica.
    #[serde(default)]
    pub vacancies: Vec<Vacancy<S>>,
    /// The ring's parameters.
    pub ring: RingInfo<S>,
    /// The configuration file.
    #[serde(default)]
    pub config: ConfigInfo<S>,
    /// The TLS listener and the certificates it serves; `null` without `[tls]`.
    #[serde(default)]
    pub tls: Option<TlsInfo<S>>,
    /// HTTP/2 from clients: connections open and streams in flight.
    #[serde(default)]
    pub http2: Http2Info,
}

/// The `lb` process that answered: a binary upgrade replaces it with the next generation.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProcessInfo<S = String> {
    /// Its pid.
    pub pid: u32,
    /// 1 for an `lb` started by hand (or a service manager), one more at each upgrade.
    pub generation: u64,
    /// When it started (RFC 3339).
    pub started: S,
}

/// HTTP/2 clients now (h2 by ALPN and h2c with prior knowledge).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Http2Info {
    /// HTTP/2 client connections open.
    pub connections_open: u64,
    /// Their streams (requests) in progress.
    pub streams_in_flight: u64,
}

impl<S: AsRef<str>> Status<S> {
    /// The server id of `hostname`.
    pub fn id_of(&self, hostname: &str) -> Option<u64> {
        self.replicas
            .iter()
            .find(|r| r.hostname.as_ref() == hostname)
            .map(|r| r.id)
    }
}

/// Who runs a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `lb` runs it (through its supervisor).
    #[default]
    Managed,
    /// A backend by address: a service `lb` fronts but does not run.
    Address,
}

/// Whether a replica is in the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// In the ring.
    #[default]
    Up,
    /// A backend by address waiting for its health checks to pass.
    Down,
}

/// One replica.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ReplicaStatus<S = String> {
    /// Its hostname.
    pub hostname: S,
    /// Its server id `i`.
    pub id: u64,
    /// Who runs it.
    #[serde(default)]
    pub kind: Kind,
    /// Whether it is in the ring.
    #[serde(default)]
    pub health: Health,
    /// Where `lb` reaches it (`HOST:PORT`).
    #[serde(default)]
    pub address: S,
    /// Whether its last heartbeat was answered.
    #[serde(default)]
    pub healthy: bool,
    /// Heartbeats missed in a row.
    #[serde(default)]
    pub missed_heartbeats: u32,
    /// How the supervisor refers to it.
    #[serde(default)]
    pub handle: Handle<S>,
    /// Whether requests to it are batched onto shared connections.
    #[serde(default)]
    pub pipelining: bool,
    /// Requests to it in progress.
    #[serde(default)]
    pub in_flight: usize,
    /// Requests sent to it so far.
    #[serde(default)]
    pub requests: u64,
    /// How `lb` speaks TLS to it (a backend by address with `tls = true`); `null`: plain HTTP.
    #[serde(default)]
    pub tls: Option<BackendTlsInfo<S>>,
    /// What `lb` speaks to it: `"http1"`, `"h2c"` or `"h2"` (`protocol` of a backend by
    /// address); absent in the JSON of an `lb` older than HTTP/2 to backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<S>,
    /// WebSocket tunnels open to it now (each also counts in `in_flight` while open).
    #[serde(default)]
    pub tunnels: u64,
    /// Its weight (`[[replicas]] weight`, `/add`'s `weights`): it serves about `w/Σw` of the
    /// slots; 1 in the JSON of an `lb` older than weights.
    #[serde(default = "one")]
    pub weight: u32,
    /// While it ramps in (`[ring] slow_start_ms`): the weight the table gives it now, a part
    /// of `weight`; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_weight: Option<f64>,
}

/// The weight a replica has when none is given.
fn one() -> u32 {
    1
}

/// How `lb` speaks TLS to a backend by address.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BackendTlsInfo<S = String> {
    /// The name sent as SNI and verified against its certificate.
    #[serde(default)]
    pub server_name: S,
    /// Whether its certificate is verified (`tls_verify`; `false` is dangerous).
    #[serde(default)]
    pub verify: bool,
}

/// The TLS listener.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TlsInfo<S = String> {
    /// The address it serves HTTPS on (`[tls] listen`).
    #[serde(default)]
    pub listen: S,
    /// The certificates it serves, in order (the first is the default).
    #[serde(default)]
    pub certificates: Vec<CertificateInfo<S>>,
}

/// One certificate the TLS listener serves.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CertificateInfo<S = String> {
    /// The DNS names it answers for (`*.example.com` for a wildcard).
    #[serde(default)]
    pub names: Vec<S>,
    /// The certificate file it was read from.
    #[serde(default)]
    pub cert: S,
    /// Its notAfter (RFC 3339, UTC).
    #[serde(default)]
    pub not_after: S,
    /// Whole days until notAfter (negative once expired).
    #[serde(default)]
    pub days_left: i64,
}

/// How the supervisor refers to a replica: one of `{"pid": …}` (a local process),
/// `{"container_id": "…"}` (a Docker container), `{"address": "HOST:PORT"}` (a backend by
/// address, which nothing runs) or `{"swarm_task": {…}}` (a Swarm service's task). Read as a
/// struct, so a reader can ask for the form it expects.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Handle<S = String> {
    /// A local child process's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// A container's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<S>,
    /// A backend by address: its configured `HOST:PORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<S>,
    /// A Swarm service's running task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm_task: Option<SwarmTask<S>>,
}

impl<S: AsRef<str>> Handle<S> {
    /// The replica's container id, from either the Docker or the Swarm form.
    pub fn container(&self) -> Option<&str> {
        self.container_id
            .as_ref()
            .or_else(|| self.swarm_task.as_ref().map(|t| &t.container_id))
            .map(AsRef::as_ref)
            .filter(|id| !id.is_empty())
    }
}

/// A Swarm service's running task.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SwarmTask<S = String> {
    /// The service's id (what `/rm` removes).
    #[serde(default)]
    pub service: S,
    /// The task's id.
    #[serde(default)]
    pub task: S,
    /// The task's container (what `docker kill` takes, on the node that runs it).
    #[serde(default)]
    pub container_id: S,
}

/// A server id that should have a replica but has none running.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Vacancy<S = String> {
    /// The server id the replica will get.
    pub id: u64,
    /// The hostname the next attempt uses.
    pub hostname: S,
    /// Attempts that failed so far.
    #[serde(default)]
    pub failed_attempts: u32,
    /// Why the replica died or the last attempt failed.
    #[serde(default)]
    pub reason: S,
    /// For a backend by address: its `HOST:PORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<S>,
}

/// The ring's parameters (also the head of `/_lb/ring`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RingInfo<S = String> {
    /// `ring`, `maglev` or `rendezvous`.
    #[serde(default)]
    pub algorithm: S,
    /// `M`, the number of slots.
    pub slots: u32,
    /// `K`, the ring's virtual nodes per replica; 0 for the algorithms without.
    pub virtual_nodes: u32,
    /// The ring's probing (`linear`, `quadratic`); `none` for the algorithms that never probe.
    pub probing: S,
    /// The hash functions' name.
    pub hash: S,
    /// What requests are hashed by (`[ring] key`).
    #[serde(default)]
    pub key: S,
    /// What a request without it is hashed by (`[ring] key_fallback`).
    #[serde(default)]
    pub key_fallback: S,
    /// `[ring] bounded_load`'s factor; `null` when off.
    #[serde(default)]
    pub bounded_load: Option<f64>,
}

/// A problem with the configuration file, and when it was seen.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Issue<S = String> {
    /// What went wrong.
    pub message: S,
    /// When (RFC 3339, UTC).
    #[serde(default)]
    pub at: S,
}

/// How the configuration file is followed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConfigInfo<S = String> {
    /// The file, or `(embedded default)`.
    #[serde(default)]
    pub path: S,
    /// Whether changes to the file are followed and replica changes written back to it.
    #[serde(default)]
    pub live: bool,
    /// Where hash plugins are looked up, in order.
    #[serde(default)]
    pub plugin_dirs: Vec<S>,
    /// When the file was last applied.
    #[serde(default)]
    pub last_applied: Option<S>,
    /// Why the latest version of the file was refused (the previous one keeps running).
    #[serde(default)]
    pub last_error: Option<Issue<S>>,
    /// Fields changed in the file that take effect only after a restart.
    #[serde(default)]
    pub needs_restart: Vec<S>,
    /// Why the replica list could not be written back, if the last attempt failed.
    #[serde(default)]
    pub write_error: Option<Issue<S>>,
}

#[cfg(test)]
mod tests;
