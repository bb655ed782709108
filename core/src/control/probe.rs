//! The heartbeat client: one `GET /heartbeat`, and polling a new replica until it answers.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::BackendTls;
use crate::connect::{self, Connector, TlsFailure};
use crate::state::{TlsTable, Via};

/// HTTP client for heartbeats (its own pool, so heartbeats never queue behind proxied traffic).
/// A backend that speaks TLS is checked over `https`: the one in the ring by its address's
/// settings in the table ([`Prober::new`]), a backend by address not yet in the ring with its
/// own ([`Prober::fixed`]).
#[derive(Clone)]
pub(crate) struct Prober {
    client: Client<Connector, Empty<Bytes>>,
    /// Where TLS settings come from.
    tls: Tls,
}

/// Which addresses a [`Prober`] speaks TLS to.
#[derive(Clone)]
enum Tls {
    /// Those in the table.
    Table(Arc<ArcSwap<TlsTable>>),
    /// Every one (one backend's checks).
    Always,
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prober").finish_non_exhaustive()
    }
}

impl Default for Prober {
    /// A prober that speaks plain HTTP to every address (supervised replicas).
    fn default() -> Self {
        Prober::new(Arc::default())
    }
}

impl Prober {
    /// A prober that speaks TLS to the addresses in `table` (the backends in the ring).
    pub(crate) fn new(table: Arc<ArcSwap<TlsTable>>) -> Self {
        Prober::with(Connector::new(Arc::clone(&table), None), Tls::Table(table))
    }

    /// A prober that speaks TLS with `tls` to whatever it checks.
    pub(crate) fn fixed(tls: Arc<BackendTls>) -> Self {
        Prober::with(Connector::fixed(tls, None), Tls::Always)
    }

    fn with(connector: Connector, tls: Tls) -> Self {
        Prober {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
            tls,
        }
    }

    /// Whether `addr` is checked over TLS.
    fn speaks_tls(&self, addr: &str) -> bool {
        match &self.tls {
            Tls::Always => true,
            Tls::Table(table) => {
                let table = table.load();
                // An authority may carry the settings' id (`7@HOST:PORT`).
                let addr = addr.rsplit_once('@').map_or(addr, |(_, a)| a);
                !table.is_empty() && table.contains_key(addr)
            }
        }
    }
}

impl Prober {
    /// One heartbeat: `Ok` if `GET path` answered 200 within `timeout`. It carries `lb`'s
    /// [`Via`] mark, so a backend that is this `lb` itself (however it is reached) answers 508
    /// and never passes.
    pub(crate) async fn beat(
        &self,
        addr: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<(), ProbeError> {
        let scheme = if self.speaks_tls(addr) {
            "https"
        } else {
            "http"
        };
        let uri = format!("{scheme}://{addr}{path}");
        let req = hyper::Request::get(uri)
            .header(http::header::VIA, Via::mine().value().clone())
            .body(Empty::new())
            .map_err(|source| ProbeError::Address {
                addr: addr.to_owned(),
                source,
            })?;
        match tokio::time::timeout(timeout, self.client.request(req)).await {
            Err(_) => Err(ProbeError::Timeout(timeout)),
            Ok(Err(e)) => match connect::tls_failure(&e) {
                Some(failure) => Err(ProbeError::Tls(failure.clone())),
                None => Err(ProbeError::Request(e)),
            },
            Ok(Ok(resp)) if resp.status() == hyper::StatusCode::OK => Ok(()),
            Ok(Ok(resp)) => Err(ProbeError::Status(resp.status())),
        }
    }

    /// Poll until the first successful heartbeat or until `deadline` passes.
    pub(crate) async fn wait_alive(
        &self,
        addr: &str,
        path: &str,
        deadline: Duration,
    ) -> Result<(), ProbeError> {
        let start = tokio::time::Instant::now();
        let mut last = None;
        while start.elapsed() < deadline {
            let left = deadline.saturating_sub(start.elapsed());
            match self
                .beat(addr, path, left.min(Duration::from_secs(1)))
                .await
            {
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

    /// Check every `interval` until `rise` checks in a row succeed or until `deadline` passes
    /// (a backend by address joining or coming back: no faster than the health checks run).
    pub(crate) async fn wait_healthy(
        &self,
        addr: &str,
        path: &str,
        rise: u32,
        interval: Duration,
        timeout: Duration,
        deadline: Duration,
    ) -> Result<(), ProbeError> {
        let start = tokio::time::Instant::now();
        let mut passed = 0;
        let mut last = None;
        while start.elapsed() < deadline {
            let round = tokio::time::Instant::now();
            let left = deadline.saturating_sub(start.elapsed());
            match self.beat(addr, path, timeout.min(left)).await {
                Ok(()) => {
                    passed += 1;
                    if passed >= rise {
                        return Ok(());
                    }
                }
                Err(e) => {
                    passed = 0;
                    last = Some(e);
                }
            }
            let next = (round + interval).min(start + deadline);
            tokio::time::sleep_until(next).await;
        }
        Err(ProbeError::NeverAlive {
            deadline,
            last: last.map(Box::new),
        })
    }
}

/// Why a heartbeat failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeError {
    /// No answer in time.
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The connection or the exchange failed.
    #[error("request failed: {0}")]
    Request(#[source] hyper_util::client::legacy::Error),
    /// The TLS handshake failed (certificate not trusted, wrong name, …).
    #[error("TLS: {0}")]
    Tls(TlsFailure),
    /// An answer other than 200 (508: the check came back to an `lb` that had sent or passed it
    /// on, usually this one: the address leads back to it).
    #[error("answered {0}{hint}", hint = loop_hint(*.0))]
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

/// What a 508 answer to a health check means.
fn loop_hint(status: hyper::StatusCode) -> &'static str {
    if status == hyper::StatusCode::LOOP_DETECTED {
        ": a request loop (the check came back to a load balancer it had passed)"
    } else {
        ""
    }
}
