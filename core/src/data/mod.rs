//! The data plane: every request's path through `lb`.
//!
//! - [`workers`]: one event loop per core, each with its own `SO_REUSEPORT` listener (and one
//!   for the TLS listener); [`tls`]: the TLS acceptor and handshake.
//! - [`front`]: a client connection and who answers each request on it — the load balancer's
//!   own endpoints go to [`crate::api`], everything else to [`proxy`];
//!   [`downstream`]: the client connection's timeouts (request head, idle keep-alive
//!   connection, a client that takes no output) and its 408; [`h2`]: HTTP/2 from clients
//!   (the `h2c` preface on the plain listener, the HTTP/2 server's limits, a connection's life).
//! - [`proxy`]: the one forwarding loop — placement, attempts over either transport, the retry
//!   rule each failure carries, `lb`'s answers in a replica's stead;
//!   [`upstream`]: the batching HTTP/1.1 client to the replicas (one of the two transports);
//!   [`tunnel`]: a WebSocket's bytes both ways after the replica's `101` (the upgrade path is
//!   `proxy/upgrade.rs`); [`body`]: the one response body type; [`hop`]: the hop-by-hop header rules and the
//!   `X-Forwarded-*` fields; [`key`]: what a request is hashed by.
//! - [`observe`]: what each proxied request is counted and logged as, once its response is
//!   done; [`access`]: the access log's writer.
//!
//! The hot path only `load()`s the snapshot (no lock) and reaches the control plane only
//! through [`crate::control::ControllerHandle`].

pub(crate) mod access;
pub(crate) mod body;
pub(crate) mod downstream;
pub(crate) mod front;
pub(crate) mod h2;
pub(crate) mod hop;
pub(crate) mod key;
pub(crate) mod live;
pub(crate) mod observe;
pub(crate) mod proxy;
pub(crate) mod sockets;
pub(crate) mod tls;
pub(crate) mod tunnel;
pub(crate) mod upstream;
pub(crate) mod workers;
