//! The control plane: the one writer of the desired state, and what feeds it.
//!
//! - [`controller`]: the command loop that owns the replica set and publishes snapshots, in
//!   parts (start-up, scaling, vacancies, the file, backends by address, shared membership);
//!   [`reconcile`] holds its decisions as pure, unit-tested functions.
//! - [`command`]: the commands and the handle every other part sends them with. [`health`]
//!   (heartbeats, with the [`probe`] client), [`watch`] (the file watcher) and the supervisors' events reach the
//!   controller only through it; none of them imports the controller.
//! - [`launch`]: starts a replica and waits for its first heartbeat, on a task of its own.
//! - [`supervisor`]: runs replicas (local processes, Docker containers, Swarm services; Swarm
//!   also offers a shared membership).
//! - [`acme`]: automatic certificates (`[tls.acme]`): the ACME client on a task of its own,
//!   its state directory and its lock; it reports to the controller with a [`Command`].
//! - [`file`]: reads and checks a saved `lb.toml`, and writes replica changes back (through
//!   [`persist`]), on blocking threads: the controller never waits for a file.
//!
//! Nothing here imports the data plane or the REST API.

pub(crate) mod acme;
pub(crate) mod backoff;
pub(crate) mod command;
pub(crate) mod controller;
pub(crate) mod failpoint;
pub(crate) mod file;
pub(crate) mod guard;
pub(crate) mod health;
pub(crate) mod launch;
pub(crate) mod persist;
pub(crate) mod plan;
pub(crate) mod probe;
mod reconcile;
pub(crate) mod supervisor;
pub(crate) mod watch;

pub(crate) use command::{
    AcmeEvent, AddedTls, Command, ControlError, ControllerHandle, PlanAsk, PlanChange, ScaleRequest,
};
pub(crate) use controller::Controller;
