//! The proxy's connections to the replicas: an HTTP/1.1 client that batches requests.
//!
//! Requests that are safe to repeat and carry no body (`GET`, `HEAD`) go through here. Each
//! worker keeps, per replica, up to [`MAX_CONNECTIONS`] keep-alive connections, each owned by one
//! task. A request goes to a connection that is about to write (so requests arriving in the same
//! turn of the event loop leave in one `write` and their responses come back in one `read`) while
//! the replica answers within [`BATCH_WHILE_FASTER_THAN`]; else to an idle connection, else to a
//! new one; only when every connection is taken and the cap is reached is it queued behind others
//! (HTTP/1.1 pipelining, RFC 9112 §9.3.2), and then only behind a request younger than
//! [`QUEUE_BEHIND`]: when slow requests hold every connection, more are opened (up to
//! [`MAX_CONNECTIONS_WHEN_HELD`]) so that unrelated requests never wait behind them. Batching cuts the system calls per request on both
//! sides of the replica connection, which is where a proxy on a loaded machine spends its time.
//!
//! Failure rules: a request whose response has not begun when its connection fails (the replica
//! closed an idle connection, answered `Connection: close` to an earlier request, or reset) is
//! sent again once on a fresh connection — allowed because only idempotent methods come here
//! (RFC 9110 §9.2.2). A response cut off midway ends the client's response with an error, never
//! with a silently shortened body. Responses are framed strictly (RFC 9112 §6.3); anything
//! ambiguous closes the connection.
//!
//! Layout: [`Upstreams`] and the per-replica state live in `pool`, one connection's task in
//! `conn`, response heads and body framing in `framing`, the chunked decoder in `chunked`, the
//! body a response is built around in `body` (the type is [`crate::data::body`]'s: the one
//! response body `lb` has), and the request serializer ([`request_head`]) in `request`.

mod body;
pub(crate) mod chunked;
mod conn;
pub(crate) mod framing;
mod pool;
mod request;
mod shared;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub(crate) use pool::Upstreams;
pub(crate) use request::request_head;

/// Connections a worker keeps open to one replica before it pipelines: past this many, a request
/// queues behind the youngest request on a connection, if that one is younger than
/// [`QUEUE_BEHIND`].
pub(crate) const MAX_CONNECTIONS: usize = 32;
/// Connections a worker opens to one replica at most: while every connection is held by a
/// request older than [`QUEUE_BEHIND`] (a slow request), new connections are opened up to this
/// many rather than making unrelated requests wait behind it.
pub(crate) const MAX_CONNECTIONS_WHEN_HELD: usize = 256;
/// A request queues only behind a request younger than this (unless every connection up to
/// [`MAX_CONNECTIONS_WHEN_HELD`] is taken): what a slow request may cost an unrelated one.
pub(crate) const QUEUE_BEHIND: Duration = Duration::from_millis(5);
/// Requests a connection takes on while others are waiting to be written to it.
pub(crate) const MAX_BATCH: usize = 16;
/// Requests batch onto a connection only while the replica answers faster than this (moving
/// average of the time from writing a request to reading its response head). A slower replica
/// is busy handling requests, not waiting on system calls: its requests spread over connections
/// instead, so a slow request does not hold up others behind it.
pub(crate) const BATCH_WHILE_FASTER_THAN: Duration = Duration::from_millis(1);
/// An idle connection is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long connecting to a replica may take, unless configured (`[proxy] connect_timeout_ms`).
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest response head accepted (on both forwarding paths).
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in a response head.
const MAX_HEADERS: usize = 100;
/// Most interim (1xx) responses accepted before the final response to one request (on both
/// forwarding paths).
pub(crate) const MAX_INTERIM: u8 = 8;
/// Longest chunk-size or trailer line accepted in a chunked body.
const MAX_LINE: usize = 4096;
/// Bytes read at once.
const READ_CHUNK: usize = 16 * 1024;
/// Body pieces buffered between a connection and a slow client before the connection waits.
const BODY_QUEUE: usize = 8;

/// Why a request through a replica connection failed.
///
/// The I/O failures keep the [`std::io::Error`] as their [`source`](std::error::Error::source):
/// the error itself, so it can be downcast, though it is held in an [`Arc`] so that one failure
/// can be handed to every request that was waiting on the connection.
#[derive(Debug, Clone)]
pub(crate) enum UpstreamError {
    /// The replica could not be reached.
    Connect {
        /// Where.
        addr: String,
        /// What the OS said (a [`std::io::ErrorKind::TimedOut`] error when connecting took
        /// too long).
        reason: Arc<std::io::Error>,
    },
    /// The connection ended before this request's response began; safe to send it again.
    NotStarted(String),
    /// The connection failed after the response began.
    Io(Arc<std::io::Error>),
    /// The replica's response is not valid HTTP/1.1.
    Invalid(String),
    /// No response head came within the response timeout.
    TimedOut(std::time::Duration),
    /// The replica was taken out of the ring as failed while the request waited for it.
    ReplicaFailed,
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Connect { addr, reason } => {
                write!(f, "cannot connect to {addr}: {reason}")
            }
            UpstreamError::NotStarted(reason) => {
                write!(
                    f,
                    "the connection closed before the response began ({reason})"
                )
            }
            UpstreamError::Io(e) => write!(f, "the connection failed: {e}"),
            UpstreamError::Invalid(reason) => write!(f, "invalid response: {reason}"),
            UpstreamError::TimedOut(limit) => {
                write!(f, "no response within {} ms", limit.as_millis())
            }
            UpstreamError::ReplicaFailed => {
                write!(f, "the replica failed its health checks before it answered")
            }
        }
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpstreamError::Connect { reason: e, .. } | UpstreamError::Io(e) => Some(&**e),
            UpstreamError::NotStarted(_)
            | UpstreamError::Invalid(_)
            | UpstreamError::TimedOut(_)
            | UpstreamError::ReplicaFailed => None,
        }
    }
}

#[cfg(test)]
mod loopback_tests;

#[cfg(test)]
mod tests {
    use std::error::Error as _;
    use std::io;

    use super::*;

    #[test]
    fn io_failures_keep_the_io_error_as_their_source() {
        let io = |kind, msg| Arc::new(io::Error::new(kind, msg));
        let failed = UpstreamError::Io(io(io::ErrorKind::ConnectionReset, "reset by peer"));
        assert_eq!(failed.to_string(), "the connection failed: reset by peer");
        let source = failed.source().expect("a source");
        let source = source
            .downcast_ref::<io::Error>()
            .expect("the io::Error itself");
        assert_eq!(source.kind(), io::ErrorKind::ConnectionReset);
        // A clone shares the same error.
        let (UpstreamError::Io(a), UpstreamError::Io(b)) = (&failed, &failed.clone()) else {
            unreachable!()
        };
        assert!(Arc::ptr_eq(a, b));

        let refused = UpstreamError::Connect {
            addr: "10.0.0.1:80".into(),
            reason: io(io::ErrorKind::ConnectionRefused, "connection refused"),
        };
        assert_eq!(
            refused.to_string(),
            "cannot connect to 10.0.0.1:80: connection refused"
        );
        let source = refused.source().and_then(|s| s.downcast_ref::<io::Error>());
        assert_eq!(source.unwrap().kind(), io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn other_failures_have_no_source_and_say_why() {
        let not_started = UpstreamError::NotStarted("the connection closed".into());
        assert!(not_started.source().is_none());
        assert_eq!(
            not_started.to_string(),
            "the connection closed before the response began (the connection closed)"
        );
        let invalid = UpstreamError::Invalid("status code 999".into());
        assert!(invalid.source().is_none());
        assert_eq!(invalid.to_string(), "invalid response: status code 999");
    }
}
