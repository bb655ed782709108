//! The answers `lb` gives in a replica's stead: its own errors as a [`ProxyBody`], the
//! assignment's 400 for a replica's 404, and the 502/504 of a request no replica answered
//! (logged, at most [`BAD_GATEWAY_LOG_LIMIT`] a second).
//!
//! A gRPC call gets each of them the gRPC way instead ([`grpc`]): HTTP 200, `content-type:
//! application/grpc`, a `grpc-status` and a percent-encoded `grpc-message`, and nothing else (a
//! "trailers-only" response: one HEADERS frame that ends the stream), which gRPC clients read
//! as the call's status — an HTML or JSON 502 they cannot.

use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{HeaderValue, CONTENT_TYPE};
use http::Response;

use crate::api::{self, ApiError};
use crate::data::body::ProxyBody;
use crate::state::Backend;

/// `error` as `lb` answers it.
pub(crate) fn error_response(error: &ApiError) -> Response<ProxyBody> {
    api::error_response(error).map(ProxyBody::full)
}

/// A replica's 404: the assignment's error for endpoints the replicas do not have.
pub(crate) fn not_in_replicas(path: &str) -> Response<ProxyBody> {
    error_response(&ApiError::BadRequest(format!(
        "'{path}' endpoint does not exist in server replicas"
    )))
}

/// gRPC status codes `lb` answers with (grpc/doc/statuscodes.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GrpcStatus {
    /// 3: the request itself is bad (its body could not be read).
    InvalidArgument = 3,
    /// 4: no response within the call's deadline (`grpc-timeout`) or the response timeout.
    DeadlineExceeded = 4,
    /// 13: the replica's answer was not valid.
    Internal = 13,
    /// 14: no replica in the ring, or none answered (refused, cut off): the call may be tried
    /// again.
    Unavailable = 14,
}

/// A gRPC call's answer in a replica's stead: `status` with `message` (percent-encoded as the
/// gRPC spec says), trailers-only.
pub(crate) fn grpc(status: GrpcStatus, message: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(bytes::Bytes::new()));
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(status as u16));
    if let Ok(message) = HeaderValue::try_from(grpc_message(message)) {
        headers.insert("grpc-message", message);
    }
    resp
}

/// `message` percent-encoded for `grpc-message`: every byte outside printable ASCII
/// (0x20–0x7E), and `%` itself, as `%XX` of its UTF-8 bytes.
pub(crate) fn grpc_message(message: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(message.len());
    for &b in message.as_bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A gRPC call no replica answered in time: `DEADLINE_EXCEEDED`, logged like a 502.
pub(crate) fn grpc_timed_out(backend: &Backend, reason: &str) -> Response<ProxyBody> {
    log_bad_gateway(backend, reason);
    grpc(
        GrpcStatus::DeadlineExceeded,
        &format!(
            "lb: replica '{}' did not answer: {reason}",
            backend.hostname
        ),
    )
}

/// A gRPC call no replica gave a usable answer to: `UNAVAILABLE` (`INTERNAL` for an invalid
/// answer), logged.
pub(crate) fn grpc_did_not_answer(
    backend: &Backend,
    reason: &str,
    invalid: bool,
) -> Response<ProxyBody> {
    log_bad_gateway(backend, reason);
    let status = if invalid {
        GrpcStatus::Internal
    } else {
        GrpcStatus::Unavailable
    };
    grpc(
        status,
        &format!(
            "lb: replica '{}' did not answer: {reason}",
            backend.hostname
        ),
    )
}

/// A replica that did not answer in time: 504, logged like a 502.
pub(crate) fn timed_out(backend: &Backend, reason: &str) -> Response<ProxyBody> {
    log_bad_gateway(backend, reason);
    error_response(&ApiError::GatewayTimeout(format!(
        "replica '{}' did not answer: {reason}",
        backend.hostname
    )))
}

/// A replica that gave no usable answer: 502, logged.
pub(crate) fn did_not_answer(backend: &Backend, reason: &str) -> Response<ProxyBody> {
    log_bad_gateway(backend, reason);
    error_response(&ApiError::BadGateway(format!(
        "replica '{}' did not answer: {reason}",
        backend.hostname
    )))
}

/// 502s logged in the current second, and when that second began (seconds since start-up).
static BAD_GATEWAYS: (AtomicU64, AtomicU64) = (AtomicU64::new(0), AtomicU64::new(0));
/// At most this many 502s are logged per second; the rest are counted in the next line.
const BAD_GATEWAY_LOG_LIMIT: u64 = 10;

/// Log a 502, at most [`BAD_GATEWAY_LOG_LIMIT`] a second over all workers (a dead replica can
/// fail thousands of requests a second; the log says how many were not shown).
fn log_bad_gateway(backend: &Backend, reason: &str) {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let now = START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs();
    let (count, second) = &BAD_GATEWAYS;
    if second.swap(now, Ordering::Relaxed) != now {
        let suppressed = count
            .swap(0, Ordering::Relaxed)
            .saturating_sub(BAD_GATEWAY_LOG_LIMIT);
        if suppressed > 0 {
            tracing::warn!(
                suppressed,
                "more 502 answers in the last second, not logged one by one"
            );
        }
    }
    if count.fetch_add(1, Ordering::Relaxed) < BAD_GATEWAY_LOG_LIMIT {
        tracing::warn!(replica = %backend.hostname, %reason, "502: replica did not answer");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Body as _;

    #[test]
    fn grpc_answers_are_trailers_only_with_a_status_and_an_encoded_message() {
        let resp = grpc(GrpcStatus::Unavailable, "no replica: 100% gone\n→");
        assert_eq!(resp.status(), http::StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "application/grpc");
        assert_eq!(resp.headers()["grpc-status"], "14");
        assert_eq!(
            resp.headers()["grpc-message"],
            "no replica: 100%25 gone%0A%E2%86%92"
        );
        assert!(resp.body().is_end_stream());
        assert_eq!(
            grpc(GrpcStatus::DeadlineExceeded, "").headers()["grpc-status"],
            "4"
        );
        assert_eq!(
            grpc(GrpcStatus::Internal, "").headers()["grpc-status"],
            "13"
        );
        assert_eq!(
            grpc(GrpcStatus::InvalidArgument, "").headers()["grpc-status"],
            "3"
        );
    }
}
