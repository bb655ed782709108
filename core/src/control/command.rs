//! What the controller can be told, and the handle everything else tells it with. Health checks,
//! the file watcher, supervisors and the REST front depend on this module only, never on the
//! controller itself.

use lb_balance::RingError;
use tokio::sync::{mpsc, oneshot};

use std::sync::Arc;

use crate::state::{Backend, Handle};

use super::launch::LaunchError;
use super::supervisor::{ReplicaSpec, SupervisorEvent};

/// A validated `/add` or `/rm` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleRequest {
    /// How many replicas to add or remove.
    pub n: usize,
    /// Names to use (add) or to remove; at most `n`, distinct and well-formed.
    pub hostnames: Vec<String>,
    /// `/add` only: `HOST:PORT` of backends by address, paired by position with the new
    /// entries; at most `n`, distinct and well-formed. The rest are replicas to start.
    pub addresses: Vec<String>,
}

/// Why the controller refused or failed a change; nothing changed in every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// `/add` named a hostname that is already in use.
    #[error("hostname '{0}' is already a replica")]
    NameTaken(String),
    /// `/add` named an address that is already a backend's.
    #[error("address '{0}' is already a backend")]
    AddressTaken(String),
    /// The replicas would not fit in the ring (e.g. `K·N > M`).
    #[error("cannot add {n} replicas: {source}")]
    NoRoom {
        /// How many were asked for.
        n: usize,
        /// The capacity rule that failed.
        source: RingError,
    },
    /// `/add` would go beyond `[limits] max_replicas`.
    #[error("cannot have {wanted} replicas: limits.max_replicas is {max}")]
    TooMany {
        /// Replicas there would be.
        wanted: usize,
        /// The limit.
        max: usize,
    },
    /// Some of the new replicas did not start; the others were stopped again.
    #[error("{}; nothing was added", .0.join("; "))]
    StartFailed(Vec<String>),
    /// `/rm` asked for more replicas than there are.
    #[error("cannot remove {wanted} replicas: there are only {have}")]
    TooFew {
        /// How many were asked for.
        wanted: usize,
        /// How many there are.
        have: usize,
    },
    /// `/add` named addresses with a supervisor whose replicas are all its own (Swarm).
    #[error("backends by address cannot be added with the {0} supervisor: every replica is one of its services, shared by every lb of the instance")]
    NoAddresses(&'static str),
    /// `/rm` named a hostname that is not a replica.
    #[error("hostname '{name}' is not a replica (replicas: {})", .replicas.join(", "))]
    UnknownName {
        /// The name.
        name: String,
        /// The replicas there are.
        replicas: Vec<String>,
    },
    /// `/rm`: the runtime could not remove some of the replicas (the container engine refused
    /// or did not answer); they stay replicas.
    #[error("{}", .0.join("; "))]
    RemoveFailed(Vec<String>),
    /// The controller has stopped.
    #[error("the load balancer is shutting down")]
    ShuttingDown,
}

/// The reply to `/add` and `/rm`: the hostnames in the ring afterwards, or why nothing changed.
pub type ScaleReply = Result<Vec<String>, ControlError>;

/// What the controller can be asked to do.
#[derive(Debug)]
pub enum Command {
    /// `POST /add`.
    Add {
        /// The validated body.
        request: ScaleRequest,
        /// Where the answer goes.
        reply: oneshot::Sender<ScaleReply>,
        /// Shared membership: how many more times to plan it again when another load
        /// balancer takes a chosen server id at the same moment.
        retries: u32,
    },
    /// `DELETE /rm`.
    Remove {
        /// The validated body.
        request: ScaleRequest,
        /// Where the answer goes.
        reply: oneshot::Sender<ScaleReply>,
    },
    /// Replicas an `/rm` took out of the ring could not be stopped (sent by the task stopping
    /// them): they go back, and the `/rm` fails.
    NotRemoved {
        /// The replicas, and why each stop failed.
        failed: Vec<(Arc<Backend>, String)>,
        /// Where the `/rm`'s answer goes.
        reply: oneshot::Sender<ScaleReply>,
    },
    /// The configuration file may have changed: read it and apply it if it did.
    FileChanged,
    /// SIGHUP: read the configuration file and apply it if it changed, saying so either way.
    Reload,
    /// The health checker gave up on a replica.
    ReplicaFailed {
        /// Its server id.
        id: u64,
        /// Which incarnation (an id outlives its replicas).
        handle: Handle,
        /// Why, for the log and status.
        reason: String,
    },
    /// The supervisor noticed something.
    Supervisor(SupervisorEvent),
    /// The replicas of an `/add` started, or some did not (sent by the task starting them).
    Added {
        /// What was started, in order.
        specs: Vec<ReplicaSpec>,
        /// Per spec, the replica in its first heartbeat's good health, or why not.
        results: Vec<Result<Arc<Backend>, LaunchError>>,
        /// Where the `/add`'s answer goes.
        reply: oneshot::Sender<ScaleReply>,
        /// The request and its retries left, to plan it again after an id collision.
        request: ScaleRequest,
        /// Retries left.
        retries: u32,
    },
    /// A vacancy's replica started, or did not (sent by the task starting it).
    Started {
        /// What was started.
        spec: ReplicaSpec,
        /// The replica, or why it did not start.
        result: Result<Arc<Backend>, LaunchError>,
    },
    /// A backend by address's name was resolved again (on a reload) to `address`.
    Resolved {
        /// Its server id.
        id: u64,
        /// Which incarnation was resolved.
        handle: Handle,
        /// The socket address its name resolves to now.
        address: String,
    },
    /// Replicas this load balancer removed (or failed to add) are gone from the runtime:
    /// membership listings asked for from now on speak for them again.
    Settled {
        /// Their server ids.
        ids: Vec<u64>,
    },
    /// Try again to fill a vacancy.
    Respawn {
        /// The vacant server id.
        id: u64,
    },
    /// Stop every replica and stop taking commands.
    Shutdown {
        /// Answered once every replica is stopped.
        reply: oneshot::Sender<()>,
    },
}

/// How many times an `/add` is planned again after another load balancer of a shared
/// membership took one of its server ids at the same moment.
pub const ADD_RETRIES: u32 = 3;

/// A cheap, cloneable way to send the controller commands.
#[derive(Debug, Clone)]
pub struct ControllerHandle {
    tx: mpsc::UnboundedSender<Command>,
}

impl ControllerHandle {
    /// A handle and the receiving end the controller reads.
    pub(crate) fn channel() -> (ControllerHandle, mpsc::UnboundedReceiver<Command>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (ControllerHandle { tx }, rx)
    }

    /// Send a command without waiting for its effect.
    pub fn send(&self, command: Command) {
        // The controller only stops at shutdown, when nobody waits for answers any more.
        let _ = self.tx.send(command);
    }

    async fn ask(&self, make: impl FnOnce(oneshot::Sender<ScaleReply>) -> Command) -> ScaleReply {
        let (reply, answer) = oneshot::channel();
        self.send(make(reply));
        answer.await.unwrap_or(Err(ControlError::ShuttingDown))
    }

    /// Add replicas; returns the hostnames in the ring afterwards.
    pub async fn add(&self, request: ScaleRequest) -> ScaleReply {
        self.ask(|reply| Command::Add {
            request,
            reply,
            retries: ADD_RETRIES,
        })
        .await
    }

    /// Remove replicas; returns once they are out of the ring and stopped.
    pub async fn remove(&self, request: ScaleRequest) -> ScaleReply {
        self.ask(|reply| Command::Remove { request, reply }).await
    }

    /// Stop all replicas; returns when they are gone.
    pub async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        self.send(Command::Shutdown { reply });
        let _ = done.await;
    }
}
