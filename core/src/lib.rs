//! `lb`: a consistent-hashing HTTP load balancer.
//!
//! Layers, with one direction of dependency (`balance ← state ← {control, data, api}`):
//!
//! - [`lb_balance`] (its own crate): hashes, hash plugins, the ring, the placement table.
//! - [`config`] (`lb.toml`) and [`state`] (the immutable [`state::Snapshot`] readers share),
//!   over [`metrics`] (the counters `/_lb/metrics` shows, kept per worker thread).
//! - [`control`]: the controller (the one writer), health checks, the file watcher,
//!   supervisors, write-back.
//! - [`data`]: the workers, the front, forwarding and the upstream client.
//! - [`api`]: the REST contract (`/rep`, `/add`, `/rm`) and the `/_lb/` views.
//! - `boot.rs` (in the binary): wires them together for `lb` with no subcommand.
//!
//! `docs/ARCHITECTURE.md` draws the map.
#![warn(unreachable_pub)]

pub(crate) mod api;
pub mod config;
pub mod control;
pub mod data;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod state;
