//! The heartbeat client: one health check of a kind ([`HealthCheck`]: `GET path`, a TCP
//! connection, or the standard gRPC `grpc.health.v1.Health/Check` over HTTP/2, encoded in
//! [`grpc`]), and polling a new replica until it answers.

mod grpc;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower_service::Service as _;

use crate::config::{BackendTls, HealthCheck};
use crate::connect::{self, Conn, ConnectError, Connector, TlsFailure};
use crate::state::{TlsTable, Via};

pub(crate) use grpc::GrpcFailure;

/// HTTP client for heartbeats (its own pool, so heartbeats never queue behind proxied traffic).
/// A backend that speaks TLS is checked over `https`: the one in the ring by its address's
/// settings in the table ([`Prober::new`]), a backend by address not yet in the ring with its
/// own ([`Prober::fixed`]).
#[derive(Clone)]
pub(crate) struct Prober {
    client: Client<Connector, Empty<Bytes>>,
    /// The client's connector, for the checks that dial themselves (`tcp`, `grpc`).
    connector: Connector,
    /// Where TLS settings come from.
    tls: Tls,
}

/// Which addresses a [`Prober`] speaks TLS to, with which settings.
#[derive(Clone)]
enum Tls {
    /// Those in the table.
    Table(Arc<ArcSwap<TlsTable>>),
    /// Every one, with these (one backend's checks).
    Fixed(Arc<BackendTls>),
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
        Prober::with(Connector::fixed(Arc::clone(&tls), None), Tls::Fixed(tls))
    }

    fn with(connector: Connector, tls: Tls) -> Self {
        Prober {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector.clone()),
            connector,
            tls,
        }
    }

    /// The TLS settings `addr` is checked with (`None`: plain).
    fn settings(&self, addr: &str) -> Option<Arc<BackendTls>> {
        match &self.tls {
            Tls::Fixed(tls) => Some(Arc::clone(tls)),
            Tls::Table(table) => {
                let table = table.load();
                if table.is_empty() {
                    return None;
                }
                table.get(address_of(addr)).cloned()
            }
        }
    }

    /// Whether `addr` is checked over TLS.
    fn speaks_tls(&self, addr: &str) -> bool {
        match &self.tls {
            Tls::Fixed(_) => true,
            Tls::Table(table) => {
                let table = table.load();
                !table.is_empty() && table.contains_key(address_of(addr))
            }
        }
    }
}

/// `HOST:PORT` of an authority that may carry its TLS settings' id (`7@HOST:PORT`).
fn address_of(authority: &str) -> &str {
    authority.rsplit_once('@').map_or(authority, |(_, a)| a)
}

impl Prober {
    /// One health check of `addr` of the kind `check`, all of it within `timeout`.
    pub(crate) async fn beat(
        &self,
        addr: &str,
        check: HealthCheck<'_>,
        timeout: Duration,
    ) -> Result<(), ProbeError> {
        let checked = match check {
            HealthCheck::Http(path) => return self.http(addr, path, timeout).await,
            HealthCheck::Tcp => tokio::time::timeout(timeout, self.tcp(addr)).await,
            HealthCheck::Grpc(service) => {
                tokio::time::timeout(timeout, self.grpc(addr, service, timeout)).await
            }
        };
        checked.unwrap_or(Err(ProbeError::Timeout(timeout)))
    }

    /// A TCP connection to `addr` (and the TLS handshake, for a TLS backend), closed at once.
    async fn tcp(&self, addr: &str) -> Result<(), ProbeError> {
        let scheme = if self.speaks_tls(addr) {
            "https"
        } else {
            "http"
        };
        let conn = self.dial(addr, scheme).await?;
        drop(conn);
        Ok(())
    }

    /// A connection to `addr` by the prober's connector: TCP, and TLS for `https`.
    async fn dial(&self, addr: &str, scheme: &str) -> Result<Conn, ProbeError> {
        let uri: http::Uri =
            format!("{scheme}://{addr}/")
                .parse()
                .map_err(|e| ProbeError::Address {
                    addr: addr.to_owned(),
                    source: http::Error::from(e),
                })?;
        self.connector.clone().call(uri).await.map_err(|e| match e {
            ConnectError::Tls { failure, .. } => ProbeError::Tls(failure),
            other => ProbeError::Connect(other),
        })
    }

    /// The standard gRPC health check over HTTP/2 (h2c to a plain backend, h2 by ALPN over
    /// TLS): `Ok` when it answered SERVING for `service`. The connection is the check's own,
    /// closed after it (its task ends by `limit` whatever the backend does).
    async fn grpc(&self, addr: &str, service: &str, limit: Duration) -> Result<(), ProbeError> {
        let tls = self.settings(addr);
        let tcp = match self.dial(addr, "http").await? {
            Conn::Plain(tcp) => tcp,
            // An `http` URI is dialled without TLS: never here, and no panic if it were.
            Conn::Tls(_) => return Err(ProbeError::Grpc(GrpcFailure::NoH2)),
        };
        let authority = address_of(addr);
        let Some(tls) = tls else {
            return exchange(tcp, &format!("http://{authority}"), service, limit).await;
        };
        // The backend's settings with ALPN h2 instead of http/1.1 (gRPC is HTTP/2 only).
        let mut config = (*tls.config).clone();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let handshake = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(tls.server_name.clone(), tcp.into_inner());
        let stream = handshake
            .await
            .map_err(|e| ProbeError::Tls(TlsFailure::of(&e)))?;
        if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(ProbeError::Grpc(GrpcFailure::NoH2));
        }
        exchange(
            TokioIo::new(stream),
            &format!("https://{authority}"),
            service,
            limit,
        )
        .await
    }

    /// One heartbeat: `Ok` if `GET path` answered 200 within `timeout`. It carries `lb`'s
    /// [`Via`] mark, so a backend that is this `lb` itself (however it is reached) answers 508
    /// and never passes.
    async fn http(&self, addr: &str, path: &str, timeout: Duration) -> Result<(), ProbeError> {
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
        check: HealthCheck<'_>,
        deadline: Duration,
    ) -> Result<(), ProbeError> {
        let start = tokio::time::Instant::now();
        let mut last = None;
        while start.elapsed() < deadline {
            let left = deadline.saturating_sub(start.elapsed());
            match self
                .beat(addr, check, left.min(Duration::from_secs(1)))
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
        check: HealthCheck<'_>,
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
            match self.beat(addr, check, timeout.min(left)).await {
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
    /// The connection could not be made (`tcp` and `grpc` checks).
    #[error("connection failed: {}", chain(.0))]
    Connect(#[source] ConnectError),
    /// The HTTP/2 exchange of a `grpc` check failed.
    #[error("HTTP/2 exchange failed: {}", chain(.0))]
    Exchange(#[source] hyper::Error),
    /// A `grpc` check came back unhealthy.
    #[error("gRPC health check: {0}")]
    Grpc(#[source] GrpcFailure),
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

/// `e` and its sources, `: `-separated (hyper's and the connector's own words are short).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

/// The gRPC health check's exchange on a fresh connection `io`: `POST` the
/// `HealthCheckRequest` for `service` to `base` + the method's path, read at most
/// [`grpc::MAX_ANSWER_BYTES`] of the answer, and judge it.
async fn exchange<I>(io: I, base: &str, service: &str, limit: Duration) -> Result<(), ProbeError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .max_header_list_size(16 * 1024)
        .handshake::<_, Full<Bytes>>(io)
        .await
        .map_err(ProbeError::Exchange)?;
    // The connection's task ends when the sender is dropped, or at `limit` at the latest.
    tokio::spawn(async move {
        let _ = tokio::time::timeout(limit, conn).await;
    });
    let uri = format!("{base}{}", grpc::PATH);
    let req = hyper::Request::post(uri)
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .header(http::header::VIA, Via::mine().value().clone())
        .body(Full::new(Bytes::from(grpc::request(service))))
        .map_err(|source| ProbeError::Address {
            addr: base.to_owned(),
            source,
        })?;
    let resp = send.send_request(req).await.map_err(ProbeError::Exchange)?;
    let (parts, mut body) = resp.into_parts();
    if parts.status != hyper::StatusCode::OK {
        return Err(ProbeError::Status(parts.status));
    }
    let mut data = Vec::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        match frame.map_err(ProbeError::Exchange)?.into_data() {
            Ok(bytes) => {
                if data.len() + bytes.len() > grpc::MAX_ANSWER_BYTES {
                    return Err(ProbeError::Grpc(GrpcFailure::TooLarge));
                }
                data.extend_from_slice(&bytes);
            }
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    // In the trailers; in the headers for a trailers-only answer.
    let field = |name: &str| {
        trailers
            .as_ref()
            .and_then(|t| t.get(name))
            .or_else(|| parts.headers.get(name))
            .map(|v| v.as_bytes())
    };
    grpc::verdict(field("grpc-status"), field("grpc-message"), &data).map_err(ProbeError::Grpc)
}

/// What a 508 answer to a health check means.
fn loop_hint(status: hyper::StatusCode) -> &'static str {
    if status == hyper::StatusCode::LOOP_DETECTED {
        ": a request loop (the check came back to a load balancer it had passed)"
    } else {
        ""
    }
}
