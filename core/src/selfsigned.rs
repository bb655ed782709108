//! `lb tls self-signed`: a local certificate authority and a server certificate it signed, for
//! trying HTTPS on one machine (`curl --cacert ca.pem https://localhost:5443/home`). ECDSA P-256
//! keys; the server certificate is valid for the given names (DNS names or IP addresses) for 90
//! days, the authority for 10 years. Not for a public site: use real certificates (or ACME)
//! there.

use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};

/// How long the server certificate is valid.
const CERT_DAYS: i64 = 90;
/// How long the authority is valid.
const CA_DAYS: i64 = 3650;
/// The longest name accepted (a DNS name's limit).
const MAX_NAME_LEN: usize = 253;
/// The most names one certificate gets.
const MAX_NAMES: usize = 100;

/// The files [`self_signed`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfSigned {
    /// The authority's certificate: what clients trust (`curl --cacert`).
    pub ca: PathBuf,
    /// The authority's private key (to sign more certificates; keep it private).
    pub ca_key: PathBuf,
    /// The server certificate followed by the authority's: `[[tls.certificates]] cert`.
    pub cert: PathBuf,
    /// The server certificate's private key (PKCS#8): `[[tls.certificates]] key`.
    pub key: PathBuf,
    /// The names the server certificate is valid for.
    pub names: Vec<String>,
}

/// Why [`self_signed`] wrote nothing (or not everything).
#[derive(Debug, thiserror::Error)]
pub enum SelfSignedError {
    /// No `--name` given.
    #[error("give at least one --name (e.g. --name localhost)")]
    NoName,
    /// Too many names.
    #[error("at most {MAX_NAMES} names, not {0}")]
    TooManyNames(usize),
    /// A name that is neither a DNS name nor an IP address.
    #[error("{name:?} is not a DNS name or an IP address: {reason}")]
    BadName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A file that would be overwritten.
    #[error("{0} exists; remove it or choose another --out")]
    Exists(PathBuf),
    /// Creating the directory or writing a file failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate could not be made.
    #[error("cannot make the certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// Check `name`: an IP address, or a DNS name of letters, digits, `-` and `.` (a `*.` first
/// label for a wildcard), labels of 1–63 characters.
fn check_name(name: &str) -> Result<(), SelfSignedError> {
    let bad = |reason| {
        Err(SelfSignedError::BadName {
            name: name.chars().take(MAX_NAME_LEN + 1).collect(),
            reason,
        })
    };
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return bad("a DNS name has 1 to 253 characters");
    }
    let rest = name.strip_prefix("*.").unwrap_or(name);
    for label in rest.split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("each label has 1 to 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return bad("only letters, digits, '-' and '.' (and a leading '*.')");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a label neither starts nor ends with '-'");
        }
    }
    Ok(())
}

/// Write a certificate authority and a server certificate for `names` into `out` (created if
/// missing): `ca.pem`, `ca.key`, `cert.pem` (the server certificate, then the authority's) and
/// `key.pem`. Keys are written readable by their owner only. Existing files are never
/// overwritten (an error names the first one), so a running site's key is never lost.
pub fn self_signed(names: &[String], out: &Path) -> Result<SelfSigned, SelfSignedError> {
    if names.is_empty() {
        return Err(SelfSignedError::NoName);
    }
    if names.len() > MAX_NAMES {
        return Err(SelfSignedError::TooManyNames(names.len()));
    }
    for name in names {
        check_name(name)?;
    }
    let files = SelfSigned {
        ca: out.join("ca.pem"),
        ca_key: out.join("ca.key"),
        cert: out.join("cert.pem"),
        key: out.join("key.pem"),
        names: names.to_vec(),
    };
    for path in [&files.ca, &files.ca_key, &files.cert, &files.key] {
        if path.exists() {
            return Err(SelfSignedError::Exists(path.clone()));
        }
    }

    let now = time::OffsetDateTime::now_utc();
    // A day of slack for clocks a little behind.
    let not_before = now - time::Duration::days(1);

    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name
        .push(DnType::CommonName, "lb local CA (lb tls self-signed)");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = not_before;
    ca.not_after = now + time::Duration::days(CA_DAYS);
    let ca_cert = ca.self_signed(&ca_key)?;

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut leaf = CertificateParams::new(names.to_vec())?;
    leaf.distinguished_name
        .push(DnType::CommonName, names[0].as_str());
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = not_before;
    leaf.not_after = now + time::Duration::days(CERT_DAYS);
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key)?;

    std::fs::create_dir_all(out).map_err(|source| SelfSignedError::Io {
        path: out.to_path_buf(),
        source,
    })?;
    write_new(&files.ca, ca_cert.pem().as_bytes(), false)?;
    write_new(&files.ca_key, ca_key.serialize_pem().as_bytes(), true)?;
    write_new(
        &files.cert,
        format!("{}{}", cert.pem(), ca_cert.pem()).as_bytes(),
        false,
    )?;
    write_new(&files.key, key.serialize_pem().as_bytes(), true)?;
    Ok(files)
}

/// Create `path` (failing if it exists) with `bytes`; mode 0600 when `private`.
fn write_new(path: &Path, bytes: &[u8], private: bool) -> Result<(), SelfSignedError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| SelfSignedError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 });
    let mut file = options.open(path).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
mod tests;
