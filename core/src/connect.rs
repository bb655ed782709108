//! The one connector of `lb`'s hyper clients — the data plane's (`data/proxy/transport.rs`)
//! and the heartbeats' (`control/probe.rs`): TCP as hyper-util's `HttpConnector` dials it
//! (no delay, a connect timeout), and for an `https` URI the rustls handshake with the TLS
//! settings of the backend at its authority ([`crate::state::Shared::backend_tls`], looked up
//! without a lock once per new connection), or with settings given for one backend
//! ([`Connector::fixed`]: the rise checks of a backend not yet in the ring).
//!
//! Failures are typed ([`ConnectError`]) so a TLS failure is found in hyper's error chain
//! ([`tls_failure`]) and counted and shown as one (`kind="tls"`, a vacancy's reason).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::uri::{Scheme, Uri};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tower_service::Service;

use crate::config::BackendTls;
use crate::state::TlsTable;

/// An error of the TCP connector, boxed as hyper-util's connectors give it.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where a [`Connector`] finds the TLS settings of an `https` authority.
#[derive(Clone)]
enum Settings {
    /// By address, in the table the controller publishes.
    Table(Arc<ArcSwap<TlsTable>>),
    /// The same settings for every `https` URI (one backend's rise checks).
    Fixed(Arc<BackendTls>),
}

/// Dials backends over TCP, and over TLS for `https` URIs.
#[derive(Clone)]
pub(crate) struct Connector {
    http: HttpConnector,
    tls: Settings,
    /// How long the TLS handshake may take (the connect timeout, again).
    handshake_timeout: Duration,
}

impl Connector {
    /// A connector whose `https` settings come from `table` by address; TCP connects time out
    /// after `connect_timeout` (and so does the TLS handshake).
    pub(crate) fn new(table: Arc<ArcSwap<TlsTable>>, connect_timeout: Option<Duration>) -> Self {
        Connector::with(Settings::Table(table), connect_timeout)
    }

    /// A connector that speaks TLS with `tls` to every `https` URI.
    pub(crate) fn fixed(tls: Arc<BackendTls>, connect_timeout: Option<Duration>) -> Self {
        Connector::with(Settings::Fixed(tls), connect_timeout)
    }

    fn with(tls: Settings, connect_timeout: Option<Duration>) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(connect_timeout);
        // `https` URIs are dialled here too; the handshake is this connector's.
        http.enforce_http(false);
        Connector {
            http,
            tls,
            handshake_timeout: connect_timeout.unwrap_or(Duration::from_secs(10)),
        }
    }

    fn settings_for(&self, uri: &Uri) -> Option<Arc<BackendTls>> {
        match &self.tls {
            Settings::Fixed(tls) => Some(Arc::clone(tls)),
            Settings::Table(table) => table.load().get(address_of(uri)?).cloned(),
        }
    }
}

impl Service<Uri> for Connector {
    type Response = Conn;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, ConnectError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Service::<Uri>::poll_ready(&mut self.http, cx).map_err(|e| ConnectError::Tcp(e.into()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        if uri.scheme() != Some(&Scheme::HTTPS) {
            let tcp = self.http.call(uri);
            return Box::pin(async move {
                tcp.await
                    .map(Conn::Plain)
                    .map_err(|e| ConnectError::Tcp(e.into()))
            });
        }
        let addr = address_of(&uri).unwrap_or_default().to_owned();
        let tls = self.settings_for(&uri);
        let limit = self.handshake_timeout;
        let tcp = self.http.call(uri);
        Box::pin(async move {
            let Some(tls) = tls else {
                return Err(ConnectError::NoSettings(addr));
            };
            let tcp = tcp.await.map_err(|e| ConnectError::Tcp(e.into()))?;
            let connector = TlsConnector::from(Arc::clone(&tls.config));
            let handshake = connector.connect(tls.server_name.clone(), tcp.into_inner());
            match tokio::time::timeout(limit, handshake).await {
                Ok(Ok(stream)) => Ok(Conn::Tls(Box::new(TokioIo::new(stream)))),
                Ok(Err(source)) => Err(ConnectError::Tls {
                    failure: TlsFailure::of(&source),
                    addr,
                    source,
                }),
                Err(_) => Err(ConnectError::Tls {
                    addr,
                    failure: TlsFailure::Handshake(format!(
                        "no handshake within {} ms",
                        limit.as_millis()
                    )),
                    source: std::io::ErrorKind::TimedOut.into(),
                }),
            }
        })
    }
}

/// The `HOST:PORT` of `uri`, without the user info a TLS backend's authority carries (its
/// settings' id, which keeps its pooled connections apart: `state::Backend::with_tls`).
fn address_of(uri: &Uri) -> Option<&str> {
    let authority = uri.authority()?.as_str();
    Some(
        authority
            .rsplit_once('@')
            .map_or(authority, |(_, address)| address),
    )
}

/// A connection to a backend: plain TCP or TLS over it.
pub(crate) enum Conn {
    /// Plain HTTP.
    Plain(TokioIo<TcpStream>),
    /// HTTP over TLS (boxed: rustls's connection state is a kilobyte).
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl hyper::rt::Read for Conn {
    #[inline]
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Conn::Tls(io) => Pin::new(&mut **io).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Conn {
    #[inline]
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Conn::Tls(io) => Pin::new(&mut **io).poll_write(cx, buf),
        }
    }

    #[inline]
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(io) => Pin::new(io).poll_flush(cx),
            Conn::Tls(io) => Pin::new(&mut **io).poll_flush(cx),
        }
    }

    #[inline]
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Conn::Tls(io) => Pin::new(&mut **io).poll_shutdown(cx),
        }
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(io) => io.is_write_vectored(),
            Conn::Tls(io) => io.is_write_vectored(),
        }
    }

    #[inline]
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Conn::Tls(io) => Pin::new(&mut **io).poll_write_vectored(cx, bufs),
        }
    }
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        match self {
            Conn::Plain(io) => io.connected(),
            Conn::Tls(io) => io.inner().get_ref().0.connected(),
        }
    }
}

/// Why a connection to a backend could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    /// The TCP connection failed (refused, unreachable, timed out, bad address).
    #[error(transparent)]
    Tcp(BoxError),
    /// An `https` URI for an address with no TLS settings (not a TLS backend any more).
    #[error("no TLS settings for {0}")]
    NoSettings(String),
    /// The TLS handshake failed: nothing of a request was sent.
    #[error("TLS to {addr}: {failure}")]
    Tls {
        /// The backend's address.
        addr: String,
        /// What failed, in a few words.
        failure: TlsFailure,
        /// The handshake's error.
        #[source]
        source: std::io::Error,
    },
}

/// What made a TLS handshake with a backend fail, as a vacancy's reason and the log say it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TlsFailure {
    /// The certificate does not chain to a trusted root (`ca`, or the system's roots).
    #[error("certificate not trusted ({0})")]
    NotTrusted(String),
    /// The certificate does not name `server_name` (rustls's words: the name, and those the
    /// certificate has).
    #[error("{0}")]
    WrongName(String),
    /// The certificate is expired or not valid yet.
    #[error("certificate out of its validity period ({0})")]
    Expired(String),
    /// The certificate was refused for another reason.
    #[error("certificate refused ({0})")]
    BadCertificate(String),
    /// The handshake failed otherwise (no common version or cipher, the peer is not TLS,
    /// closed, timed out).
    #[error("handshake failed ({0})")]
    Handshake(String),
}

impl TlsFailure {
    /// What the handshake error `e` (tokio-rustls wraps rustls's error in an `io::Error`)
    /// means.
    pub(crate) fn of(e: &std::io::Error) -> TlsFailure {
        use rustls::CertificateError as C;
        let Some(rustls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
            return TlsFailure::Handshake(e.to_string());
        };
        match rustls {
            rustls::Error::InvalidCertificate(cert) => {
                let name = variant(cert);
                match cert {
                    C::UnknownIssuer | C::BadSignature | C::UnhandledCriticalExtension => {
                        TlsFailure::NotTrusted(name)
                    }
                    C::NotValidForName | C::NotValidForNameContext { .. } => {
                        TlsFailure::WrongName(cert.to_string())
                    }
                    C::Expired
                    | C::ExpiredContext { .. }
                    | C::NotValidYet
                    | C::NotValidYetContext { .. } => TlsFailure::Expired(name),
                    _ => TlsFailure::BadCertificate(name),
                }
            }
            other => TlsFailure::Handshake(other.to_string()),
        }
    }
}

/// The name of `value`'s enum variant (its `Debug` up to the first field).
fn variant(value: &impl std::fmt::Debug) -> String {
    let text = format!("{value:?}");
    let end = text.find([' ', '(', '{']).unwrap_or(text.len());
    text[..end].to_owned()
}

/// The TLS failure in `e`'s chain of sources, if a TLS handshake is why it failed.
pub(crate) fn tls_failure<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e TlsFailure> {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(ConnectError::Tls { failure, .. }) = s.downcast_ref::<ConnectError>() {
            return Some(failure);
        }
        source = s.source();
    }
    None
}

#[cfg(test)]
mod tests;
