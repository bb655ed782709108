//! Supervisors run replicas: they start and stop them and report when one exits on its own.
//!
//! They do not judge health: the health checker does that with heartbeats, and the controller
//! decides what to do. A supervisor only owns the mechanics of one kind of runtime (local
//! processes now, Docker containers later) behind the [`Supervisor`] trait.

pub mod process;

use std::net::SocketAddr;

use async_trait::async_trait;
use serde::Serialize;

pub use process::ProcessSupervisor;

/// What to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSpec {
    /// The replica's hostname, reported by its `/home`.
    pub hostname: String,
    /// Its server id on the ring.
    pub id: u64,
}

/// How the supervisor refers to a running replica.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Handle {
    /// A local child process.
    Pid(u32),
    /// A container.
    ContainerId(String),
}

impl std::fmt::Display for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Handle::Pid(p) => write!(f, "pid {p}"),
            Handle::ContainerId(c) => write!(f, "container {c}"),
        }
    }
}

/// A started replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// What was asked for.
    pub spec: ReplicaSpec,
    /// Where it listens.
    pub addr: SocketAddr,
    /// How to refer to it.
    pub handle: Handle,
}

/// Something a supervisor noticed on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupervisorEvent {
    /// A replica exited without being asked to.
    Exited {
        /// Which one.
        handle: Handle,
        /// Exit status or signal, for the log.
        detail: String,
    },
}

/// Why a supervisor could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// Could not start the replica.
    #[error("could not start replica {hostname:?}: {reason}")]
    Start {
        /// The replica.
        hostname: String,
        /// Why.
        reason: String,
    },
    /// The handle is not one of this supervisor's replicas.
    #[error("{0} is not a replica of this load balancer")]
    Unknown(Handle),
}

/// Runs replicas of one kind. Implementations send [`SupervisorEvent`]s on the channel they were
/// built with.
#[async_trait]
pub trait Supervisor: Send + Sync + 'static {
    /// Short name ("process", "docker").
    fn kind(&self) -> &'static str;

    /// Start a replica and return once it is running (not necessarily answering yet).
    async fn start(&self, spec: &ReplicaSpec) -> Result<Started, SupervisorError>;

    /// Stop a replica (gracefully, then forcibly) and return once it is gone.
    async fn stop(&self, handle: &Handle) -> Result<(), SupervisorError>;

    /// Stop every replica this supervisor started (on shutdown).
    async fn stop_all(&self);
}
