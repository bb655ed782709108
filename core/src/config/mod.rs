//! `lb.toml`: parsing, defaults and validation.
//!
//! Every error names the line and column it comes from, whether it is a TOML syntax error, an
//! unknown field or a rule of the load balancer (duplicate hostname, K·N > M, …).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use lb_balance::hash::{self, RingHash};
use lb_balance::plugin;
use lb_balance::ring::{Probing, RingParams};
use lb_balance::Balancer;

/// The configuration compiled into `lb`, used when the default `config/lb.toml` does not exist.
pub const EMBEDDED: &str = include_str!("../../config/lb.toml");

/// The default configuration path, relative to the working directory.
pub const DEFAULT_PATH: &str = "config/lb.toml";

/// Largest number of slots a ring may have.
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
}

impl Default for ProxySection {
    fn default() -> Self {
        ProxySection {
            workers: 0,
            pipelining: true,
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
    /// M, the number of slots.
    pub slots: Spanned<u32>,
    /// K, virtual nodes per replica.
    pub virtual_nodes: Spanned<u32>,
    /// Collision resolution.
    pub probing: Probing,
    /// Name of the hash functions (H and Φ).
    pub hash: Spanned<String>,
}

impl Default for RingSection {
    fn default() -> Self {
        let p = RingParams::default();
        RingSection {
            slots: Spanned::new(0..0, p.slots),
            virtual_nodes: Spanned::new(0..0, p.virtual_nodes),
            probing: p.probing,
            hash: Spanned::new(0..0, "spec".to_owned()),
        }
    }
}

impl RingSection {
    /// The ring parameters this section describes.
    pub fn params(&self) -> RingParams {
        RingParams {
            slots: *self.slots.get_ref(),
            virtual_nodes: *self.virtual_nodes.get_ref(),
            probing: self.probing,
        }
    }
}

/// `[health]`
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSection {
    /// Time between two heartbeats to a replica.
    pub interval_ms: u64,
    /// How long one heartbeat may take.
    pub timeout_ms: u64,
    /// Misses in a row after which a replica is dead and replaced.
    pub fall: u32,
    /// How long a new replica may take to answer its first heartbeat.
    pub start_timeout_ms: u64,
    /// How long `/rm` waits for in-flight requests of a removed replica before stopping it.
    pub drain_timeout_ms: u64,
}

impl Default for HealthSection {
    fn default() -> Self {
        HealthSection {
            interval_ms: 500,
            timeout_ms: 300,
            fall: 2,
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
    /// By the container's IP address on the network (the load balancer is on the host).
    Ip,
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
    /// TOML syntax error, unknown field or wrong type (the message carries line and column).
    #[error("{0}")]
    Parse(String),
    /// A rule of the load balancer is broken.
    #[error("line {line}, column {column}: {message}")]
    Invalid {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
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
}

/// Where a configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file on disk.
    File(PathBuf),
    /// The copy compiled into the binary.
    Embedded,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Embedded => f.write_str("(embedded default)"),
        }
    }
}

impl Config {
    /// Parse and validate `text`: everything but the hash functions, which may be a plugin that
    /// only [`Config::resolve_hash`] can load. Relative paths are relative to the working
    /// directory.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.text = text.to_owned();
        config.validate()?;
        Ok(config)
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
        let name = self.ring.hash.get_ref();
        let hash = plugin::resolve_any(name, &self.plugin_dirs())
            .map_err(|e| self.at(self.ring.hash.span(), e.to_string()))?;
        self.balancer()
            .place(Arc::clone(&hash), &self.replica_ids())
            .map_err(|e| self.at(self.ring.virtual_nodes.span(), e.to_string()))?;
        Ok(hash)
    }

    fn replica_ids(&self) -> Vec<u64> {
        self.replicas.iter().map(|r| *r.id.get_ref()).collect()
    }

    /// An error at `span` of the text.
    fn at(&self, span: std::ops::Range<usize>, message: String) -> ConfigError {
        let (line, column) = line_column(&self.text, span.start);
        ConfigError::Invalid {
            line,
            column,
            message,
        }
    }

    /// Read, parse and validate the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Config::parse_file(&text, path)
    }

    /// Load `path`, or the embedded default when `path` is the default path and does not exist.
    pub fn load_or_embedded(path: &Path) -> Result<Loaded, ConfigError> {
        if path == Path::new(DEFAULT_PATH) && !path.exists() {
            return Ok(Loaded {
                config: Config::parse(EMBEDDED)?,
                source: Source::Embedded,
                text: EMBEDDED.to_owned(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(Loaded {
            config: Config::parse_file(&text, path)?,
            source: Source::File(path.to_owned()),
            text,
        })
    }

    /// The ring parameters.
    pub fn ring_params(&self) -> RingParams {
        self.ring.params()
    }

    /// The balancing algorithm and its parameters.
    pub fn balancer(&self) -> Balancer {
        Balancer::Ring(self.ring_params())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let slots = *self.ring.slots.get_ref();
        if slots == 0 || slots > MAX_SLOTS {
            return Err(self.at(
                self.ring.slots.span(),
                format!("ring.slots must be between 1 and {MAX_SLOTS}, not {slots}"),
            ));
        }
        if *self.ring.virtual_nodes.get_ref() == 0 {
            return Err(self.at(
                self.ring.virtual_nodes.span(),
                "ring.virtual_nodes must be at least 1".into(),
            ));
        }
        let name = self.ring.hash.get_ref();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(self.at(
                self.ring.hash.span(),
                format!("hash {name:?} must be a name of letters, digits, '-' and '_'"),
            ));
        }
        let h = &self.health;
        if h.interval_ms < 10 || h.timeout_ms == 0 || h.fall == 0 || h.start_timeout_ms < 100 {
            return Err(ConfigError::Parse(
                "[health]: interval_ms must be ≥ 10, timeout_ms ≥ 1, fall ≥ 1, start_timeout_ms ≥ 100"
                    .into(),
            ));
        }
        let mut names = HashSet::new();
        let mut ids = HashSet::new();
        for r in &self.replicas {
            if let Err(why) = check_hostname(r.hostname.get_ref()) {
                return Err(self.at(r.hostname.span(), why.to_string()));
            }
            if !names.insert(r.hostname.get_ref()) {
                return Err(self.at(
                    r.hostname.span(),
                    format!("duplicate hostname {:?}", r.hostname.get_ref()),
                ));
            }
            if *r.id.get_ref() == 0 {
                return Err(self.at(r.id.span(), "replica ids start at 1".into()));
            }
            if !ids.insert(*r.id.get_ref()) {
                return Err(self.at(r.id.span(), format!("duplicate id {}", r.id.get_ref())));
            }
        }
        // K·N ≤ M needs no hash; with a compiled-in hash the whole ring is checked right away.
        let capacity = match hash::builtin(name) {
            Some(hash) => self.balancer().place(hash, &self.replica_ids()).map(drop),
            None => self.balancer().check_capacity(self.replicas.len()),
        };
        capacity.map_err(|e| self.at(self.ring.virtual_nodes.span(), e.to_string()))
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Longest hostname accepted (a DNS label's limit).
pub const MAX_HOSTNAME_LEN: usize = 63;

/// Why a hostname is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostnameError {
    /// Empty or longer than [`MAX_HOSTNAME_LEN`].
    #[error("hostname {0:?} must be 1 to {MAX_HOSTNAME_LEN} characters long")]
    Length(String),
    /// A character outside the allowed set.
    #[error("hostname {name:?} contains {found:?}; allowed are letters, digits, space, '-', '_' and '.'")]
    Character {
        /// The name.
        name: String,
        /// The first character not allowed.
        found: char,
    },
}

/// A hostname is 1–63 characters of ASCII letters, digits, space, `-`, `_` and `.`.
pub fn check_hostname(name: &str) -> Result<(), HostnameError> {
    if name.is_empty() || name.len() > MAX_HOSTNAME_LEN {
        return Err(HostnameError::Length(name.to_owned()));
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid_and_has_three_replicas() {
        let c = Config::parse(EMBEDDED).unwrap();
        assert_eq!(c.replicas.len(), 3);
        assert_eq!(c.ring_params(), RingParams::default());
        assert_eq!(c.listen, default_listen());
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.ring_params(), RingParams::default());
        assert!(c.replicas.is_empty());
        assert_eq!(c.health.fall, 2);
    }

    fn invalid(text: &str) -> (usize, usize, String) {
        match Config::parse(text) {
            Err(ConfigError::Invalid {
                line,
                column,
                message,
            }) => (line, column, message),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn duplicate_hostname_points_at_the_second_one() {
        let text =
            "[[replicas]]\nhostname = \"A\"\nid = 1\n[[replicas]]\nhostname = \"A\"\nid = 2\n";
        let (line, column, message) = invalid(text);
        assert_eq!((line, column), (5, 12));
        assert!(message.contains("duplicate hostname"), "{message}");
    }

    #[test]
    fn duplicate_id_and_zero_id() {
        let text =
            "[[replicas]]\nhostname = \"A\"\nid = 1\n[[replicas]]\nhostname = \"B\"\nid = 1\n";
        assert_eq!(invalid(text).0, 6);
        let text = "[[replicas]]\nhostname = \"A\"\nid = 0\n";
        assert!(invalid(text).2.contains("start at 1"));
    }

    #[test]
    fn too_many_virtual_nodes_is_an_error_with_position() {
        let mut text = String::from("[ring]\nslots = 16\nvirtual_nodes = 9\n");
        for i in 1..=2 {
            text.push_str(&format!("[[replicas]]\nhostname = \"S{i}\"\nid = {i}\n"));
        }
        let (line, _, message) = invalid(&text);
        assert_eq!(line, 3);
        assert!(message.contains("16"), "{message}");
    }

    #[test]
    fn syntax_and_unknown_fields_report_line_and_column() {
        let err = Config::parse("listen = \"127.0.0.1:5000\"\n[ring]\nslots = 512\nslotz = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains("slotz"), "{err}");
        let err = Config::parse("[ring\n").unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
        let err = Config::parse("[ring]\nhash = \"no/pe\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("no/pe"), "{err}");
        // An unknown plugin name is only found out when it is resolved.
        let config = Config::parse("[ring]\nvirtual_nodes = 3\nhash = \"nope\"\n").unwrap();
        let err = config.resolve_hash().unwrap_err().to_string();
        assert!(err.contains("line 3, column 8"), "{err}");
        assert!(err.contains("liblb_hash_nope.so"), "{err}");
        let err = Config::parse("[supervisor]\nkind = \"kubernetes\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("kubernetes"), "{err}");
    }

    #[test]
    fn hostname_rules() {
        assert!(check_hostname("Server 1").is_ok());
        assert!(check_hostname("a-b_c.d").is_ok());
        assert!(check_hostname(&"x".repeat(63)).is_ok());
        assert!(check_hostname(&"x".repeat(64)).is_err());
        assert!(check_hostname("").is_err());
        assert!(check_hostname("a/b").is_err());
        assert!(check_hostname("é").is_err());
    }
}
