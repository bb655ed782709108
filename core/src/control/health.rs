//! Heartbeats: `GET /heartbeat` to every replica in the ring every `interval_ms`.
//!
//! After `fall` misses in a row the controller is told the replica is dead; what happens next is
//! the controller's decision.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::watch;

use super::command::{Command, ControllerHandle};
use crate::config::HealthSection;
use crate::state::Shared;

/// HTTP client for heartbeats (its own pool, so heartbeats never queue behind proxied traffic).
#[derive(Clone, Debug)]
pub struct Prober {
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Default for Prober {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Prober {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
        }
    }
}

impl Prober {
    /// One heartbeat: `Ok` if `GET /heartbeat` answered 200 within `timeout`.
    pub async fn beat(&self, addr: &str, timeout: Duration) -> Result<(), ProbeError> {
        let uri = format!("http://{addr}/heartbeat");
        let req = hyper::Request::get(uri)
            .body(Empty::new())
            .map_err(|source| ProbeError::Address {
                addr: addr.to_owned(),
                source,
            })?;
        match tokio::time::timeout(timeout, self.client.request(req)).await {
            Err(_) => Err(ProbeError::Timeout(timeout)),
            Ok(Err(e)) => Err(ProbeError::Request(e)),
            Ok(Ok(resp)) if resp.status() == hyper::StatusCode::OK => Ok(()),
            Ok(Ok(resp)) => Err(ProbeError::Status(resp.status())),
        }
    }

    /// Poll until the first successful heartbeat or until `deadline` passes.
    pub async fn wait_alive(&self, addr: &str, deadline: Duration) -> Result<(), ProbeError> {
        let start = tokio::time::Instant::now();
        let mut last = None;
        while start.elapsed() < deadline {
            let left = deadline.saturating_sub(start.elapsed());
            match self.beat(addr, left.min(Duration::from_secs(1))).await {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(20).min(left)).await;
        }
        Err(ProbeError::NeverAlive {
            deadline,
            last: last.map(Box::new),
        })
    }
}

/// Why a heartbeat failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No answer in time.
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The connection or the exchange failed.
    #[error("request failed: {0}")]
    Request(#[source] hyper_util::client::legacy::Error),
    /// An answer other than 200.
    #[error("answered {0}")]
    Status(hyper::StatusCode),
    /// The replica's address does not make a URI.
    #[error("{addr:?} is not a usable address: {source}")]
    Address {
        /// The address.
        addr: String,
        /// Why.
        source: http::Error,
    },
    /// A new replica did not answer any heartbeat before its deadline.
    #[error(
        "did not answer its first heartbeat within {} ms (last: {})",
        .deadline.as_millis(),
        .last.as_ref().map_or_else(|| "no attempt".to_owned(), |e| e.to_string())
    )]
    NeverAlive {
        /// How long it had.
        deadline: Duration,
        /// The last attempt's failure.
        last: Option<Box<ProbeError>>,
    },
}

/// Run heartbeats forever over whatever the current snapshot holds, with the current settings.
pub async fn run(
    shared: Arc<Shared>,
    settings: watch::Receiver<HealthSection>,
    controller: ControllerHandle,
    prober: Prober,
) {
    loop {
        let settings = *settings.borrow();
        let round = tokio::time::Instant::now();
        let timeout = Duration::from_millis(settings.timeout_ms);
        let snapshot = shared.snapshot.load_full();
        let beats = snapshot.backends.iter().map(|b| {
            let prober = &prober;
            async move { (b, prober.beat(&b.addr, timeout).await) }
        });
        for (backend, result) in futures_util::future::join_all(beats).await {
            match result {
                Ok(()) => backend.missed.store(0, Ordering::Relaxed),
                Err(reason) => {
                    let missed = backend.missed.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!(hostname = %backend.hostname, missed, %reason, "heartbeat missed");
                    if missed >= settings.fall
                        && !backend.reported_dead.swap(true, Ordering::Relaxed)
                    {
                        controller.send(Command::ReplicaFailed {
                            id: backend.id,
                            handle: backend.handle.clone(),
                            reason: format!("{missed} heartbeats missed ({reason})"),
                        });
                    }
                }
            }
        }
        drop(snapshot);
        tokio::time::sleep_until(round + Duration::from_millis(settings.interval_ms)).await;
    }
}
