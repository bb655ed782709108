//! HTTP/2 from clients: which protocol a plain connection speaks ([`sniff`]: the HTTP/2
//! preface, else HTTP/1.1, its first bytes replayed to hyper by [`Replayed`]), the HTTP/2
//! server's settings ([`builder`]: the `[proxy] h2_*` limits and the defences against hostile
//! clients) and the life of one HTTP/2 connection ([`serve`]: its timeouts, drain, GOAWAY and
//! counters). Over TLS, ALPN chooses (`super::tls`).
//!
//! Each stream is one request handed to the same service as an HTTP/1.1 request (the front's),
//! after [`crate::data::hop::from_h2`] made it an HTTP/1.1 one (`Host` from `:authority`, the
//! cookies in one field, the target in origin form): hashed, retried, timed, counted and
//! logged the same way.
//!
//! Hostile clients (each bounded per connection, so one client cannot hurt the others): a
//! client that resets streams as fast as it opens them (rapid reset, CVE-2023-44487) is sent
//! GOAWAY past [`MAX_PENDING_ACCEPT_RESETS`] streams reset before `lb` took them and past
//! [`MAX_LOCAL_ERROR_RESETS`] streams `lb` had to reset; a CONTINUATION flood ends when the
//! header list passes `h2_max_header_list_size` (h2 also counts the frames); at most
//! `h2_max_concurrent_streams` streams are open, and each holds at most [`MAX_SEND_BUFFER`]
//! bytes of response waiting for the client's flow-control window.
//!
//! WebSockets over HTTP/2 (RFC 8441): [`builder`] sends `SETTINGS_ENABLE_CONNECT_PROTOCOL`, so
//! a client may open a WebSocket on a stream with an extended `CONNECT` (`:protocol =
//! websocket`). It reaches the front's service like any request and goes to the proxy's tunnel
//! (`Proxy::extended_connect`); on its `200` hyper hands the stream over as an upgraded socket,
//! and the tunnel keeps the stream in progress (the connection is not idle) until it closes.
//! Closing the tunnel ends the stream (END_STREAM, or a reset if the client still sends);
//! the connection's other streams go on.

use std::error::Error as StdError;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::rt::bounds::Http2ServerConnExec;
use hyper::server::conn::http2;
use hyper::service::HttpService;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::downstream::{ClientIo, ClientStream, Verdict, Watchdog};
use crate::config::ProxySection;
use crate::metrics::WorkerMetrics;

/// The client connection preface of HTTP/2 (RFC 9113 §3.4): what an `h2c` client with prior
/// knowledge sends first.
pub(crate) const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Bytes of a plain connection read before hyper sees it: the first read takes what a client
/// sent (one request head, usually), so HTTP/1.1 costs no extra read. A head longer than this
/// is read on by hyper.
const PREFIX: usize = 1024;

/// Streams a client may reset before `lb` took them, at once, before it is sent GOAWAY
/// (`ENHANCE_YOUR_CALM`): the rapid reset defence (h2's default, set deliberately).
pub(crate) const MAX_PENDING_ACCEPT_RESETS: usize = 20;
/// Streams `lb` may reset for a client's errors on one connection before it is sent GOAWAY.
pub(crate) const MAX_LOCAL_ERROR_RESETS: usize = 256;
/// Response bytes one stream buffers while the client's flow-control window is closed.
pub(crate) const MAX_SEND_BUFFER: usize = 256 * 1024;
/// How long a PING may wait for its answer before the connection is closed.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a connection sent GOAWAY for being idle may take to end.
const GOAWAY_LINGER: Duration = Duration::from_secs(2);

/// A plain client socket whose first bytes were read to see which protocol it speaks, and are
/// given back first.
#[derive(Debug)]
pub(crate) struct Replayed<S = TcpStream> {
    stream: S,
    prefix: [u8; PREFIX],
    /// Given back so far, of `len`.
    at: u16,
    len: u16,
}

impl<S: ClientIo> ClientIo for Replayed<S> {
    #[inline]
    fn tcp(&self) -> &TcpStream {
        self.stream.tcp()
    }
}

impl<S: ClientIo> AsyncRead for Replayed<S> {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.len {
            let left = &this.prefix[usize::from(this.at)..usize::from(this.len)];
            let n = left.len().min(buf.remaining());
            buf.put_slice(&left[..n]);
            // At most PREFIX, which fits.
            this.at += n as u16;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl<S: ClientIo> AsyncWrite for Replayed<S> {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
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

/// The protocol a plain connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// HTTP/1.x (anything that is not the HTTP/2 preface).
    Http1,
    /// HTTP/2 with prior knowledge (`h2c`): it began with [`PREFACE`].
    Http2,
}

/// Which protocol `bytes`, the first a client sent, are: `None` while they are a proper
/// beginning of the preface (more are needed to tell).
pub(crate) fn protocol_of(bytes: &[u8]) -> Option<Protocol> {
    let n = bytes.len().min(PREFACE.len());
    if bytes[..n] != PREFACE[..n] {
        Some(Protocol::Http1)
    } else if n == PREFACE.len() {
        Some(Protocol::Http2)
    } else {
        None
    }
}

/// Read the first bytes of a plain connection (until they tell [`Protocol`]s apart: one read,
/// unless a client sends a beginning of the preface and waits) and give the socket back with
/// them to be replayed. `None` when the client sent nothing before `deadline` (the header
/// timeout from the accept; closed without an answer, as it asked nothing), closed first, or
/// `lb` is stopping.
pub(crate) async fn sniff(
    stream: TcpStream,
    deadline: Instant,
    stop: &mut watch::Receiver<Option<Duration>>,
) -> Option<(Protocol, Replayed)> {
    let mut replayed = Replayed {
        stream,
        prefix: [0; PREFIX],
        at: 0,
        len: 0,
    };
    let read = async {
        loop {
            let len = usize::from(replayed.len);
            let n = replayed
                .stream
                .read(&mut replayed.prefix[len..])
                .await
                .ok()?;
            if n == 0 {
                // Closed (or half-closed after a whole HTTP/1.0 request: hyper answers it).
                return (len > 0).then_some(Protocol::Http1);
            }
            // At most PREFIX.
            replayed.len += n as u16;
            if let Some(protocol) = protocol_of(&replayed.prefix[..usize::from(replayed.len)]) {
                return Some(protocol);
            }
        }
    };
    let protocol = tokio::select! {
        read = tokio::time::timeout_at(deadline, read) => read.ok().flatten()?,
        _ = stop.wait_for(Option::is_some) => return None,
    };
    Some((protocol, replayed))
}

/// The HTTP/2 server's settings from `[proxy]`, with the defences against hostile clients set
/// deliberately (see the module's documentation).
pub(crate) fn builder(settings: &ProxySection) -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.h2_max_concurrent_streams)
        .max_header_list_size(settings.h2_max_header_list_size)
        .initial_stream_window_size(settings.h2_initial_stream_window)
        .initial_connection_window_size(settings.h2_initial_connection_window)
        .max_pending_accept_reset_streams(MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(MAX_LOCAL_ERROR_RESETS)
        .max_send_buf_size(MAX_SEND_BUFFER)
        .enable_connect_protocol();
    if settings.h2_keepalive_interval_ms > 0 {
        builder
            .keep_alive_interval(Duration::from_millis(settings.h2_keepalive_interval_ms))
            .keep_alive_timeout(KEEPALIVE_TIMEOUT);
    }
    builder
}

/// What ends an HTTP/2 connection gracefully: a GOAWAY, then the streams in progress finish.
pub(crate) struct Ending {
    /// The workers' stop: `Some(drain time)` once they drain.
    pub(crate) stop: watch::Receiver<Option<Duration>>,
    /// Newer settings replaced the connection's app ([`super::front::App::retire`]).
    pub(crate) retired: watch::Receiver<bool>,
}

/// Serve one HTTP/2 connection over `io` with `service` until it ends: on a stop or once
/// retired (`ending`), GOAWAY and let the streams in progress finish; when the `watchdog` finds it idle (no
/// stream for `client_idle_timeout_ms`), GOAWAY and close; past the send timeout, cut. Counted
/// in `metrics` (open, and whether it ended by a protocol error).
pub(crate) async fn serve<C, S, B>(
    io: TokioIo<ClientStream<C>>,
    service: S,
    builder: &http2::Builder<TokioExecutor>,
    mut watchdog: Watchdog,
    ending: Ending,
    metrics: &WorkerMetrics,
    remote: SocketAddr,
) where
    C: ClientIo,
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
    TokioExecutor: Http2ServerConnExec<S::Future, B>,
{
    let Ending {
        mut stop,
        mut retired,
    } = ending;
    let counters = metrics.http2();
    counters.opened();
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let tick = tokio::time::sleep(watchdog.period());
    tokio::pin!(tick);
    let mut stopping = false;
    // When a GOAWAY was sent for being idle: the connection must end by then.
    let mut closing: Option<Instant> = None;
    let error = loop {
        tokio::select! {
            biased;
            ended = conn.as_mut() => break ended.err(),
            () = &mut tick => {
                let now = Instant::now();
                if closing.is_some_and(|by| now >= by) {
                    break None;
                }
                match watchdog.check_http2(now) {
                    Verdict::Fine => tick.as_mut().reset(now + watchdog.period()),
                    Verdict::SendTimeout => {
                        metrics.send_timeout();
                        tracing::debug!(client = %remote, "HTTP/2 client took nothing for the send timeout: cut");
                        break None;
                    }
                    Verdict::Close | Verdict::RequestTimeout => {
                        conn.as_mut().graceful_shutdown();
                        let by = now + GOAWAY_LINGER;
                        closing = Some(by);
                        tick.as_mut().reset(by);
                    }
                }
            }
            _ = stop.wait_for(Option::is_some), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = retired.wait_for(|retired| *retired), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    };
    let protocol_error = error.as_ref().is_some_and(is_protocol_error);
    if let Some(e) = &error {
        tracing::debug!(client = %remote, error = %e, "HTTP/2 connection ended");
    }
    counters.closed(protocol_error);
}

/// Whether hyper's `error` is an HTTP/2 protocol error (a GOAWAY or a reset with an error
/// code, sent or received), not an I/O error or a plain close.
fn is_protocol_error(error: &hyper::Error) -> bool {
    let mut source: Option<&(dyn StdError + 'static)> = error.source();
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<::h2::Error>() {
            return !h2.is_io() && h2.reason().is_some_and(|r| r != ::h2::Reason::NO_ERROR);
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preface_is_told_from_http1_as_soon_as_a_byte_differs() {
        assert_eq!(protocol_of(PREFACE), Some(Protocol::Http2));
        let mut more = PREFACE.to_vec();
        more.extend_from_slice(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00");
        assert_eq!(protocol_of(&more), Some(Protocol::Http2));
        // A beginning of the preface: wait for more.
        assert_eq!(protocol_of(b"P"), None);
        assert_eq!(protocol_of(b"PRI * HTTP/2.0\r\n"), None);
        // Methods that start like it are HTTP/1.1 from their second byte.
        for line in [
            &b"POST / HTTP/1.1\r\n"[..],
            b"PUT /",
            b"PATCH",
            b"PRI / HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(protocol_of(line), Some(Protocol::Http1), "{line:?}");
        }
    }

    #[tokio::test]
    async fn what_was_read_to_tell_is_given_back_first() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            // A method that begins like the preface, sent a byte at a time at first.
            c.write_all(b"P").await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            c.write_all(b"OST /x HTTP/1.1\r\n\r\n").await.unwrap();
            c.shutdown().await.unwrap();
        });
        let (stream, _) = listener.accept().await.unwrap();
        let (_tx, mut stop) = watch::channel(None);
        let deadline = Instant::now() + Duration::from_secs(10);
        let (protocol, mut replayed) = sniff(stream, deadline, &mut stop).await.unwrap();
        assert_eq!(protocol, Protocol::Http1);
        let mut all = Vec::new();
        replayed.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"POST /x HTTP/1.1\r\n\r\n");
        client.await.unwrap();
    }
}
