//! The two ways an attempt reaches its replica, behind one enum ([`Outbound`]): the batching
//! HTTP/1.1 client ([`crate::data::upstream`]) for bodiless `GET`/`HEAD` to replicas that take
//! pipelined requests, and a hyper client connection for everything else (request bodies
//! streamed, [`super::outgoing`]; answers held to the batching client's rules,
//! [`super::answer`]). A backend that speaks TLS is never pipelined: hyper's connection, over
//! `https` ([`crate::connect`]).
//!
//! Each keeps the request the way it needs it between attempts — the batching client the
//! client's request as it came (a head is serialized per attempt, [`request_head`]), hyper its
//! parts with the hop-by-hop fields stripped and the forwarding fields set once, the body held
//! for a second attempt. Both wait for the response head the same way ([`wait`]) and fail with
//! an [`AttemptError`] that says whether the request may go on to the next replica.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use http::header;
use http::uri::{PathAndQuery, Scheme, Uri};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::answer::{Answer, Rules};
use super::error::{AttemptError, Replay};
use super::outgoing::{Held, Outgoing};
use arc_swap::ArcSwap;

use crate::config::ProxySection;
use crate::connect::Connector;
use crate::data::body::{ProxyBody, Source};
use crate::data::hop;
use crate::data::key::Peer;
use crate::data::upstream::{self, request_head, UpstreamError, Upstreams};
use crate::state::{Backend, TlsTable};

/// A worker's clients to the replicas, and how they are used.
pub(crate) struct Transports {
    /// hyper's client: any request, its body streamed.
    client: Client<Connector, Outgoing>,
    /// Its connector, for the fresh connection of each WebSocket upgrade ([`super::upgrade`]).
    connector: Connector,
    /// Batching connections for bodiless `GET`/`HEAD`, if enabled (`[proxy] pipelining`).
    upstreams: Option<Upstreams>,
    /// How long a replica may take to start its response.
    response_timeout: Duration,
    /// `[proxy] trust_forwarded_for`: clients are proxies `lb` trusts ([`hop`]).
    trust_forwarded_for: bool,
}

impl Transports {
    /// The clients `settings` ask for (no connection is opened yet).
    /// `tls`: the TLS settings of the backends that speak TLS, by address.
    pub(crate) fn new(settings: &ProxySection, tls: Arc<ArcSwap<TlsTable>>) -> Self {
        let connect_timeout = Duration::from_millis(settings.connect_timeout_ms);
        let connector = Connector::new(tls, Some(connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1024)
            // A response head larger than the batching client takes is refused here too.
            .http1_max_buf_size(upstream::MAX_HEAD)
            .build(connector.clone());
        Transports {
            client,
            connector,
            upstreams: settings
                .pipelining
                .then(|| Upstreams::with_connect_timeout(connect_timeout)),
            response_timeout: Duration::from_millis(settings.response_timeout_ms),
            trust_forwarded_for: settings.trust_forwarded_for,
        }
    }

    /// `[proxy] trust_forwarded_for`.
    pub(crate) fn trust_forwarded_for(&self) -> bool {
        self.trust_forwarded_for
    }

    /// The connector hyper's client dials with (TCP, or TLS by address).
    pub(super) fn connector(&self) -> &Connector {
        &self.connector
    }

    /// How long a replica may take to start its response.
    pub(super) fn response_timeout(&self) -> Duration {
        self.response_timeout
    }
}

/// A request as the transport it goes over keeps it between attempts.
pub(crate) enum Outbound<'t> {
    /// Over the batching client: the client's request, bodiless and safe to repeat.
    Batching {
        /// The worker's batching connections.
        upstreams: &'t Upstreams,
        /// The client's request.
        req: Request<Incoming>,
    },
    /// Over a hyper client connection.
    Hyper(HyperRequest),
}

impl<'t> Outbound<'t> {
    /// `req`, for its first replica `first`: over the batching client when it is on, `first`
    /// takes pipelined requests and `req` is [`batchable`]; else over hyper.
    /// `peer`: the client (its address for `X-Forwarded-For`, its scheme for `-Proto`).
    pub(crate) fn new(
        transports: &'t Transports,
        req: Request<Incoming>,
        first: &Backend,
        peer: &Peer,
    ) -> Self {
        match &transports.upstreams {
            Some(upstreams) if first.pipelining && batchable(&req) => {
                Outbound::Batching { upstreams, req }
            }
            _ => Outbound::Hyper(HyperRequest::new(req, peer, transports.trust_forwarded_for)),
        }
    }

    /// The same request, to go to `next`: a replica that takes no pipelined requests gets it
    /// over hyper (and so does every replica after it).
    pub(crate) fn follow(self, next: &Backend, transports: &Transports, peer: &Peer) -> Self {
        match self {
            Outbound::Batching { req, .. } if !next.pipelining => {
                Outbound::Hyper(HyperRequest::new(req, peer, transports.trust_forwarded_for))
            }
            same => same,
        }
    }

    /// The request's path, as the client sent it.
    pub(crate) fn path(&self) -> &str {
        match self {
            Outbound::Batching { req, .. } => req.uri().path(),
            Outbound::Hyper(hyper) => hyper.path_and_query.path(),
        }
    }

    /// What the request allows now (after an attempt).
    pub(crate) fn replay(&self) -> Replay {
        match self {
            Outbound::Batching { .. } => Replay {
                repeatable: true,
                body_whole: true,
            },
            Outbound::Hyper(hyper) => Replay {
                repeatable: hyper.repeatable,
                body_whole: hyper.held.as_ref().is_none_or(|h| !h.taken()),
            },
        }
    }

    /// One attempt: send the request to `backend` and wait for its response head, at most the
    /// response timeout (and, for a repeatable request, no longer than the replica stays in the
    /// ring: [`wait`]).
    pub(crate) async fn send(
        &self,
        transports: &Transports,
        backend: &Backend,
        peer: &Peer,
    ) -> Result<Response<ProxyBody>, AttemptError> {
        let limit = transports.response_timeout;
        match self {
            Outbound::Batching { upstreams, req } => {
                let head = request_head(
                    req.method(),
                    req.uri().path_and_query().map_or("/", |p| p.as_str()),
                    req.headers(),
                    backend.authority.as_str(),
                    &peer.forwarded_for,
                    &peer.proto,
                    transports.trust_forwarded_for,
                );
                let head_only = req.method() == Method::HEAD;
                let sent = upstreams.request(&backend.addr, head, head_only);
                match wait(sent, backend, limit, true).await {
                    Ok(Ok(resp)) => Ok(resp),
                    Ok(Err(e)) | Err(e) => Err(AttemptError::Upstream(e)),
                }
            }
            Outbound::Hyper(hyper) => hyper.send(&transports.client, backend, limit).await,
        }
    }
}

/// A request as the hyper transport keeps it between attempts.
pub(crate) struct HyperRequest {
    /// The client's request head, hop-by-hop fields stripped and forwarding fields set.
    parts: http::request::Parts,
    path_and_query: PathAndQuery,
    /// The client's body, if it has one, until an attempt reads it.
    held: Option<Arc<Held>>,
    /// Bodiless and safe to repeat.
    repeatable: bool,
}

impl HyperRequest {
    fn new(req: Request<Incoming>, peer: &Peer, trust_forwarded: bool) -> Self {
        use http_body::Body as _;
        let (mut parts, body) = req.into_parts();
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        hop::strip(&mut parts.headers);
        hop::add_forwarded(
            &mut parts.headers,
            &peer.forwarded_for,
            &peer.proto,
            trust_forwarded,
        );
        let held = (!body.is_end_stream()).then(|| Held::new(body));
        let repeatable = held.is_none() && safe_to_repeat(&parts.method);
        HyperRequest {
            parts,
            path_and_query,
            held,
            repeatable,
        }
    }

    /// One attempt over hyper's client. A response that came but breaks the rules
    /// ([`super::answer`]) or has a status outside 100–599 is an invalid answer; a failure while
    /// the client's body was read is the client's.
    async fn send(
        &self,
        client: &Client<Connector, Outgoing>,
        backend: &Backend,
        limit: Duration,
    ) -> Result<Response<ProxyBody>, AttemptError> {
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(if backend.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        });
        uri.authority = Some(backend.authority.clone());
        uri.path_and_query = Some(self.path_and_query.clone());
        let outgoing = self.held.as_ref().map_or(Outgoing::Empty, Outgoing::client);
        let mut request = Request::new(outgoing);
        *request.method_mut() = self.parts.method.clone();
        *request.uri_mut() = Uri::from_parts(uri).expect("scheme, authority and path make a URI");
        *request.version_mut() = self.parts.version;
        *request.headers_mut() = self.parts.headers.clone();

        let rules = Rules::watch(&mut request);
        let sent = rules.check(client.request(request));
        match wait(sent, backend, limit, self.repeatable).await {
            Ok(Answer::Invalid(reason)) => Err(UpstreamError::Invalid(reason).into()),
            // hyper takes any three digits; RFC 9110 §15 has 100–599.
            Ok(Answer::Response(resp)) if resp.status().as_u16() > 599 => {
                let reason = format!("status code {}", resp.status().as_u16());
                Err(UpstreamError::Invalid(reason).into())
            }
            Ok(Answer::Response(resp)) => {
                let (mut parts, body) = resp.into_parts();
                hop::strip(&mut parts.headers);
                Ok(Response::from_parts(parts, Source::Hyper(body).into()))
            }
            Ok(Answer::Failed(e)) => Err(AttemptError::from_hyper(
                &e,
                self.held.as_ref().and_then(|h| h.client_error()),
            )),
            Err(waited) => Err(waited.into()),
        }
    }
}

/// How often a request waiting on a replica looks whether the replica was taken out of the ring
/// as failed. Only requests slower than this look at all.
const FAILED_CHECK: Duration = Duration::from_millis(50);

/// Wait for a replica's response head (`answer`) for at most `limit`. With `watch` (a request
/// safe to repeat), stop waiting as soon as the replica is taken out of the ring as failed, so
/// the request can go to the new owner at once instead of when the replica resumes or the
/// timeout ends.
pub(super) async fn wait<F: Future>(
    answer: F,
    backend: &Backend,
    limit: Duration,
    watch: bool,
) -> Result<F::Output, UpstreamError> {
    let now = tokio::time::Instant::now();
    let deadline = now + limit;
    tokio::pin!(answer);
    let mut wake = if watch {
        deadline.min(now + FAILED_CHECK)
    } else {
        deadline
    };
    loop {
        match tokio::time::timeout_at(wake, answer.as_mut()).await {
            Ok(output) => return Ok(output),
            Err(_) if wake >= deadline => return Err(UpstreamError::TimedOut(limit)),
            Err(_) if backend.failed.load(Ordering::Relaxed) => {
                return Err(UpstreamError::ReplicaFailed)
            }
            Err(_) => wake = deadline.min(wake + FAILED_CHECK),
        }
    }
}

/// Methods that are safe to send again when a replica gave no answer (RFC 9110 §9.2.1).
fn safe_to_repeat(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Whether a request may go over a batching connection: safe to repeat and without a body.
fn batchable(req: &Request<Incoming>) -> bool {
    use http_body::Body as _;
    (req.method() == Method::GET || req.method() == Method::HEAD)
        && req.body().is_end_stream()
        && !req.headers().contains_key(header::EXPECT)
}
