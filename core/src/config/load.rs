//! Loading `lb.toml`: reading a file safely ([`read_text`]), parsing and validating a text
//! ([`Config::parse`]), and the runtime file `lb` follows, created from the shipped default
//! where it does not exist ([`Config::load_runtime`]). [`ConfigError`] is why one was refused.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::backend_tls::BackendTls;
use super::check;
use super::problem::{finish, Problem};
use super::sections::Config;

/// The shipped default (`config/lb.toml`, tracked by git and never written), compiled into `lb`.
pub(crate) const EMBEDDED: &str = include_str!("../../../config/lb.toml");

/// The file `lb` follows and writes replica changes back to, relative to the working directory.
/// Git ignores it; the first start creates it from [`DEFAULTS_PATH`].
pub const DEFAULT_PATH: &str = "config/lb.local.toml";

/// The shipped default a new configuration file is created from (or, where it does not exist,
/// the copy built into the binary).
pub const DEFAULTS_PATH: &str = "config/lb.toml";

/// Largest configuration file accepted (1 MiB): larger ones are refused before they are parsed.
pub(crate) const MAX_CONFIG_BYTES: usize = 1 << 20;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
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

/// Read a configuration file: a regular file (never a FIFO or a device, which could block or
/// never end) of at most [`MAX_CONFIG_BYTES`], in UTF-8.
pub(crate) fn read_text(path: &Path) -> Result<String, ConfigError> {
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

/// A configuration with its origin and the exact text it was parsed from.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
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
pub(crate) enum Source {
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
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_in(text, Path::new(""))
    }

    /// [`Config::parse`] with relative paths relative to `base_dir`; the CA files of backends
    /// by address with `tls = true` are read here ([`BackendTls`]).
    fn parse_in(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
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
        config.base_dir = base_dir.to_path_buf();
        let mut more = config.validate();
        if more.is_empty() {
            more = config.build_backend_tls();
            if let Some(acme) = config.tls.as_ref().and_then(|t| t.acme.as_ref()) {
                more.extend(acme.disk_problems(&config.base_dir));
            }
        }
        super::problem::locate(text, &mut more);
        problems.extend(more);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(finish(problems)))
        }
    }

    /// Parse `text` read from `path` (relative paths in it are relative to its directory).
    pub(crate) fn parse_file(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::parse_in(text, path.parent().unwrap_or(Path::new("")))
    }

    /// Build the TLS settings of every backend by address with `tls = true` (reading its CA
    /// file): a problem at its `ca` (or `tls`) key for each that cannot be built.
    fn build_backend_tls(&mut self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let base_dir = self.base_dir.clone();
        for r in &mut self.replicas {
            let Some(address) = r.address() else { continue };
            if !r.wants_tls() {
                continue;
            }
            let verify = r.tls_verify.as_ref().is_none_or(|v| *v.get_ref());
            let built = BackendTls::build(
                address,
                r.server_name.as_ref().map(|n| n.get_ref().as_str()),
                r.ca.as_ref().map(|c| c.get_ref().as_str()),
                verify,
                &base_dir,
                r.protocol(),
            );
            match built {
                Ok(tls) => r.tls_settings = Some(Arc::new(tls)),
                Err(e) => {
                    let at =
                        r.ca.as_ref()
                            .or(r.server_name.as_ref())
                            .map(|s| s.span().start)
                            .or(r.tls.as_ref().map(|t| t.span().start))
                            .unwrap_or(0);
                    let hostname = r.hostname.get_ref();
                    problems.push(Problem::pending(at, format!("replica {hostname:?}: {e}")));
                }
            }
        }
        problems
    }

    /// The configuration `lb` runs on: the file at `path`; where it does not exist yet, it is
    /// created as a copy of `defaults` (or of [`EMBEDDED`] where that does not exist either).
    /// When `path`'s directory does not exist and `create_dirs` is false (the default path,
    /// `lb` started outside the project), nothing is created and the copy runs unfollowed.
    pub(crate) fn load_runtime(
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
}
