//! The response bodies a replica connection hands to the front: whole or streamed.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;

/// A response body coming from a replica connection.
#[derive(Debug)]
pub enum PipeBody {
    /// The whole body, read with the head (the common case: no copying, no task hand-off).
    Full(Option<Bytes>),
    /// A body still arriving, handed over piece by piece by the connection.
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
}

/// A body cut off because the replica connection failed, and why.
#[derive(Debug, thiserror::Error)]
#[error("the replica's response was cut off: {0}")]
pub struct BodyError(String);

impl Body for PipeBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            PipeBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            PipeBody::Stream { done: true, .. } => Poll::Ready(None),
            PipeBody::Stream {
                rx, outcome, done, ..
            } => match rx.poll_recv(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(b)) => Poll::Ready(Some(Ok(Frame::data(b)))),
                Poll::Ready(None) => {
                    *done = true;
                    match outcome.get() {
                        Some(Ok(())) => Poll::Ready(None),
                        Some(Err(reason)) => Poll::Ready(Some(Err(BodyError(reason.clone())))),
                        None => Poll::Ready(Some(Err(BodyError(
                            "the connection to the replica ended mid-body".into(),
                        )))),
                    }
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            PipeBody::Full(bytes) => bytes.is_none(),
            PipeBody::Stream { done, .. } => *done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            PipeBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            PipeBody::Stream {
                length: Some(n), ..
            } => SizeHint::with_exact(*n),
            PipeBody::Stream { .. } => SizeHint::default(),
        }
    }
}
