//! Starting a replica: ask the supervisor, then wait for its first heartbeat. Runs on tasks of
//! its own, so the controller never waits for a start.

use std::sync::Arc;
use std::time::Duration;

use crate::state::Backend;

use super::probe::{ProbeError, Prober};
use super::supervisor::{ReplicaSpec, Started, Supervisor, SupervisorError};

/// Why a replica could not join the ring.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The supervisor could not start it.
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    /// It started but never answered a heartbeat (it was stopped again).
    #[error("replica '{hostname}' {source}")]
    NotAlive {
        /// The replica.
        hostname: String,
        /// The last heartbeat's failure.
        source: ProbeError,
    },
    /// The supervisor reported an address that is not `host:port`.
    #[error("replica '{hostname}' {address} is not a valid host:port")]
    BadAddress {
        /// The replica.
        hostname: String,
        /// What it reported.
        address: String,
    },
}

/// Starts replicas and waits for their first heartbeat; cheap to clone onto a task, so the
/// controller never waits for a start itself.
#[derive(Clone)]
pub(crate) struct Launcher {
    pub(crate) supervisor: Arc<dyn Supervisor>,
    pub(crate) prober: Prober,
}

impl Launcher {
    pub(crate) async fn launch_all(
        &self,
        specs: Vec<ReplicaSpec>,
        deadline: Duration,
    ) -> Vec<Result<Arc<Backend>, LaunchError>> {
        let launches = specs.into_iter().map(|spec| self.launch(spec, deadline));
        futures_util::future::join_all(launches).await
    }

    /// Start one replica and wait up to `deadline` for its first heartbeat; stop it again if it
    /// never answers.
    pub(crate) async fn launch(
        &self,
        spec: ReplicaSpec,
        deadline: Duration,
    ) -> Result<Arc<Backend>, LaunchError> {
        let started = self.supervisor.start(&spec).await?;
        self.join_when_alive(started, deadline).await
    }

    /// A backend for a running replica once it answers a heartbeat within `deadline`; the
    /// replica is stopped if it does not.
    pub(crate) async fn join_when_alive(
        &self,
        started: Started,
        deadline: Duration,
    ) -> Result<Arc<Backend>, LaunchError> {
        let hostname = started.spec.hostname.clone();
        let alive = self
            .prober
            .wait_alive(&started.address, deadline)
            .await
            .map_err(|source| LaunchError::NotAlive {
                hostname: hostname.clone(),
                source,
            });
        let backend = alive.and_then(|()| {
            Backend::new(
                started.spec.hostname,
                started.spec.id,
                started.address.clone(),
                started.handle.clone(),
            )
            .ok_or_else(|| LaunchError::BadAddress {
                hostname,
                address: started.address.clone(),
            })
        });
        if backend.is_err() {
            let _ = self.supervisor.stop(&started.handle).await;
        }
        backend.map(Arc::new)
    }
}
