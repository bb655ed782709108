//! What the controller can be told, and the handle everything else tells it with. Health checks,
//! the file watcher, supervisors and the REST front depend on this module only, never on the
//! controller itself. What the controller's own tasks report back (a replica started, a file
//! read, a table built, …) is private to the controller (`controller::Done`).

use std::sync::Arc;

use lb_balance::RingError;
use tokio::sync::{mpsc, oneshot};

use super::supervisor::{Handle, SupervisorEvent};
use crate::config::{BackendTls, Protocol};

/// A validated `/add` or `/rm` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScaleRequest {
    /// How many replicas to add or remove.
    pub n: usize,
    /// Names to use (add) or to remove; at most `n`, distinct and well-formed.
    pub hostnames: Vec<String>,
    /// `/add` only: `HOST:PORT` of backends by address, paired by position with the new
    /// entries; at most `n`, distinct and well-formed. The rest are replicas to start.
    pub addresses: Vec<String>,
    /// `/add` only: how to speak TLS to each of `addresses` (paired by position; shorter:
    /// plain HTTP for the rest).
    pub tls: Vec<Option<AddedTls>>,
    /// `/add` only: what `lb` speaks to each of `addresses` (paired by position; shorter:
    /// `http1` for the rest).
    pub protocols: Vec<Protocol>,
    /// `/add` only: the new entries' weights, paired by position (shorter: 1 for the rest);
    /// each from 1 to [`lb_balance::MAX_WEIGHT`].
    pub weights: Vec<u32>,
}

/// TLS to a backend an `/add` names by address (`{"address": …, "tls": true, …}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AddedTls {
    /// As the body asks; the REST front builds it (reading the CA file) before the controller
    /// sees it.
    Asked {
        /// `server_name` (default: the host of the address).
        server_name: Option<String>,
        /// `ca`, relative to the configuration file's folder (default: the system's roots).
        ca: Option<String>,
        /// `tls_verify` (default `true`).
        verify: bool,
    },
    /// Built: the settings the backend is dialled and health-checked with.
    Built(Arc<BackendTls>),
}

impl AddedTls {
    /// The built settings (`None` while only asked for).
    pub(crate) fn built(&self) -> Option<&Arc<BackendTls>> {
        match self {
            AddedTls::Built(tls) => Some(tls),
            AddedTls::Asked { .. } => None,
        }
    }
}

/// Why the controller refused or failed a change; nothing changed in every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ControlError {
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
    /// A planned change does not fit the ring (capacity with its weights, e.g. `K·Σw > M`).
    #[error("the change does not fit the ring: {0}")]
    Unplaceable(RingError),
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
pub(crate) type ScaleReply = Result<Vec<String>, ControlError>;

/// Changes through the API, planned in this order: an `/rm` naming every replica it removes,
/// an `/add`, new weights by hostname.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PlanChange {
    /// The `/rm`.
    pub rm: Option<ScaleRequest>,
    /// The `/add`.
    pub add: Option<ScaleRequest>,
    /// New weights, by hostname (replicas running or added by `add`).
    pub weights: Vec<(String, u32)>,
}

/// What `POST /_lb/plan` asks about; nothing is changed by asking.
pub(crate) enum PlanAsk {
    /// Changes through the API.
    Change(Box<PlanChange>),
    /// A configuration file: its replicas, weights and ring, checked, with its hash resolved.
    Config {
        /// The configuration.
        config: Box<crate::config::Config>,
        /// Its hash functions.
        hash: std::sync::Arc<dyn lb_balance::RingHash>,
    },
}

impl std::fmt::Debug for PlanAsk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlanAsk::Change(change) => f.debug_tuple("Change").field(change).finish(),
            PlanAsk::Config { hash, .. } => f
                .debug_struct("Config")
                .field("hash", &hash.name())
                .finish_non_exhaustive(),
        }
    }
}

/// The reply to a plan: what the change would move, or why it cannot be made.
pub(crate) type PlanReply = Result<lb_views::Plan, ControlError>;

/// What the controller can be asked to do (by the REST API, the health checker, the file
/// watcher, the signal loop and the supervisor).
#[derive(Debug)]
pub(crate) enum Command {
    /// `POST /add`.
    Add {
        /// The validated body.
        request: ScaleRequest,
        /// Where the answer goes.
        reply: oneshot::Sender<ScaleReply>,
    },
    /// `POST /_lb/plan`.
    Plan {
        /// What to plan.
        ask: PlanAsk,
        /// Where the plan goes.
        reply: oneshot::Sender<PlanReply>,
    },
    /// `DELETE /rm`.
    Remove {
        /// The validated body.
        request: ScaleRequest,
        /// Where the answer goes.
        reply: oneshot::Sender<ScaleReply>,
    },
    /// The configuration file may have changed: read it and apply it if it did.
    FileChanged,
    /// SIGHUP: read the configuration file and apply it if it changed, saying so either way.
    Reload,
    /// A certificate or key file of `[[tls.certificates]]` may have changed: read the pairs
    /// again and serve them if they are good.
    CertificatesChanged,
    /// The ACME task (`control/acme/`) has news: a certificate to serve, or an order that
    /// failed or succeeded again.
    Acme(AcmeEvent),
    /// Something outside the controller failed and the operator must hear of it, for the log
    /// and `config.last_error`: the data plane could not take part of an applied configuration
    /// (an access log file it cannot open; it kept that part as it was), or an upgrade failed
    /// (the new binary exited or did not get ready; this `lb` goes on serving).
    Failed(String),
    /// The health checker gave up on a replica.
    ReplicaFailed {
        /// Its server id.
        id: u64,
        /// Which incarnation ([`crate::state::Backend::incarnation`]: an id outlives its
        /// replicas).
        incarnation: u64,
        /// Why, for the log and status.
        reason: String,
    },
    /// The supervisor noticed something.
    Supervisor(SupervisorEvent),
    /// A binary upgrade: the replicas it runs, for the new `lb` to adopt.
    Handover {
        /// Answered with every replica a supervisor runs for it.
        reply: oneshot::Sender<Vec<HandedOver>>,
    },
    /// A binary upgrade succeeded: stop the replicas not in `keep` (started after the
    /// handover), then stop taking commands without stopping the others (the new `lb` runs
    /// them now).
    Detach {
        /// The handles handed over.
        keep: Vec<Handle>,
        /// Answered once the others are stopped.
        reply: oneshot::Sender<()>,
    },
    /// Stop every replica and stop taking commands.
    Shutdown {
        /// Answered once every replica is stopped.
        reply: oneshot::Sender<()>,
    },
}

/// A replica a supervisor runs, as an upgrade hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HandedOver {
    /// Its hostname.
    pub(crate) hostname: String,
    /// Its server id.
    pub(crate) id: u64,
    /// Where it serves: `host:port`.
    pub(crate) address: String,
    /// How its supervisor refers to it.
    pub(crate) handle: Handle,
}

/// What the ACME task tells the controller.
#[derive(Debug)]
pub(crate) enum AcmeEvent {
    /// Serve these certificates ordered over ACME (read and checked off the controller's loop),
    /// beside the files'; replaces the ACME certificates served before.
    Certificates(Vec<crate::config::LoadedCert>),
    /// An order or renewal failed (the certificate served stays): why, for the log and
    /// `config.last_error`.
    Failed(String),
    /// `[tls.acme]` left the configuration: serve no ACME certificate any more.
    Off,
}

impl Command {
    /// What the command is, in words, for the log.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Command::Add { .. } => "an /add",
            Command::Remove { .. } => "an /rm",
            Command::Plan { .. } => "a plan",
            Command::FileChanged => "a file change",
            Command::Reload => "a reload",
            Command::CertificatesChanged => "a certificate file change",
            Command::Acme(_) => "news from the ACME client",
            Command::Failed(_) => "a failure outside the controller",
            Command::ReplicaFailed { .. } => "a failed replica",
            Command::Supervisor(_) => "a supervisor event",
            Command::Handover { .. } => "an upgrade's handover",
            Command::Detach { .. } => "an upgrade's end",
            Command::Shutdown { .. } => "the shutdown",
        }
    }
}

/// A cheap, cloneable way to send the controller commands.
#[derive(Debug, Clone)]
pub(crate) struct ControllerHandle {
    tx: mpsc::UnboundedSender<Command>,
}

impl ControllerHandle {
    /// A handle and the receiving end the controller reads.
    pub(crate) fn channel() -> (ControllerHandle, mpsc::UnboundedReceiver<Command>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (ControllerHandle { tx }, rx)
    }

    /// Send a command without waiting for its effect.
    pub(crate) fn send(&self, command: Command) {
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
    pub(crate) async fn add(&self, request: ScaleRequest) -> ScaleReply {
        self.ask(|reply| Command::Add { request, reply }).await
    }

    /// What a change would move (`POST /_lb/plan`).
    pub(crate) async fn plan(&self, ask: PlanAsk) -> PlanReply {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Plan { ask, reply });
        match answer.await {
            Ok(reply) => reply,
            Err(_) if self.tx.is_closed() => Err(ControlError::ShuttingDown),
            Err(_) => Err(ControlError::Failed),
        }
    }

    /// Remove replicas; returns once they are out of the ring and stopped.
    pub(crate) async fn remove(&self, request: ScaleRequest) -> ScaleReply {
        self.ask(|reply| Command::Remove { request, reply }).await
    }

    /// The replicas to hand over to a new `lb` (empty if the controller is gone).
    pub(crate) async fn handover(&self) -> Vec<HandedOver> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Handover { reply });
        answer.await.unwrap_or_default()
    }

    /// Let go of the replicas handed over (`keep`) and stop the controller.
    pub(crate) async fn detach(&self, keep: Vec<Handle>) {
        let (reply, done) = oneshot::channel();
        self.send(Command::Detach { keep, reply });
        let _ = done.await;
    }

    /// Stop all replicas; returns when they are gone.
    pub(crate) async fn shutdown(&self) {
        let (reply, done) = oneshot::channel();
        self.send(Command::Shutdown { reply });
        let _ = done.await;
    }
}
