//! The downstream connection (a client's connection to `lb`) and its timeouts: how long a
//! client may take to send a request head (`[proxy] client_header_timeout_ms`, answered 408),
//! how long a keep-alive connection may sit idle (`[proxy] client_idle_timeout_ms`, closed
//! without an answer) and how long a client may take none of a response
//! (`[proxy] client_send_timeout_ms`, cut).
//!
//! hyper's own `header_read_timeout` cannot tell the two apart (its clock also runs while a
//! keep-alive connection waits for its next request) and closes without an answer, so `lb` keeps
//! the time itself:
//!
//! - [`ClientStream`] wraps the client's socket and counts the reads that brought bytes and the
//!   writes that took some: two plain stores per operation, no clock.
//! - [`Busy`] marks a request in progress, from the moment its head is read whole until its
//!   response body is done (or dropped); the response body ([`super::body::ProxyBody`]) carries it.
//! - [`Watchdog`] looks at those counters every quarter of the shorter timeout and says when a
//!   connection is past one of them.
//!
//! The rules, like nginx's `client_header_timeout` and `keepalive_timeout`:
//!
//! - A request head must be complete within the header timeout of its first byte; on a new
//!   connection the clock starts at the accept, so a client that connects and says nothing is
//!   closed after the header timeout — without an answer, since it asked nothing (a 408 there
//!   could be read as the answer to a request that crossed it on the wire). A head that began is
//!   answered `408 Request Timeout` (`Connection: close`) and the connection closed.
//! - Between requests, a connection on which nothing is received or sent for the idle timeout is
//!   closed without an answer. A response still being written to a client that reads it is
//!   activity, and so is one still being produced (a request in progress is never cut here).
//! - Bytes written to the client also restart the header clock: a client reading a long response
//!   while it sends its next request is not cut.
//! - While output waits for a client whose socket takes none of it (the last write found no
//!   room), the send timeout runs, in any phase — a response in progress too: past it the
//!   connection is cut, like nginx's `send_timeout`. Each write the socket takes restarts it, so
//!   a client that reads slowly but steadily is never cut; one that stopped reading cannot hold
//!   its connection (and the replica's) forever.
//!
//! Times are measured at the watchdog's looks, so a timeout fires between its length and a
//! quarter (of the shorter timeout) more. One imprecision is accepted: the bytes of the next
//! request that arrive together with the one before it (a pipelining client that stops halfway
//! through its second head) are counted with the first, so that stalled head gets the idle
//! timeout and a silent close instead of the header timeout and a 408.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderValue};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::api::{self, ApiError};
use crate::metrics::WorkerMetrics;

/// How long closing after a 408 may take: writing the answer, then reading (and dropping) what
/// the client still sends until it closes too, so that its unread bytes do not make the kernel
/// reset the connection before the client has read the answer.
const LINGER_TIME: Duration = Duration::from_secs(2);
/// Most bytes read and dropped while lingering.
const LINGER_BYTES: usize = 64 * 1024;

/// What one connection has done, as counters that only its own task changes.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    /// Reads that brought bytes.
    reads: AtomicU64,
    /// Writes that took bytes.
    writes: AtomicU64,
    /// Whether the last write found no room: hyper still holds output the client has not taken.
    write_blocked: AtomicBool,
    /// Requests begun (head read whole).
    begun: AtomicU64,
    /// Requests begun whose response is not done.
    open: AtomicU64,
    /// `reads` when the last request was done: more since means the next head has begun.
    reads_at_rest: AtomicU64,
    /// On an HTTP/2 connection: the worker's counters, where its streams are counted.
    http2: Option<Arc<WorkerMetrics>>,
}

/// Add one to a counter only the connection's own task writes (a load and a store, no locked
/// instruction: this is on every read and write).
#[inline]
fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

impl Activity {
    /// The activity of an HTTP/2 connection, whose streams are counted in `metrics`.
    pub(crate) fn http2(metrics: Arc<WorkerMetrics>) -> Self {
        Activity {
            http2: Some(metrics),
            ..Activity::default()
        }
    }

    /// A request's head has been read whole: it is in progress until the [`Busy`] is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> Busy {
        self.begun.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
        if let Some(metrics) = &self.http2 {
            metrics.http2().stream_begun();
        }
        Busy(Arc::clone(self))
    }
}

/// A request in progress on a connection (see [`Activity::begin`]).
#[derive(Debug)]
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.0;
        activity
            .reads_at_rest
            .store(activity.reads.load(Ordering::Relaxed), Ordering::Relaxed);
        activity.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(metrics) = &activity.http2 {
            metrics.http2().stream_done();
        }
    }
}

/// What a client connection runs over: the TCP socket itself, or a TLS stream over one
/// (`super::tls`). Generic, so the plain path is compiled for the socket alone.
pub(crate) trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The TCP socket underneath (for socket options: no delay, linger).
    fn tcp(&self) -> &TcpStream;
}

impl ClientIo for TcpStream {
    #[inline]
    fn tcp(&self) -> &TcpStream {
        self
    }
}

/// A client's socket (or TLS stream) that records its reads and writes in an [`Activity`].
#[derive(Debug)]
pub(crate) struct ClientStream<S = TcpStream> {
    stream: S,
    activity: Arc<Activity>,
}

impl<S: ClientIo> ClientStream<S> {
    /// `stream`, counted in `activity`.
    pub(crate) fn new(stream: S, activity: Arc<Activity>) -> Self {
        ClientStream { stream, activity }
    }

    /// The stream.
    pub(crate) fn into_inner(self) -> S {
        self.stream
    }

    #[inline]
    fn wrote(&self, poll: &Poll<io::Result<usize>>) {
        match poll {
            Poll::Ready(Ok(n)) if *n > 0 => {
                bump(&self.activity.writes);
                self.activity.write_blocked.store(false, Ordering::Relaxed);
            }
            Poll::Pending => self.activity.write_blocked.store(true, Ordering::Relaxed),
            Poll::Ready(_) => {}
        }
    }
}

impl<S: ClientIo> AsyncRead for ClientStream<S> {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            bump(&this.activity.reads);
        }
        poll
    }
}

impl<S: ClientIo> AsyncWrite for ClientStream<S> {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.wrote(&poll);
        poll
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.wrote(&poll);
        poll
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    #[inline]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// What a connection is doing, as the watchdog last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request head: the header timeout runs.
    Head,
    /// Between requests, nothing received: the idle timeout runs.
    Idle,
    /// A request in progress: no timeout runs.
    Busy,
}

/// What the watchdog found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing to do: look again after [`Watchdog::period`].
    Fine,
    /// A request head began and did not end within the header timeout: answer 408 and close.
    RequestTimeout,
    /// Past a timeout with nothing to answer (idle, or a new connection that sent nothing, or
    /// hyper still holds output for a client that does not read): close.
    Close,
    /// The client's socket took none of the output waiting for it within the send timeout:
    /// cut the connection (and with it the response in progress).
    SendTimeout,
}

/// Decides, from a connection's [`Activity`], when it is past the header or the idle timeout.
#[derive(Debug)]
pub(crate) struct Watchdog {
    activity: Arc<Activity>,
    header_timeout: Duration,
    idle_timeout: Duration,
    send_timeout: Duration,
    phase: Phase,
    /// When the current phase's clock started.
    since: Instant,
    /// When the client last took output, or was last seen with none waiting for it.
    sending: Instant,
    /// `begun`, `reads` and `writes` at the last look.
    begun: u64,
    reads: u64,
    writes: u64,
}

impl Watchdog {
    /// A watchdog for a connection accepted at `accepted`: its first request head is due within
    /// `header_timeout` of it.
    pub(crate) fn new(
        activity: Arc<Activity>,
        header_timeout: Duration,
        idle_timeout: Duration,
        send_timeout: Duration,
        accepted: Instant,
    ) -> Self {
        Watchdog {
            activity,
            header_timeout,
            idle_timeout,
            send_timeout,
            phase: Phase::Head,
            since: accepted,
            sending: accepted,
            begun: 0,
            reads: 0,
            writes: 0,
        }
    }

    /// How often to [`check`](Self::check): a quarter of the shortest timeout (at least 1 ms).
    pub(crate) fn period(&self) -> Duration {
        let shortest = self
            .header_timeout
            .min(self.idle_timeout)
            .min(self.send_timeout);
        (shortest / 4).max(Duration::from_millis(1))
    }

    /// Look at the connection at `now`.
    pub(crate) fn check(&mut self, now: Instant) -> Verdict {
        let a = &*self.activity;
        let begun = a.begun.load(Ordering::Relaxed);
        let reads = a.reads.load(Ordering::Relaxed);
        let writes = a.writes.load(Ordering::Relaxed);
        let received = reads != self.reads;
        let sent = writes != self.writes;
        self.reads = reads;
        self.writes = writes;
        // Whatever the phase: output waiting for a client that takes none of it.
        if sent || !a.write_blocked.load(Ordering::Relaxed) {
            self.sending = now;
        } else if now.saturating_duration_since(self.sending) >= self.send_timeout {
            return Verdict::SendTimeout;
        }
        if a.open.load(Ordering::Relaxed) > 0 {
            self.begun = begun;
            self.phase = Phase::Busy;
            self.since = now;
            return Verdict::Fine;
        }
        // Bytes since the last request was done (on a new connection: any bytes).
        let head_begun = reads != a.reads_at_rest.load(Ordering::Relaxed);
        if begun != self.begun || self.phase == Phase::Busy {
            // A request was done since the last look: a clock starts now.
            self.begun = begun;
            self.phase = if head_begun { Phase::Head } else { Phase::Idle };
            self.since = now;
            return Verdict::Fine;
        }
        if sent {
            // The client takes the response: that is progress, whatever the phase.
            self.since = now;
        }
        let waited = now.saturating_duration_since(self.since);
        match self.phase {
            Phase::Idle if received => {
                self.phase = Phase::Head;
                self.since = now;
                Verdict::Fine
            }
            Phase::Idle if waited >= self.idle_timeout => Verdict::Close,
            Phase::Head if waited >= self.header_timeout => {
                if head_begun && !a.write_blocked.load(Ordering::Relaxed) {
                    Verdict::RequestTimeout
                } else {
                    Verdict::Close
                }
            }
            Phase::Idle | Phase::Head | Phase::Busy => Verdict::Fine,
        }
    }
}

impl Watchdog {
    /// Look at an HTTP/2 connection at `now`. Its frames (window updates, pings, a stream's
    /// head in several frames) are not requests, so only streams count: while one is open no
    /// timeout runs (but the send timeout); a connection with none open and none begun for the
    /// idle timeout is closed (with a GOAWAY). A new connection gets the idle timeout from the
    /// accept: its preface was read within the header timeout, and a stream's head that never
    /// ends is bounded in size by `h2_max_header_list_size`.
    pub(crate) fn check_http2(&mut self, now: Instant) -> Verdict {
        let a = &*self.activity;
        let writes = a.writes.load(Ordering::Relaxed);
        let sent = writes != self.writes;
        self.writes = writes;
        if sent || !a.write_blocked.load(Ordering::Relaxed) {
            self.sending = now;
        } else if now.saturating_duration_since(self.sending) >= self.send_timeout {
            return Verdict::SendTimeout;
        }
        let begun = a.begun.load(Ordering::Relaxed);
        if a.open.load(Ordering::Relaxed) > 0 || begun != self.begun {
            self.begun = begun;
            self.since = now;
            return Verdict::Fine;
        }
        if now.saturating_duration_since(self.since) >= self.idle_timeout {
            Verdict::Close
        } else {
            Verdict::Fine
        }
    }
}

/// The whole 408 answer: status line, headers and the JSON body, `Connection: close`.
fn request_timeout_answer(header_timeout: Duration) -> Vec<u8> {
    let limit = u64::try_from(header_timeout.as_millis()).unwrap_or(u64::MAX);
    let resp = api::error_response(&ApiError::RequestTimeout(limit));
    let status = resp.status();
    let body = resp.body();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    let mut headers = resp.headers().clone();
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    for (name, value) in &headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Answer 408 on `stream` (a client that did not send its request head within
/// `header_timeout`) and close it: the answer, then our end of the connection, then whatever the
/// client still sends is read and dropped until it closes its end (at most [`LINGER_TIME`] and
/// [`LINGER_BYTES`] in all).
pub(crate) async fn answer_request_timeout<S: ClientIo>(mut stream: S, header_timeout: Duration) {
    let answer = request_timeout_answer(header_timeout);
    let _ = tokio::time::timeout(LINGER_TIME, async {
        stream.write_all(&answer).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match stream.read(&mut sink).await? {
                0 => break,
                n => left = left.saturating_sub(n),
            }
        }
        Ok::<_, io::Error>(())
    })
    .await;
}

#[cfg(test)]
mod tests;
