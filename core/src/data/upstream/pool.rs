//! One worker's connections to every replica, and which one a request goes to.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Response;
use tokio::sync::{mpsc, oneshot};

use super::body::ProxyBody;
use super::conn::run;
use super::shared::{micros, Conn, Job, Pool};
use super::{
    UpstreamError, CONNECT_TIMEOUT, MAX_BATCH, MAX_CONNECTIONS, MAX_CONNECTIONS_WHEN_HELD,
    QUEUE_BEHIND,
};

/// One worker's connections to every replica.
pub(crate) struct Upstreams {
    pool: Arc<Pool>,
    /// How long connecting to a replica may take.
    connect_timeout: Duration,
    /// A request queues only behind one younger than this (see [`QUEUE_BEHIND`]).
    queue_behind: Duration,
}

impl Default for Upstreams {
    fn default() -> Self {
        Upstreams::with_connect_timeout(CONNECT_TIMEOUT)
    }
}

impl Upstreams {
    /// Connections to no replica yet, connecting within [`CONNECT_TIMEOUT`].
    #[cfg(test)]
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Connections to no replica yet, connecting within `connect_timeout`.
    pub(crate) fn with_connect_timeout(connect_timeout: Duration) -> Self {
        Upstreams {
            pool: Arc::default(),
            connect_timeout,
            queue_behind: QUEUE_BEHIND,
        }
    }

    /// The same, but queueing behind requests younger than `age` instead of [`QUEUE_BEHIND`].
    #[cfg(test)]
    pub(crate) fn queue_behind(self, age: Duration) -> Self {
        Upstreams {
            queue_behind: age,
            ..self
        }
    }

    /// Send a bodiless idempotent request (`head`, from [`request_head`]) to the replica at
    /// `addr` and wait for its response head. Must run on the worker's runtime.
    ///
    /// [`request_head`]: super::request_head
    pub(crate) async fn request(
        &self,
        addr: &str,
        head: Bytes,
        head_only: bool,
    ) -> Result<Response<ProxyBody>, UpstreamError> {
        let mut fresh = false;
        loop {
            let conn = self.pick(addr, fresh);
            let (reply, answer) = oneshot::channel();
            conn.queued.fetch_add(1, Relaxed);
            conn.outstanding.fetch_add(1, Relaxed);
            let job = Job {
                head: head.clone(),
                head_only,
                reply,
            };
            let result = match conn.jobs.send(job) {
                Ok(()) => answer.await.unwrap_or_else(|_| {
                    Err(UpstreamError::NotStarted("the connection ended".into()))
                }),
                Err(_) => {
                    conn.closed.store(true, Relaxed);
                    Err(UpstreamError::NotStarted("the connection ended".into()))
                }
            };
            match result {
                Err(UpstreamError::NotStarted(_)) if !fresh => fresh = true,
                other => return other,
            }
        }
    }

    /// The connection for the next request to `addr` (see the module's documentation);
    /// `fresh` asks for a new one.
    fn pick(&self, addr: &str, fresh: bool) -> Arc<Conn> {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let replica = match pool.get_mut(addr) {
            Some(replica) => replica,
            None => pool.entry(addr.to_owned()).or_default(),
        };
        let conns = &mut replica.conns;
        conns.retain(|c| !c.closed.load(Relaxed));
        if !fresh {
            let usable = |c: &&Arc<Conn>| !c.streaming.load(Relaxed);
            if replica.latency.fast() {
                if let Some(c) = conns
                    .iter()
                    .filter(usable)
                    .find(|c| c.queued.load(Relaxed) > 0 && c.outstanding.load(Relaxed) < MAX_BATCH)
                {
                    return Arc::clone(c);
                }
            }
            if let Some(c) = conns
                .iter()
                .filter(usable)
                .find(|c| c.outstanding.load(Relaxed) == 0)
            {
                return Arc::clone(c);
            }
            if conns.len() >= MAX_CONNECTIONS {
                // Queue behind the youngest request, unless even that one is old (a slow
                // request holds every connection): then open another while allowed.
                let now = micros(Instant::now());
                // 0: its last response just completed.
                let age = |c: &Arc<Conn>| match c.oldest.load(Relaxed) {
                    0 => 0,
                    oldest => now.saturating_sub(oldest),
                };
                let youngest = conns.iter().filter(usable).min_by_key(|c| age(c));
                let limit = u64::try_from(self.queue_behind.as_micros()).unwrap_or(u64::MAX);
                match youngest {
                    Some(c) if age(c) < limit => return Arc::clone(c),
                    _ if conns.len() < MAX_CONNECTIONS_WHEN_HELD => {}
                    youngest => {
                        let least_busy = || {
                            conns.iter().min_by_key(|c| {
                                (c.streaming.load(Relaxed), c.outstanding.load(Relaxed))
                            })
                        };
                        if let Some(c) = youngest.or_else(least_busy) {
                            return Arc::clone(c);
                        }
                    }
                }
            }
        }
        let (jobs, rx) = mpsc::unbounded_channel();
        let conn = Arc::new(Conn {
            jobs,
            queued: AtomicUsize::new(0),
            outstanding: AtomicUsize::new(0),
            streaming: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            oldest: AtomicU64::new(0),
        });
        conns.push(Arc::clone(&conn));
        tokio::spawn(run(
            addr.to_owned(),
            rx,
            Arc::clone(&conn),
            Arc::clone(&replica.latency),
            Arc::downgrade(&self.pool),
            self.connect_timeout,
        ));
        conn
    }

    /// Open connections per replica address.
    #[cfg(test)]
    pub(crate) fn connections(&self) -> std::collections::HashMap<String, usize> {
        let pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        pool.iter()
            .map(|(addr, replica)| {
                let open = replica
                    .conns
                    .iter()
                    .filter(|c| !c.closed.load(Relaxed))
                    .count();
                (addr.clone(), open)
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}
