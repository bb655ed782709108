//! The data plane: every request's path through `lb`.
//!
//! - [`workers`]: one event loop per core, each with its own `SO_REUSEPORT` listener.
//! - [`front`]: answers a request — the load balancer's own endpoints go to [`crate::api`],
//!   everything else is forwarded to the replica the snapshot's placement picks.
//! - [`upstream`]: the batching HTTP/1.1 client to the replicas; [`body`] the response bodies;
//!   [`hop`] the hop-by-hop header rules and the `X-Forwarded-*` fields; [`key`] what a request
//!   is hashed by; [`outgoing`] a request body that can go to the next
//!   replica when the first could not be reached; [`answer`] what that path accepts as a
//!   replica's answer.
//! - [`client`]: the client-side timeouts (request head, idle keep-alive connection).
//! - [`observe`]: what each proxied request is counted and logged as, once its response is
//!   done; [`access`]: the access log's writer.
//!
//! The hot path only `load()`s the snapshot (no lock) and reaches the control plane only
//! through [`crate::control::ControllerHandle`].

pub mod access;
pub(crate) mod answer;
pub(crate) mod body;
pub(crate) mod client;
pub(crate) mod front;
pub(crate) mod hop;
pub(crate) mod key;
pub(crate) mod observe;
pub(crate) mod outgoing;
pub mod upstream;
pub mod workers;
