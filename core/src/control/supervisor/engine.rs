//! The container engine, as the Docker and Swarm supervisors share it: reaching the engine
//! `DOCKER_HOST` names (retried with [`ENGINE_BACKOFF`]), the labels and port both give their
//! replicas, [`EngineError`] (what went wrong, keeping bollard's error as its source; turned
//! into [`SupervisorError::Engine`] at the [`Supervisor`](super::Supervisor) boundary), and
//! [`follow`], the event-stream loop that opens the stream again whenever it ends or fails.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::EventMessage;
use bollard::query_parameters::EventsOptions;
use bollard::Docker;
use futures_util::StreamExt;

use super::SupervisorError;
use crate::control::backoff::Backoff;

/// Label with the replica's exact hostname.
pub(crate) const HOSTNAME_LABEL: &str = "io.lb.hostname";
/// Label with the replica's server id.
pub(crate) const ID_LABEL: &str = "io.lb.server-id";
/// Label with a random token per start attempt: what lets the load balancer remove a container
/// (or a Swarm service) whose create it gave up on, and nothing else.
pub(crate) const ATTEMPT_LABEL: &str = "io.lb.attempt";
/// Port the replica image listens on (the assignment's choice).
pub(crate) const REPLICA_PORT: u16 = 5000;
/// Longest wait for one answer of the container engine (a stop waits for the replica's grace
/// period, so this is longer than that). Starts are bounded by `start_timeout_ms` instead.
pub(crate) const ENGINE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the load balancer tries to reach an engine that does not answer at start before it
/// gives up (with the reason).
pub(crate) const ENGINE_WAIT: Duration = Duration::from_secs(60);
/// The waits between two tries to reach the engine or to open its event stream again.
pub(crate) const ENGINE_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(200), Duration::from_secs(5), 0.5);

/// What went wrong with the container engine.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EngineError {
    /// `DOCKER_HOST` is not a form this build speaks: waiting will not help.
    #[error("DOCKER_HOST {host}: {source}")]
    Unsupported {
        /// What `DOCKER_HOST` says.
        host: String,
        /// Why it cannot be used.
        #[source]
        source: BollardError,
    },
    /// The engine did not answer within the time it was given.
    #[error("{host} did not answer for {secs} s: {source}")]
    Unreachable {
        /// The engine (`DOCKER_HOST`, or the local socket).
        host: String,
        /// How long it was tried.
        secs: u64,
        /// The last failure.
        #[source]
        source: BollardError,
    },
    /// A call failed.
    #[error("{0}")]
    Call(#[from] BollardError),
    /// A call failed; `context` says which.
    #[error("{context}: {source}")]
    During {
        /// What was being done.
        context: String,
        /// The engine's error.
        #[source]
        source: BollardError,
    },
    /// The engine answered, but cannot serve as asked (not a swarm manager, a network of the
    /// wrong kind, an answer without an id).
    #[error("{0}")]
    Unsuitable(String),
}

impl EngineError {
    /// `source`, failing while doing `context`.
    pub(crate) fn during(context: impl Into<String>, source: BollardError) -> Self {
        EngineError::During {
            context: context.into(),
            source,
        }
    }
}

impl From<EngineError> for SupervisorError {
    fn from(e: EngineError) -> Self {
        SupervisorError::Engine(e.to_string())
    }
}

/// The container engine `DOCKER_HOST` names (`unix://…`, `tcp://…`; default the local socket),
/// with every call bounded by [`ENGINE_TIMEOUT`]. An engine that does not answer is tried again
/// with [`ENGINE_BACKOFF`] for up to `wait`, then the reason is returned.
pub(crate) async fn connect(wait: Duration) -> Result<Docker, EngineError> {
    let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "the local socket".into());
    let start = tokio::time::Instant::now();
    let mut retries = ENGINE_BACKOFF.start();
    loop {
        let connected = match Docker::connect_with_defaults() {
            Ok(docker) => {
                docker
                    .with_timeout(ENGINE_TIMEOUT)
                    .negotiate_version()
                    .await
            }
            Err(source @ BollardError::UnsupportedURISchemeError { .. }) => {
                return Err(EngineError::Unsupported { host, source })
            }
            // E.g. the socket is not there yet (the engine is starting).
            Err(e) => Err(e),
        };
        match connected {
            Ok(docker) => return Ok(docker),
            Err(source) if start.elapsed() + retries.peek_base() >= wait => {
                return Err(EngineError::Unreachable {
                    secs: start.elapsed().as_secs(),
                    host,
                    source,
                })
            }
            Err(e) => {
                let pause = retries.next_delay();
                tracing::warn!(engine = %host, error = %e, retry_in_ms = pause.as_millis() as u64, "the container engine does not answer; trying again");
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Follow the engine's events that match `filters`, handing each to `on_event` until it says
/// [`ControlFlow::Break`]. A stream that ends or fails is opened again after a wait of
/// [`ENGINE_BACKOFF`], which an event resets.
pub(crate) async fn follow(
    docker: &Docker,
    filters: HashMap<String, Vec<String>>,
    mut on_event: impl FnMut(EventMessage) -> ControlFlow<()>,
) {
    let mut retries = ENGINE_BACKOFF.start();
    loop {
        let mut stream = docker.events(Some(EventsOptions {
            filters: Some(filters.clone()),
            ..Default::default()
        }));
        while let Some(event) = stream.next().await {
            match event {
                Ok(message) => {
                    retries.reset();
                    if on_event(message).is_break() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "docker event stream failed");
                    break;
                }
            }
        }
        retries.wait().await;
    }
}

/// A random token for [`ATTEMPT_LABEL`].
pub(crate) fn attempt_token() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// Whether an engine error means the engine did not answer (so a create may still land), as
/// opposed to an answer refusing it.
pub(crate) fn unanswered(e: &BollardError) -> bool {
    !matches!(e, BollardError::DockerResponseServerError { .. })
}

/// The HTTP status of the engine's answer, if it answered with an error.
pub(crate) fn status_of(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Whether the engine answered that there is no such object.
pub(crate) fn is_not_found(e: &BollardError) -> bool {
    status_of(e) == Some(404)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn engine_errors_keep_their_source_and_read_as_before() {
        let refused = || BollardError::DockerResponseServerError {
            status_code: 409,
            message: "conflict".into(),
        };
        let e = EngineError::during("cannot create network n", refused());
        assert!(e.source().is_some(), "the bollard error is kept");
        let text = e.to_string();
        assert!(text.starts_with("cannot create network n: "), "{text}");
        let boundary = SupervisorError::from(e);
        assert_eq!(boundary.to_string(), format!("container engine: {text}"));
        let plain = EngineError::from(refused());
        assert!(
            plain.source().is_some(),
            "a plain call failure keeps its source too"
        );
        assert_eq!(plain.to_string(), refused().to_string());
    }

    #[test]
    fn status_codes_are_read_from_answers_only() {
        let not_found = BollardError::DockerResponseServerError {
            status_code: 404,
            message: "no such".into(),
        };
        assert!(is_not_found(&not_found) && !unanswered(&not_found));
        let timeout = BollardError::RequestTimeoutError;
        assert_eq!(status_of(&timeout), None);
        assert!(unanswered(&timeout) && !is_not_found(&timeout));
        assert_ne!(attempt_token(), attempt_token());
        assert_eq!(attempt_token().len(), 16);
    }
}
