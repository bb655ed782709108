//! The response body type of the load balancer: either its own small JSON answer or a replica's
//! response streamed through, which keeps the request counted as in flight until it is done.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::upstream::PipeBody;
use crate::state::InFlight;

/// Why a body could not be sent to the end.
pub(crate) type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A response body (no boxing, no dynamic dispatch).
#[derive(Debug)]
pub(crate) enum LbBody {
    /// A complete body held in memory; `None` once sent.
    Full(Option<Bytes>),
    /// A replica's body from a batching connection ([`super::upstream`]).
    Piped {
        /// The replica's body.
        body: PipeBody,
        /// Never read: dropped when the body is done (or the client goes away), which ends the
        /// request's count in flight.
        _in_flight: InFlight,
    },
    /// A replica's body, streamed.
    Proxied {
        /// The replica's body.
        body: Incoming,
        /// Never read: dropped when the body is done (or the client goes away), which ends the
        /// request's count in flight.
        _in_flight: InFlight,
    },
}

impl LbBody {
    /// A body with these bytes.
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        LbBody::Full((!bytes.is_empty()).then_some(bytes))
    }
}

impl Body for LbBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            LbBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            LbBody::Piped { body, .. } => Pin::new(body).poll_frame(cx).map_err(Into::into),
            LbBody::Proxied { body, .. } => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            LbBody::Full(bytes) => bytes.is_none(),
            LbBody::Piped { body, .. } => body.is_end_stream(),
            LbBody::Proxied { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            LbBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            LbBody::Piped { body, .. } => body.size_hint(),
            LbBody::Proxied { body, .. } => body.size_hint(),
        }
    }
}
