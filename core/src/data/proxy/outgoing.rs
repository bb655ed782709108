//! A client's request body as it goes to a replica over the hyper transport: the body stays the
//! client's until the replica's connection first reads it, so a request whose replica could not
//! be reached (refused, connect timeout) can go to the next replica with its body whole; and a
//! body that fails on the client's side (malformed chunked encoding, cut off) is told apart
//! from a replica that failed.

use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// Why the client's body could not be sent (hyper's error reading it, or a body an earlier
/// attempt took).
pub(crate) type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// The client's body, shared between the attempts to send one request.
#[derive(Debug)]
pub(crate) struct Held {
    /// The body until an attempt starts reading it.
    body: Mutex<Option<Incoming>>,
    /// Why reading the client's body failed, once it did.
    failed: OnceLock<String>,
}

impl Held {
    /// Hold `body` for the attempts to come.
    pub(crate) fn new(body: Incoming) -> Arc<Self> {
        Arc::new(Held {
            body: Mutex::new(Some(body)),
            failed: OnceLock::new(),
        })
    }

    /// Whether an attempt has started reading the body (it cannot be sent again).
    pub(crate) fn taken(&self) -> bool {
        self.lock().is_none()
    }

    /// Why the client's body could not be read, if it could not.
    pub(crate) fn client_error(&self) -> Option<&str> {
        self.failed.get().map(String::as_str)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Incoming>> {
        self.body.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The body of one attempt.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// The request has no body.
    Empty,
    /// The client's body: `body` is taken from `held` on the first read.
    Client {
        /// Shared with the other attempts.
        held: Arc<Held>,
        /// Set on the first read.
        body: Option<Incoming>,
    },
}

impl Outgoing {
    /// An attempt that sends the body in `held`.
    pub(crate) fn client(held: &Arc<Held>) -> Self {
        Outgoing::Client {
            held: Arc::clone(held),
            body: None,
        }
    }
}

impl Body for Outgoing {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let (held, body) = match self.get_mut() {
            Outgoing::Empty => return Poll::Ready(None),
            Outgoing::Client { held, body } => (held, body),
        };
        if body.is_none() {
            *body = held.lock().take();
        }
        // Taken by an earlier attempt: never sent twice (the caller only retries while untaken).
        let Some(incoming) = body.as_mut() else {
            return Poll::Ready(Some(Err("the request body was already sent".into())));
        };
        match Pin::new(incoming).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                let _ = held.failed.set(e.to_string());
                Poll::Ready(Some(Err(e.into())))
            }
            other => other.map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Outgoing::Empty => true,
            Outgoing::Client {
                body: Some(body), ..
            } => body.is_end_stream(),
            Outgoing::Client { held, body: None } => {
                held.lock().as_ref().is_none_or(Body::is_end_stream)
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Outgoing::Empty => SizeHint::with_exact(0),
            Outgoing::Client {
                body: Some(body), ..
            } => body.size_hint(),
            Outgoing::Client { held, body: None } => held
                .lock()
                .as_ref()
                .map_or_else(|| SizeHint::with_exact(0), Body::size_hint),
        }
    }
}
