//! `lb.toml`: parsing, defaults and validation.
//!
//! Every error names the line and column it comes from, whether it is a TOML syntax error, an
//! unknown field or a rule of the load balancer (duplicate hostname, K·N > M, …).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

mod check;
pub mod key;
pub mod own;

use lb_balance::hash::{self, RingHash};
use lb_balance::plugin;
use lb_balance::ring::{Probing, RingParams};
use lb_balance::{Algorithm, Balancer, RingError};

use key::{KeyFallback, KeyRule, KeySource};

/// The shipped default (`config/lb.toml`, tracked by git and never written), compiled into `lb`.
pub const EMBEDDED: &str = include_str!("../../../config/lb.toml");

/// The file `lb` follows and writes replica changes back to, relative to the working directory.
/// Git ignores it; the first start creates it from [`DEFAULTS_PATH`].
pub const DEFAULT_PATH: &str = "config/lb.local.toml";

/// The shipped default a new configuration file is created from (or [`EMBEDDED`] where it does
/// not exist).
pub const DEFAULTS_PATH: &str = "config/lb.toml";

/// Largest number of slots a table may have (2²²; the largest prime within it, for Maglev, is
/// 4 194 301).
pub const MAX_SLOTS: u32 = 1 << 22;

/// A whole `lb.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
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
    /// The replicas, each with its hostname and server id.
    #[serde(default)]
    pub replicas: Vec<ReplicaEntry>,
    /// The text this was parsed from (for line and column of later errors).
    #[serde(skip)]
    text: String,
    /// The directory relative paths in the file are relative to.
    #[serde(skip)]
    base_dir: PathBuf,
}

/// `[proxy]`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySection {
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
        }
    }
}

impl ProxySection {
    /// The number of worker threads to run.
    pub fn worker_count(&self) -> usize {
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
pub struct AdminSection {
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
    pub fn effective_token(&self) -> Option<String> {
        std::env::var("LB_ADMIN_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .or_else(|| Some(self.token.clone()).filter(|t| !t.is_empty()))
    }
}

/// `[limits]`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Most replicas (running, starting and vacant together) `/add` and the file may ask for.
    pub max_replicas: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection { max_replicas: 64 }
    }
}

/// `[log]`: the access log, one line per proxied request. Needs a restart.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
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
pub enum AccessFormat {
    /// `key=value` pairs, strings quoted and escaped (logfmt).
    #[default]
    Text,
    /// One JSON object.
    Json,
}

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessTarget {
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
pub struct PluginsSection {
    /// Directories searched first for `liblb_hash_NAME.so` (relative to the file's directory).
    pub dirs: Vec<PathBuf>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5000))
}

/// `[ring]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RingSection {
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
}

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
        }
    }
}

impl RingSection {
    /// The ring parameters this section describes (`virtual_nodes` and `probing` are used by
    /// the ring only).
    pub fn params(&self) -> RingParams {
        RingParams {
            slots: *self.slots.get_ref(),
            virtual_nodes: *self.virtual_nodes.get_ref(),
            probing: self.probing,
        }
    }

    /// The bounded-loads factor, when on.
    pub fn bounded_load(&self) -> Option<f64> {
        let c = *self.bounded_load.get_ref();
        (c > 0.0).then_some(c)
    }

    /// What requests are hashed by.
    pub fn key_rule(&self) -> KeyRule {
        KeyRule {
            source: self.key.get_ref().clone(),
            fallback: self.key_fallback,
        }
    }
}

/// `[health]`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSection {
    /// The path the health checks of backends by address ask for with `GET` (a 200 is healthy);
    /// the replicas `lb` runs are always asked `/heartbeat`.
    pub path: String,
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

impl HealthSection {
    /// The path a backend's health checks ask for: `path` for a backend by address; the
    /// assignment's `/heartbeat` for the replicas `lb` runs (their contract, whatever the file
    /// says).
    pub fn check_path(&self, by_address: bool) -> &str {
        if by_address {
            &self.path
        } else {
            "/heartbeat"
        }
    }
}

impl Default for HealthSection {
    fn default() -> Self {
        HealthSection {
            path: "/heartbeat".into(),
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
pub enum SupervisorKind {
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
pub enum AddressMode {
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
pub struct SupervisorSection {
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
pub struct ReplicaEntry {
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
}

impl ReplicaEntry {
    /// The configured address, for a backend by address.
    pub fn address(&self) -> Option<&str> {
        self.address.as_ref().map(|a| a.get_ref().as_str())
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the file")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_CONFIG_BYTES`]; it was not parsed.
    #[error(
        "the file is {size} bytes; a configuration may be at most {MAX_CONFIG_BYTES} bytes (1 MiB)"
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// TOML syntax, unknown keys, wrong types or rules of the load balancer: every problem
    /// found, in file order (never empty).
    #[error("{}", .0.iter().map(Problem::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Problem>),
}

/// One problem in a configuration text, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {message}")]
pub struct Problem {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// Byte offset in the text (line and column are computed from it).
    offset: usize,
}

impl Problem {
    /// A problem at byte `offset` of `text`.
    fn at(text: &str, offset: usize, message: String) -> Problem {
        let mut problem = Problem::pending(offset, message);
        check::locate(text, std::slice::from_mut(&mut problem));
        problem
    }

    /// A problem at byte `offset` whose line and column [`check::locate`] fills in later, with
    /// the others (one pass over the text for all of them).
    fn pending(offset: usize, mut message: String) -> Problem {
        // A message quotes keys and values from the file, which may be huge.
        if message.len() > MAX_PROBLEM_LEN {
            let mut end = MAX_PROBLEM_LEN;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        Problem {
            line: 0,
            column: 0,
            message,
            offset,
        }
    }
}

/// Largest configuration file accepted (1 MiB): larger ones are refused before they are parsed.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// Longest problem message kept (they quote the file, whose keys and values may be huge).
pub const MAX_PROBLEM_LEN: usize = 400;

/// At most this many problems are reported for one file; the rest are counted in a last line.
pub const MAX_PROBLEMS: usize = 100;

/// Read a configuration file: a regular file (never a FIFO or a device, which could block or
/// never end) of at most [`MAX_CONFIG_BYTES`], in UTF-8.
pub fn read_text(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let io = |source| ConfigError::Io {
        path: path.to_owned(),
        source,
    };
    // The kind of file is checked on the name before opening: opening a FIFO blocks.
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
            size: meta.len().max(bytes.len() as u64),
        });
    }
    String::from_utf8(bytes).map_err(|e| {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            e.utf8_error(),
        ))
    })
}

/// Sort, de-duplicate and cap `problems` (the last one kept says how many more there were).
fn finish(mut problems: Vec<Problem>) -> Vec<Problem> {
    problems.sort_by_key(|p| (p.line, p.column));
    problems.dedup();
    if problems.len() > MAX_PROBLEMS {
        let more = problems.len() - (MAX_PROBLEMS - 1);
        problems.truncate(MAX_PROBLEMS - 1);
        let last = problems.last().map_or((1, 1), |p| (p.line, p.column));
        problems.push(Problem {
            line: last.0,
            column: last.1,
            message: format!(
                "{more} more problems not shown (at most {MAX_PROBLEMS} are reported)"
            ),
            offset: 0,
        });
    }
    problems
}

/// A configuration with its origin and the exact text it was parsed from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The parsed configuration.
    pub config: Config,
    /// Where it came from.
    pub source: Source,
    /// Its text.
    pub text: String,
    /// When the file was created at this start: what it was copied from.
    pub created_from: Option<Source>,
}

/// Where a configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file on disk.
    File(PathBuf),
    /// The copy compiled into the binary.
    Embedded,
    /// A file read once and not followed (there is nowhere to write changes back).
    Copy(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Embedded => f.write_str("(embedded default)"),
            Source::Copy(p) => write!(f, "(copy of {}, not followed)", p.display()),
        }
    }
}

impl Config {
    /// Parse and validate `text`: everything but the hash functions, which may be a plugin that
    /// only [`Config::resolve_hash`] can load. Relative paths are relative to the working
    /// directory.
    ///
    /// Every problem is reported, not only the first (see [`ConfigError::Invalid`]).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        if text.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::Invalid(vec![Problem::at(
                text,
                0,
                format!(
                    "the file is {} bytes; a configuration may be at most {MAX_CONFIG_BYTES} bytes (1 MiB)",
                    text.len()
                ),
            )]));
        }
        let (config, mut problems) = check::collect(text);
        let Some(mut config) = config else {
            return Err(ConfigError::Invalid(finish(problems)));
        };
        config.text = text.to_owned();
        let mut more = config.validate();
        check::locate(text, &mut more);
        problems.extend(more);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(finish(problems)))
        }
    }

    /// Parse `text` read from `path` (relative paths in it are relative to its directory).
    pub fn parse_file(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config = Config::parse(text)?;
        if let Some(dir) = path.parent() {
            config.base_dir = dir.to_path_buf();
        }
        Ok(config)
    }

    /// The plugin search path: `[plugins] dirs`, then the defaults of [`plugin::search_path`].
    pub fn plugin_dirs(&self) -> Vec<PathBuf> {
        let configured: Vec<PathBuf> = self
            .plugins
            .dirs
            .iter()
            .map(|d| self.base_dir.join(d))
            .collect();
        plugin::search_path(&configured)
    }

    /// The hash functions `[ring] hash` names — compiled in, or a plugin loaded from the plugin
    /// search path — checked by building the configured ring with them.
    pub fn resolve_hash(&self) -> Result<Arc<dyn RingHash>, ConfigError> {
        self.resolve_hash_in(&self.plugin_dirs())
    }

    /// [`Config::resolve_hash`] with plugins looked up in `dirs` (a running `lb` keeps the
    /// directories it started with: which code it may load changes only with a restart).
    pub fn resolve_hash_in(&self, dirs: &[PathBuf]) -> Result<Arc<dyn RingHash>, ConfigError> {
        let name = self.ring.hash.get_ref();
        let hash = plugin::resolve_any(name, dirs)
            .map_err(|e| self.at(self.ring.hash.span(), e.to_string()))?;
        self.check_placement(Arc::clone(&hash))
            .map_err(|e| self.at(self.span_of(&e), e.to_string()))?;
        Ok(hash)
    }

    /// Whether the configured replicas can be placed with `hash`. The ring is built (probing
    /// can fail even when `K·N ≤ M`); Maglev and rendezvous fill any table that has room, so
    /// only their capacity is checked — building a rendezvous table of millions of slots takes
    /// seconds, which a check must not.
    fn check_placement(&self, hash: Arc<dyn RingHash>) -> Result<(), RingError> {
        match self.balancer() {
            balancer @ Balancer::Ring(_) => balancer.place(hash, &self.replica_ids()).map(drop),
            balancer => balancer.check_capacity(self.replicas.len()),
        }
    }

    fn replica_ids(&self) -> Vec<u64> {
        self.replicas.iter().map(|r| *r.id.get_ref()).collect()
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

    /// An error at `span` of the text.
    fn at(&self, span: std::ops::Range<usize>, message: String) -> ConfigError {
        ConfigError::Invalid(vec![Problem::at(&self.text, span.start, message)])
    }

    /// A problem at `span` of the text.
    fn problem(&self, span: std::ops::Range<usize>, message: String) -> Problem {
        Problem::pending(span.start, message)
    }

    /// Read, parse and validate the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::parse_file(&read_text(path)?, path)
    }

    /// The configuration `lb` runs on: the file at `path`; where it does not exist yet, it is
    /// created as a copy of `defaults` (or of [`EMBEDDED`] where that does not exist either).
    /// When `path`'s directory does not exist and `create_dirs` is false (the default path,
    /// `lb` started outside the project), nothing is created and the copy runs unfollowed.
    pub fn load_runtime(
        path: &Path,
        defaults: &Path,
        create_dirs: bool,
    ) -> Result<Loaded, ConfigError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| ConfigError::Io { path, source }
        };
        match read_text(path) {
            Ok(text) => {
                return Ok(Loaded {
                    config: Config::parse_file(&text, path)?,
                    source: Source::File(path.to_owned()),
                    text,
                    created_from: None,
                })
            }
            Err(ConfigError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let (text, seed) = match read_text(defaults) {
            Ok(text) => (text, Source::File(defaults.to_owned())),
            Err(ConfigError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                (EMBEDDED.to_owned(), Source::Embedded)
            }
            Err(e) => return Err(e),
        };
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir.filter(|d| !d.is_dir()) {
            if !create_dirs {
                // Nowhere to keep changes: run on the defaults, unfollowed.
                return Ok(Loaded {
                    config: Config::parse_file(&text, path)?,
                    source: match seed {
                        Source::File(defaults) => Source::Copy(defaults),
                        other => other,
                    },
                    text,
                    created_from: None,
                });
            }
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let config = Config::parse_file(&text, path)?;
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .and_then(|mut file| std::io::Write::write_all(&mut file, text.as_bytes()));
        match created {
            Ok(()) => Ok(Loaded {
                config,
                source: Source::File(path.to_owned()),
                text,
                created_from: Some(seed),
            }),
            // Created by someone else meanwhile: that file is the one to follow.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Config::load_runtime(path, defaults, create_dirs)
            }
            Err(e) => Err(io(path)(e)),
        }
    }

    /// Where `[log] access` sends lines (a relative path is relative to the file's directory).
    pub fn access_log(&self) -> AccessTarget {
        match self.log.access.get_ref().as_str() {
            "off" => AccessTarget::Off,
            "stdout" => AccessTarget::Stdout,
            path => AccessTarget::File(self.base_dir.join(path)),
        }
    }

    /// The ring parameters.
    pub fn ring_params(&self) -> RingParams {
        self.ring.params()
    }

    /// The addresses the file says `lb` listens on: `listen`, and `[admin] listen` if set.
    pub fn listening(&self) -> Vec<SocketAddr> {
        std::iter::once(self.listen)
            .chain(self.admin.listen)
            .collect()
    }

    /// The balancing algorithm and its parameters.
    pub fn balancer(&self) -> Balancer {
        Balancer::new(*self.ring.algorithm.get_ref(), self.ring_params())
    }

    /// Where in the file a table that could not be built is best pointed at: `virtual_nodes`
    /// for the ring's rules, `slots` for the others (or `algorithm` when `slots` is not in the
    /// file and the default does not suit the algorithm).
    fn span_of(&self, error: &RingError) -> std::ops::Range<usize> {
        match error {
            RingError::SlotsNotPrime { .. } | RingError::FewerSlotsThanReplicas { .. } => {
                let slots = self.ring.slots.span();
                if slots.is_empty() {
                    self.ring.algorithm.span()
                } else {
                    slots
                }
            }
            _ => self.ring.virtual_nodes.span(),
        }
    }

    /// The load balancer's own rules, every broken one.
    fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let c = *self.ring.bounded_load.get_ref();
        if !(c == 0.0 || (1.0..=100.0).contains(&c)) {
            problems.push(self.problem(
                self.ring.bounded_load.span(),
                format!(
                    "ring.bounded_load must be 0 (off) or a factor from 1.0 to 100.0 such as 1.25, not {c}"
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
            if let Err(why) = check_hostname(r.hostname.get_ref()) {
                problems.push(self.problem(r.hostname.span(), why.to_string()));
            } else if !names.insert(r.hostname.get_ref()) {
                problems.push(self.problem(
                    r.hostname.span(),
                    format!("duplicate hostname {:?}", r.hostname.get_ref()),
                ));
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
        if self.proxy.client_send_timeout_ms == 0 {
            let at = check::key_offset(&self.text, "proxy", "client_send_timeout_ms").unwrap_or(0);
            problems.push(self.problem(
                at..at,
                "proxy.client_send_timeout_ms must be at least 1".into(),
            ));
        }
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
                None => self.balancer().check_capacity(self.replicas.len()),
            };
            if let Err(e) = capacity {
                problems.push(self.problem(self.span_of(&e), e.to_string()));
            }
        }
        problems
    }
}

/// Longest `HOST:PORT` accepted.
pub const MAX_ADDRESS_LEN: usize = 255;

/// Why a backend address is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// Empty or longer than [`MAX_ADDRESS_LEN`].
    #[error("address must be HOST:PORT of 1 to {MAX_ADDRESS_LEN} characters")]
    Length,
    /// Not `HOST:PORT` with a port from 1 to 65535.
    #[error("address {0:?} must be HOST:PORT with a port from 1 to 65535 (e.g. \"10.0.0.5:8080\", \"localhost:8001\", \"[::1]:8001\")")]
    Shape(String),
    /// The host is neither an IP literal nor a DNS name.
    #[error("address {0:?}: the host must be an IP address or a DNS name of letters, digits, '-' and '.'")]
    Host(String),
}

/// A Swarm instance name: it starts every service's name (`<instance>-<id>`), so 1 to 40
/// letters, digits and '-', starting with a letter or digit.
pub fn check_instance(instance: &str) -> Result<(), String> {
    let good = !instance.is_empty()
        && instance.len() <= 40
        && instance.starts_with(|c: char| c.is_ascii_alphanumeric())
        && instance
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    if good {
        Ok(())
    } else {
        Err(format!(
            "supervisor.instance {instance:?} must be 1 to 40 letters, digits and '-' starting \
             with a letter or digit (it names the Swarm services)"
        ))
    }
}

/// A backend address is `HOST:PORT`: HOST an IPv4 literal, a bracketed IPv6 literal or a DNS
/// name (letters, digits, `-`, `.`; labels not starting with `-`), PORT 1–65535. No scheme, no
/// path, nothing a URI or a command line could read otherwise.
pub fn check_address(address: &str) -> Result<(), AddressError> {
    if address.is_empty() || address.len() > MAX_ADDRESS_LEN {
        return Err(AddressError::Length);
    }
    let shape = || AddressError::Shape(address.to_owned());
    let (host, port) = address.rsplit_once(':').ok_or_else(shape)?;
    let port_ok = !port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
    if !port_ok {
        return Err(shape());
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6
            .parse::<std::net::Ipv6Addr>()
            .map(drop)
            .map_err(|_| AddressError::Host(address.to_owned()));
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(());
    }
    let dns = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        && host.bytes().any(|b| b.is_ascii_alphabetic());
    if dns {
        Ok(())
    } else {
        Err(AddressError::Host(address.to_owned()))
    }
}

/// The health check path: an absolute path (with an optional query) of printable ASCII without
/// spaces, at most 1024 bytes.
fn check_health_path(path: &str) -> Result<(), String> {
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

/// `[log] access`: `"off"`, `"stdout"` or the path of a file (not empty, not a directory's).
fn check_access_log(access: &str) -> Result<(), String> {
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

/// Longest hostname accepted (a DNS label's limit).
pub const MAX_HOSTNAME_LEN: usize = 63;

/// Why a hostname is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostnameError {
    /// Empty or longer than [`MAX_HOSTNAME_LEN`].
    #[error("hostname {0:?} must be 1 to {MAX_HOSTNAME_LEN} characters long")]
    Length(String),
    /// Leading or trailing space, a leading `-` (a command line could read it as an option), or
    /// nothing but dots and spaces.
    #[error("hostname {0:?} must not start with '-' or a space, end with a space, or be only dots and spaces")]
    Shape(String),
    /// A character outside the allowed set.
    #[error("hostname {name:?} contains {found:?}; allowed are letters, digits, space, '-', '_' and '.'")]
    Character {
        /// The name.
        name: String,
        /// The first character not allowed.
        found: char,
    },
}

/// A hostname is 1–63 characters of ASCII letters, digits, space, `-`, `_` and `.`, with at
/// least one letter, digit or `_`, not starting with `-` or a space, not ending with a space.
pub fn check_hostname(name: &str) -> Result<(), HostnameError> {
    if name.is_empty() || name.len() > MAX_HOSTNAME_LEN {
        // Not echoed whole: the name may be huge.
        let mut shown: String = name.chars().take(20).collect();
        if shown.len() < name.len() {
            shown.push('…');
        }
        return Err(HostnameError::Length(shown));
    }
    if let Some(found) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.')))
    {
        return Err(HostnameError::Character {
            name: name.to_owned(),
            found,
        });
    }
    if name.starts_with(['-', ' '])
        || name.ends_with(' ')
        || name.chars().all(|c| matches!(c, '.' | ' '))
    {
        return Err(HostnameError::Shape(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
