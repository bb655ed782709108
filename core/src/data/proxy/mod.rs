//! The forwarding loop: one request, one or more attempts, one answer.
//!
//! [`Proxy::forward`] places the request (the snapshot's key rule, its placement: the owner of
//! the request's slot, [`key`]), then runs **one attempt loop** for every request, whatever it
//! goes over:
//!
//! 1. pick the transport ([`transport::Outbound`]): the batching client for a bodiless
//!    `GET`/`HEAD` to a replica that takes pipelined requests, a hyper client connection for
//!    anything else;
//! 2. send the attempt and wait for the response head ([`transport::Outbound::send`]: at most
//!    the response timeout; a repeatable request stops waiting when its replica leaves the ring
//!    as failed);
//! 3. a response is the answer (a replica's 404 becomes the assignment's 400, but not a
//!    backend by address's nor a gRPC call's); the body streams
//!    back in a [`ProxyBody`] that keeps the request counted in flight at its replica until it
//!    is done;
//! 4. a failure is an [`AttemptError`]: counted at its replica, then the loop asks it one
//!    question — [`AttemptError::retry`] (pingora's `RetryType`: [`error::Retry::Yes`], nothing
//!    was sent; [`error::Retry::IfRepeatable`], the replica may have had it;
//!    [`error::Retry::No`]) against what the
//!    request still allows ([`error::Replay`]) and the retries left (`[proxy] retries`). If
//!    allowed, the request goes to the next replica in the placement's fallback order, looked up
//!    in the current snapshot ([`Proxy::next_replica`]; a replica that failed has usually left
//!    the ring by then), else `lb` answers 502, or 504 for a timeout ([`respond`]) — a gRPC call
//!    (`content-type: application/grpc…`) HTTP 200 with a `grpc-status` instead
//!    ([`respond::grpc`]: `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `INTERNAL`, `INVALID_ARGUMENT`).
//!
//! Files: `transport.rs` (the two transports and the wait), `upgrade.rs` (requests that carry
//! `Upgrade`: WebSockets), `error.rs` (the attempt's error and its retry rule), `answer.rs` (what the hyper transport accepts as an answer),
//! `outgoing.rs` (a request body that can be sent again while no attempt read it), `respond.rs`
//! (`lb`'s answers in a replica's stead).
//!
//! # Where the next protocols plug in
//!
//! - **HTTP/2 to the replicas** (done): [`transport::Transports`] holds a second hyper client,
//!   `http2_only` (one multiplexed connection per replica and worker), used by
//!   [`transport::Outbound::send`] for a backend whose `protocol` is `h2c` or `h2`. Its
//!   failures map onto [`AttemptError`]: a stream refused (`REFUSED_STREAM`) or above a
//!   `GOAWAY`'s last stream id was never processed, [`AttemptError::Refused`] (`Retry::Yes`).
//!   The loop, placement and counting did not change; gRPC calls get gRPC-shaped answers.
//! - **HTTP/2 or TLS from clients**: not here. The downstream side is `front.rs`'s
//!   `connection()` (hyper's server, over [`crate::data::downstream`]'s counted socket);
//!   whatever it accepts arrives here as the same `Request<Incoming>`.
//! - **WebSockets (an `Upgrade`)**: done for HTTP/1.1 in [`upgrade`]: [`Proxy::forward`] sees
//!   hyper's [`OnUpgrade`] mark (a request that carried `Upgrade`), and a `websocket` offer
//!   goes to [`Proxy::websocket`]: placed like any request, sent over a fresh connection with
//!   its own retry rule, and on the replica's `101` both upgraded sockets go to
//!   [`crate::data::tunnel`], which keeps the [`crate::state::InFlight`] instead of a body.
//!   RFC 8441 (a WebSocket over HTTP/2: an extended `CONNECT` with `:protocol`, which the
//!   front lets through and hyper marks with the same [`OnUpgrade`]) goes to
//!   [`Proxy::extended_connect`]: sent to the replica as the same HTTP/1.1 upgrade, the client
//!   answered `200` on its stream, the same tunnel.

mod answer;
mod error;
mod outgoing;
mod respond;
mod transport;
mod upgrade;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;

use error::AttemptError;
pub(crate) use respond::error_response;

use super::body::ProxyBody;
use super::key::{self, Peer};
use super::observe::{Exchange, Recorder};
use crate::api::ApiError;
use crate::config::ProxySection;
use crate::data::upstream::UpstreamError;
use crate::state::{Backend, Shared};
use transport::{Outbound, Transports};

/// One worker's forwarding: its clients to the replicas and the rules requests are sent by.
pub(crate) struct Proxy {
    shared: Arc<Shared>,
    transports: Transports,
    /// How many other replicas a request may be sent to after its first.
    retries: usize,
    /// Where upstream errors are counted (the worker's).
    recorder: Arc<Recorder>,
    /// `[proxy] tunnel_idle_timeout_ms`: how long a WebSocket tunnel may carry nothing.
    tunnel_idle: std::time::Duration,
}

impl Proxy {
    /// Forwarding by `settings` over the snapshots in `shared`, counting in `recorder`.
    pub(crate) fn new(
        shared: Arc<Shared>,
        settings: &ProxySection,
        recorder: Arc<Recorder>,
    ) -> Self {
        Proxy {
            transports: Transports::new(settings, Arc::clone(&shared.backend_tls)),
            shared,
            retries: settings.retries,
            recorder,
            tunnel_idle: std::time::Duration::from_millis(settings.tunnel_idle_timeout_ms),
        }
    }

    /// Send `req` from `peer` to the replica the placement picks (see the module's
    /// documentation), noting it, and each replica tried after it, in `exchange.replica`: set
    /// before anything waits, so a request whose client goes away is still counted under its
    /// replica.
    pub(crate) async fn forward(
        &self,
        mut req: Request<Incoming>,
        peer: &Peer,
        exchange: &mut Exchange,
    ) -> Response<ProxyBody> {
        // hyper marks an HTTP/1.1 request carrying `Upgrade` and an HTTP/2 `CONNECT` (one look
        // at empty extensions for any other request).
        if req.extensions().get::<OnUpgrade>().is_some() {
            if req.method() == http::Method::CONNECT {
                return Box::pin(self.extended_connect(req, peer, exchange)).await;
            }
            match upgrade::offer(req.headers()) {
                upgrade::Offer::WebSocket => {
                    return Box::pin(self.websocket(req, peer, exchange)).await;
                }
                upgrade::Offer::Unsupported(offer) => {
                    return error_response(&ApiError::UpgradeUnsupported(offer));
                }
                upgrade::Offer::Plain => {
                    req.extensions_mut().remove::<OnUpgrade>();
                }
            }
        }
        // A gRPC call is answered the gRPC way when no replica answers it (a `POST` first: one
        // comparison for any other request).
        let grpc = req.method() == http::Method::POST && transport::is_grpc(req.headers());
        let Some((slot, first)) = self.place(&req, peer, exchange) else {
            const NONE: &str = "no replica is available to serve the request";
            if grpc {
                return respond::grpc(respond::GrpcStatus::Unavailable, &format!("lb: {NONE}"));
            }
            return error_response(&ApiError::Unavailable(NONE.into()));
        };
        let mut outbound = Outbound::new(&self.transports, req, &first, peer);
        exchange.replica = Some(first);
        let mut tried: Vec<u64> = Vec::new();
        loop {
            let backend = exchange.replica.as_ref().expect("proxy chose a replica");
            let in_flight = backend.begin_request();
            let error = match outbound.send(&self.transports, backend, peer).await {
                // The assignment's replicas have /home and /heartbeat only; a service by
                // address answers its own 404s.
                Ok(resp)
                    if resp.status() == StatusCode::NOT_FOUND && !backend.is_address() && !grpc =>
                {
                    return respond::not_in_replicas(outbound.path());
                }
                Ok(resp) => return resp.map(|body| body.in_flight(in_flight)),
                Err(error @ AttemptError::Client(_)) if grpc => {
                    return respond::grpc(
                        respond::GrpcStatus::InvalidArgument,
                        &format!("lb: {error}"),
                    );
                }
                Err(error @ AttemptError::Client(_)) => {
                    return error_response(&ApiError::BadRequest(error.to_string()));
                }
                Err(error) => error,
            };
            drop(in_flight);
            if let Some(kind) = error.kind() {
                self.recorder.upstream_error(backend, kind);
            }
            tried.push(backend.id);
            let next = (error.retry().allows(outbound.replay()) && tried.len() <= self.retries)
                .then(|| self.next_replica(slot, &tried))
                .flatten();
            let Some(next) = next else {
                return match error {
                    AttemptError::Upstream(e @ UpstreamError::TimedOut(_)) if grpc => {
                        respond::grpc_timed_out(backend, &e.to_string())
                    }
                    AttemptError::Upstream(e @ UpstreamError::TimedOut(_)) => {
                        respond::timed_out(backend, &e.to_string())
                    }
                    e if grpc => {
                        let invalid =
                            matches!(e, AttemptError::Upstream(UpstreamError::Invalid(_)));
                        respond::grpc_did_not_answer(backend, &e.to_string(), invalid)
                    }
                    e => respond::did_not_answer(backend, &e.to_string()),
                };
            };
            self.shared.retries.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(from = %backend.hostname, to = %next.hostname, %error, "retrying on the next replica");
            outbound = outbound.follow(&next, &self.transports, peer);
            exchange.replica = Some(next);
        }
    }

    /// The request's slot and the replica serving it, by the current snapshot's key rule and
    /// placement; `None` when no replica is in the ring. Notes the request id in `exchange`.
    fn place(
        &self,
        req: &Request<Incoming>,
        peer: &Peer,
        exchange: &mut Exchange,
    ) -> Option<(u32, Arc<Backend>)> {
        let snapshot = self.shared.snapshot.load();
        let id = key::request_id(
            &snapshot.key,
            req.headers(),
            req.uri(),
            peer,
            self.transports.trust_forwarded_for(),
        );
        exchange.request_id = Some(id);
        let slot = snapshot.placement.slot_of(id);
        let owner = snapshot.placement.owner_of_slot(slot)?;
        let member = snapshot.serving(slot, owner);
        Some((slot, Arc::clone(&snapshot.backends[member])))
    }

    /// The first replica in the placement's fallback order from `slot`, in the current
    /// snapshot, that is not in `tried` (a replica that failed has usually left the ring by now:
    /// then it is the slot's owner).
    fn next_replica(&self, slot: u32, tried: &[u64]) -> Option<Arc<Backend>> {
        let snapshot = self.shared.snapshot.load();
        snapshot
            .placement
            .next_member(slot, |m| tried.contains(&snapshot.backends[m].id))
            .map(|m| Arc::clone(&snapshot.backends[m]))
    }
}
