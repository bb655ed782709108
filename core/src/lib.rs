//! `lb`: a consistent-hashing HTTP load balancer.
//!
//! As a library, `lb` is what the `lb` binary runs:
//!
//! - [`run`] with [`Options`]: the load balancer, until SIGTERM or SIGINT;
//! - [`check`]: `lb check`, a configuration file's problems without starting anything;
//! - [`swarm_down`]: `lb swarm down`, removing an instance's replica services;
//! - [`self_signed`]: `lb tls self-signed`, a local CA and a certificate for trying HTTPS;
//! - [`keep`]: `lb keep`, the keeper each process replica runs under (`keep.rs`);
//! - [`upgrade`]: `lb upgrade`, a running `lb`'s binary upgraded without dropping a connection.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let checked = lb::check(Some("config/lb.toml".as_ref()))?;
//! println!("{}: {}", checked.name, checked.summary);
//! let mut options = lb::Options::new();
//! options.listen = Some("127.0.0.1:5000".parse()?);
//! lb::run(options)?;
//! # Ok(())
//! # }
//! ```
//!
//! Inside, layers depend in one direction (`balance ← state ← {control, data, api}`):
//!
//! - `lb_balance` (its own crate): hashes, hash plugins, the ring, the placement table.
//! - `config` (`lb.toml`) and `state` (the immutable snapshot readers share), over
//!   `metrics` (the counters `/_lb/metrics` shows, kept per worker thread).
//! - `control`: the controller (the one writer), health checks, the file watcher,
//!   supervisors, write-back.
//! - `data`: the workers, the front, forwarding and the upstream client.
//! - `api`: the REST contract (`/rep`, `/add`, `/rm`) and the `/_lb/` views.
//! - `connect`: the connector of `lb`'s hyper clients (TCP, and TLS to backends by address).
//! - `run.rs`: wires them together.
//!
//! `docs/ARCHITECTURE.md` draws the map.
#![warn(unreachable_pub)]

pub(crate) mod api;
mod commands;
pub(crate) mod config;
pub(crate) mod connect;
pub(crate) mod control;
pub(crate) mod data;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
#[allow(unsafe_code)] // signal masks, PR_SET_PDEATHSIG and descriptors around fork/exec
mod keep;
mod logs;
pub(crate) mod metrics;
mod plan_command;
mod run;
mod selfsigned;
pub(crate) mod state;
#[allow(unsafe_code)] // descriptors kept open across the new binary's exec
mod upgrade;
mod upgrade_command;

pub use commands::{check, swarm_down, CheckError, Checked, SwarmDownError};
pub use keep::{keep, Ended, Keep, KeepError};
pub use plan_command::{plan, PlanCommandError, PlanRequest};
pub use run::{run, Error, Options, DEFAULTS_PATH, DEFAULT_PATH};
pub use selfsigned::{self_signed, SelfSigned, SelfSignedError};
pub use upgrade_command::{upgrade, UpgradeCommandError, Upgraded};
