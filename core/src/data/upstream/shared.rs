//! What a worker's pool and its connection tasks share: the jobs handed to a connection, the
//! pool's view of each connection and replica, and the replica's latency average. Both
//! `pool` and `conn` use this module; neither imports the other's internals in both directions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use tokio::sync::{mpsc, oneshot};

use super::body::ProxyBody;
use super::{UpstreamError, BATCH_WHILE_FASTER_THAN};

/// Where a request's response goes.
pub(crate) type Reply = oneshot::Sender<Result<Response<ProxyBody>, UpstreamError>>;

/// A request handed to a connection task.
pub(crate) struct Job {
    /// The serialized request head (no body follows).
    pub(crate) head: Bytes,
    /// A `HEAD` request: the response has no body whatever its headers say.
    pub(crate) head_only: bool,
    /// Where the response goes.
    pub(crate) reply: Reply,
}

/// What the pool knows about a connection, updated by its task.
pub(crate) struct Conn {
    pub(crate) jobs: mpsc::UnboundedSender<Job>,
    /// Jobs sent to the task and not yet written.
    pub(crate) queued: AtomicUsize,
    /// Jobs sent to the task whose response is not complete.
    pub(crate) outstanding: AtomicUsize,
    /// A body is being streamed (possibly to a slow client): do not queue behind it.
    pub(crate) streaming: AtomicBool,
    /// No new jobs: the task ended or will after the current response.
    pub(crate) closed: AtomicBool,
    /// When the oldest request whose response is not complete was queued ([`micros`]); 0 when
    /// none is.
    pub(crate) oldest: AtomicU64,
}

/// `at` in microseconds since the first call (≥ 1), for ages kept in atomics.
pub(crate) fn micros(at: Instant) -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(|| at);
    u64::try_from(at.saturating_duration_since(epoch).as_micros()).unwrap_or(u64::MAX) + 1
}

/// A worker's view of one replica: its connections and how fast it answers.
#[derive(Default)]
pub(crate) struct Replica {
    pub(crate) conns: Vec<Arc<Conn>>,
    pub(crate) latency: Arc<Latency>,
}

/// Moving average (1/8 weight per sample) of a replica's time to response head, in µs.
#[derive(Default)]
pub(crate) struct Latency(AtomicU64);

impl Latency {
    pub(crate) fn record(&self, sample: Duration) {
        let sample = u64::try_from(sample.as_micros()).unwrap_or(u64::MAX).max(1);
        let old = self.0.load(Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        self.0.store(new, Relaxed);
    }

    /// Fast enough to batch (no sample yet counts as fast).
    pub(crate) fn fast(&self) -> bool {
        self.0.load(Relaxed) < BATCH_WHILE_FASTER_THAN.as_micros() as u64
    }
}

/// Every replica's connections, by address.
pub(crate) type Pool = Mutex<HashMap<String, Replica>>;
