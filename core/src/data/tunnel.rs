//! A WebSocket tunnel: after a replica answered an `Upgrade: websocket` request with `101
//! Switching Protocols` ([`super::proxy`]'s upgrade path), the client's side — its HTTP/1.1
//! connection, or its HTTP/2 stream for an extended `CONNECT` (RFC 8441) — and the replica's
//! connection are joined and bytes copied both ways on a task of their own ([`Tunnel::run`])
//! for the life of the socket. For an HTTP/2 stream, ending the copy ends the stream
//! (END_STREAM, a reset if the client still sends) and nothing else of its connection.
//!
//! - **Bounded:** two fixed 16 KiB buffers ([`BUFFER`]); a side that stops reading stalls the
//!   other side's copy (backpressure through both TCP windows), `lb` never buffers more.
//! - **Idle:** no byte either way for `[proxy] tunnel_idle_timeout_ms` closes it. The client
//!   connection's timeouts (`client_idle_timeout_ms`, `client_send_timeout_ms`) do not apply:
//!   hyper hands the upgraded socket over and the connection's watchdog ends with it.
//! - **Re-homed:** it holds its slot and the slot's owner when it opened. Every published
//!   snapshot wakes it ([`crate::state::tunnels`]); it looks the slot up again and, when its
//!   replica left the ring or the slot's owner changed, closes after `[health]
//!   drain_timeout_ms`, so the client reconnects and lands on the new owner.
//! - **Shutdown:** a graceful SIGTERM closes it at the end of the drain.
//! - **Counted:** open in [`crate::state::tunnels::Tunnels`] (status, metrics) and, like a
//!   request, in flight at its replica ([`InFlight`]) and in progress at its worker until it
//!   closes (an HTTP/2 stream's [`Busy`] too: its connection is not idle meanwhile); then its
//!   observation is dropped: counted as a `101` (a `200` over HTTP/2) and, with the access log
//!   on, one line (bytes both ways, duration).

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Response;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::downstream::Busy;
use super::observe::Observation;
use crate::state::{Backend, InFlight, Shared};

/// Bytes `lb` holds for a tunnel in each direction at most.
pub(crate) const BUFFER: usize = 16 * 1024;
/// How long the two upgrades (hyper's hand-over of both sockets) may take after the `101`.
const UPGRADE_WAIT: Duration = Duration::from_secs(10);
/// How long closing a side may wait for its socket to take the shutdown.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// What the front hands a tunnel: the request's observation and, for an HTTP/2 stream, the
/// stream's [`Busy`] (its connection is not idle while the tunnel is open).
pub(crate) type Handed = (Observation, Option<Busy>);

/// Put on the client's `101` (HTTP/1.1) or `200` (an HTTP/2 extended `CONNECT`) response: the
/// front hands the request's observation over through it ([`hand_over`]), so that the tunnel
/// counts and logs it when it closes.
#[derive(Clone)]
pub(crate) struct Handoff(Arc<Mutex<Option<oneshot::Sender<Handed>>>>);

impl Handoff {
    /// A hand-over and the end the tunnel waits on.
    pub(crate) fn new() -> (Handoff, oneshot::Receiver<Handed>) {
        let (tx, rx) = oneshot::channel();
        (Handoff(Arc::new(Mutex::new(Some(tx)))), rx)
    }
}

/// If `resp` opens a tunnel, give it `observation` (leaving an uncounted one in its place) and
/// `busy` (an HTTP/2 stream's: kept until the tunnel closes); `busy` comes back when `resp`
/// opens none. Called by the front for a `101`, or a `200` to an HTTP/2 `CONNECT`, only.
pub(crate) fn hand_over<B>(
    resp: &mut Response<B>,
    observation: &mut Observation,
    busy: Option<Busy>,
) -> Option<Busy> {
    let Some(Handoff(slot)) = resp.extensions_mut().remove::<Handoff>() else {
        return busy;
    };
    let tx = slot.lock().ok().and_then(|mut s| s.take());
    match tx {
        Some(tx) => {
            let _ = tx.send((observation.detach(), busy));
            None
        }
        None => busy,
    }
}

/// Why a tunnel was closed (logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closed {
    /// Both sides finished (or one failed).
    Ended,
    /// No byte either way for the idle timeout.
    Idle,
    /// Its replica left the ring or lost the slot: the drain time passed.
    Rehomed,
    /// `lb` is shutting down: the drain time passed.
    Shutdown,
}

/// One tunnel, before its sockets are handed over.
pub(crate) struct Tunnel {
    /// The client's side (resolves once the `101` went out).
    pub(crate) client: OnUpgrade,
    /// The replica's side.
    pub(crate) replica: OnUpgrade,
    /// The replica it goes to.
    pub(crate) backend: Arc<Backend>,
    /// Counts it in flight at `backend` while it is open.
    pub(crate) in_flight: InFlight,
    /// The slot its key hashed to.
    pub(crate) slot: u32,
    /// The incarnation owning `slot` when it opened.
    pub(crate) owner: u64,
    /// The snapshots, the registry and its signal.
    pub(crate) shared: Arc<Shared>,
    /// `[proxy] tunnel_idle_timeout_ms`.
    pub(crate) idle: Duration,
    /// The request's observation (and an HTTP/2 stream's [`Busy`]), from the front.
    pub(crate) observation: oneshot::Receiver<Handed>,
}

impl Tunnel {
    /// Copy both ways until both sides end, the tunnel is idle too long, or it is closed by a
    /// ring change or a shutdown (see the module's documentation).
    pub(crate) async fn run(self) {
        let Tunnel {
            client,
            replica,
            backend,
            in_flight,
            slot,
            owner,
            shared,
            idle,
            observation,
        } = self;
        let hostname: Arc<str> = backend.counters().map_or_else(
            || backend.hostname.as_str().into(),
            |c| Arc::clone(c.hostname()),
        );
        let _open = shared.tunnels.open(&hostname);
        let mut signal = shared.tunnels.subscribe();
        let joined = tokio::time::timeout(UPGRADE_WAIT, async {
            tokio::join!(client, replica, observation)
        })
        .await;
        let (client, replica, (mut observation, busy)) = match joined {
            Ok((Ok(client), Ok(replica), Ok(handed))) => (client, replica, handed),
            Ok((client, replica, _)) => {
                let why = client.err().or(replica.err()).map(|e| e.to_string());
                tracing::debug!(replica = %hostname, error = ?why, "tunnel not opened");
                return;
            }
            Err(_) => {
                tracing::debug!(replica = %hostname, "tunnel not opened: the upgrade did not complete");
                return;
            }
        };
        let started = Instant::now();
        let meter = Meter::new(started);
        let mut client = Metered {
            io: TokioIo::new(client),
            meter: &meter,
        };
        let mut replica: TokioIo<Upgraded> = TokioIo::new(replica);
        let closed = {
            let copy =
                tokio::io::copy_bidirectional_with_sizes(&mut client, &mut replica, BUFFER, BUFFER);
            tokio::pin!(copy);
            // When the tunnel is to close (ring change, shutdown), and why.
            let mut closing: Option<(Instant, Closed)> = None;
            let mut shutdown = false;
            // The signal may have changed between the snapshot the request was placed by and
            // now: look once at the start.
            signal.mark_changed();
            loop {
                let idle_at = meter.last() + idle;
                let wake = closing.map_or(idle_at, |(at, _)| at.min(idle_at));
                tokio::select! {
                    result = &mut copy => {
                        if let Err(e) = result {
                            tracing::debug!(replica = %hostname, error = %e, "tunnel ended with an error");
                        }
                        break Closed::Ended;
                    }
                    () = tokio::time::sleep_until(wake) => {
                        let now = Instant::now();
                        match closing {
                            Some((at, why)) if now >= at => break why,
                            _ if now >= meter.last() + idle => break Closed::Idle,
                            _ => {}
                        }
                    }
                    changed = signal.changed(), if !shutdown => {
                        if changed.is_err() {
                            shutdown = true;
                            closing = Some((Instant::now(), Closed::Shutdown));
                            continue;
                        }
                        let now_signal = *signal.borrow_and_update();
                        if now_signal.shutdown {
                            shutdown = true;
                            closing = Some((Instant::now() + now_signal.drain, Closed::Shutdown));
                        } else if moved(&shared, &backend, slot, owner) {
                            if closing.is_none() {
                                tracing::info!(replica = %hostname, slot, drain_ms = now_signal.drain.as_millis() as u64,
                                    "tunnel's replica left the ring or its slot moved: closing after the drain time");
                                closing = Some((Instant::now() + now_signal.drain, Closed::Rehomed));
                            }
                        } else {
                            closing = None;
                        }
                    }
                }
            }
        };
        if closed != Closed::Ended {
            // Tell both ends (a FIN each), bounded: a side that reads nothing must not hold it.
            let _ = tokio::time::timeout(CLOSE_WAIT, async {
                let _ = tokio::join!(client.shutdown(), replica.shutdown());
            })
            .await;
        }
        tracing::debug!(replica = %hostname, ?closed, up = meter.up(), down = meter.down(), "tunnel closed");
        observation.tunnel_closed(meter.up(), meter.down());
        // Dropped in this order: the observation (counted, logged), then the count in flight,
        // the stream in progress on its HTTP/2 connection and the registry's count.
        drop(observation);
        drop(in_flight);
        drop(busy);
    }
}

/// Whether a tunnel to `backend` for `slot` (owned by incarnation `owner` when it opened)
/// should move: `backend` left the ring, or the slot's owner now is another replica than both.
fn moved(shared: &Shared, backend: &Arc<Backend>, slot: u32, owner: u64) -> bool {
    let snapshot = shared.snapshot.load();
    if !snapshot.backends.iter().any(|b| Arc::ptr_eq(b, backend)) {
        return true;
    }
    match snapshot.placement.owner_of_slot(slot) {
        Some(member) => {
            let now = &snapshot.backends[member];
            now.incarnation != owner && !Arc::ptr_eq(now, backend)
        }
        None => true,
    }
}

/// What went through a tunnel, and when its last byte did (milliseconds since it opened).
struct Meter {
    started: Instant,
    up: AtomicU64,
    down: AtomicU64,
    last_ms: AtomicU64,
}

impl Meter {
    fn new(started: Instant) -> Self {
        Meter {
            started,
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    fn up(&self) -> u64 {
        self.up.load(Ordering::Relaxed)
    }

    fn down(&self) -> u64 {
        self.down.load(Ordering::Relaxed)
    }
}

/// The client's side of a tunnel, counting what it reads (up) and writes (down).
struct Metered<'m, T> {
    io: T,
    meter: &'m Meter,
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.meter.up.fetch_add(n as u64, Ordering::Relaxed);
            this.meter.touch();
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Metered<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &poll {
            if *n > 0 {
                this.meter.down.fetch_add(*n as u64, Ordering::Relaxed);
                this.meter.touch();
            }
        }
        poll
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Wait until no tunnel is open, at most `limit` (a worker shutting down: its tunnels close at
/// the end of the drain, [`crate::state::tunnels::Tunnels::shutdown`]).
pub(crate) async fn outlast(shared: &Shared, limit: Duration) {
    let deadline = Instant::now() + limit;
    while shared.tunnels.open_now() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
