//! The library side of `lb check` and `lb swarm down`: what they find, for the binary to print.

use std::path::{Path, PathBuf};

use lb_balance::Balancer;

use crate::config::{self, Config, ConfigError, Source, DEFAULTS_PATH, DEFAULT_PATH};

/// A configuration file that passed [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The file checked (or "embedded default").
    pub name: String,
    /// One line on what it runs: replicas, algorithm, slots, hash.
    pub summary: String,
}

/// Why [`check`] did not pass a file.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The file was read and is wrong: every problem, each with its line and column.
    #[error("{name}: {} problem(s)", problems.len())]
    Invalid {
        /// The file.
        name: String,
        /// What is wrong, one line each (`line L, column C: message`).
        problems: Vec<String>,
    },
    /// The file could not be read (missing, too large, not a regular file, …).
    #[error("{name}")]
    Unreadable {
        /// The file.
        name: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Check a configuration file without starting anything: the file at `path`, or, with `None`,
/// the one `lb` with no options would run on ([`DEFAULT_PATH`], else [`DEFAULTS_PATH`], else
/// the embedded copy of `config/lb.toml`), its hash functions loaded as `lb` would.
pub fn check(path: Option<&Path>) -> Result<Checked, CheckError> {
    let (name, loaded) = match path {
        Some(path) => {
            let config = config::read_text(path).and_then(|text| Config::parse_file(&text, path));
            (path.display().to_string(), config)
        }
        None => {
            let (name, text, at) = which_file_lb_would_use()?;
            (name, Config::parse_file(&text, &at))
        }
    };
    let resolved = loaded.and_then(|config| {
        config.resolve_hash()?;
        config.load_certificates()?;
        Ok(config)
    });
    let config = match resolved {
        Ok(config) => config,
        Err(ConfigError::Invalid(problems)) => {
            return Err(CheckError::Invalid {
                name,
                problems: problems.iter().map(ToString::to_string).collect(),
            })
        }
        Err(e) => {
            return Err(CheckError::Unreadable {
                name,
                source: Box::new(e),
            })
        }
    };
    let p = config.ring_params();
    let summary = match config.balancer() {
        Balancer::Ring(_) => format!(
            "ok ({} replicas, {} slots, {} virtual nodes, {} probing, hash {:?})",
            config.replicas.len(),
            p.slots,
            p.virtual_nodes,
            p.probing,
            config.ring.hash.get_ref()
        ),
        other => format!(
            "ok ({} replicas, algorithm {other}, {} slots, hash {:?})",
            config.replicas.len(),
            p.slots,
            config.ring.hash.get_ref()
        ),
    };
    Ok(Checked { name, summary })
}

/// The file `lb` with no options would start with, without creating anything: its name, text,
/// and the path relative paths in it are relative to.
fn which_file_lb_would_use() -> Result<(String, String, PathBuf), CheckError> {
    for path in [DEFAULT_PATH, DEFAULTS_PATH] {
        match config::read_text(Path::new(path)) {
            Ok(text) => return Ok((path.to_owned(), text, PathBuf::from(DEFAULT_PATH))),
            Err(ConfigError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                continue
            }
            Err(e) => {
                return Err(CheckError::Unreadable {
                    name: path.to_owned(),
                    source: Box::new(e),
                })
            }
        }
    }
    Ok((
        Source::Embedded.to_string(),
        config::EMBEDDED.to_owned(),
        PathBuf::from(DEFAULT_PATH),
    ))
}

/// Why [`swarm_down`] failed.
#[derive(Debug, thiserror::Error)]
pub enum SwarmDownError {
    /// The instance name is not one `[supervisor] instance` accepts.
    #[error("{0}")]
    BadInstance(String),
    /// The Docker engine could not be reached or refused.
    #[error("docker swarm")]
    Engine(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Remove every replica service of `instance` from the swarm this machine's Docker engine
/// manages (they outlive every `lb` on purpose). Returns the services removed.
pub fn swarm_down(instance: &str) -> Result<Vec<String>, SwarmDownError> {
    config::check_instance(instance).map_err(SwarmDownError::BadInstance)?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SwarmDownError::Engine(Box::new(e)))?
        .block_on(crate::control::supervisor::swarm::remove_instance(instance))
        .map_err(|e| SwarmDownError::Engine(Box::new(e)))
}
