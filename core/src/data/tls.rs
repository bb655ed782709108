//! TLS from clients: the rustls server configuration a worker accepts with ([`acceptor`]:
//! certificates by SNI from the shared [`CertStore`], ALPN `h2` then `http/1.1`, TLS 1.2 and 1.3 or 1.3
//! only) and the handshake of one accepted connection ([`handshake`]: bounded by the header
//! timeout, counted by version or by a fixed reason). After it, the connection is served by
//! the same code as a plain one (`front::connection` over [`ClientIo`]).

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::{ServerConfig, ServerSessionMemoryCache};
use rustls::version::{TLS12, TLS13};
use rustls::{ProtocolVersion, SupportedProtocolVersion};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::body::ProxyBody;
use super::downstream::ClientIo;
use crate::config::tls::MinVersion;
use crate::metrics::tls::{HandshakeError, TlsCounters};
use crate::state::tls::{CertStore, ACME_TLS_ALPN};

/// What a TLS connection's handshake settled, for its requests (the access log).
#[derive(Debug, Clone)]
pub(crate) struct ConnTls {
    /// `"1.2"` or `"1.3"`.
    pub(crate) version: &'static str,
    /// The name the client asked for (SNI), if any.
    pub(crate) sni: Option<Arc<str>>,
    /// ALPN chose `h2`: the connection speaks HTTP/2.
    pub(crate) h2: bool,
}

/// The ALPN name of HTTP/2 over TLS (RFC 9113 §3.2).
pub(crate) const ALPN_H2: &[u8] = b"h2";

impl ClientIo for TlsStream<TcpStream> {
    #[inline]
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// TLS sessions kept for resumption, shared by every worker.
const SESSION_CACHE_ENTRIES: usize = 20_000;

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up TLS: {0}")]
pub(crate) struct TlsSetupError(#[from] rustls::Error);

/// The acceptor of a TLS listener: certificates from `certs` (swapped live), versions from
/// `min_version` (never below 1.2), ALPN `h2` then `http/1.1`.
pub(crate) fn acceptor(
    certs: Arc<CertStore>,
    min_version: MinVersion,
) -> Result<TlsAcceptor, TlsSetupError> {
    let versions: &[&'static SupportedProtocolVersion] = match min_version {
        MinVersion::Tls12 => &[&TLS13, &TLS12],
        MinVersion::Tls13 => &[&TLS13],
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    // HTTP/2 first, then HTTP/1.1 (a client offering both gets HTTP/2; one offering no ALPN
    // speaks HTTP/1.1). `acme-tls/1` is only ever chosen by an ACME CA validating TLS-ALPN-01
    // (`[tls.acme]`): it gets the challenge certificate (`CertStore`) and the connection is
    // closed at once.
    config.alpn_protocols = vec![
        ALPN_H2.to_vec(),
        b"http/1.1".to_vec(),
        ACME_TLS_ALPN.to_vec(),
    ];
    // Sessions a returning client may resume (rustls keeps 256 by default; nginx's 10 MB
    // shared cache holds about 40 000): a few hundred bytes each, evicted oldest first.
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Run the handshake of an accepted connection, at most `deadline`; count it in `counters`
/// (done, by version; failed, by reason). `None` when it failed: the connection is dropped.
pub(crate) async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    deadline: Duration,
    counters: &TlsCounters,
) -> Option<(TlsStream<TcpStream>, ConnTls)> {
    let _ = stream.set_nodelay(true);
    let result = tokio::time::timeout(deadline, acceptor.accept(stream)).await;
    let why = match result {
        Ok(Ok(tls)) => {
            let (_, conn) = tls.get_ref();
            if conn.alpn_protocol() == Some(ACME_TLS_ALPN) {
                // RFC 8737 §3: nothing more is exchanged after a TLS-ALPN-01 handshake.
                return None;
            }
            let tls13 = conn.protocol_version() == Some(ProtocolVersion::TLSv1_3);
            counters.handshake(tls13);
            let info = ConnTls {
                version: if tls13 { "1.3" } else { "1.2" },
                sni: conn.server_name().map(Arc::from),
                h2: conn.alpn_protocol() == Some(ALPN_H2),
            };
            return Some((tls, info));
        }
        Ok(Err(e)) => classify(&e),
        Err(_) => HandshakeError::Timeout,
    };
    counters.error(why);
    tracing::debug!(reason = why.label(), "TLS handshake failed");
    None
}

/// The reason label of a failed handshake's error.
fn classify(e: &io::Error) -> HandshakeError {
    use io::ErrorKind;
    match e.kind() {
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => {
            HandshakeError::Eof
        }
        ErrorKind::InvalidData => match e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            Some(rustls::Error::General(text)) if text.contains("certificate") => {
                HandshakeError::NoCertificate
            }
            Some(_) | None => HandshakeError::Protocol,
        },
        _ => HandshakeError::Other,
    }
}

/// `[tls] redirect_http`: the answer on the plain listener, `308 Permanent Redirect` to the same
/// host (without its port) on the TLS listener's `port` (left out when 443), same path and
/// query. Without a usable `Host`, `fallback` (the TLS listener's address) is the host.
pub(crate) fn redirect<B>(
    req: &http::Request<B>,
    port: u16,
    fallback: IpAddr,
) -> http::Response<ProxyBody> {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(host_only)
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()));
    let host = match host {
        Some(host) => host.to_owned(),
        None => match fallback {
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) => ip.to_string(),
        },
    };
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{host}{target}")
    } else {
        format!("https://{host}:{port}{target}")
    };
    let mut resp = http::Response::new(ProxyBody::full(bytes::Bytes::new()));
    *resp.status_mut() = http::StatusCode::PERMANENT_REDIRECT;
    if let Ok(value) = http::HeaderValue::try_from(location) {
        resp.headers_mut().insert(http::header::LOCATION, value);
    }
    resp.headers_mut().insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from_static("0"),
    );
    resp
}

/// The host of a `Host` value, without its port (`[::1]:80` → `[::1]`, `a.test:80` → `a.test`).
fn host_only(host: &str) -> &str {
    match host.rfind(']') {
        Some(end) => &host[..=end],
        None => host.split(':').next().unwrap_or(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_keep_host_path_and_query() {
        let at = |host: Option<&str>, uri: &str, port: u16| {
            let mut req = http::Request::builder().uri(uri);
            if let Some(host) = host {
                req = req.header("host", host);
            }
            let resp = redirect(&req.body(()).unwrap(), port, "127.0.0.1".parse().unwrap());
            assert_eq!(resp.status(), 308);
            resp.headers()["location"].to_str().unwrap().to_owned()
        };
        assert_eq!(
            at(Some("a.test:5000"), "/x?y=1", 5443),
            "https://a.test:5443/x?y=1"
        );
        assert_eq!(at(Some("a.test"), "/", 443), "https://a.test/");
        assert_eq!(at(Some("[::1]:80"), "/p", 8443), "https://[::1]:8443/p");
        assert_eq!(at(None, "/p", 8443), "https://127.0.0.1:8443/p");
    }

    #[test]
    fn errors_map_to_fixed_reasons() {
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(classify(&eof), HandshakeError::Eof);
        let garbage = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
        );
        assert_eq!(classify(&garbage), HandshakeError::Protocol);
        let none = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::General("no server certificate chain resolved".into()),
        );
        assert_eq!(classify(&none), HandshakeError::NoCertificate);
        assert_eq!(classify(&io::Error::other("x")), HandshakeError::Other);
    }
}
