//! TLS to a backend by address (`tls = true` on a `[[replicas]]` entry with `address`): the
//! rustls client settings [`BackendTls`] `lb` dials it with, built from the entry's
//! `server_name`, `ca` and `tls_verify` when the file is read and checked (a blocking task,
//! never the controller's loop: the CA file is read here).
//!
//! Defaults: the name verified (and sent as SNI) is the host of `address` (an IP address is
//! verified as an IP SAN); the roots are the system's; TLS 1.2 and 1.3; ALPN `http/1.1` (`h2`
//! only with `protocol = "h2"`: [`Protocol`], what `lb` speaks to a backend by address).
//! `tls_verify = false` accepts any certificate ([`NoVerification`]): logged as a warning.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::Digest as _;

/// What `lb` speaks to a backend (`protocol` on a `[[replicas]]` entry with `address`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Protocol {
    /// HTTP/1.1 (the default; the only one for replicas `lb` runs).
    #[default]
    Http1,
    /// HTTP/2 in clear text with prior knowledge (no upgrade): gRPC servers.
    H2c,
    /// HTTP/2 over TLS (`tls = true`; ALPN `h2` only).
    H2,
}

impl Protocol {
    /// Its name in `lb.toml`, `/add` and `/_lb/status`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::H2c => "h2c",
            Protocol::H2 => "h2",
        }
    }

    /// Whether it is HTTP/2 (`h2c` or `h2`).
    #[inline]
    pub(crate) fn is_http2(self) -> bool {
        !matches!(self, Protocol::Http1)
    }

    /// The value named `name`, if it is one.
    pub(crate) fn parse(name: &str) -> Option<Protocol> {
        match name {
            "http1" => Some(Protocol::Http1),
            "h2c" => Some(Protocol::H2c),
            "h2" => Some(Protocol::H2),
            _ => None,
        }
    }
}

/// The largest CA file read (the same bound as a configuration file).
pub(crate) const MAX_CA_BYTES: u64 = 1024 * 1024;

/// How `lb` speaks TLS to one backend by address.
pub(crate) struct BackendTls {
    /// The rustls client settings (roots or [`NoVerification`], ALPN `http/1.1`, or `h2` only
    /// for `protocol = "h2"`).
    pub config: Arc<ClientConfig>,
    /// Sent as SNI and verified against the certificate.
    pub server_name: ServerName<'static>,
    /// Whether the certificate is verified (`tls_verify`; `false` is dangerous).
    pub verify: bool,
    /// The entry's settings as written (`server_name`, `ca`), to write them back to the file.
    pub written: WrittenTls,
    /// A number no other settings of this process have: the data plane's connections to a
    /// backend are pooled under it (`Backend::with_tls`), so connections made under settings
    /// that were replaced are never reused.
    pub id: u64,
    /// What the settings were made of (name, CA file path and contents, verification), to tell
    /// a changed entry from an unchanged one on a reload.
    fingerprint: [u8; 32],
}

impl std::fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendTls")
            .field("server_name", &self.server_name)
            .field("verify", &self.verify)
            .finish_non_exhaustive()
    }
}

impl PartialEq for BackendTls {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for BackendTls {}

/// The `server_name` and `ca` keys of an entry as the user wrote them (`None`: not given).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct WrittenTls {
    /// `server_name`.
    pub server_name: Option<String>,
    /// `ca`, relative to the file's folder.
    pub ca: Option<String>,
}

/// Why the TLS settings of an entry could not be built.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BackendTlsError {
    /// `server_name` (or the host of `address`) is neither a DNS name nor an IP address.
    #[error("server_name {0:?} is not a valid DNS name or IP address")]
    ServerName(String),
    /// The CA file could not be read.
    #[error("ca {}: cannot be read: {source}", .path.display())]
    CaRead {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The CA file is too large.
    #[error("ca {}: {size} bytes; a CA file may be at most {MAX_CA_BYTES} bytes (1 MiB)", .path.display())]
    CaTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The CA file holds no PEM certificate that parses.
    #[error("ca {}: {reason}", .path.display())]
    CaContent {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The system's root certificates could not be loaded.
    #[error("the system's root certificates could not be loaded: {0}")]
    SystemRoots(String),
    /// rustls refused the settings.
    #[error("TLS settings: {0}")]
    Rustls(#[from] rustls::Error),
}

/// `server_name` as rustls takes it (a DNS name or an IP address), or why not.
pub(crate) fn server_name(name: &str) -> Result<ServerName<'static>, BackendTlsError> {
    // An IPv6 address may come bracketed from `address`.
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    ServerName::try_from(bare.to_owned()).map_err(|_| BackendTlsError::ServerName(name.to_owned()))
}

/// The host of a `HOST:PORT` address (brackets kept off an IPv6 address).
pub(crate) fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// The roots in the PEM file at `path` (at most [`MAX_CA_BYTES`], at least one certificate
/// that parses).
pub(crate) fn read_ca(path: &Path) -> Result<(RootCertStore, Vec<u8>), BackendTlsError> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let read = |source| BackendTlsError::CaRead {
        path: path.to_owned(),
        source,
    };
    // The kind of file is checked on the name before opening (opening a FIFO blocks), and it
    // is opened without blocking (as `read_text` reads `lb.toml`).
    let meta = std::fs::metadata(path).map_err(read)?;
    if !meta.is_file() {
        return Err(BackendTlsError::CaContent {
            path: path.to_owned(),
            reason: "not a regular file".into(),
        });
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read)?;
    let mut bytes = Vec::new();
    file.take(MAX_CA_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > MAX_CA_BYTES {
        return Err(BackendTlsError::CaTooLarge {
            path: path.to_owned(),
            size: meta.len().max(bytes.len() as u64),
        });
    }
    let content = |reason: String| BackendTlsError::CaContent {
        path: path.to_owned(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    let mut found = 0;
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| content(format!("not valid PEM: {e}")))?;
        found += 1;
        roots
            .add(cert)
            .map_err(|e| content(format!("certificate {found} does not parse: {e}")))?;
    }
    if found == 0 {
        return Err(content(
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok((roots, bytes))
}

/// The system's root certificates (`rustls-native-certs`); certificates that do not parse are
/// skipped, none at all is an error.
pub(crate) fn system_roots() -> Result<RootCertStore, BackendTlsError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_owned(), ToString::to_string);
        return Err(BackendTlsError::SystemRoots(why));
    }
    Ok(roots)
}

/// The crypto `lb` uses for TLS to backends: rustls's `ring` provider.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl BackendTls {
    /// The settings for a backend at `address`: `server_name` (default: the host of `address`),
    /// roots from `ca` (relative to `base_dir`; default: the system's) unless `verify` is off;
    /// ALPN `h2` only for `protocol` [`Protocol::H2`], else `http/1.1`.
    pub(crate) fn build(
        address: &str,
        server_name_setting: Option<&str>,
        ca: Option<&str>,
        verify: bool,
        base_dir: &Path,
        protocol: Protocol,
    ) -> Result<BackendTls, BackendTlsError> {
        let name_text = server_name_setting.unwrap_or_else(|| host_of(address));
        let name = server_name(name_text)?;
        let mut hasher = sha2::Sha256::new();
        hasher.update(name_text.as_bytes());
        hasher.update([0, u8::from(verify), protocol as u8]);
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
        let mut config = if verify {
            let roots = match ca {
                Some(ca) => {
                    let path = base_dir.join(ca);
                    let (roots, bytes) = read_ca(&path)?;
                    hasher.update(path.as_os_str().as_encoded_bytes());
                    hasher.update([0]);
                    hasher.update(&bytes);
                    roots
                }
                None => system_roots()?,
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
                .with_no_client_auth()
        };
        config.alpn_protocols = match protocol {
            Protocol::H2 => vec![b"h2".to_vec()],
            Protocol::Http1 | Protocol::H2c => vec![b"http/1.1".to_vec()],
        };
        static IDS: AtomicU64 = AtomicU64::new(1);
        Ok(BackendTls {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            config: Arc::new(config),
            server_name: name,
            verify,
            written: WrittenTls {
                server_name: server_name_setting.map(str::to_owned),
                ca: ca.map(str::to_owned),
            },
            fingerprint: hasher.finalize().into(),
        })
    }
}

/// DANGER: a certificate verifier that accepts any certificate for any name (`tls_verify =
/// false`). The handshake's signatures are still checked (the peer holds the key of the
/// certificate it sent), but anyone can make such a certificate: the connection is encrypted,
/// not authenticated.
#[derive(Debug)]
pub(crate) struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests;
