//! Counters for `/_lb/metrics`, kept so that counting costs the request path no lock and no
//! cache line another thread writes.
//!
//! - Every worker thread owns a [`WorkerMetrics`]: its requests in progress, the requests it
//!   answered before choosing a replica (`replica=""`), the access log lines it dropped, the
//!   client connections it cut for the send timeout.
//! - Every replica incarnation (a `Backend` in the ring) owns a [`ReplicaMetrics`]: one block of
//!   [`SeriesCells`] per worker thread, each on cache lines of its own. A worker records a
//!   request to a replica in that replica's block for the worker — the backend is already in
//!   hand on the request path, so nothing is looked up, no label is formatted.
//! - Only the owning worker writes a block: a counter is bumped with a relaxed load and a
//!   relaxed store ([`bump`]), never a locked instruction.
//! - A scrape ([`Metrics::series`]) sums the blocks of every worker and every replica still
//!   alive (in the ring or draining), and adds the totals of replicas gone since ([`Retired`]),
//!   by hostname. A replica's hostname is resolved there, not per request.
//!
//! This module imports nothing else of `lb` (`state` holds it in `Shared` and `Backend`).

pub(crate) mod exposition;
pub(crate) mod http2;
pub(crate) mod process;
pub(crate) mod tls;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

/// Upper bounds of the request duration histogram's buckets, in nanoseconds (100 µs to 10 s;
/// a last bucket, `+Inf`, takes the rest).
pub(crate) const BUCKETS_NS: [u64; 16] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Buckets counted: one per bound and `+Inf`.
const BUCKETS: usize = BUCKETS_NS.len() + 1;

/// Distinct status codes a block counts without a lock; more go to a map behind a mutex that
/// only that worker (and a scrape) ever takes.
const CODE_SLOTS: usize = 16;

/// Hostnames of gone replicas whose totals are kept (the oldest are forgotten beyond this).
pub(crate) const MAX_RETIRED: usize = 1024;

/// Why a request to a replica got no usable answer (`lb_upstream_errors_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamErrorKind {
    /// The replica could not be connected to (refused, unreachable, connecting took too long).
    Connect,
    /// The connection closed or failed before or while the response came.
    Reset,
    /// No response head within the response timeout, or the replica failed its health checks
    /// while the request waited.
    Timeout,
    /// The response was not valid HTTP/1.1 (or a status code outside 100–599).
    BadResponse,
    /// The TLS handshake with a backend by address failed (certificate not trusted, wrong name,
    /// no common version): nothing was sent.
    Tls,
}

/// How many kinds there are.
const KINDS: usize = 5;

impl UpstreamErrorKind {
    /// Every kind, in the order they are exposed.
    pub(crate) const ALL: [UpstreamErrorKind; KINDS] = [
        UpstreamErrorKind::Connect,
        UpstreamErrorKind::Reset,
        UpstreamErrorKind::Timeout,
        UpstreamErrorKind::BadResponse,
        UpstreamErrorKind::Tls,
    ];

    /// The `kind` label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            UpstreamErrorKind::Connect => "connect",
            UpstreamErrorKind::Reset => "reset",
            UpstreamErrorKind::Timeout => "timeout",
            UpstreamErrorKind::BadResponse => "bad_response",
            UpstreamErrorKind::Tls => "tls",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Add one to a counter only one thread writes: a load and a store, no locked instruction.
#[inline]
pub(crate) fn bump(counter: &AtomicU64) {
    add(counter, 1);
}

/// Add `n` to a counter only one thread writes.
#[inline]
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// The counters of one label set (one replica, or `replica=""`) kept by one worker.
#[derive(Debug, Default)]
pub(crate) struct SeriesCells {
    /// Status codes seen, in the order first seen (0: a free slot).
    codes: [AtomicU32; CODE_SLOTS],
    /// Requests answered with `codes[i]`.
    counts: [AtomicU64; CODE_SLOTS],
    /// Codes beyond the slots (a replica answering with more than 16 distinct codes).
    more_codes: Mutex<BTreeMap<u16, u64>>,
    /// Request durations, per bucket (not cumulative: summed up at a scrape).
    buckets: [AtomicU64; BUCKETS],
    /// Sum of the durations, in nanoseconds.
    sum_ns: AtomicU64,
    /// Upstream errors by [`UpstreamErrorKind`].
    errors: [AtomicU64; KINDS],
}

impl SeriesCells {
    /// Count one request answered with `code` that took `took` from its head to the end of its
    /// response. Only the owning worker calls this.
    #[inline]
    pub(crate) fn record(&self, code: u16, took: Duration) {
        self.count_code(code);
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKETS_NS
            .iter()
            .position(|&bound| ns <= bound)
            .unwrap_or(BUCKETS_NS.len());
        bump(&self.buckets[bucket]);
        add(&self.sum_ns, ns);
    }

    #[inline]
    fn count_code(&self, code: u16) {
        let wanted = u32::from(code);
        for (slot, count) in self.codes.iter().zip(&self.counts) {
            match slot.load(Ordering::Relaxed) {
                c if c == wanted => return bump(count),
                0 => {
                    // First time this code: the code is published before its count grows.
                    slot.store(wanted, Ordering::Release);
                    return bump(count);
                }
                _ => {}
            }
        }
        *lock(&self.more_codes).entry(code).or_default() += 1;
    }

    /// Count one upstream error of `kind`. Only the owning worker calls this.
    #[inline]
    pub(crate) fn error(&self, kind: UpstreamErrorKind) {
        bump(&self.errors[kind.index()]);
    }

    /// Add what these cells counted to `totals`.
    fn add_to(&self, totals: &mut SeriesTotals) {
        for (slot, count) in self.codes.iter().zip(&self.counts) {
            let code = slot.load(Ordering::Acquire);
            if code == 0 {
                break;
            }
            *totals.codes.entry(code as u16).or_default() += count.load(Ordering::Relaxed);
        }
        for (code, n) in lock(&self.more_codes).iter() {
            *totals.codes.entry(*code).or_default() += n;
        }
        for (total, cell) in totals.buckets.iter_mut().zip(&self.buckets) {
            *total += cell.load(Ordering::Relaxed);
        }
        totals.sum_ns += self.sum_ns.load(Ordering::Relaxed);
        for (total, cell) in totals.errors.iter_mut().zip(&self.errors) {
            *total += cell.load(Ordering::Relaxed);
        }
    }
}

/// A lock that a panic elsewhere does not poison for the scrape (counters stay readable).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Cells on cache lines of their own (two lines: the adjacent-line prefetcher pairs them).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// The totals of one label set at a scrape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SeriesTotals {
    /// Requests by the status code sent to the client.
    pub codes: BTreeMap<u16, u64>,
    /// Requests per duration bucket (not cumulative), the last one `+Inf`.
    pub buckets: [u64; BUCKETS],
    /// Sum of the request durations, in nanoseconds.
    pub sum_ns: u64,
    /// Upstream errors, in the order of [`UpstreamErrorKind::ALL`].
    pub errors: [u64; KINDS],
}

impl SeriesTotals {
    /// Requests observed (the histogram's `_count`).
    pub(crate) fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    fn merge(&mut self, other: &SeriesTotals) {
        for (code, n) in &other.codes {
            *self.codes.entry(*code).or_default() += n;
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum_ns += other.sum_ns;
        for (a, b) in self.errors.iter_mut().zip(&other.errors) {
            *a += b;
        }
    }
}

/// What one worker thread counts that belongs to no replica.
#[derive(Debug)]
pub(crate) struct WorkerMetrics {
    /// The worker's index: which block of every [`ReplicaMetrics`] is its own.
    index: usize,
    /// Requests `lb` answered before choosing a replica (503 without replicas, …).
    unrouted: Padded<SeriesCells>,
    /// Proxied requests begun and done (their difference is in progress).
    started: AtomicU64,
    finished: AtomicU64,
    /// Access log lines dropped because the writer could not keep up.
    access_dropped: AtomicU64,
    /// Client connections cut because their client took none of a response for
    /// `client_send_timeout_ms`.
    send_timeouts: AtomicU64,
    /// TLS handshakes and their failures on this worker.
    tls: tls::TlsCounters,
    /// HTTP/2 connections and streams on this worker.
    http2: http2::Http2Counters,
}

impl WorkerMetrics {
    /// The worker's index.
    #[cfg(test)]
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// The cells of requests answered before a replica was chosen.
    #[inline]
    pub(crate) fn unrouted(&self) -> &SeriesCells {
        &self.unrouted.0
    }

    /// A proxied request began.
    #[inline]
    pub(crate) fn started(&self) {
        bump(&self.started);
    }

    /// A proxied request is done (its response sent, or its client gone).
    #[inline]
    pub(crate) fn finished(&self) {
        bump(&self.finished);
    }

    /// An access log line was dropped.
    #[inline]
    pub(crate) fn access_dropped(&self) {
        bump(&self.access_dropped);
    }

    /// A client connection was cut: its client took none of a response for the send timeout.
    #[inline]
    pub(crate) fn send_timeout(&self) {
        bump(&self.send_timeouts);
    }

    /// This worker's TLS handshake counters.
    pub(crate) fn tls(&self) -> &tls::TlsCounters {
        &self.tls
    }

    /// This worker's HTTP/2 counters.
    #[inline]
    pub(crate) fn http2(&self) -> &http2::Http2Counters {
        &self.http2
    }
}

/// The counters of one replica incarnation: a block per worker thread. Created by
/// [`Metrics::replica`]; when the last reference goes (the replica left the ring and its last
/// request is done), its totals are kept under its hostname ([`Retired`]).
pub(crate) struct ReplicaMetrics {
    /// Its hostname (the `replica` label).
    hostname: Arc<str>,
    /// Its number in the registry of live replicas.
    serial: u64,
    cells: Box<[Padded<SeriesCells>]>,
    registry: Arc<Mutex<Registry>>,
}

impl std::fmt::Debug for ReplicaMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaMetrics")
            .field("hostname", &self.hostname)
            .finish_non_exhaustive()
    }
}

impl ReplicaMetrics {
    /// The replica's hostname.
    pub(crate) fn hostname(&self) -> &Arc<str> {
        &self.hostname
    }

    /// The cells worker `worker` writes.
    #[inline]
    pub(crate) fn cells(&self, worker: &WorkerMetrics) -> &SeriesCells {
        // Every worker registered has a block (see `Metrics::new`); a spare index shares the
        // last block rather than panicking on the request path.
        let last = self.cells.len() - 1;
        &self.cells[worker.index.min(last)].0
    }

    fn totals(&self) -> SeriesTotals {
        let mut totals = SeriesTotals::default();
        for cells in self.cells.iter() {
            cells.0.add_to(&mut totals);
        }
        totals
    }
}

impl Drop for ReplicaMetrics {
    fn drop(&mut self) {
        // Nothing writes these cells any more: every writer held the replica (and so this).
        let totals = self.totals();
        let mut registry = lock(&self.registry);
        registry.live.remove(&self.serial);
        registry.retired.add(&self.hostname, &totals);
    }
}

/// Totals of replicas gone, by hostname, so that a counter never goes back while its replica
/// drains away, or when the same hostname comes back. At most [`MAX_RETIRED`] hostnames are
/// kept; the oldest are forgotten.
#[derive(Debug, Default)]
struct Retired {
    totals: HashMap<Arc<str>, SeriesTotals>,
    order: VecDeque<Arc<str>>,
}

impl Retired {
    fn add(&mut self, hostname: &Arc<str>, totals: &SeriesTotals) {
        match self.totals.get_mut(hostname) {
            Some(kept) => kept.merge(totals),
            None => {
                if self.order.len() >= MAX_RETIRED {
                    if let Some(oldest) = self.order.pop_front() {
                        self.totals.remove(&oldest);
                    }
                }
                self.order.push_back(Arc::clone(hostname));
                self.totals.insert(Arc::clone(hostname), totals.clone());
            }
        }
    }
}

/// What the scrape reads under one lock.
#[derive(Debug, Default)]
struct Registry {
    workers: Vec<Arc<WorkerMetrics>>,
    live: BTreeMap<u64, (Arc<str>, Weak<ReplicaMetrics>)>,
    next_serial: u64,
    retired: Retired,
}

/// Every counter `lb` keeps, shared by the workers, the controller and the scrape.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// Worker threads, hence blocks per replica.
    workers: usize,
    registry: Arc<Mutex<Registry>>,
    /// Configuration reloads applied (file saves, SIGHUP, `/add`, `/rm`).
    reloads_ok: AtomicU64,
    /// Configuration reloads refused.
    reloads_failed: AtomicU64,
    /// Replicas replaced after they died or failed their health checks.
    restarts: AtomicU64,
    /// Panics caught in the control plane (the controller, health checks, file reads).
    control_panics: AtomicU64,
    /// Access log lines the writer could not write (a full disk); only the writer thread adds.
    access_lost: AtomicU64,
    /// Certificate reloads (certificate files, or `[[tls.certificates]]` in a saved file).
    pub(crate) tls_reloads: tls::TlsReloads,
    /// ACME orders (`[tls.acme]`): certificates issued (ok) or orders that failed (error).
    pub(crate) acme_orders: tls::TlsReloads,
}

/// The counters of every label set at one scrape.
#[derive(Debug, Default)]
pub(crate) struct Scrape {
    /// By replica hostname (`""`: requests answered before a replica was chosen).
    pub series: BTreeMap<Arc<str>, SeriesTotals>,
    /// Proxied requests in progress.
    pub in_flight: u64,
    /// Access log lines dropped: the writer could not keep up, or could not write them.
    pub access_dropped: u64,
    /// Client connections cut by the send timeout.
    pub send_timeouts: u64,
    /// TLS handshakes done, by [`tls::VERSIONS`].
    pub tls_handshakes: [u64; 2],
    /// TLS handshakes failed, by [`tls::HandshakeError::ALL`].
    pub tls_errors: [u64; 5],
    /// HTTP/2 connections and streams.
    pub http2: http2::Http2Totals,
}

impl Metrics {
    /// Counters for `workers` worker threads.
    pub(crate) fn new(workers: usize) -> Metrics {
        Metrics {
            workers: workers.max(1),
            registry: Arc::default(),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            control_panics: AtomicU64::new(0),
            access_lost: AtomicU64::new(0),
            tls_reloads: tls::TlsReloads::default(),
            acme_orders: tls::TlsReloads::default(),
        }
    }

    /// The counters of the next worker thread (indexes are given in order).
    pub(crate) fn worker(&self) -> Arc<WorkerMetrics> {
        let mut registry = lock(&self.registry);
        let worker = Arc::new(WorkerMetrics {
            index: registry.workers.len(),
            unrouted: Padded::default(),
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            access_dropped: AtomicU64::new(0),
            send_timeouts: AtomicU64::new(0),
            tls: tls::TlsCounters::default(),
            http2: http2::Http2Counters::default(),
        });
        if worker.index >= self.workers {
            tracing::warn!(
                index = worker.index,
                "more workers than metric blocks; counts of this worker are shared"
            );
        }
        registry.workers.push(Arc::clone(&worker));
        worker
    }

    /// The counters of a new replica incarnation called `hostname`.
    pub(crate) fn replica(&self, hostname: &str) -> Arc<ReplicaMetrics> {
        let mut registry = lock(&self.registry);
        let serial = registry.next_serial;
        registry.next_serial += 1;
        let hostname: Arc<str> = hostname.into();
        let replica = Arc::new(ReplicaMetrics {
            hostname: Arc::clone(&hostname),
            serial,
            cells: (0..self.workers).map(|_| Padded::default()).collect(),
            registry: Arc::clone(&self.registry),
        });
        registry
            .live
            .insert(serial, (hostname, Arc::downgrade(&replica)));
        replica
    }

    /// Count a configuration reload: applied (`ok`) or refused.
    pub(crate) fn reload(&self, ok: bool) {
        let counter = if ok {
            &self.reloads_ok
        } else {
            &self.reloads_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Configuration reloads so far: (applied, refused).
    pub(crate) fn reloads(&self) -> (u64, u64) {
        (
            self.reloads_ok.load(Ordering::Relaxed),
            self.reloads_failed.load(Ordering::Relaxed),
        )
    }

    /// Count a replica replaced after it died or failed its health checks.
    pub(crate) fn restarted(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// Replicas replaced so far.
    pub(crate) fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// Count a panic caught in the control plane.
    pub(crate) fn control_panicked(&self) {
        self.control_panics.fetch_add(1, Ordering::Relaxed);
    }

    /// Panics caught in the control plane so far.
    pub(crate) fn control_panics(&self) -> u64 {
        self.control_panics.load(Ordering::Relaxed)
    }

    /// Count `lines` access log lines the writer could not write (a full disk).
    pub(crate) fn access_lost(&self, lines: u64) {
        self.access_lost.fetch_add(lines, Ordering::Relaxed);
    }

    /// Access log lines dropped so far because the writer could not keep up, over all workers
    /// (not those it could not write: [`Metrics::access_lost`]).
    pub(crate) fn access_dropped(&self) -> u64 {
        lock(&self.registry)
            .workers
            .iter()
            .map(|w| w.access_dropped.load(Ordering::Relaxed))
            .sum()
    }

    /// HTTP/2 connections and streams now, over all workers.
    pub(crate) fn http2(&self) -> http2::Http2Totals {
        let mut totals = http2::Http2Totals::default();
        for worker in &lock(&self.registry).workers {
            worker.http2.add_to(&mut totals);
        }
        totals
    }

    /// Sum every worker's and every replica's counters, by hostname.
    pub(crate) fn scrape(&self) -> Scrape {
        // Replicas upgraded here are released after the lock: the last reference to one may be
        // ours, and its drop takes the lock.
        let mut alive: Vec<Arc<ReplicaMetrics>> = Vec::new();
        let mut scrape = Scrape::default();
        {
            let registry = lock(&self.registry);
            for (hostname, totals) in &registry.retired.totals {
                scrape
                    .series
                    .entry(Arc::clone(hostname))
                    .or_default()
                    .merge(totals);
            }
            for (hostname, replica) in registry.live.values() {
                let Some(replica) = replica.upgrade() else {
                    continue; // being dropped: its totals are retired under the same lock
                };
                let totals = replica.totals();
                scrape
                    .series
                    .entry(Arc::clone(hostname))
                    .or_default()
                    .merge(&totals);
                alive.push(replica);
            }
            let mut unrouted = SeriesTotals::default();
            let (mut started, mut finished) = (0u64, 0u64);
            for worker in &registry.workers {
                worker.unrouted.0.add_to(&mut unrouted);
                // Done first: a request counted done was counted begun before.
                finished += worker.finished.load(Ordering::Relaxed);
                started += worker.started.load(Ordering::Relaxed);
                scrape.access_dropped += worker.access_dropped.load(Ordering::Relaxed);
                scrape.send_timeouts += worker.send_timeouts.load(Ordering::Relaxed);
                worker
                    .tls
                    .add_to(&mut scrape.tls_handshakes, &mut scrape.tls_errors);
                worker.http2.add_to(&mut scrape.http2);
            }
            scrape.access_dropped += self.access_lost.load(Ordering::Relaxed);
            if unrouted.count() > 0 || !unrouted.codes.is_empty() {
                scrape.series.entry("".into()).or_default().merge(&unrouted);
            }
            scrape.in_flight = started.saturating_sub(finished);
        }
        drop(alive);
        scrape
    }
}

#[cfg(test)]
mod tests;
