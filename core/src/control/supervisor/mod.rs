//! Supervisors run replicas: they start and stop them and report when one exits on its own.
//!
//! They do not judge health: the health checker does that with heartbeats, and the controller
//! decides what to do. A supervisor only owns the mechanics of one kind of runtime (local
//! processes, Docker containers, Docker Swarm services) behind the [`Supervisor`] trait; a
//! runtime that holds the replica set itself, shared by several load balancers (Swarm), offers
//! [`Membership`] too. [`Handle`] (`handle.rs`) is how a supervisor names a running replica.

pub(crate) mod docker;
pub(crate) mod engine;
mod handle;
#[allow(unsafe_code)] // pre_exec: PR_SET_PDEATHSIG and fd passing in the child
pub(crate) mod process;
pub(crate) mod swarm;

use std::sync::Arc;

use async_trait::async_trait;

use crate::config::{BackendTls, Protocol};

pub(crate) use handle::Handle;

pub(crate) use docker::DockerSupervisor;
pub(crate) use process::ProcessSupervisor;
pub(crate) use swarm::SwarmSupervisor;

/// What to start (or, for a backend by address, what to health-check until it may join).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplicaSpec {
    /// The replica's hostname, reported by its `/home`.
    pub hostname: String,
    /// Its server id on the ring.
    pub id: u64,
    /// `HOST:PORT` of a backend by address, which no supervisor runs; `None` for a replica.
    pub address: Option<String>,
    /// Whether requests to it may be pipelined; `None`: the default for its kind.
    pub pipelining: Option<bool>,
    /// A backend by address spoken to over TLS: the settings it was configured or added with
    /// (the settings of the file in force win: `Launcher::tls`).
    pub tls: Option<Arc<BackendTls>>,
    /// What `lb` speaks to a backend by address (`http1` for a replica).
    pub protocol: Protocol,
    /// Its weight on the ring (1..=1000). Swarm keeps it as the service's `io.lb.weight`
    /// label, so that every load balancer of the instance places it alike.
    pub weight: u32,
}

impl ReplicaSpec {
    /// A replica the supervisor runs, with the default pipelining.
    pub(crate) fn managed(hostname: impl Into<String>, id: u64) -> Self {
        ReplicaSpec {
            hostname: hostname.into(),
            id,
            address: None,
            pipelining: None,
            tls: None,
            protocol: Protocol::Http1,
            weight: 1,
        }
    }

    /// The same replica with weight `weight`.
    pub(crate) fn weighing(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Whether it is the same replica as `other` for the supervisor (hostname and id).
    pub(crate) fn same_replica(&self, other: &ReplicaSpec) -> bool {
        self.hostname == other.hostname && self.id == other.id
    }
}

/// A started replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Started {
    /// What was asked for.
    pub spec: ReplicaSpec,
    /// Where the load balancer reaches it: `host:port`.
    pub address: String,
    /// How to refer to it.
    pub handle: Handle,
}

/// Something a supervisor noticed on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SupervisorEvent {
    /// A replica exited without being asked to.
    Exited {
        /// Which one.
        handle: Handle,
        /// Exit status or signal, for the log.
        detail: String,
    },
    /// The replicas as the runtime lists them, for a supervisor whose membership is shared
    /// ([`Supervisor::membership`]): sent on every change and periodically.
    Members {
        /// When the listing was asked for: local changes made after it are not in it.
        listed_at: tokio::time::Instant,
        /// Every replica (hostname and id) of this load balancer's instance.
        members: Vec<ReplicaSpec>,
    },
}

/// Why a supervisor could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SupervisorError {
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
    /// The container engine refused or failed.
    #[error("container engine: {0}")]
    Engine(String),
    /// The replica's server id is taken in the runtime by something else (shared membership:
    /// another lb created a service for another replica with that id, or a foreign service has
    /// its name).
    #[error("server id {id} for replica {hostname:?} is taken by {by}")]
    Taken {
        /// The replica asked for.
        hostname: String,
        /// Its server id.
        id: u64,
        /// What holds it.
        by: String,
    },
    /// The replica is not (or no longer) in the runtime (shared membership: its service is
    /// gone).
    #[error("replica {hostname:?} (server id {id}) has no service in the swarm")]
    Gone {
        /// The replica.
        hostname: String,
        /// Its server id.
        id: u64,
    },
}

/// Runs replicas of one kind. Implementations send [`SupervisorEvent`]s on the channel they were
/// built with.
#[async_trait]
pub(crate) trait Supervisor: Send + Sync + 'static {
    /// Short name ("process", "docker").
    fn kind(&self) -> &'static str;

    /// Start a replica and return once it is running (not necessarily answering yet).
    async fn start(&self, spec: &ReplicaSpec) -> Result<Started, SupervisorError>;

    /// Stop a replica (gracefully, then forcibly) and return once it is gone.
    async fn stop(&self, handle: &Handle) -> Result<(), SupervisorError>;

    /// Stop every replica this supervisor started (on shutdown).
    async fn stop_all(&self);

    /// Replicas left running by an earlier run of this load balancer, to take over instead of
    /// starting new ones. Anything of ours that is not running is cleaned up. Child processes
    /// die with the load balancer, so the default is none.
    async fn adopt(&self) -> Result<Vec<Started>, SupervisorError> {
        Ok(Vec::new())
    }

    /// The shared membership this runtime offers, if the replica set lives in it (Swarm).
    /// Default: none.
    fn membership(&self) -> Option<&dyn Membership> {
        None
    }
}

/// A runtime that holds the replica set itself and shares it with other load balancers
/// (Swarm): it restarts failed replicas itself (same id and hostname, new address), and its
/// supervisor sends [`SupervisorEvent::Members`].
#[async_trait]
pub(crate) trait Membership: Send + Sync {
    /// The replicas the runtime runs for this instance right now.
    async fn members(&self) -> Result<Vec<ReplicaSpec>, SupervisorError>;

    /// Start a replica that must be new (an `/add`): like [`Supervisor::start`], except that
    /// a replica the runtime already runs under the same id (another load balancer's, made at
    /// the same moment) is [`SupervisorError::Taken`] rather than taken over.
    async fn start_new(&self, spec: &ReplicaSpec) -> Result<Started, SupervisorError>;

    /// Remove a replica that has no running handle (a vacancy's service, removed from the
    /// configuration).
    async fn remove_replica(&self, spec: &ReplicaSpec) -> Result<(), SupervisorError>;

    /// Where an existing replica runs now, without starting anything (the service's running
    /// task).
    async fn locate(&self, spec: &ReplicaSpec) -> Result<Started, SupervisorError>;

    /// Give an existing replica the weight `spec.weight` in the runtime, for every load
    /// balancer that follows it (Swarm: the service's `io.lb.weight` label; the task keeps
    /// running).
    async fn set_weight(&self, spec: &ReplicaSpec) -> Result<(), SupervisorError>;
}
