//! Reading and checking `[[tls.certificates]]` files: a PEM certificate chain and its PEM
//! private key become a [`LoadedCert`] (rustls's `CertifiedKey` with the names it answers for
//! and its expiry), or a [`CertError`] that names the file and the reason. Used by `lb check`,
//! at start and by every live reload (always off the controller's loop: this reads files).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use super::load::ConfigError;
use super::problem::Problem;
use super::sections::Config;
use super::tls::CertificateFiles;

/// Largest certificate or key file read (1 MiB): a PEM chain is a few KiB.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// A certificate and its key, read, parsed and checked.
#[derive(Debug, Clone)]
pub(crate) struct LoadedCert {
    /// Where it was read from.
    pub files: CertificateFiles,
    /// The DNS names it answers for (its SAN DNS names, else its subject's common name),
    /// lower-case; `*.example.com` for a wildcard.
    pub names: Vec<String>,
    /// Its notAfter, in seconds since the Unix epoch.
    pub not_after: i64,
    /// What rustls serves.
    pub key: Arc<CertifiedKey>,
    /// A digest of both files' bytes: the same again is no change.
    pub digest: [u8; 32],
}

/// Why a certificate or key file was refused. Each message names the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CertError {
    /// The file could not be read (or is not a regular file, or too large).
    #[error("{}: cannot read: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// No PEM `CERTIFICATE` section, or one that does not decode.
    #[error("{}: not a PEM certificate chain ({reason})", path.display())]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: &'static str,
    },
    /// No PEM private key, or one of a kind rustls cannot sign with.
    #[error("{}: not a usable PEM private key ({reason})", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The key is not the certificate's.
    #[error("{}: the key does not fit the certificate {}", key.display(), cert.display())]
    Mismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
    },
    /// The certificate's validity has ended.
    #[error("{}: the certificate expired ({} seconds ago)", path.display(), ago)]
    Expired {
        /// The file.
        path: PathBuf,
        /// How long ago, in seconds.
        ago: i64,
    },
    /// The certificate is not valid yet.
    #[error("{}: the certificate is not valid yet (for {} more seconds)", path.display(), wait)]
    NotYetValid {
        /// The file.
        path: PathBuf,
        /// How long until it is, in seconds.
        wait: i64,
    },
}

/// Now, in seconds since the Unix epoch.
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Read a small regular file (never a FIFO or device: the kind is checked on the name first).
fn read_small(path: &Path) -> Result<Vec<u8>, CertError> {
    let err = |reason: String| CertError::Read {
        path: path.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(short(&e)))?;
    if !meta.is_file() {
        return Err(err("not a regular file".into()));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_PEM_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| err(short(&e)))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(err(format!("larger than {MAX_PEM_BYTES} bytes")));
    }
    Ok(bytes)
}

/// An OS error without its number.
fn short(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// Read and check one certificate and its key at time `now` (Unix seconds): both parse, the
/// key fits the certificate, and the certificate is valid now.
pub(crate) fn load_pair(files: &CertificateFiles, now: i64) -> Result<LoadedCert, CertError> {
    let cert_bytes = read_small(&files.cert)?;
    let key_bytes = read_small(&files.key)?;
    let bad_cert = |reason| CertError::BadCertificate {
        path: files.cert.clone(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_bytes)
        .collect::<Result<_, _>>()
        .map_err(|_| bad_cert("a PEM section does not decode"))?;
    let Some(leaf) = chain.first() else {
        return Err(bad_cert("no CERTIFICATE section"));
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|_| bad_cert("the first certificate is not valid X.509"))?;
    let validity = parsed.validity();
    let not_before = validity.not_before.timestamp();
    let not_after = validity.not_after.timestamp();
    let names = names_of(&parsed);
    let key_der = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| CertError::BadKey {
        path: files.key.clone(),
        reason: match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "no PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY section".into()
            }
            _ => "a PEM section does not decode".into(),
        },
    })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der).map_err(|e| {
        CertError::BadKey {
            path: files.key.clone(),
            reason: format!("{e}"),
        }
    })?;
    let key = CertifiedKey::new(chain, signing);
    match key.keys_match() {
        Ok(()) => {}
        // A key type that cannot say its public key: nothing to compare (ring's can).
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(CertError::Mismatch {
                key: files.key.clone(),
                cert: files.cert.clone(),
            })
        }
    }
    if now > not_after {
        return Err(CertError::Expired {
            path: files.cert.clone(),
            ago: now - not_after,
        });
    }
    if now < not_before {
        return Err(CertError::NotYetValid {
            path: files.cert.clone(),
            wait: not_before - now,
        });
    }
    let mut digest = Sha256::new();
    digest.update(&cert_bytes);
    digest.update([0]);
    digest.update(&key_bytes);
    Ok(LoadedCert {
        files: files.clone(),
        names,
        not_after,
        key: Arc::new(key),
        digest: digest.finalize().into(),
    })
}

/// [`load_pair`] for each entry, in order; the first error if any.
pub(crate) fn load_all(files: &[CertificateFiles], now: i64) -> Result<Vec<LoadedCert>, CertError> {
    files.iter().map(|f| load_pair(f, now)).collect()
}

/// The DNS names of a certificate: its SAN DNS names, else its subject's common name;
/// lower-case.
fn names_of(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(name) => Some(name.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    names
}

impl Config {
    /// Read and check every `[[tls.certificates]]` pair: each problem at its entry's `cert`
    /// key, naming the file and the reason.
    pub(crate) fn load_certificates(&self) -> Result<Vec<LoadedCert>, ConfigError> {
        let Some(tls) = &self.tls else {
            return Ok(Vec::new());
        };
        let now = unix_now();
        let mut loaded = Vec::new();
        let mut problems = Vec::new();
        for (entry, files) in tls.certificates.iter().zip(self.certificate_files()) {
            match load_pair(&files, now) {
                Ok(cert) => loaded.push(cert),
                Err(e) => problems.push(Problem::at(
                    &self.text,
                    entry.cert.span().start,
                    e.to_string(),
                )),
            }
        }
        if problems.is_empty() {
            Ok(loaded)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}
