//! The HTTP front: the load balancer's own endpoints (`/rep`, `/add`, `/rm`, `/_lb/…`) and the
//! proxy path that sends every other request to the replica the ring picks.
//!
//! The hot path loads one snapshot (no lock), takes the request id by the snapshot's key rule
//! ([`key`]), hashes it, indexes the owner table and forwards the request over a pooled
//! keep-alive connection, streaming the response back.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Scheme, Uri};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::answer::{Answer, Rules};
use super::body::LbBody;
use super::client::{self, Activity, ClientStream, Tracked, Verdict, Watchdog};
use super::hop;
use super::key::{self, Peer};
use super::observe::{Exchange, Observation, Recorder};
use super::outgoing::{Held, Outgoing};
use super::upstream::{self, UpstreamError, Upstreams};
use crate::api::{self, Access, Api, ApiError};
use crate::config::ProxySection;
use crate::control::ControllerHandle;
use crate::metrics::UpstreamErrorKind;
use crate::state::{Backend, Shared, Via};

/// Most header fields in a client's request: hyper's (and so `server`'s) limit is 100, and `lb`
/// adds up to four (`X-Forwarded-For`, `-Proto`, `Via`, and `X-Forwarded-Host`, or `Host` when
/// the client sent none); a request it could not forward whole is refused here (431).
const MAX_CLIENT_HEADERS: usize = 96;
/// Largest client request head (431 beyond): bounds the memory one connection can hold.
const MAX_CLIENT_HEAD: usize = 32 * 1024;

/// Everything a connection needs to answer requests.
pub(crate) struct App {
    shared: Arc<Shared>,
    api: Api,
    /// Whether requests for other paths are proxied (not on the admin address).
    proxies: bool,
    /// How long a client may take to send a request head ([`client`]).
    header_timeout: Duration,
    /// How long a keep-alive connection may sit idle between requests ([`client`]).
    idle_timeout: Duration,
    /// How long a client may take none of a response ([`client`]).
    send_timeout: Duration,
    /// How many other replicas a request that never reached one may be sent to.
    retries: usize,
    /// How long a replica may take to start its response.
    response_timeout: Duration,
    /// `[proxy] trust_forwarded_for`: clients are proxies `lb` trusts ([`hop`], [`key`]).
    trust_forwarded_for: bool,
    client: Client<HttpConnector, Outgoing>,
    /// Batching connections for bodiless `GET`/`HEAD`, if enabled.
    upstreams: Option<Upstreams>,
    /// Where this worker counts and logs finished requests.
    recorder: Arc<Recorder>,
    /// This process's mark on what it forwards: a request carrying it is a loop.
    via: &'static Via,
}

impl App {
    /// An app over `shared` that sends changes to `controller` and counts requests with
    /// `recorder` (its worker's). `proxies`: false on the admin address, which serves only the
    /// load balancer's own endpoints.
    pub(crate) fn new(
        shared: Arc<Shared>,
        controller: ControllerHandle,
        settings: ProxySection,
        access: Access,
        proxies: bool,
        recorder: Recorder,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let connect_timeout = Duration::from_millis(settings.connect_timeout_ms);
        connector.set_connect_timeout(Some(connect_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1024)
            // A response head larger than the batching client takes is refused here too.
            .http1_max_buf_size(upstream::MAX_HEAD)
            .build(connector);
        App {
            api: Api::new(Arc::clone(&shared), controller, access),
            shared,
            proxies,
            header_timeout: Duration::from_millis(settings.client_header_timeout_ms),
            idle_timeout: Duration::from_millis(settings.client_idle_timeout_ms),
            send_timeout: Duration::from_millis(settings.client_send_timeout_ms),
            retries: settings.retries,
            response_timeout: Duration::from_millis(settings.response_timeout_ms),
            trust_forwarded_for: settings.trust_forwarded_for,
            client,
            upstreams: settings
                .pipelining
                .then(|| Upstreams::with_connect_timeout(connect_timeout)),
            recorder: Arc::new(recorder),
            via: Via::mine(),
        }
    }

    /// Answer one request from `peer`, noting in `exchange` what a proxied one went through.
    pub(crate) async fn handle(
        &self,
        req: Request<Incoming>,
        peer: &Peer,
        exchange: &mut Exchange,
    ) -> Response<LbBody> {
        if api::owns(req.uri().path()) {
            return self.api.answer(req).await.map(LbBody::full);
        }
        exchange.count(&self.recorder.metrics);
        if !self.proxies {
            return error_response(&ApiError::NotFound(req.uri().path().to_owned()));
        }
        if req.method() == Method::CONNECT {
            return error_response(&ApiError::NoTunnel);
        }
        // Sent by this lb before (a backend's address leads back here): never round again.
        if self.via.is_in(req.headers()) {
            return error_response(&ApiError::LoopDetected(
                self.via.value().to_str().unwrap_or_default().to_owned(),
            ));
        }
        let timed = Observation::times_upstream(&self.recorder).then(Instant::now);
        let resp = self.proxy(req, peer, exchange).await;
        exchange.upstream = timed
            .filter(|_| exchange.replica.is_some())
            .map(|t| t.elapsed());
        resp
    }

    /// Send `req` to the replica the ring picks, noting it (and any replica tried after it) in
    /// `exchange.replica`: set before anything waits, so a request whose client goes away is
    /// still counted under its replica.
    async fn proxy(
        &self,
        req: Request<Incoming>,
        peer: &Peer,
        exchange: &mut Exchange,
    ) -> Response<LbBody> {
        let slot = {
            let snapshot = self.shared.snapshot.load();
            let id = key::request_id(
                &snapshot.key,
                req.headers(),
                req.uri(),
                peer,
                self.trust_forwarded_for,
            );
            exchange.request_id = Some(id);
            let slot = snapshot.placement.slot_of(id);
            match snapshot.placement.owner_of_slot(slot) {
                Some(owner) => {
                    let member = snapshot.serving(slot, owner);
                    exchange.replica = Some(Arc::clone(&snapshot.backends[member]));
                    slot
                }
                None => {
                    return error_response(&ApiError::Unavailable(
                        "no replica is available to serve the request".into(),
                    ))
                }
            }
        };
        let mut tried = Vec::new();
        if let Some(upstreams) = &self.upstreams {
            if exchange.replica.as_ref().is_some_and(|b| b.pipelining) && batchable(&req) {
                match self
                    .pipelined(upstreams, &req, exchange, slot, &peer.forwarded_for)
                    .await
                {
                    Ok(resp) => return resp,
                    // The next replica to try (now in `exchange`) does not take pipelined
                    // requests.
                    Err(so_far) => tried = so_far,
                }
            }
        }
        self.forward(req, exchange, slot, &peer.forwarded_for, tried)
            .await
    }

    /// Forward any request over hyper's client, streaming its body. It goes to the next replica
    /// in ring order (up to `retries` times) when none of it reached its replica (it could not
    /// connect), or, for a bodiless request safe to repeat (GET, HEAD, OPTIONS, TRACE), when the
    /// replica gave no response head: it failed, took longer than the response timeout, or was
    /// taken out of the ring as failed while the request waited. A response that came but is
    /// invalid (a head too large, too many interim responses, a `101` to a request that asked
    /// for no upgrade: [`super::answer`]) is an answer: 502, never sent again.
    async fn forward(
        &self,
        req: Request<Incoming>,
        exchange: &mut Exchange,
        slot: u32,
        forwarded_for: &HeaderValue,
        mut tried: Vec<u64>,
    ) -> Response<LbBody> {
        use http_body::Body as _;
        let (mut parts, body) = req.into_parts();
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        hop::strip(&mut parts.headers);
        hop::add_forwarded(&mut parts.headers, forwarded_for, self.trust_forwarded_for);
        let held = (!body.is_end_stream()).then(|| Held::new(body));
        let repeatable = held.is_none() && safe_to_repeat(&parts.method);
        loop {
            let backend = exchange.replica.as_ref().expect("proxy chose a replica");
            let mut uri = http::uri::Parts::default();
            uri.scheme = Some(Scheme::HTTP);
            uri.authority = Some(backend.authority.clone());
            uri.path_and_query = Some(path_and_query.clone());
            let outgoing = held.as_ref().map_or(Outgoing::Empty, Outgoing::client);
            let mut request = Request::new(outgoing);
            *request.method_mut() = parts.method.clone();
            *request.uri_mut() =
                Uri::from_parts(uri).expect("scheme, authority and path make a URI");
            *request.version_mut() = parts.version;
            *request.headers_mut() = parts.headers.clone();

            let in_flight = backend.begin_request();
            let rules = Rules::watch(&mut request);
            let sent = rules.check(self.client.request(request));
            let error = match wait(sent, backend, self.response_timeout, repeatable).await {
                Ok(Answer::Invalid(reason)) => Failure::Upstream(UpstreamError::Invalid(reason)),
                // hyper takes any three digits; RFC 9110 §15 has 100–599.
                Ok(Answer::Response(resp)) if resp.status().as_u16() > 599 => {
                    let reason =
                        format!("invalid response: status code {}", resp.status().as_u16());
                    self.recorder
                        .upstream_error(backend, UpstreamErrorKind::BadResponse);
                    return did_not_answer(backend, &reason);
                }
                // The assignment's replicas have /home and /heartbeat only; a service by address
                // answers its own 404s.
                Ok(Answer::Response(resp))
                    if resp.status() == StatusCode::NOT_FOUND && !backend.is_address() =>
                {
                    return not_in_replicas(path_and_query.path())
                }
                Ok(Answer::Response(resp)) => {
                    let (mut parts, body) = resp.into_parts();
                    hop::strip(&mut parts.headers);
                    return Response::from_parts(
                        parts,
                        LbBody::Proxied {
                            body,
                            _in_flight: in_flight,
                        },
                    );
                }
                Ok(Answer::Failed(e)) => {
                    if let Some(reason) = held.as_ref().and_then(|h| h.client_error()) {
                        return error_response(&ApiError::BadRequest(format!(
                            "the request body could not be read: {reason}"
                        )));
                    }
                    if e.is_connect() {
                        Failure::Unreached(error_chain(&e))
                    } else if is_parse_error(&e) {
                        Failure::Upstream(UpstreamError::Invalid(error_chain(&e)))
                    } else {
                        Failure::Upstream(UpstreamError::NotStarted(error_chain(&e)))
                    }
                }
                Err(waited) => Failure::Upstream(waited),
            };
            drop(in_flight);
            let kind = match &error {
                Failure::Unreached(_) => UpstreamErrorKind::Connect,
                Failure::Upstream(e) => error_kind(e),
            };
            self.recorder.upstream_error(backend, kind);
            tried.push(backend.id);
            let untouched = held.as_ref().is_none_or(|h| !h.taken());
            // An invalid response is still an answer: the replica is not asked again.
            let answered = matches!(error, Failure::Upstream(UpstreamError::Invalid(_)));
            let retryable =
                untouched && !answered && (repeatable || matches!(error, Failure::Unreached(_)));
            let next = (retryable && tried.len() <= self.retries)
                .then(|| self.next_replica(slot, &tried))
                .flatten();
            match (next, error) {
                (Some(next), error) => {
                    self.shared.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(from = %backend.hostname, to = %next.hostname, error = %error, "retrying on the next replica");
                    exchange.replica = Some(next);
                }
                (None, Failure::Upstream(e @ UpstreamError::TimedOut(_))) => {
                    return timed_out(backend, &e.to_string())
                }
                (None, e) => return did_not_answer(backend, &e.to_string()),
            }
        }
    }

    /// Forward a bodiless `GET`/`HEAD` over a batching connection ([`super::upstream`]). If
    /// the request got no response head (it could not connect, the connection ended before any
    /// answer, the replica took longer than the response timeout or was taken out of the ring
    /// as failed meanwhile), it goes to the next replica in ring order, up to `retries` times:
    /// safe for these methods, and what keeps a killed or hung replica from costing clients.
    /// The replica is `exchange.replica`, and so is each one tried after it. When the next
    /// replica to try does not take pipelined requests, the ids tried so far are handed back, for
    /// [`App::forward`].
    async fn pipelined(
        &self,
        upstreams: &Upstreams,
        req: &Request<Incoming>,
        exchange: &mut Exchange,
        slot: u32,
        forwarded_for: &HeaderValue,
    ) -> Result<Response<LbBody>, Vec<u64>> {
        let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let head_only = req.method() == Method::HEAD;
        let mut tried: Vec<u64> = Vec::new();
        loop {
            let backend = exchange.replica.as_ref().expect("proxy chose a replica");
            let head = upstream::request_head(
                req.method(),
                path_and_query,
                req.headers(),
                backend.authority.as_str(),
                forwarded_for,
                self.trust_forwarded_for,
            );
            let in_flight = backend.begin_request();
            let sent = upstreams.request(&backend.addr, head, head_only);
            let error = match wait(sent, backend, self.response_timeout, true).await {
                Ok(Ok(resp)) if resp.status() == StatusCode::NOT_FOUND && !backend.is_address() => {
                    return Ok(not_in_replicas(req.uri().path()));
                }
                Ok(Ok(resp)) => {
                    let (parts, body) = resp.into_parts();
                    return Ok(Response::from_parts(
                        parts,
                        LbBody::Piped {
                            body,
                            _in_flight: in_flight,
                        },
                    ));
                }
                Ok(Err(e)) | Err(e) => e,
            };
            drop(in_flight);
            self.recorder.upstream_error(backend, error_kind(&error));
            tried.push(backend.id);
            // A malformed response or one cut off midway was an answer: not sent again.
            let retryable = matches!(
                error,
                UpstreamError::Connect { .. }
                    | UpstreamError::NotStarted(_)
                    | UpstreamError::TimedOut(_)
                    | UpstreamError::ReplicaFailed
            );
            let next = (retryable && tried.len() <= self.retries)
                .then(|| self.next_replica(slot, &tried))
                .flatten();
            match next {
                Some(next) => {
                    self.shared.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(from = %backend.hostname, to = %next.hostname, %error, "retrying on the next replica");
                    let pipelines = next.pipelining;
                    exchange.replica = Some(next);
                    if !pipelines {
                        return Err(tried);
                    }
                }
                None if matches!(error, UpstreamError::TimedOut(_)) => {
                    return Ok(timed_out(backend, &error.to_string()))
                }
                None => return Ok(did_not_answer(backend, &error.to_string())),
            }
        }
    }

    /// The first replica clockwise from `slot`, in the current snapshot, that is not in `tried`
    /// (a replica that failed has usually left the ring by now: then it is the slot's owner).
    fn next_replica(&self, slot: u32, tried: &[u64]) -> Option<Arc<Backend>> {
        let snapshot = self.shared.snapshot.load();
        snapshot
            .placement
            .next_member(slot, |m| tried.contains(&snapshot.backends[m].id))
            .map(|m| Arc::clone(&snapshot.backends[m]))
    }
}

/// Why an attempt on the non-batching path got no response.
enum Failure {
    /// Nothing reached the replica (it could not be connected to): safe to send anywhere.
    Unreached(String),
    /// Anything else before a response head.
    Upstream(UpstreamError),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unreached(reason) => f.write_str(reason),
            Failure::Upstream(e) => e.fmt(f),
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
async fn wait<F: std::future::Future>(
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

/// Which `lb_upstream_errors_total{kind}` an attempt's failure counts under.
fn error_kind(error: &UpstreamError) -> UpstreamErrorKind {
    match error {
        UpstreamError::Connect { .. } => UpstreamErrorKind::Connect,
        UpstreamError::NotStarted(_) | UpstreamError::Io(_) => UpstreamErrorKind::Reset,
        UpstreamError::TimedOut(_) | UpstreamError::ReplicaFailed => UpstreamErrorKind::Timeout,
        UpstreamError::Invalid(_) => UpstreamErrorKind::BadResponse,
    }
}

/// Whether hyper's client failed because the replica's response was not valid HTTP.
fn is_parse_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(s) = source {
        if s.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_parse)
        {
            return true;
        }
        source = s.source();
    }
    false
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

/// A replica's 404: the assignment's error for endpoints the replicas do not have.
fn not_in_replicas(path: &str) -> Response<LbBody> {
    error_response(&ApiError::BadRequest(format!(
        "'{path}' endpoint does not exist in server replicas"
    )))
}

/// A replica that did not answer in time: 504, logged like a 502.
fn timed_out(backend: &Backend, reason: &str) -> Response<LbBody> {
    log_bad_gateway(backend, reason);
    error_response(&ApiError::GatewayTimeout(format!(
        "replica '{}' did not answer: {reason}",
        backend.hostname
    )))
}

/// 502s logged in the current second, and when that second began (seconds since start-up).
static BAD_GATEWAYS: (AtomicU64, AtomicU64) = (AtomicU64::new(0), AtomicU64::new(0));
/// At most this many 502s are logged per second; the rest are counted in the next line.
const BAD_GATEWAY_LOG_LIMIT: u64 = 10;

/// Log a 502, at most [`BAD_GATEWAY_LOG_LIMIT`] a second over all workers (a dead replica can
/// fail thousands of requests a second; the log says how many were not shown).
fn log_bad_gateway(backend: &Backend, reason: &str) {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let now = START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs();
    let (count, second) = &BAD_GATEWAYS;
    if second.swap(now, Ordering::Relaxed) != now {
        let suppressed = count
            .swap(0, Ordering::Relaxed)
            .saturating_sub(BAD_GATEWAY_LOG_LIMIT);
        if suppressed > 0 {
            tracing::warn!(
                suppressed,
                "more 502 answers in the last second, not logged one by one"
            );
        }
    }
    if count.fetch_add(1, Ordering::Relaxed) < BAD_GATEWAY_LOG_LIMIT {
        tracing::warn!(replica = %backend.hostname, %reason, "502: replica did not answer");
    }
}

fn did_not_answer(backend: &Backend, reason: &str) -> Response<LbBody> {
    log_bad_gateway(backend, reason);
    error_response(&ApiError::BadGateway(format!(
        "replica '{}' did not answer: {reason}",
        backend.hostname
    )))
}

fn error_response(error: &ApiError) -> Response<LbBody> {
    api::error_response(error).map(LbBody::full)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Accept connections on `listener` and serve them with `app` until `stop` holds a drain time;
/// then stop accepting, let every connection finish the request it is on (idle keep-alive
/// connections close at once), and return when all are done or the drain time has passed.
///
/// At most `limit` connections are open at once: beyond it nothing is accepted (clients wait in
/// the kernel's queue) until one closes.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    limit: Option<usize>,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    let mut connections = tokio::task::JoinSet::new();
    let drain = loop {
        let full = limit.is_some_and(|limit| connections.len() >= limit);
        tokio::select! {
            accepted = listener.accept(), if !full => match accepted {
                Ok((stream, remote)) => {
                    connections.spawn(connection(stream, remote, Arc::clone(&app), stop.clone()));
                }
                Err(e) => {
                    // Typically EMFILE: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            // Reap finished connections as they end.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            changed = stop.changed() => match (changed, *stop.borrow()) {
                (Ok(()), Some(drain)) => break drain,
                (Ok(()), None) => {}
                (Err(_), _) => break Duration::ZERO,
            },
        }
    };
    drop(listener);
    let drained = tokio::time::timeout(drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "drain time over: closing connections with requests still in flight"
        );
    }
}

/// Serve one client connection; on stop, finish the request in progress and close. A client
/// too slow to send its request head gets a 408, one idle too long is closed ([`client`]).
async fn connection(
    stream: TcpStream,
    remote: SocketAddr,
    app: Arc<App>,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    let accepted = tokio::time::Instant::now();
    let _ = stream.set_nodelay(true);
    let header_timeout = app.header_timeout;
    let activity = Arc::new(Activity::default());
    let mut watchdog = Watchdog::new(
        Arc::clone(&activity),
        header_timeout,
        app.idle_timeout,
        app.send_timeout,
        accepted,
    );
    let stream = TokioIo::new(ClientStream::new(stream, Arc::clone(&activity)));
    let metrics = Arc::clone(&app.recorder.metrics);
    // Built once per connection, cloned (a reference count) per request.
    let peer = Arc::new(Peer::new(remote.ip()));
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        // Called once the head is read whole: the request is in progress until its response
        // body is done, and it is observed until then (counted when the observation drops:
        // with the body, or here if the client goes away first).
        let busy = activity.begin();
        let mut observation = Observation::begin(Arc::clone(&app.recorder), &req, remote.ip());
        let app = Arc::clone(&app);
        let peer = Arc::clone(&peer);
        async move {
            let resp = app.handle(req, &peer, &mut observation.exchange).await;
            observation.answered(resp.status());
            Ok::<_, Infallible>(resp.map(|body| Tracked::new(body, busy, observation)))
        }
    });
    let mut conn = http1::Builder::new()
        // The watchdog below keeps the client's time; hyper would close without a 408 and
        // cannot tell an idle connection from a slow head.
        .header_read_timeout(None)
        // Never more than a replica accepts: room is left for the fields lb adds.
        .max_headers(MAX_CLIENT_HEADERS)
        .max_header_size(MAX_CLIENT_HEAD)
        .serve_connection(stream, service);
    let tick = tokio::time::sleep_until(accepted + watchdog.period());
    tokio::pin!(tick);
    let mut stopping = false;
    let verdict = loop {
        tokio::select! {
            biased;
            _ = &mut conn => return,
            () = &mut tick => {
                let now = tokio::time::Instant::now();
                match watchdog.check(now) {
                    Verdict::Fine => tick.as_mut().reset(now + watchdog.period()),
                    verdict => break verdict,
                }
            }
            _ = stop.wait_for(Option::is_some), if !stopping => {
                stopping = true;
                std::pin::Pin::new(&mut conn).graceful_shutdown();
            }
        }
    };
    match verdict {
        Verdict::RequestTimeout => {
            let stream = conn.into_parts().io.into_inner().into_inner();
            client::answer_request_timeout(stream, header_timeout).await;
        }
        Verdict::SendTimeout => {
            // The response in progress goes with the connection (a replica's connection is
            // closed, not pooled, when its body is dropped midway); a reset frees the output
            // the client never took at once, instead of leaving the kernel to retry it.
            metrics.send_timeout();
            let stream = conn.into_parts().io.into_inner().into_inner();
            let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            tracing::debug!(client = %remote, "client took nothing for the send timeout: cut");
        }
        Verdict::Close | Verdict::Fine => {}
    }
}
