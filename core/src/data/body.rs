//! The one response body `lb` sends to its clients: [`ProxyBody`], whatever it comes from — its
//! own small answer, a replica's response over a batching connection ([`super::upstream`]) or
//! over a hyper connection ([`super::proxy`]).
//!
//! Besides its bytes ([`Source`]), the body carries what must last exactly as long as the
//! response: the replica's count of requests in flight ([`InFlight`]: what lets a removed replica
//! drain), the client connection's request in progress ([`Busy`]: what the downstream timeouts
//! read) and a [`Watch`] told every piece sent (the request's observation, counted when the body
//! is dropped). No boxing, no dynamic dispatch: one `match` per frame.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::mpsc;

use super::downstream::Busy;
use crate::state::InFlight;

/// Why a response body could not be sent to its end.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    /// A replica's response over a batching connection was cut off midway, and why.
    #[error("the replica's response was cut off: {0}")]
    CutOff(String),
    /// hyper could not read a replica's response body to its end.
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
}

/// Where a response body's bytes come from.
#[derive(Debug)]
pub(crate) enum Source {
    /// A complete body held in memory (`lb`'s own answer, or a replica's body that came whole
    /// with its head); `None` once sent.
    Full(Option<Bytes>),
    /// A replica's body still arriving over a batching connection, handed over piece by piece by
    /// the connection's task.
    Stream {
        /// Pieces from the connection task.
        rx: mpsc::Receiver<Bytes>,
        /// Set by the connection before it lets go of the sender: `Ok` when the body is
        /// complete, else why it was cut off. A stream that ends without it was cut off too.
        outcome: Arc<OnceLock<Result<(), String>>>,
        /// The length the replica announced, if any.
        length: Option<u64>,
        /// Set once the stream ended.
        done: bool,
    },
    /// A replica's body over a hyper connection, streamed.
    Hyper(Incoming),
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
    #[inline]
    fn sent(&mut self, _: usize) {}
    #[inline]
    fn failed(&mut self) {}
}

/// A response body on its way to a client (see the module's documentation). `W` watches what it
/// sends; `()` until the connection hands it to its client ([`ProxyBody::tracked`]).
#[derive(Debug)]
pub(crate) struct ProxyBody<W = ()> {
    // Dropped in this order: the bytes, the replica's count in flight, the watch (which counts
    // the request), then the connection's request in progress.
    source: Source,
    /// Never read: ends the request's count in flight at its replica when dropped.
    in_flight: Option<InFlight>,
    watch: W,
    /// Never read: ends the request in progress on its connection when dropped.
    _busy: Option<Busy>,
}

impl From<Source> for ProxyBody {
    #[inline]
    fn from(source: Source) -> Self {
        ProxyBody {
            source,
            in_flight: None,
            watch: (),
            _busy: None,
        }
    }
}

impl ProxyBody {
    /// A body with these bytes.
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        Source::Full((!bytes.is_empty()).then_some(bytes)).into()
    }

    /// The same body, keeping its request counted in flight at its replica until it is done.
    #[inline]
    pub(crate) fn in_flight(self, in_flight: InFlight) -> Self {
        ProxyBody {
            in_flight: Some(in_flight),
            ..self
        }
    }

    /// The same body, handed to its client: it keeps `busy` (its request in progress on the
    /// connection) until it is done or dropped, and shows what it sends to `watch`.
    #[inline]
    pub(crate) fn tracked<W: Watch>(self, busy: Busy, watch: W) -> ProxyBody<W> {
        ProxyBody {
            source: self.source,
            in_flight: self.in_flight,
            watch,
            _busy: Some(busy),
        }
    }
}

impl<W: Watch + Unpin> Body for ProxyBody<W> {
    type Data = Bytes;
    type Error = BodyError;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let poll = match &mut this.source {
            Source::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Source::Stream { done: true, .. } => Poll::Ready(None),
            Source::Stream {
                rx, outcome, done, ..
            } => match rx.poll_recv(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(b)) => Poll::Ready(Some(Ok(Frame::data(b)))),
                Poll::Ready(None) => {
                    *done = true;
                    match outcome.get() {
                        Some(Ok(())) => Poll::Ready(None),
                        Some(Err(reason)) => {
                            Poll::Ready(Some(Err(BodyError::CutOff(reason.clone()))))
                        }
                        None => Poll::Ready(Some(Err(BodyError::CutOff(
                            "the connection to the replica ended mid-body".into(),
                        )))),
                    }
                }
            },
            Source::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(BodyError::Hyper),
        };
        match &poll {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.watch.sent(data.len());
                }
            }
            Poll::Ready(Some(Err(_))) => this.watch.failed(),
            Poll::Ready(None) | Poll::Pending => {}
        }
        poll
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Full(bytes) => bytes.is_none(),
            Source::Stream { done, .. } => *done,
            Source::Hyper(body) => body.is_end_stream(),
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Source::Stream {
                length: Some(n), ..
            } => SizeHint::with_exact(*n),
            Source::Stream { .. } => SizeHint::default(),
            Source::Hyper(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::data::downstream::Activity;

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
        let body = ProxyBody::full("hello").tracked(activity.begin(), &mut seen);
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(&collected[..], b"hello");
        assert_eq!(seen.bytes, 5);
        assert!(!seen.failed);

        // A replica's body cut off after two bytes.
        let (tx, rx) = mpsc::channel(4);
        let outcome = Arc::new(OnceLock::new());
        tx.try_send(Bytes::from_static(b"ab")).unwrap();
        outcome.set(Err("cut off".to_owned())).unwrap();
        drop(tx);
        let failing = ProxyBody::from(Source::Stream {
            rx,
            outcome,
            length: None,
            done: false,
        });
        let mut seen = Seen::default();
        let body = failing.tracked(activity.begin(), &mut seen);
        let error = body.collect().await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "the replica's response was cut off: cut off"
        );
        assert_eq!(seen.bytes, 2);
        assert!(seen.failed);
    }

    #[tokio::test]
    async fn a_stream_that_ends_without_an_outcome_was_cut_off() {
        use http_body_util::BodyExt;
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Bytes::from_static(b"abc")).unwrap();
        drop(tx);
        let body = ProxyBody::from(Source::Stream {
            rx,
            outcome: Arc::new(OnceLock::new()),
            length: Some(10),
            done: false,
        });
        assert_eq!(body.size_hint().exact(), Some(10));
        let error = body.collect().await.unwrap_err();
        assert!(error.to_string().contains("mid-body"), "{error}");
    }
}
