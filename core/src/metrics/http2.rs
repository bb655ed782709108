//! HTTP/2 from clients: connections and streams (requests) open, and connections ended by a
//! protocol error (a client that broke HTTP/2 or a limit: garbage after the preface, a rapid
//! reset or CONTINUATION flood), one block per worker thread (each written only by its worker,
//! like the request counters).

use std::sync::atomic::{AtomicU64, Ordering};

use super::bump;

/// One worker's HTTP/2 counters.
#[derive(Debug, Default)]
pub(crate) struct Http2Counters {
    /// Connections begun (their preface read or ALPN `h2` chosen) and ended.
    opened: AtomicU64,
    closed: AtomicU64,
    /// Streams begun (their head read whole) and done (response sent or the stream reset).
    streams_begun: AtomicU64,
    streams_done: AtomicU64,
    /// Connections ended by an HTTP/2 protocol error (`lb` sent or got a GOAWAY with an error).
    errors: AtomicU64,
}

/// The totals of every worker's [`Http2Counters`] at a scrape.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Http2Totals {
    /// HTTP/2 connections open now.
    pub open: u64,
    /// HTTP/2 connections ever begun.
    pub total: u64,
    /// Streams in flight now.
    pub streams: u64,
    /// Connections ended by a protocol error.
    pub errors: u64,
}

impl Http2Counters {
    /// An HTTP/2 connection began.
    pub(crate) fn opened(&self) {
        bump(&self.opened);
    }

    /// An HTTP/2 connection ended; `error`: by a protocol error.
    pub(crate) fn closed(&self, error: bool) {
        bump(&self.closed);
        if error {
            bump(&self.errors);
        }
    }

    /// A stream's request began.
    #[inline]
    pub(crate) fn stream_begun(&self) {
        bump(&self.streams_begun);
    }

    /// A stream's request is done.
    #[inline]
    pub(crate) fn stream_done(&self) {
        bump(&self.streams_done);
    }

    /// Add this worker's counts to `totals`.
    pub(crate) fn add_to(&self, totals: &mut Http2Totals) {
        let opened = self.opened.load(Ordering::Relaxed);
        let closed = self.closed.load(Ordering::Relaxed);
        let begun = self.streams_begun.load(Ordering::Relaxed);
        let done = self.streams_done.load(Ordering::Relaxed);
        totals.open += opened.saturating_sub(closed);
        totals.total += opened;
        totals.streams += begun.saturating_sub(done);
        totals.errors += self.errors.load(Ordering::Relaxed);
    }
}
