//! What readers see: an immutable [`Snapshot`] of the ring and its replicas, published by the
//! controller through an [`ArcSwap`]. The proxy's hot path only ever `load()`s it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::uri::Authority;
use serde::Serialize;

use crate::config::Source;
use crate::ring::Ring;
use crate::supervisor::Handle;

/// A replica in the ring, with counters the proxy and the health checker update in place.
#[derive(Debug)]
pub struct Backend {
    /// Hostname, as `/home` reports it.
    pub hostname: String,
    /// Server id on the ring.
    pub id: u64,
    /// Where it listens.
    pub addr: SocketAddr,
    /// `addr` as a URI authority, built once.
    pub authority: Authority,
    /// The supervisor's handle.
    pub handle: Handle,
    /// Heartbeats missed in a row.
    pub missed: AtomicU32,
    /// Set once the controller has been told this replica is dead.
    pub reported_dead: AtomicBool,
    /// Requests being proxied to it right now.
    pub in_flight: AtomicUsize,
    /// Requests proxied to it so far.
    pub requests: AtomicU64,
}

impl Backend {
    /// A backend for a freshly started replica.
    pub fn new(hostname: String, id: u64, addr: SocketAddr, handle: Handle) -> Self {
        let authority =
            Authority::try_from(addr.to_string()).expect("a socket address is a valid authority");
        Backend {
            hostname,
            id,
            addr,
            authority,
            handle,
            missed: AtomicU32::new(0),
            reported_dead: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
        }
    }

    /// Count a request as in flight until the guard is dropped.
    pub fn begin_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }
}

/// Keeps a request counted in [`Backend::in_flight`] while alive.
#[derive(Debug)]
pub struct InFlight(Arc<Backend>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Release);
    }
}

/// An id whose replica died and has not been replaced yet.
#[derive(Debug, Clone, Serialize)]
pub struct Vacancy {
    /// The server id the replacement will get.
    pub id: u64,
    /// Hostname of the replica that died.
    pub previous_hostname: String,
    /// Replacement attempts that failed so far.
    pub failed_attempts: u32,
    /// Why the last replica or attempt failed.
    pub reason: String,
}

/// One consistent view of the ring and its replicas.
#[derive(Debug)]
pub struct Snapshot {
    /// The ring; member `k` is `backends[k]`.
    pub ring: Ring,
    /// Replicas in the ring, sorted by server id.
    pub backends: Vec<Arc<Backend>>,
    /// Ids waiting for a replacement replica.
    pub vacancies: Vec<Vacancy>,
}

/// Facts fixed for the life of the process.
#[derive(Debug)]
pub struct Meta {
    /// Where the configuration came from.
    pub config_source: Source,
    /// Address the proxy listens on.
    pub listen: SocketAddr,
    /// The supervisor's kind.
    pub supervisor: &'static str,
    /// When the load balancer started.
    pub started: Instant,
}

/// Everything readers share: the current snapshot and fixed facts.
#[derive(Debug)]
pub struct Shared {
    /// The current snapshot (swapped whole by the controller).
    pub snapshot: ArcSwap<Snapshot>,
    /// Fixed facts.
    pub meta: Meta,
}
