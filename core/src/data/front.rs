//! The HTTP front: a client connection ([`connection`]: hyper's server over the downstream
//! socket and its timeouts, [`downstream`]), and for each request the choice of who answers it —
//! the load balancer's own endpoints (`/rep`, `/add`, `/rm`, `/_lb/…`) go to [`crate::api`],
//! `CONNECT` and looping requests are refused, everything else goes to the forwarding loop
//! ([`super::proxy`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use http::{Method, Request, Response};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::body::ProxyBody;
use super::downstream::{self, Activity, ClientIo, ClientStream, Verdict, Watchdog};
use super::h2::{self, Protocol};
use super::hop;
use super::key::Peer;
use super::live::Live;
use super::observe::{Exchange, Observation, Recorder};
use super::proxy::{error_response, Proxy};
use super::sockets::Bound;
use super::tls::ConnTls;
use crate::api::{self, Access, Api, ApiError};
use crate::control::ControllerHandle;
use crate::metrics::WorkerMetrics;
use crate::state::tls::{CertStore, ACME_CHALLENGE_PREFIX};
use crate::state::{Shared, Via};

/// Most header fields in a client's request: hyper's (and so `server`'s) limit is 100, and `lb`
/// adds up to four (`X-Forwarded-For`, `-Proto`, `Via`, and `X-Forwarded-Host`, or `Host` when
/// the client sent none); a request it could not forward whole is refused here (431).
const MAX_CLIENT_HEADERS: usize = 96;
/// Largest client request head (431 beyond): bounds the memory one connection can hold.
const MAX_CLIENT_HEAD: usize = 32 * 1024;

/// Everything a connection needs to answer requests.
pub(crate) struct App {
    api: Api,
    /// The forwarding loop and its clients to the replicas.
    proxy: Proxy,
    /// Whether requests for other paths are proxied (not on the admin address).
    proxies: bool,
    /// How long a client may take to send a request head ([`downstream`]).
    header_timeout: Duration,
    /// How long a keep-alive connection may sit idle between requests ([`downstream`]).
    idle_timeout: Duration,
    /// How long a client may take none of a response ([`downstream`]).
    send_timeout: Duration,
    /// Where this worker counts and logs finished requests.
    recorder: Arc<Recorder>,
    /// This process's mark on what it forwards: a request carrying it is a loop.
    via: &'static Via,
    /// `[tls] redirect_http` on a traffic listener: the TLS listener's address, where plain
    /// requests are sent with a 308.
    redirect: Option<SocketAddr>,
    /// The certificates, whose ACME challenges (`[tls.acme]`) HTTP-01 is answered from.
    certs: Arc<CertStore>,
    /// The HTTP/2 server's settings (`[proxy] h2_*`, [`h2::builder`]).
    http2: http2::Builder<TokioExecutor>,
    /// Set once newer settings replaced this app ([`App::retire`]): read once per HTTP/1.1
    /// response.
    retired: AtomicBool,
    /// The same, for HTTP/2 connections to wait on.
    retiring: watch::Sender<bool>,
}

/// What a worker's [`App`]s are built from besides the live settings: fixed for the worker's
/// life.
pub(crate) struct Seed {
    /// The shared state.
    pub(crate) shared: Arc<Shared>,
    /// Where changes go.
    pub(crate) controller: ControllerHandle,
    /// Which of lb's own endpoints this listener serves.
    pub(crate) access: Access,
    /// Whether requests for other paths are proxied (false on the admin address).
    pub(crate) proxies: bool,
    /// Which listeners' sockets it serves.
    pub(crate) role: Role,
    /// The worker's counters (kept across settings changes).
    pub(crate) metrics: Arc<WorkerMetrics>,
}

impl Seed {
    /// The app new connections are served by under `live`.
    pub(crate) fn app(&self, live: &Live) -> Arc<App> {
        let recorder = Arc::new(Recorder {
            metrics: Arc::clone(&self.metrics),
            access: live.access.clone(),
        });
        let settings = &live.proxy;
        Arc::new(App {
            certs: Arc::clone(&self.shared.certs),
            api: Api::new(
                Arc::clone(&self.shared),
                self.controller.clone(),
                self.access.clone(),
            ),
            proxy: Proxy::new(Arc::clone(&self.shared), settings, Arc::clone(&recorder)),
            http2: h2::builder(settings),
            proxies: self.proxies,
            header_timeout: Duration::from_millis(settings.client_header_timeout_ms),
            idle_timeout: Duration::from_millis(settings.client_idle_timeout_ms),
            send_timeout: Duration::from_millis(settings.client_send_timeout_ms),
            recorder,
            via: Via::mine(),
            redirect: live.redirect.filter(|_| self.proxies),
            retired: AtomicBool::new(false),
            retiring: watch::Sender::new(false),
        })
    }
}

impl App {
    /// Newer settings replaced this app: its connections move to them without an error. An
    /// HTTP/1.1 connection answers its next request with `Connection: close` (the client
    /// learns it from the response, so no request is ever sent on a socket being closed; one
    /// that stays idle ends by its idle timeout), an HTTP/2 one gets a graceful GOAWAY (streams
    /// in progress finish). Clients reconnect to the new app.
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        self.retiring.send_replace(true);
    }

    /// Answer one request from `peer`, noting in `exchange` what a proxied one went through.
    pub(crate) async fn handle(
        &self,
        req: Request<Incoming>,
        peer: &Peer,
        exchange: &mut Exchange,
    ) -> Response<ProxyBody> {
        if api::owns(req.uri().path()) {
            return self.api.answer(req).await.map(ProxyBody::full);
        }
        // HTTP-01 (`[tls.acme]`): answered here, never redirected nor proxied; one prefix
        // comparison for every other request.
        if let Some(token) = req.uri().path().strip_prefix(ACME_CHALLENGE_PREFIX) {
            if self.proxies && self.certs.acme.is_active() {
                return acme_answer(&self.certs, token).await;
            }
        }
        if let Some(tls) = self.redirect.filter(|_| peer.tls.is_none()) {
            return super::tls::redirect(&req, tls.port(), tls.ip());
        }
        exchange.count(&self.recorder.metrics);
        if !self.proxies {
            return error_response(&ApiError::NotFound(req.uri().path().to_owned()));
        }
        // An HTTP/2 extended CONNECT (RFC 8441, `:protocol`) goes on to the proxy's tunnel.
        if req.method() == Method::CONNECT
            && req.extensions().get::<hyper::ext::Protocol>().is_none()
        {
            return error_response(&ApiError::NoTunnel);
        }
        // Sent by this lb before (a backend's address leads back here): never round again.
        if self.via.is_in(req.headers()) {
            return error_response(&ApiError::LoopDetected(
                self.via.value().to_str().unwrap_or_default().to_owned(),
            ));
        }
        let timed = Observation::times_upstream(&self.recorder).then(Instant::now);
        let resp = self.proxy.forward(req, peer, exchange).await;
        exchange.upstream = timed
            .filter(|_| exchange.replica.is_some())
            .map(|t| t.elapsed());
        resp
    }
}

/// The answer to `GET /.well-known/acme-challenge/<token>`: the key authorization of an order
/// in flight (RFC 8555 §8.3), else 404.
async fn acme_answer(certs: &CertStore, token: &str) -> Response<ProxyBody> {
    let found = certs.acme.http01(token).await;
    let (status, body) = match found {
        Some(answer) => (http::StatusCode::OK, answer),
        None => (
            http::StatusCode::NOT_FOUND,
            "no ACME challenge in flight has this token\n".to_owned(),
        ),
    };
    let mut response = Response::new(ProxyBody::full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/octet-stream"),
    );
    response
}

/// Which listener sockets a worker serves.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Role {
    /// Traffic worker `i`: socket `i` of `listen` and of `[tls] listen` (and those of stopped
    /// workers, shared out: see [`Accepting`]).
    Traffic(usize),
    /// The `[admin] listen` thread.
    Admin,
}

impl Role {
    /// Its plain listener's set in `live`.
    fn plain(self, live: &Live) -> Option<&Arc<Bound>> {
        match self {
            Role::Traffic(_) => Some(&live.listeners.plain),
            Role::Admin => live.listeners.admin.as_ref(),
        }
    }

    /// Its TLS listener's set in `live`.
    fn tls(self, live: &Live) -> Option<&Arc<Bound>> {
        match self {
            Role::Traffic(_) => live.listeners.tls.as_ref(),
            Role::Admin => None,
        }
    }

    /// The indexes of a set of `len` sockets it serves when `workers` traffic workers run:
    /// its own, and every `workers`-th after it (the sockets of workers that were stopped are
    /// never closed while clients may be queued on them: they are shared out).
    fn indexes(self, len: usize, workers: usize) -> Vec<usize> {
        match self {
            Role::Traffic(i) => (i..len).step_by(workers.max(1)).collect(),
            Role::Admin => vec![0],
        }
    }
}

/// The sockets of one listener a worker accepts on, and the set they are of.
struct Accepting {
    bound: Arc<Bound>,
    /// The indexes in `bound` it serves, with their sockets.
    sockets: Vec<(usize, TcpListener)>,
    /// Where the next accept starts looking: each socket gets its turn.
    next: usize,
}

impl Accepting {
    /// The sockets of `bound` that `role` serves when `workers` traffic workers run.
    fn take(role: Role, bound: &Arc<Bound>, workers: usize) -> std::io::Result<Accepting> {
        let sockets = role
            .indexes(bound.len(), workers)
            .into_iter()
            .map(|k| Ok((k, TcpListener::from_std(bound.socket(k)?)?)))
            .collect::<std::io::Result<_>>()?;
        Ok(Accepting {
            bound: Arc::clone(bound),
            sockets,
            next: 0,
        })
    }

    /// Follow the listener's set in new settings, `next`, with `workers` traffic workers. The
    /// same set: take the sockets now this worker's and let go of the others (another worker
    /// takes them; the set keeps them open). Another set (the listener moved, or grew): take
    /// its sockets and hand back the old ones, to take what their queues hold before they are
    /// let go.
    fn follow(
        &mut self,
        role: Role,
        next: Option<&Arc<Bound>>,
        workers: usize,
    ) -> Vec<TcpListener> {
        let Some(next) = next else {
            return Vec::new();
        };
        if Arc::ptr_eq(next, &self.bound) {
            let wanted = role.indexes(next.len(), workers);
            if self
                .sockets
                .iter()
                .map(|(k, _)| *k)
                .eq(wanted.iter().copied())
            {
                return Vec::new();
            }
            let mut kept: Vec<(usize, TcpListener)> = std::mem::take(&mut self.sockets)
                .into_iter()
                .filter(|(k, _)| wanted.contains(k))
                .collect();
            for k in wanted {
                if kept.iter().any(|(j, _)| *j == k) {
                    continue;
                }
                match next.socket(k).and_then(TcpListener::from_std) {
                    Ok(listener) => kept.push((k, listener)),
                    Err(e) => tracing::error!(error = %e, "worker cannot take a socket"),
                }
            }
            kept.sort_unstable_by_key(|(k, _)| *k);
            self.sockets = kept;
            return Vec::new();
        }
        match Accepting::take(role, next, workers) {
            Ok(moved) => std::mem::replace(self, moved)
                .sockets
                .into_iter()
                .map(|(_, listener)| listener)
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, address = %next.local, "worker cannot use its new sockets");
                Vec::new()
            }
        }
    }

    /// The next connection on any of its sockets (never ready without one).
    async fn accept(&mut self) -> std::io::Result<(TcpStream, SocketAddr)> {
        let count = self.sockets.len();
        if count == 0 {
            return std::future::pending().await;
        }
        std::future::poll_fn(|cx| {
            for step in 0..count {
                let k = (self.next + step) % count;
                if let std::task::Poll::Ready(accepted) = self.sockets[k].1.poll_accept(cx) {
                    self.next = (k + 1) % count;
                    return std::task::Poll::Ready(accepted);
                }
            }
            std::task::Poll::Pending
        })
        .await
    }
}

/// Accept connections on the worker's sockets of its listeners in `live` (its `seed.role`) and
/// serve them with an [`App`] built by `seed` from the latest `live` settings (open
/// connections keep the one they started with, and move after their next answer) until `stop`
/// holds a drain time; then stop accepting, let every connection finish the request it is on
/// (idle keep-alive connections close at once), and return when all are done or the drain time
/// has passed. A moved listener: the worker accepts on the new socket, takes the connections
/// already queued on the old one, and closes it.
///
/// On a traffic listener at most [`Live::per_worker`] connections are open at once: beyond it
/// nothing is accepted (clients wait in the kernel's queue) until one closes.
///
/// A traffic worker whose index the settings no longer have (`[proxy] workers` lowered) stops
/// accepting (the others take its sockets, and what is queued on them) and returns
/// [`Ended::Retired`] once its connections are done (they move after their next answer, as on
/// any change).
pub(crate) async fn serve(
    seed: Seed,
    mut live: watch::Receiver<Arc<Live>>,
    mut stop: watch::Receiver<Option<Duration>>,
) -> Ended {
    let mut settings = Arc::clone(&live.borrow_and_update());
    let role = seed.role;
    let taken = role
        .plain(&settings)
        .map(|bound| Accepting::take(role, bound, settings.workers))
        .transpose()
        .and_then(|plain| {
            let tls = role
                .tls(&settings)
                .map(|bound| Accepting::take(role, bound, settings.workers))
                .transpose()?;
            Ok((plain, tls))
        });
    let (Some(mut plain), mut tls) = (match taken {
        Ok(taken) => taken,
        Err(e) => {
            tracing::error!(error = %e, "worker cannot use its socket");
            return Ended::Stopped;
        }
    }) else {
        return Ended::Stopped;
    };
    let mut app = seed.app(&settings);
    let mut connections = tokio::task::JoinSet::new();
    let mut following = true;
    let drain = loop {
        // TLS connections count from the accept, before their handshake, like plain ones.
        let limit = settings.per_worker.filter(|_| seed.proxies);
        let full = limit.is_some_and(|limit| connections.len() >= limit);
        let acceptor = settings.acceptor.as_ref().filter(|_| tls.is_some());
        tokio::select! {
            accepted = plain.accept(), if !full => match accepted {
                Ok((stream, remote)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(plain_connection(stream, remote, Arc::clone(&app), stop.clone()));
                }
                Err(e) => accept_failed(&e).await,
            },
            accepted = accept_tls(tls.as_mut()), if !full && acceptor.is_some() => match (accepted, acceptor) {
                (Ok((stream, remote)), Some(acceptor)) => {
                    connections.spawn(tls_connection(stream, remote, acceptor.clone(), Arc::clone(&app), stop.clone()));
                }
                (Err(e), _) => accept_failed(&e).await,
                (Ok(_), None) => {}
            },
            // Reap finished connections as they end.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            // New settings: new connections are served by an app built from them, on the
            // listeners' new sockets if they moved.
            changed = live.changed(), if following => match changed {
                Ok(()) => {
                    settings = Arc::clone(&live.borrow_and_update());
                    app.retire();
                    app = seed.app(&settings);
                    if settings.handed_over
                        || matches!(role, Role::Traffic(i) if i >= settings.workers)
                    {
                        // No longer wanted: the other workers (or, after an upgrade, the new
                        // lb) take its sockets and what is queued on them; it finishes its
                        // connections.
                        break None;
                    }
                    for old in plain.follow(role, role.plain(&settings), settings.workers) {
                        while let Some(Ok((stream, remote))) = old.accept().now_or_never() {
                            let _ = stream.set_nodelay(true);
                            connections.spawn(plain_connection(stream, remote, Arc::clone(&app), stop.clone()));
                        }
                    }
                    if let Some(tls) = &mut tls {
                        for old in tls.follow(role, role.tls(&settings), settings.workers) {
                            while let (Some(Ok((stream, remote))), Some(acceptor)) = (old.accept().now_or_never(), &settings.acceptor) {
                                connections.spawn(tls_connection(stream, remote, acceptor.clone(), Arc::clone(&app), stop.clone()));
                            }
                        }
                    }
                }
                Err(_) => following = false,
            },
            changed = stop.changed() => match (changed, *stop.borrow()) {
                (Ok(()), Some(drain)) => break Some(drain),
                (Ok(()), None) => {}
                (Err(_), _) => break Some(Duration::ZERO),
            },
        }
    };
    drop(plain);
    drop(tls);
    let (drain, ended) = match drain {
        Some(drain) => (drain, Ended::Stopped),
        None => {
            // Retired: its connections end by themselves, unless lb stops meanwhile.
            let stopping = tokio::select! {
                () = async { while connections.join_next().await.is_some() {} } => None,
                stopping = stop.wait_for(Option::is_some) => stopping.ok().and_then(|d| *d),
            };
            match stopping {
                None => return Ended::Retired,
                Some(drain) => (drain, Ended::Retired),
            }
        }
    };
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
    ended
}

/// Why a worker stopped serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// lb stops (or the worker could not start).
    Stopped,
    /// The settings no longer want it (`[proxy] workers` lowered).
    Retired,
}

/// Serve a connection of the TLS listener: its handshake (within the header timeout), then
/// HTTP/2 or HTTP/1.1 as ALPN settled.
async fn tls_connection(
    stream: TcpStream,
    remote: SocketAddr,
    acceptor: TlsAcceptor,
    app: Arc<App>,
    stop: watch::Receiver<Option<Duration>>,
) {
    let accepted = tokio::time::Instant::now();
    let counters = app.recorder.metrics.tls();
    let shaken = super::tls::handshake(&acceptor, stream, app.header_timeout, counters).await;
    match shaken {
        // ALPN chose HTTP/2.
        Some((stream, info)) if info.h2 => {
            connection_h2(stream, remote, app, stop, Some(info), accepted).await;
        }
        Some((stream, info)) => {
            connection(stream, remote, app, stop, Some(info), accepted).await;
        }
        None => {}
    }
}

/// The next connection on the TLS listener, if there is one (never ready otherwise).
async fn accept_tls(tls: Option<&mut Accepting>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match tls {
        Some(tls) => tls.accept().await,
        None => std::future::pending().await,
    }
}

/// An accept failed (typically EMFILE): back off briefly instead of spinning.
async fn accept_failed(e: &std::io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// Serve one client connection (plain, or TLS once its handshake is done: `tls` says what it
/// settled); on stop, finish the request in progress and close. A client too slow to send its
/// request head gets a 408, one idle too long is closed ([`downstream`]).
/// `accepted`: when the client connected (the first head's clock starts there).
async fn connection<S: ClientIo>(
    stream: S,
    remote: SocketAddr,
    app: Arc<App>,
    mut stop: watch::Receiver<Option<Duration>>,
    tls: Option<ConnTls>,
    accepted: tokio::time::Instant,
) {
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
    let peer = Arc::new(Peer::new(remote.ip(), tls));
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        // Called once the head is read whole: the request is in progress until its response
        // body is done, and it is observed until then (counted when the observation drops:
        // with the body, or here if the client goes away first).
        let busy = activity.begin();
        let mut observation =
            Observation::begin(Arc::clone(&app.recorder), &req, &peer, remote.ip());
        let app = Arc::clone(&app);
        let peer = Arc::clone(&peer);
        async move {
            let mut resp = app.handle(req, &peer, &mut observation.exchange).await;
            observation.answered(resp.status());
            if resp.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                // A WebSocket tunnel counts and logs the request when it closes.
                super::tunnel::hand_over(&mut resp, &mut observation, None);
            } else if app.retired.load(Ordering::Relaxed) {
                // Newer settings: the client opens its next connection to them.
                resp.headers_mut().insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            Ok::<_, Infallible>(resp.map(|body| body.tracked(busy, observation)))
        }
    });
    let mut conn = http1::Builder::new()
        // The watchdog below keeps the client's time; hyper would close without a 408 and
        // cannot tell an idle connection from a slow head.
        .header_read_timeout(None)
        // Never more than a replica accepts: room is left for the fields lb adds.
        .max_headers(MAX_CLIENT_HEADERS)
        .max_header_size(MAX_CLIENT_HEAD)
        .serve_connection(stream, service)
        // A WebSocket's 101 hands the socket over to its tunnel (`super::tunnel`).
        .with_upgrades();
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
            let Some(parts) = conn.into_parts() else {
                return;
            };
            let stream = parts.io.into_inner().into_inner();
            downstream::answer_request_timeout(stream, header_timeout).await;
        }
        Verdict::SendTimeout => {
            // The response in progress goes with the connection (a replica's connection is
            // closed, not pooled, when its body is dropped midway); a reset frees the output
            // the client never took at once, instead of leaving the kernel to retry it.
            metrics.send_timeout();
            let Some(parts) = conn.into_parts() else {
                return;
            };
            let stream = parts.io.into_inner().into_inner();
            let _ = socket2::SockRef::from(stream.tcp()).set_linger(Some(Duration::ZERO));
            tracing::debug!(client = %remote, "client took nothing for the send timeout: cut");
        }
        Verdict::Close | Verdict::Fine => {}
    }
}

/// Serve a connection of the plain listener: HTTP/2 when it begins with the preface (`h2c`
/// with prior knowledge), else HTTP/1.1. The bytes read to tell are given back to the
/// protocol's parser ([`h2::sniff`]: no extra read for HTTP/1.1); a client that sends nothing
/// within the header timeout is closed without an answer.
async fn plain_connection(
    stream: TcpStream,
    remote: SocketAddr,
    app: Arc<App>,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    let accepted = tokio::time::Instant::now();
    match h2::sniff(stream, accepted + app.header_timeout, &mut stop).await {
        Some((Protocol::Http1, stream)) => {
            connection(stream, remote, app, stop, None, accepted).await;
        }
        Some((Protocol::Http2, stream)) => {
            connection_h2(stream, remote, app, stop, None, accepted).await;
        }
        None => {}
    }
}

/// Serve one HTTP/2 client connection (`h2c`, or `h2` by ALPN: `tls` says what its handshake
/// settled) with the same [`App::handle`] as HTTP/1.1: each stream is one request, made an
/// HTTP/1.1 one ([`hop::from_h2`]) after its observation noted `HTTP/2`. Timeouts, GOAWAY and
/// counters: [`h2::serve`].
async fn connection_h2<S: ClientIo>(
    stream: S,
    remote: SocketAddr,
    app: Arc<App>,
    stop: watch::Receiver<Option<Duration>>,
    tls: Option<ConnTls>,
    accepted: tokio::time::Instant,
) {
    let metrics = Arc::clone(&app.recorder.metrics);
    let activity = Arc::new(Activity::http2(Arc::clone(&metrics)));
    let watchdog = Watchdog::new(
        Arc::clone(&activity),
        app.header_timeout,
        app.idle_timeout,
        app.send_timeout,
        accepted,
    );
    let stream = TokioIo::new(ClientStream::new(stream, Arc::clone(&activity)));
    let peer = Arc::new(Peer::new(remote.ip(), tls));
    let service_app = Arc::clone(&app);
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        // As on HTTP/1.1: in progress (and observed) until the stream's response is done.
        let busy = activity.begin();
        hop::from_h2(&mut req);
        let mut observation =
            Observation::begin(Arc::clone(&service_app.recorder), &req, &peer, remote.ip());
        *req.version_mut() = http::Version::HTTP_11;
        let connect = req.method() == Method::CONNECT;
        let app = Arc::clone(&service_app);
        let peer = Arc::clone(&peer);
        async move {
            // HTTP/2 has no field count of its own (only the list's size): the same cap as
            // an HTTP/1.1 head, so a replica never gets more than it accepts.
            let mut resp = if req.headers().len() > MAX_CLIENT_HEADERS {
                error_response(&ApiError::TooManyFields(MAX_CLIENT_HEADERS))
            } else {
                app.handle(req, &peer, &mut observation.exchange).await
            };
            observation.answered(resp.status());
            let mut busy = Some(busy);
            if connect && resp.status().is_success() {
                // A WebSocket over this stream (RFC 8441): the tunnel counts and logs the
                // request when it closes, and keeps the stream in progress until then (hyper
                // drops the response body when it hands the stream over).
                busy = super::tunnel::hand_over(&mut resp, &mut observation, busy.take());
            }
            Ok::<_, Infallible>(match busy {
                Some(busy) => resp.map(|body| Either::Left(body.tracked(busy, observation))),
                None => resp.map(|_| Either::Right(http_body_util::Empty::new())),
            })
        }
    });
    h2::serve(
        stream,
        service,
        &app.http2,
        watchdog,
        h2::Ending {
            stop,
            retired: app.retiring.subscribe(),
        },
        &metrics,
        remote,
    )
    .await;
}
