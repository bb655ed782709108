//! What `lb` learns about each proxied request, and where it goes when the response is done:
//! the worker's counters ([`crate::metrics`]) and, when it is on, the access log ([`access`]).
//!
//! An [`Observation`] begins when a request's head has been read. The front fills in its
//! [`Exchange`] (the request id the ring hashed, the replica that answered or was tried last);
//! the response body carries the observation ([`super::body::ProxyBody`]), which counts the
//! bytes sent. When the body is done — or dropped because the client went away — the
//! observation is dropped, and that is when the request is counted, once: its status, its
//! duration as the client saw it, under the replica's counters for this worker. With the access
//! log off nothing here allocates.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{Method, Request, StatusCode};

use super::access::{self, Record, Sink};
use super::body::Watch;
use super::key::Peer;
use crate::metrics::{SeriesCells, UpstreamErrorKind, WorkerMetrics};
use crate::state::Backend;

/// The status counted for a request whose client went away before its response began (as
/// nginx logs it: "client closed request"). No answer was sent.
pub(crate) const CLIENT_CLOSED: u16 = 499;

/// One worker's destinations for finished requests.
#[derive(Debug)]
pub(crate) struct Recorder {
    /// The worker's counters.
    pub(crate) metrics: Arc<WorkerMetrics>,
    /// The access log, if on.
    pub(crate) access: Option<Sink>,
}

impl Recorder {
    /// The cells this worker counts `backend`'s requests in (`None` before it was published,
    /// which does not happen: only published backends are routed to).
    #[inline]
    pub(crate) fn cells<'a>(&'a self, backend: &'a Backend) -> Option<&'a SeriesCells> {
        backend.counters().map(|c| c.cells(&self.metrics))
    }

    /// Count an upstream error of `kind` on `backend`.
    pub(crate) fn upstream_error(&self, backend: &Backend, kind: UpstreamErrorKind) {
        if let Some(cells) = self.cells(backend) {
            cells.error(kind);
        }
    }
}

/// What the front learned while handling a request.
#[derive(Debug, Default)]
pub(crate) struct Exchange {
    /// A proxied request (`lb`'s own endpoints are not counted).
    counted: bool,
    /// The request id the ring hashed.
    pub(crate) request_id: Option<u64>,
    /// The replica that answered, or the last one tried; `None` when `lb` answered before
    /// choosing one.
    pub(crate) replica: Option<Arc<Backend>>,
    /// From sending the request to a replica until its response head (or the last failure);
    /// measured only for the access log.
    pub(crate) upstream: Option<Duration>,
}

impl Exchange {
    /// The request is proxied (not one of `lb`'s own endpoints): count it, in progress from
    /// now.
    #[inline]
    pub(crate) fn count(&mut self, worker: &WorkerMetrics) {
        self.counted = true;
        worker.started();
    }
}

/// The request line facts an access log line needs, taken only when the log is on (the target
/// is copied: a record must not hold on to the connection's read buffer while it waits).
#[derive(Debug)]
struct Line {
    ts: SystemTime,
    client: IpAddr,
    method: Method,
    target: Box<str>,
    tls: Option<&'static str>,
    sni: Option<Arc<str>>,
    proto: &'static str,
}

/// One request being observed; counted (and logged) when dropped.
#[derive(Debug)]
pub(crate) struct Observation {
    recorder: Arc<Recorder>,
    started: Instant,
    /// The status sent, once the response began.
    status: Option<u16>,
    /// Response body bytes sent.
    bytes: u64,
    /// The replica's body was cut off midway.
    cut_off: bool,
    /// A WebSocket tunnel: the bytes the client sent through it (`bytes` is what it received).
    bytes_in: Option<u64>,
    line: Option<Line>,
    /// Filled in by the front.
    pub(crate) exchange: Exchange,
}

impl Observation {
    /// Observe `req` from `peer` at `client`, whose head was just read.
    #[inline]
    pub(crate) fn begin<B>(
        recorder: Arc<Recorder>,
        req: &Request<B>,
        peer: &Peer,
        client: IpAddr,
    ) -> Self {
        let line = recorder.access.is_some().then(|| Line {
            ts: SystemTime::now(),
            client,
            method: req.method().clone(),
            target: access::target(req.uri()).into(),
            tls: peer.tls.as_ref().map(|t| t.version),
            sni: peer.tls.as_ref().and_then(|t| t.sni.clone()),
            proto: access::proto(req.version()),
        });
        Observation {
            recorder,
            started: Instant::now(),
            status: None,
            bytes: 0,
            cut_off: false,
            bytes_in: None,
            line,
            exchange: Exchange::default(),
        }
    }

    /// Take this observation away (to a WebSocket tunnel, which counts it when it closes),
    /// leaving one in its place that counts nothing.
    pub(crate) fn detach(&mut self) -> Observation {
        let shell = Observation {
            recorder: Arc::clone(&self.recorder),
            started: self.started,
            status: self.status,
            bytes: 0,
            cut_off: false,
            bytes_in: None,
            line: None,
            exchange: Exchange::default(),
        };
        std::mem::replace(self, shell)
    }

    /// The tunnel this request opened closed: `up` bytes went from the client to the replica,
    /// `down` the other way.
    pub(crate) fn tunnel_closed(&mut self, up: u64, down: u64) {
        self.bytes_in = Some(up);
        self.bytes = down;
    }

    /// Whether upstream time is measured (for the access log).
    #[inline]
    pub(crate) fn times_upstream(recorder: &Recorder) -> bool {
        recorder.access.is_some()
    }

    /// The response begins with `status`.
    #[inline]
    pub(crate) fn answered(&mut self, status: StatusCode) {
        self.status = Some(status.as_u16());
    }
}

impl Watch for Observation {
    #[inline]
    fn sent(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
    }

    #[inline]
    fn failed(&mut self) {
        self.cut_off = true;
    }
}

impl Drop for Observation {
    fn drop(&mut self) {
        if !self.exchange.counted {
            return;
        }
        let took = self.started.elapsed();
        let status = self.status.unwrap_or(CLIENT_CLOSED);
        let metrics = &*self.recorder.metrics;
        let replica = self.exchange.replica.as_deref();
        let cells = replica
            .and_then(|b| self.recorder.cells(b))
            .unwrap_or_else(|| metrics.unrouted());
        cells.record(status, took);
        if self.cut_off {
            cells.error(UpstreamErrorKind::Reset);
        }
        metrics.finished();
        if let (Some(sink), Some(line)) = (&self.recorder.access, self.line.take()) {
            let record = Record {
                ts: line.ts,
                client: line.client,
                method: line.method,
                target: line.target,
                status,
                replica: replica
                    .and_then(Backend::counters)
                    .map(|c| Arc::clone(c.hostname())),
                request_id: self.exchange.request_id,
                upstream: self.exchange.upstream,
                total: took,
                bytes: self.bytes,
                tls: line.tls,
                sni: line.sni,
                proto: line.proto,
                bytes_in: self.bytes_in,
            };
            if !sink.send(record) {
                metrics.access_dropped();
            }
        }
    }
}
