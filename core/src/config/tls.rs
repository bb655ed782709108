//! `[tls]`: the HTTPS listener and its certificates, as types. Its rules that need no file (a
//! listener needs a certificate, its address is not another listener's) are in `rules.rs`;
//! reading and checking the certificate files themselves is `certs.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::acme::AcmeSection;

/// `[tls]`: HTTPS from clients. Absent: no TLS listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsSection {
    /// Address the HTTPS listener binds (needs a restart to change); `listen` stays plain HTTP.
    pub listen: SocketAddr,
    /// The oldest protocol version offered: TLS 1.2 (the default) or 1.3 only.
    #[serde(default)]
    pub min_version: MinVersion,
    /// Answer requests on the plain `listen` with `308 Permanent Redirect` to the same URL on
    /// the TLS listener (never `lb`'s own endpoints: `/rep`, `/add`, `/rm`, `/_lb/…`). Live.
    #[serde(default)]
    pub redirect_http: bool,
    /// The certificates, chosen by the client's SNI among each one's names; the first is the
    /// default (no SNI, or no certificate has the name).
    #[serde(default)]
    pub certificates: Vec<CertificateEntry>,
    /// Certificates ordered over ACME ([`super::acme`]), served beside the files' (after them:
    /// the first file certificate stays the default).
    #[serde(default)]
    pub acme: Option<AcmeSection>,
}

/// `[tls] min_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub(crate) enum MinVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    Tls13,
}

/// One `[[tls.certificates]]` entry: a PEM certificate chain and its PEM private key, relative
/// to the configuration file's directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CertificateEntry {
    /// The certificate chain (leaf first).
    pub cert: Spanned<PathBuf>,
    /// The private key: PKCS#8, PKCS#1 RSA or SEC1 EC.
    pub key: Spanned<PathBuf>,
}

/// A certificate entry's two files, resolved against the configuration file's directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct CertificateFiles {
    /// The certificate chain.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

#[cfg(test)]
mod tests;
