//! `[tls]`: the HTTPS listener and its certificates, and the rules about them that need no
//! file (a listener needs a certificate, its address is not another listener's). Reading and
//! checking the certificate files themselves is [`super::certs`].

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::check;
use super::problem::Problem;
use super::sections::Config;

/// `[tls]`: HTTPS from clients. Absent: no TLS listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsSection {
    /// Address the HTTPS listener binds (needs a restart to change); `listen` stays plain HTTP.
    pub listen: SocketAddr,
    /// The oldest protocol version offered: TLS 1.2 (the default) or 1.3 only.
    #[serde(default)]
    pub min_version: MinVersion,
    /// The certificates, chosen by the client's SNI among each one's names; the first is the
    /// default (no SNI, or no certificate has the name).
    #[serde(default)]
    pub certificates: Vec<CertificateEntry>,
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

impl Config {
    /// The certificate files of `[tls]`, in order (paths relative to the file's directory);
    /// empty without `[tls]`.
    pub(crate) fn certificate_files(&self) -> Vec<CertificateFiles> {
        self.tls
            .iter()
            .flat_map(|tls| &tls.certificates)
            .map(|entry| CertificateFiles {
                cert: self.base_dir.join(entry.cert.get_ref()),
                key: self.base_dir.join(entry.key.get_ref()),
            })
            .collect()
    }

    /// The TLS listen address, when `[tls]` is there.
    pub(crate) fn tls_listen(&self) -> Option<SocketAddr> {
        self.tls.as_ref().map(|tls| tls.listen)
    }

    /// `[tls]` rules that need no file: at least one certificate, an address of its own.
    pub(super) fn tls_problems(&self) -> Vec<Problem> {
        let Some(tls) = &self.tls else {
            return Vec::new();
        };
        let at = |key: &str| check::key_offset(&self.text, "tls", key).unwrap_or(0);
        let mut problems = Vec::new();
        if tls.certificates.is_empty() {
            problems.push(Problem::pending(
                at("listen"),
                "[tls] needs at least one [[tls.certificates]] entry (cert = \"….pem\", key = \"….key\"); \
                 without certificates there is nothing to serve HTTPS with"
                    .into(),
            ));
        }
        let plain = std::iter::once(self.listen).chain(self.admin.listen);
        for other in plain {
            if other == tls.listen {
                problems.push(Problem::pending(
                    at("listen"),
                    format!(
                        "tls.listen {} is also a plain HTTP listener's address",
                        tls.listen
                    ),
                ));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text).map_err(|e| e.to_string())
    }

    #[test]
    fn no_section_no_listener() {
        let config = parse("").unwrap();
        assert!(config.tls.is_none());
        assert!(config.certificate_files().is_empty());
    }

    #[test]
    fn a_section_with_certificates() {
        let config = parse(
            "[tls]\nlisten = \"127.0.0.1:5443\"\nmin_version = \"1.3\"\n\
             [[tls.certificates]]\ncert = \"a.pem\"\nkey = \"a.key\"\n\
             [[tls.certificates]]\ncert = \"b.pem\"\nkey = \"b.key\"\n",
        )
        .unwrap();
        let tls = config.tls.as_ref().unwrap();
        assert_eq!(tls.min_version, MinVersion::Tls13);
        assert_eq!(tls.listen.port(), 5443);
        let files = config.certificate_files();
        assert_eq!(files.len(), 2);
        assert_eq!(files[1].key, PathBuf::from("b.key"));
    }

    #[test]
    fn a_listener_without_certificates_is_refused() {
        let e = parse("[tls]\nlisten = \"127.0.0.1:5443\"\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("at least one"), "{e}");
    }

    #[test]
    fn unknown_keys_and_bad_versions_are_refused_with_their_place() {
        let e = parse(
            "[tls]\nlisten = \"127.0.0.1:5443\"\nmin_versoin = \"1.2\"\n\
             [[tls.certificates]]\ncert = \"a.pem\"\nkye = \"a.key\"\n",
        )
        .unwrap_err();
        assert!(
            e.contains("line 3") && e.contains("did you mean `min_version`"),
            "{e}"
        );
        assert!(e.contains("line 6") && e.contains("`kye`"), "{e}");
        let e = parse(
            "[tls]\nlisten = \"127.0.0.1:5443\"\nmin_version = \"1.1\"\n\
             [[tls.certificates]]\ncert = \"a.pem\"\nkey = \"a.key\"\n",
        )
        .unwrap_err();
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn the_same_address_as_the_plain_listener_is_refused() {
        let e = parse(
            "listen = \"127.0.0.1:5000\"\n[tls]\nlisten = \"127.0.0.1:5000\"\n\
             [[tls.certificates]]\ncert = \"a.pem\"\nkey = \"a.key\"\n",
        )
        .unwrap_err();
        assert!(e.contains("plain HTTP"), "{e}");
    }
}
