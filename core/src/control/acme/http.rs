//! The ACME client's HTTP client: hyper-util's pooled client over TCP and rustls (ring), with
//! the roots of `[tls.acme] ca` or the system's. `instant-acme`'s own client would bring
//! hyper-rustls and a platform verifier; this one is the connector `lb` already has the parts
//! of. Every request is bounded by [`REQUEST_LIMIT`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tower_service::Service;

use crate::config::backend_tls::{read_ca, system_roots};
use crate::connect::Conn;

/// The longest one request to the ACME server may take (connect, TLS, answer).
pub(super) const REQUEST_LIMIT: Duration = Duration::from_secs(30);

/// Why the HTTP client could not be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HttpSetupError {
    /// The roots (`ca` or the system's) could not be loaded.
    #[error(transparent)]
    Roots(#[from] crate::config::backend_tls::BackendTlsError),
}

/// The HTTP client `instant-acme` sends its requests with.
pub(super) struct AcmeHttp {
    client: Client<Connector, BodyWrapper<Bytes>>,
}

impl AcmeHttp {
    /// A client trusting the roots in the PEM file `ca`, or the system's (reads files: call
    /// off the controller's loop).
    pub(super) fn new(ca: Option<&std::path::Path>) -> Result<AcmeHttp, HttpSetupError> {
        let roots = match ca {
            Some(path) => read_ca(path)?.0,
            None => system_roots()?,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(crate::config::backend_tls::BackendTlsError::from)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let connector = Connector {
            http,
            tls: TlsConnector::from(Arc::new(config)),
        };
        Ok(AcmeHttp {
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let sent = self.client.request(req);
        Box::pin(async move {
            match tokio::time::timeout(REQUEST_LIMIT, sent).await {
                Ok(Ok(response)) => Ok(BytesResponse::from(response)),
                Ok(Err(e)) => Err(instant_acme::Error::Other(Box::new(Unreachable(chain(&e))))),
                Err(_) => Err(instant_acme::Error::Other(Box::new(Unreachable(format!(
                    "no answer within {} s",
                    REQUEST_LIMIT.as_secs()
                ))))),
            }
        })
    }
}

/// The ACME server could not be reached or did not answer.
#[derive(Debug, thiserror::Error)]
#[error("ACME server unreachable: {0}")]
struct Unreachable(String);

/// TCP, then TLS with the server name of the URI's host (ACME is HTTPS only).
#[derive(Clone)]
struct Connector {
    http: HttpConnector,
    tls: TlsConnector,
}

/// An error of the connector, boxed as hyper-util takes it.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Service<Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Service::<Uri>::poll_ready(&mut self.http, cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let host = uri.host().unwrap_or_default();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .to_owned();
        let https = uri.scheme_str() == Some("https");
        let tcp = self.http.call(uri);
        let tls = self.tls.clone();
        Box::pin(async move {
            if !https {
                return Err("the ACME server's URLs must be https".into());
            }
            let name = ServerName::try_from(host.clone())
                .map_err(|_| format!("{host:?} is not a server name"))?;
            let tcp = tcp.await?;
            let stream = tokio::time::timeout(REQUEST_LIMIT, tls.connect(name, tcp.into_inner()))
                .await
                .map_err(|_| "no TLS handshake in time")??;
            Ok(Conn::Tls(Box::new(TokioIo::new(stream))))
        })
    }
}

/// `e` and its sources, one after the other (hyper's own message alone is "client error").
pub(super) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
