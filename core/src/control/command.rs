//! What the controller can be told, and the handle everything else tells it with. Health checks,
//! the file watcher, supervisors and the REST front depend on this module only, never on the
//! controller itself.

use lb_balance::{Placement, RingError};
use tokio::sync::{mpsc, oneshot};

use std::sync::Arc;

use crate::state::{Backend, Handle};

use super::file::{FileRead, WriteOutcome};
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
    /// The controller failed while handling this request (a bug: it was logged and counted in
    /// `lb_control_panics_total`); it keeps running with the replicas it had.
    #[error(
        "the load balancer failed while handling this request (see its log); /rep shows what runs"
    )]
    Failed,
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
    /// The configuration file was read and checked off the controller.
    FileRead {
        /// What was found.
        read: FileRead,
        /// Asked for by SIGHUP.
        hangup: bool,
    },
    /// A write-back of the replica list ended, with whom to tell.
    Written {
        /// How it ended, the waiters (answered `/add`s and `/rm`s) to tell, and the replica
        /// list (id → hostname) it wrote.
        outcome: (
            WriteOutcome,
            Vec<oneshot::Sender<()>>,
            std::collections::BTreeMap<u64, String>,
        ),
    },
    /// A large table was built off the controller.
    Placed {
        /// Which build.
        build: u64,
        /// The server ids it was built for.
        key_ids: Vec<u64>,
        /// The table, or why it could not be built.
        placement: Result<Box<Placement>, String>,
    },
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

impl Command {
    /// What the command is, in words, for the log.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Add { .. } => "an /add",
            Command::Remove { .. } => "an /rm",
            Command::NotRemoved { .. } => "replicas an /rm could not stop",
            Command::FileChanged => "a file change",
            Command::Reload => "a reload",
            Command::FileRead { .. } => "a saved configuration",
            Command::Written { .. } => "a write-back",
            Command::Placed { .. } => "a built table",
            Command::ReplicaFailed { .. } => "a failed replica",
            Command::Supervisor(_) => "a supervisor event",
            Command::Added { .. } => "started replicas of an /add",
            Command::Started { .. } => "a started replica",
            Command::Resolved { .. } => "a resolved backend",
            Command::Settled { .. } => "a settled change",
            Command::Respawn { .. } => "a respawn",
            Command::Shutdown { .. } => "the shutdown",
        }
    }
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
        match answer.await {
            Ok(reply) => reply,
            // The answer was dropped: by a controller that stopped, or that failed on this
            // command and went on with the next one.
            Err(_) if self.tx.is_closed() => Err(ControlError::ShuttingDown),
            Err(_) => Err(ControlError::Failed),
        }
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
