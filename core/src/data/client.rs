//! Client-side timeouts: how long a client may take to send a request head
//! (`[proxy] client_header_timeout_ms`, answered 408), how long a keep-alive connection may
//! sit idle (`[proxy] client_idle_timeout_ms`, closed without an answer) and how long a client
//! may take none of a response (`[proxy] client_send_timeout_ms`, cut).
//!
//! hyper's own `header_read_timeout` cannot tell the two apart (its clock also runs while a
//! keep-alive connection waits for its next request) and closes without an answer, so `lb` keeps
//! the time itself:
//!
//! - [`ClientStream`] wraps the client's socket and counts the reads that brought bytes and the
//!   writes that took some: two plain stores per operation, no clock.
//! - [`Busy`] marks a request in progress, from the moment its head is read whole until its
//!   response body is done (or dropped); [`Tracked`] carries it in the response body.
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
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::api::{self, ApiError};

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
}

/// Add one to a counter only the connection's own task writes (a load and a store, no locked
/// instruction: this is on every read and write).
#[inline]
fn bump(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

impl Activity {
    /// A request's head has been read whole: it is in progress until the [`Busy`] is dropped.
    pub(crate) fn begin(self: &Arc<Self>) -> Busy {
        self.begun.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
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
    }
}

/// What watches a response body go out: told the size of every piece of it, and whether it
/// failed midway. Dropped with the body, when it is done or the client went away.
pub(crate) trait Watch {
    /// `bytes` of body were handed to the connection.
    fn sent(&mut self, bytes: usize);
    /// The body failed before its end (the replica's response was cut off).
    fn failed(&mut self);
}

impl Watch for () {
    fn sent(&mut self, _: usize) {}
    fn failed(&mut self) {}
}

/// A response body that keeps its request counted as in progress until it is done or dropped,
/// and shows what it sends to a [`Watch`] (dropped at the same moment: the end of the response).
#[derive(Debug)]
pub(crate) struct Tracked<B, W = ()> {
    body: B,
    watch: W,
    _busy: Busy,
}

impl<B, W> Tracked<B, W> {
    /// `body`, holding `busy` until it is dropped, watched by `watch`.
    pub(crate) fn new(body: B, busy: Busy, watch: W) -> Self {
        Tracked {
            body,
            watch,
            _busy: busy,
        }
    }
}

impl<B, W> Body for Tracked<B, W>
where
    B: Body + Unpin,
    B::Data: bytes::Buf,
    W: Watch + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.body).poll_frame(cx);
        match &poll {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.watch.sent(bytes::Buf::remaining(data));
                }
            }
            Poll::Ready(Some(Err(_))) => this.watch.failed(),
            Poll::Ready(None) | Poll::Pending => {}
        }
        poll
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A client's socket that records its reads and writes in an [`Activity`].
#[derive(Debug)]
pub(crate) struct ClientStream {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl ClientStream {
    /// `stream`, counted in `activity`.
    pub(crate) fn new(stream: TcpStream, activity: Arc<Activity>) -> Self {
        ClientStream { stream, activity }
    }

    /// The socket.
    pub(crate) fn into_inner(self) -> TcpStream {
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

impl AsyncRead for ClientStream {
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

impl AsyncWrite for ClientStream {
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
pub(crate) async fn answer_request_timeout(mut stream: TcpStream, header_timeout: Duration) {
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
mod tests {
    use super::*;

    use bytes::Bytes;

    type TestBody = http_body_util::Full<Bytes>;

    const HEAD: Duration = Duration::from_millis(400);
    const IDLE: Duration = Duration::from_millis(2000);
    /// Longer than the others in most tests, so that theirs are the ones seen.
    const SEND: Duration = Duration::from_millis(3000);

    fn watchdog() -> (Arc<Activity>, Watchdog, Instant) {
        watchdog_sending(SEND)
    }

    fn watchdog_sending(send: Duration) -> (Arc<Activity>, Watchdog, Instant) {
        let activity = Arc::new(Activity::default());
        let start = Instant::now();
        let dog = Watchdog::new(Arc::clone(&activity), HEAD, IDLE, send, start);
        (activity, dog, start)
    }

    /// Look every period from `from` (exclusive) to `to` (inclusive); the first verdict that is
    /// not [`Verdict::Fine`], and when.
    fn run(dog: &mut Watchdog, from: Instant, to: Instant) -> Option<(Verdict, Duration)> {
        let mut at = from;
        while at < to {
            at += dog.period();
            match dog.check(at) {
                Verdict::Fine => {}
                v => return Some((v, at - from)),
            }
        }
        None
    }

    #[test]
    fn the_period_is_a_quarter_of_the_shorter_timeout() {
        let (_, dog, _) = watchdog();
        assert_eq!(dog.period(), Duration::from_millis(100));
        let dog = Watchdog::new(
            Arc::default(),
            Duration::from_millis(1),
            Duration::from_millis(1),
            Duration::from_millis(1),
            Instant::now(),
        );
        assert_eq!(dog.period(), Duration::from_millis(1));
        let (_, dog, _) = watchdog_sending(Duration::from_millis(200));
        assert_eq!(
            dog.period(),
            Duration::from_millis(50),
            "the send timeout counts"
        );
    }

    #[test]
    fn a_new_connection_that_says_nothing_is_closed_after_the_header_timeout() {
        let (_, mut dog, start) = watchdog();
        let (verdict, after) = run(&mut dog, start, start + IDLE).unwrap();
        assert_eq!(verdict, Verdict::Close);
        assert_eq!(after, HEAD);
    }

    #[test]
    fn a_head_that_never_ends_is_answered_408() {
        let (activity, mut dog, start) = watchdog();
        bump(&activity.reads);
        let (verdict, after) = run(&mut dog, start, start + IDLE).unwrap();
        assert_eq!(verdict, Verdict::RequestTimeout);
        assert_eq!(after, HEAD, "counted from the accept");
    }

    #[test]
    fn a_head_trickled_byte_by_byte_is_answered_408() {
        let (activity, mut dog, start) = watchdog();
        let mut at = start;
        let verdict = loop {
            bump(&activity.reads);
            at += dog.period();
            match dog.check(at) {
                Verdict::Fine => assert!(at - start < IDLE, "never cut"),
                v => break v,
            }
        };
        assert_eq!(verdict, Verdict::RequestTimeout);
        assert_eq!(at - start, HEAD);
    }

    #[test]
    fn an_idle_keep_alive_connection_lasts_the_idle_timeout_not_the_header_timeout() {
        let (activity, mut dog, start) = watchdog();
        bump(&activity.reads);
        let busy = activity.begin();
        assert_eq!(dog.check(start + dog.period()), Verdict::Fine);
        bump(&activity.writes);
        drop(busy);
        let done = start + dog.period() * 2;
        assert_eq!(dog.check(done), Verdict::Fine);
        let (verdict, after) = run(&mut dog, done, done + IDLE * 2).unwrap();
        assert_eq!(verdict, Verdict::Close);
        assert_eq!(after, IDLE);
    }

    #[test]
    fn a_request_that_came_and_went_between_looks_restarts_the_clock() {
        let (activity, mut dog, start) = watchdog();
        let almost = start + HEAD - dog.period();
        assert_eq!(dog.check(almost), Verdict::Fine);
        bump(&activity.reads);
        drop(activity.begin());
        let (verdict, after) = run(&mut dog, almost, almost + IDLE * 2).unwrap();
        assert_eq!(verdict, Verdict::Close);
        assert_eq!(after, IDLE + dog.period());
    }

    #[test]
    fn the_next_head_after_an_idle_spell_gets_the_header_timeout() {
        let (activity, mut dog, start) = watchdog();
        bump(&activity.reads);
        drop(activity.begin());
        let mut at = start + dog.period();
        assert_eq!(dog.check(at), Verdict::Fine);
        at += IDLE / 2;
        assert_eq!(dog.check(at), Verdict::Fine);
        bump(&activity.reads);
        let (verdict, after) = run(&mut dog, at, at + IDLE).unwrap();
        assert_eq!(verdict, Verdict::RequestTimeout);
        assert_eq!(after, HEAD + dog.period());
    }

    #[test]
    fn a_request_in_progress_is_never_cut() {
        let (activity, mut dog, start) = watchdog();
        bump(&activity.reads);
        let busy = activity.begin();
        assert_eq!(run(&mut dog, start, start + IDLE * 3), None);
        drop(busy);
    }

    #[test]
    fn a_response_the_client_takes_slowly_is_not_cut() {
        let (activity, mut dog, start) = watchdog();
        bump(&activity.reads);
        drop(activity.begin());
        let mut at = start;
        while at < start + IDLE * 3 {
            bump(&activity.writes);
            at += dog.period();
            assert_eq!(dog.check(at), Verdict::Fine);
        }
        // Once the client stops taking it: closed, without an answer on top of the output
        // hyper still holds.
        activity.write_blocked.store(true, Ordering::Relaxed);
        let (verdict, _) = run(&mut dog, at, at + IDLE * 2).unwrap();
        assert_eq!(verdict, Verdict::Close);
    }

    #[test]
    fn a_response_the_client_stops_taking_is_cut_after_the_send_timeout() {
        let send = Duration::from_millis(800);
        let (activity, mut dog, start) = watchdog_sending(send);
        bump(&activity.reads);
        let busy = activity.begin();
        // The replica takes its time: nothing waits for the client, nothing is cut.
        let mut at = start;
        while at < start + send * 3 {
            at += dog.period();
            assert_eq!(dog.check(at), Verdict::Fine);
        }
        // The response streams, then the client stops reading.
        bump(&activity.writes);
        activity.write_blocked.store(true, Ordering::Relaxed);
        at += dog.period();
        assert_eq!(dog.check(at), Verdict::Fine);
        let (verdict, after) = run(&mut dog, at, at + IDLE * 2).unwrap();
        assert_eq!(verdict, Verdict::SendTimeout);
        assert_eq!(after, send);
        drop(busy);
    }

    #[test]
    fn a_client_reading_slowly_but_steadily_is_never_cut() {
        let send = Duration::from_millis(800);
        let (activity, mut dog, start) = watchdog_sending(send);
        bump(&activity.reads);
        let busy = activity.begin();
        let mut at = start;
        let mut looks = 0;
        while at < start + send * 10 {
            // The socket is full between looks, and takes a little every now and then (less
            // often than the watchdog looks).
            activity.write_blocked.store(true, Ordering::Relaxed);
            if looks % 3 == 0 {
                bump(&activity.writes);
            }
            looks += 1;
            at += dog.period();
            assert_eq!(dog.check(at), Verdict::Fine, "cut after {:?}", at - start);
        }
        drop(busy);
        // Its response done but still held by hyper for it: the same rule.
        let (verdict, after) = run(&mut dog, at, at + IDLE * 2).unwrap();
        assert_eq!(verdict, Verdict::SendTimeout);
        assert!(after <= send + dog.period(), "{after:?}");
    }

    #[test]
    fn a_stalled_head_behind_unsent_output_is_closed_without_an_answer() {
        let (activity, mut dog, start) = watchdog();
        bump(&activity.reads);
        activity.write_blocked.store(true, Ordering::Relaxed);
        let (verdict, _) = run(&mut dog, start, start + IDLE).unwrap();
        assert_eq!(verdict, Verdict::Close);
    }

    #[test]
    fn tracked_bodies_keep_their_request_in_progress() {
        let activity = Arc::new(Activity::default());
        let body = Tracked::new(
            TestBody::new(Bytes::from_static(b"abc")),
            activity.begin(),
            (),
        );
        assert_eq!(body.size_hint().exact(), Some(3));
        assert_eq!(activity.open.load(Ordering::Relaxed), 1);
        bump(&activity.reads);
        drop(body);
        assert_eq!(activity.open.load(Ordering::Relaxed), 0);
        assert_eq!(activity.reads_at_rest.load(Ordering::Relaxed), 1);
    }

    #[derive(Debug, Default)]
    struct Seen {
        bytes: usize,
        failed: bool,
    }

    impl Watch for &mut Seen {
        fn sent(&mut self, bytes: usize) {
            self.bytes += bytes;
        }
        fn failed(&mut self) {
            self.failed = true;
        }
    }

    #[tokio::test]
    async fn tracked_bodies_show_what_they_send() {
        use http_body_util::BodyExt;
        let activity = Arc::new(Activity::default());
        let mut seen = Seen::default();
        let body = Tracked::new(
            TestBody::new(Bytes::from_static(b"hello")),
            activity.begin(),
            &mut seen,
        );
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"hello");
        assert_eq!(seen.bytes, 5);
        assert!(!seen.failed);

        let failing = http_body_util::StreamBody::new(futures_util::stream::iter([
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Err(std::io::Error::other("cut off")),
        ]));
        let mut seen = Seen::default();
        let body = Tracked::new(failing, activity.begin(), &mut seen);
        assert!(body.collect().await.is_err());
        assert_eq!(seen.bytes, 2);
        assert!(seen.failed);
    }

    #[test]
    fn the_408_is_whole_and_closes() {
        let answer = String::from_utf8(request_timeout_answer(HEAD)).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nconnection: close"), "{head}");
        assert!(
            head.contains("\r\ncontent-type: application/json"),
            "{head}"
        );
        assert!(
            head.contains(&format!("\r\ncontent-length: {}", body.len())),
            "{head}"
        );
        assert_eq!(
            body,
            r#"{"message": "<Error> the request head did not arrive whole within 400 ms", "status": "failure"}"#
        );
    }
}
