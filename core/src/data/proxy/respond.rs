//! The answers `lb` gives in a replica's stead: its own errors as a [`ProxyBody`], the
//! assignment's 400 for a replica's 404, and the 502/504 of a request no replica answered
//! (logged, at most [`BAD_GATEWAY_LOG_LIMIT`] a second).

use std::sync::atomic::{AtomicU64, Ordering};

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
