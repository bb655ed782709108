//! TLS counters: handshakes by protocol version and failed handshakes by a fixed set of
//! reasons, one block per worker thread (each written only by its worker, like the request
//! counters), and certificate reloads (counted by the controller).

use std::sync::atomic::{AtomicU64, Ordering};

use super::bump;

/// Why a TLS handshake failed: a fixed set, so the label never carries client text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeError {
    /// Not finished within `client_header_timeout_ms`.
    Timeout,
    /// The client sent something that is not (acceptable) TLS.
    Protocol,
    /// No certificate to answer with.
    NoCertificate,
    /// The client closed before the handshake was done.
    Eof,
    /// Anything else (an I/O error).
    Other,
}

impl HandshakeError {
    /// Every reason, in the order the metrics show them.
    pub(crate) const ALL: [HandshakeError; 5] = [
        HandshakeError::Timeout,
        HandshakeError::Protocol,
        HandshakeError::NoCertificate,
        HandshakeError::Eof,
        HandshakeError::Other,
    ];

    /// The `reason` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            HandshakeError::Timeout => "timeout",
            HandshakeError::Protocol => "protocol",
            HandshakeError::NoCertificate => "no_certificate",
            HandshakeError::Eof => "eof",
            HandshakeError::Other => "other",
        }
    }
}

/// The protocol versions a handshake can end with, in the order the metrics show them.
pub(crate) const VERSIONS: [&str; 2] = ["1.2", "1.3"];

/// One worker's TLS counters.
#[derive(Debug, Default)]
pub(crate) struct TlsCounters {
    /// Handshakes done, by [`VERSIONS`].
    handshakes: [AtomicU64; 2],
    /// Handshakes failed, by [`HandshakeError::ALL`].
    errors: [AtomicU64; 5],
}

impl TlsCounters {
    /// A handshake ended with TLS 1.3 (`tls13`) or 1.2.
    pub(crate) fn handshake(&self, tls13: bool) {
        bump(&self.handshakes[usize::from(tls13)]);
    }

    /// A handshake failed.
    pub(crate) fn error(&self, why: HandshakeError) {
        let i = HandshakeError::ALL
            .iter()
            .position(|e| *e == why)
            .unwrap_or(4);
        bump(&self.errors[i]);
    }

    /// Add this worker's counts to `handshakes` and `errors`.
    pub(crate) fn add_to(&self, handshakes: &mut [u64; 2], errors: &mut [u64; 5]) {
        for (sum, cell) in handshakes.iter_mut().zip(&self.handshakes) {
            *sum += cell.load(Ordering::Relaxed);
        }
        for (sum, cell) in errors.iter_mut().zip(&self.errors) {
            *sum += cell.load(Ordering::Relaxed);
        }
    }
}

/// Certificate reloads, counted by the controller (also the ACME orders, counted by the ACME
/// task: ok or failed).
#[derive(Debug, Default)]
pub(crate) struct TlsReloads {
    ok: AtomicU64,
    error: AtomicU64,
}

impl TlsReloads {
    /// Count a reload: applied (`ok`) or refused.
    pub(crate) fn count(&self, ok: bool) {
        let cell = if ok { &self.ok } else { &self.error };
        cell.fetch_add(1, Ordering::Relaxed);
    }

    /// Reloads so far: (applied, refused).
    pub(crate) fn get(&self) -> (u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.error.load(Ordering::Relaxed),
        )
    }
}
