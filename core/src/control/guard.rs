//! Panics in the control plane are caught where they happen, logged and counted
//! (`lb_control_panics_total`), and the part that panicked goes on: a bug or a hostile input
//! must never leave the load balancer without its controller or its health checks.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;

use crate::state::Shared;

/// A panic's message (`panic!` with a string or a formatted message), or a placeholder.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Run `make()`'s future again and again for as long as it panics (logged and counted as
/// `what`); return when one run ends normally. For loops that must outlive a bug: the health
/// checks.
pub(crate) async fn restart_on_panic<F, Fut>(what: &str, shared: Arc<Shared>, mut make: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        match AssertUnwindSafe(make()).catch_unwind().await {
            Ok(()) => return,
            Err(panic) => {
                shared.metrics.control_panicked();
                tracing::error!(
                    "internal error in {what}: {}; starting it again",
                    panic_message(panic.as_ref())
                );
                // Never a tight loop, whatever keeps panicking.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}
