//! The ways an attempt reaches its replica, behind one enum ([`Outbound`]): the batching
//! HTTP/1.1 client ([`crate::data::upstream`]) for bodiless `GET`/`HEAD` to replicas that take
//! pipelined requests, and a hyper client for everything else (request bodies streamed,
//! [`super::outgoing`]; answers held to the batching client's rules, [`super::answer`]) — its
//! HTTP/1.1 client, or its HTTP/2 client (`http2_only`: one multiplexed connection per backend
//! and worker, windows and pings from `[proxy] h2_*`) for a backend by address with
//! `protocol = "h2c"` or `"h2"` ([`crate::config::Protocol`]). A backend that speaks TLS or
//! HTTP/2 is never pipelined: hyper's connection, over `https` for TLS ([`crate::connect`]).
//!
//! A gRPC request ([`is_grpc`]) waits for its response head no longer than its `grpc-timeout`
//! ([`grpc_timeout`]) when that is shorter than the response timeout, and its `te: trailers`
//! (removed with the hop-by-hop fields) is put back for an HTTP/2 backend: gRPC servers refuse
//! a call without it.
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
use hyper_util::rt::{TokioExecutor, TokioTimer};

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
    /// hyper's HTTP/2 client, for backends by address with `protocol = "h2c"` or `"h2"`.
    h2: Client<Connector, Outgoing>,
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
        let mut h2 = Client::builder(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .http2_only(true)
            .http2_initial_stream_window_size(settings.h2_initial_stream_window)
            .http2_initial_connection_window_size(settings.h2_initial_connection_window)
            .http2_max_header_list_size(settings.h2_max_header_list_size);
        if settings.h2_keepalive_interval_ms > 0 {
            h2.http2_keep_alive_interval(Duration::from_millis(settings.h2_keepalive_interval_ms))
                .http2_keep_alive_timeout(Duration::from_secs(20));
        }
        let h2 = h2.build(connector.clone());
        Transports {
            client,
            h2,
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
    /// Over a hyper client connection (HTTP/1.1 or HTTP/2, by the replica's protocol).
    Hyper(HyperRequest),
}

impl<'t> Outbound<'t> {
    /// `req`, for its first replica `first`: over the batching client when it is on, `first`
    /// takes pipelined requests (never one that speaks TLS or HTTP/2) and `req` is
    /// [`batchable`]; else over hyper.
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
            Outbound::Hyper(hyper) => {
                let client = if backend.protocol.is_http2() {
                    &transports.h2
                } else {
                    &transports.client
                };
                hyper.send(client, backend, limit).await
            }
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
    /// The client asked for trailers (`TE: trailers`, stripped with the hop-by-hop fields):
    /// given again to an HTTP/2 backend.
    te_trailers: bool,
    /// A gRPC request's `grpc-timeout`, as a deadline for the response head.
    deadline: Option<tokio::time::Instant>,
}

impl HyperRequest {
    fn new(req: Request<Incoming>, peer: &Peer, trust_forwarded: bool) -> Self {
        use http_body::Body as _;
        let (mut parts, body) = req.into_parts();
        let te_trailers = parts
            .headers
            .get(header::TE)
            .is_some_and(|te| asks_trailers(te.as_bytes()));
        let grpc = is_grpc(&parts.headers);
        let deadline = grpc
            .then(|| parts.headers.get("grpc-timeout"))
            .flatten()
            .and_then(|t| grpc_timeout(t.as_bytes()))
            .and_then(|t| tokio::time::Instant::now().checked_add(t));
        let path_and_query = hop::outgoing_head(
            &mut parts,
            &peer.forwarded_for,
            &peer.proto,
            trust_forwarded,
        );
        let held = (!body.is_end_stream()).then(|| Held::new(body));
        // A gRPC call is never sent twice once it may have reached a replica, whatever its
        // method.
        let repeatable = held.is_none() && safe_to_repeat(&parts.method) && !grpc;
        HyperRequest {
            parts,
            path_and_query,
            held,
            repeatable,
            te_trailers,
            deadline,
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
        *request.headers_mut() = self.parts.headers.clone();
        let http2 = backend.protocol.is_http2();
        if http2 {
            *request.version_mut() = http::Version::HTTP_2;
            if self.te_trailers {
                request
                    .headers_mut()
                    .insert(header::TE, http::HeaderValue::from_static("trailers"));
            }
        } else {
            *request.version_mut() = self.parts.version;
        }
        let limit = match self.deadline {
            Some(deadline) => {
                limit.min(deadline.saturating_duration_since(tokio::time::Instant::now()))
            }
            None => limit,
        };

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
                if http2 {
                    // Sent on as the client's connection speaks (hyper's HTTP/1.1 server would
                    // warn of each HTTP/2 response it writes).
                    parts.version = http::Version::HTTP_11;
                }
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

/// Whether a request is a gRPC call: its `content-type` starts with `application/grpc`
/// (`application/grpc+proto`, `application/grpc-web`, …). gRPC calls are `POST`s: callers on
/// the hot path look at the method first.
pub(crate) fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|ct| {
        let ct = ct.as_bytes();
        ct.len() >= 16 && ct[..16].eq_ignore_ascii_case(b"application/grpc")
    })
}

/// Whether a `TE` field value lists `trailers` (RFC 9110 §10.1.4).
fn asks_trailers(te: &[u8]) -> bool {
    te.split(|&b| b == b',').any(|item| {
        let name = item.split(|&b| b == b';').next().unwrap_or_default();
        name.trim_ascii().eq_ignore_ascii_case(b"trailers")
    })
}

/// A `grpc-timeout` value (gRPC over HTTP/2: at most 8 ASCII digits and a unit, `H` hours, `M`
/// minutes, `S` seconds, `m` milliseconds, `u` microseconds, `n` nanoseconds); `None` when it
/// is malformed (then it is ignored).
pub(crate) fn grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_by_their_unit() {
        assert_eq!(grpc_timeout(b"1S"), Some(Duration::from_secs(1)));
        assert_eq!(grpc_timeout(b"100m"), Some(Duration::from_millis(100)));
        assert_eq!(grpc_timeout(b"500u"), Some(Duration::from_micros(500)));
        assert_eq!(grpc_timeout(b"20n"), Some(Duration::from_nanos(20)));
        assert_eq!(grpc_timeout(b"2M"), Some(Duration::from_secs(120)));
        assert_eq!(grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            grpc_timeout(b"99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
    }

    #[test]
    fn malformed_grpc_timeouts_are_ignored() {
        for bad in [
            &b""[..],
            b"S",
            b"100",
            b"123456789S",
            b"1s",
            b"1x",
            b"-1S",
            b" 1S",
            b"1 S",
            b"1.5S",
            b"\xff1S",
        ] {
            assert_eq!(grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn grpc_is_told_by_its_content_type() {
        let with = |ct: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            is_grpc(&h)
        };
        assert!(with("application/grpc"));
        assert!(with("application/grpc+proto"));
        assert!(with("Application/GRPC;charset=utf-8"));
        assert!(with("application/grpc-web"));
        assert!(!with("application/json"));
        assert!(!with("application/grp"));
        assert!(!is_grpc(&http::HeaderMap::new()));
    }

    #[test]
    fn te_trailers_is_found_among_others() {
        assert!(asks_trailers(b"trailers"));
        assert!(asks_trailers(b"gzip, Trailers"));
        assert!(asks_trailers(b"deflate;q=0.5 , trailers;q=1"));
        assert!(!asks_trailers(b"gzip"));
        assert!(!asks_trailers(b"trailersx"));
    }
}
