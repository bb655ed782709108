//! The error type of the library modules.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while running the analysis.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The `lb` binary could not be started.
    #[error("cannot run {path}: {source}")]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The `lb` process did not report its address in time, or exited first.
    #[error("lb did not start: {reason}; its log:\n{log}")]
    LbStart {
        /// What happened.
        reason: String,
        /// What `lb` printed.
        log: String,
    },
    /// A URL given on the command line is not usable.
    #[error("bad URL {url:?}: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// An HTTP request failed before an answer arrived.
    #[error("{method} {path}: {reason}")]
    Http {
        /// The method.
        method: String,
        /// The path.
        path: String,
        /// Why.
        reason: String,
    },
    /// No (whole) answer arrived within the request's deadline.
    #[error("{method} {path}: no answer within {limit:?}")]
    NoAnswer {
        /// The method.
        method: String,
        /// The path.
        path: String,
        /// The deadline.
        limit: Duration,
    },
    /// A TCP connection to the load balancer could not be opened.
    #[error("no TCP connection to {authority}: {reason}")]
    Connect {
        /// `host:port`.
        authority: String,
        /// Why.
        reason: String,
    },
    /// The load balancer answered, but not as expected.
    #[error("{request}: {reason}")]
    Unexpected {
        /// The request, e.g. `GET /rep`.
        request: String,
        /// What was wrong, with the answer.
        reason: String,
    },
    /// A condition polled for did not hold before its deadline.
    #[error("timed out after {limit:?} waiting for {what}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// The deadline.
        limit: Duration,
    },
    /// `lb.toml` could not be parsed or edited.
    #[error("{path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A chart could not be drawn.
    #[error("chart {path}: {reason}")]
    Chart {
        /// The chart file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A hash plugin could not be loaded.
    #[error(transparent)]
    Plugin(#[from] lb_balance::plugin::PluginError),
    /// A ring could not be built.
    #[error(transparent)]
    Ring(#[from] lb_balance::ring::RingError),
    /// An external command (`docker …`, `lb check`) failed or did not finish in time.
    #[error("`{command}`: {reason}")]
    Command {
        /// The command line.
        command: String,
        /// What went wrong, with its error output.
        reason: String,
    },
    /// `LB_REQUIRE_DOCKER=1` is set, but a Docker or Swarm measurement cannot run here.
    #[error("{what} is required here (LB_REQUIRE_DOCKER=1), but {reason}")]
    Required {
        /// The measurement.
        what: String,
        /// Why it cannot run.
        reason: String,
    },
    /// A measurement against a load balancer of its own failed; with that load balancer's last
    /// lines of output.
    #[error("{what}: {source}; the last lines of its lb:\n{log}")]
    OwnLb {
        /// The measurement.
        what: String,
        /// The cause.
        source: Box<Error>,
        /// What its `lb` printed last.
        log: String,
    },
    /// Data could not be serialised.
    #[error("serialising {what}: {source}")]
    Json {
        /// What was serialised.
        what: String,
        /// The cause.
        source: serde_json::Error,
    },
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Wrap an I/O error with its path.
pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}
