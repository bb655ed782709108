//! `[tls.acme]`: automatic certificates over ACME (RFC 8555) for the TLS listener, as types
//! ([`AcmeSection`]), their rules ([`AcmeSection::problems`]: a problem with line and column
//! for each, like every other section) and what the ACME task runs on ([`AcmeSettings`]:
//! paths resolved against the configuration file's directory). The client itself is
//! `control/acme/`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::problem::Problem;

/// `renew_before_days` when it is not set: renew with 30 days left (Let's Encrypt's and
/// Traefik's choice for 90-day certificates).
pub(crate) const DEFAULT_RENEW_BEFORE_DAYS: u32 = 30;
/// `state_dir` when it is not set, relative to the configuration file's directory.
pub(crate) const DEFAULT_STATE_DIR: &str = "acme";

/// `[tls.acme]`: order certificates for `domains` from the ACME server at `directory`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AcmeSection {
    /// The ACME server's directory URL (https), e.g. Let's Encrypt's
    /// `https://acme-v02.api.letsencrypt.org/directory`.
    pub directory: Spanned<String>,
    /// The account's contact address (optional; the CA writes there about expiring
    /// certificates and changes of its terms).
    #[serde(default)]
    pub email: Option<Spanned<String>>,
    /// The DNS names of the certificate (one certificate for all of them).
    pub domains: Spanned<Vec<Spanned<String>>>,
    /// Where the account key and the issued certificate and key are kept (default `acme`,
    /// relative to the configuration file's directory); several `lb`s may share it.
    #[serde(default)]
    pub state_dir: Option<Spanned<PathBuf>>,
    /// Renew when fewer days than this are left (default 30).
    #[serde(default)]
    pub renew_before_days: Option<Spanned<u32>>,
    /// How the CA checks that `lb` answers for the names: `http-01` (default; the plain
    /// listener must be reachable on port 80) or `tls-alpn-01` (the TLS listener on port 443).
    #[serde(default)]
    pub challenge: Challenge,
    /// A PEM file of the roots the ACME server's own certificate chains to (a private ACME
    /// server such as pebble); default: the system's roots.
    #[serde(default)]
    pub ca: Option<Spanned<PathBuf>>,
}

/// `[tls.acme] challenge`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub(crate) enum Challenge {
    /// `http-01`: `GET /.well-known/acme-challenge/<token>` on the plain listener.
    #[default]
    #[serde(rename = "http-01")]
    Http01,
    /// `tls-alpn-01` (RFC 8737): a handshake with ALPN `acme-tls/1` on the TLS listener.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

impl Challenge {
    /// The name the file and the ACME server use.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Challenge::Http01 => "http-01",
            Challenge::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

/// What the ACME task runs on: `[tls.acme]` checked, names lower-case, paths resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AcmeSettings {
    /// The directory URL.
    pub directory: String,
    /// `mailto:` contacts (none or one).
    pub contact: Vec<String>,
    /// The certificate's names, lower-case, in the file's order.
    pub domains: Vec<String>,
    /// The state directory.
    pub state_dir: PathBuf,
    /// Renew with this much validity left.
    pub renew_before: Duration,
    /// The challenge answered.
    pub challenge: Challenge,
    /// The roots of the ACME server's certificate, if not the system's.
    pub ca: Option<PathBuf>,
}

impl AcmeSection {
    /// The settings, paths resolved against `base_dir` (call after [`AcmeSection::problems`]
    /// found none).
    pub(crate) fn settings(&self, base_dir: &Path) -> AcmeSettings {
        let days = self
            .renew_before_days
            .as_ref()
            .map_or(DEFAULT_RENEW_BEFORE_DAYS, |d| *d.get_ref());
        AcmeSettings {
            directory: self.directory.get_ref().clone(),
            contact: self
                .email
                .iter()
                .map(|e| format!("mailto:{}", e.get_ref()))
                .collect(),
            domains: self
                .domains
                .get_ref()
                .iter()
                .map(|d| d.get_ref().to_ascii_lowercase())
                .collect(),
            state_dir: base_dir.join(
                self.state_dir
                    .as_ref()
                    .map_or(Path::new(DEFAULT_STATE_DIR), |d| d.get_ref().as_path()),
            ),
            renew_before: Duration::from_secs(u64::from(days) * 86_400),
            challenge: self.challenge,
            ca: self.ca.as_ref().map(|c| base_dir.join(c.get_ref())),
        }
    }

    /// Every broken rule, each at its key: `directory` an https URL, `email` an address,
    /// `domains` DNS names (no wildcard, no IP address), at least one and none twice,
    /// `renew_before_days` from 1 to 365.
    pub(crate) fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let directory = self.directory.get_ref();
        if let Err(why) = check_directory(directory) {
            problems.push(Problem::pending(
                self.directory.span().start,
                format!("tls.acme.directory {directory:?}: {why}"),
            ));
        }
        if let Some(email) = &self.email {
            if let Err(why) = check_email(email.get_ref()) {
                problems.push(Problem::pending(
                    email.span().start,
                    format!("tls.acme.email {:?}: {why}", email.get_ref()),
                ));
            }
        }
        if self.domains.get_ref().is_empty() {
            problems.push(Problem::pending(
                self.domains.span().start,
                "tls.acme.domains is empty: name at least one DNS name to order a certificate for"
                    .into(),
            ));
        }
        let mut seen = HashSet::new();
        for domain in self.domains.get_ref() {
            let name = domain.get_ref();
            if let Err(why) = check_domain(name) {
                problems.push(Problem::pending(
                    domain.span().start,
                    format!("tls.acme.domains: {name:?} {why}"),
                ));
            } else if !seen.insert(name.to_ascii_lowercase()) {
                problems.push(Problem::pending(
                    domain.span().start,
                    format!("tls.acme.domains: {name:?} is listed twice"),
                ));
            }
        }
        if let Some(days) = &self.renew_before_days {
            if !(1..=365).contains(days.get_ref()) {
                problems.push(Problem::pending(
                    days.span().start,
                    format!(
                        "tls.acme.renew_before_days must be from 1 to 365, not {}",
                        days.get_ref()
                    ),
                ));
            }
        }
        problems
    }

    /// The rules that read the disk (run where the file is read, never on the controller's
    /// loop): `state_dir` is a directory `lb` can write, or can be created; `ca` a PEM file
    /// with at least one certificate.
    pub(crate) fn disk_problems(&self, base_dir: &Path) -> Vec<Problem> {
        let settings = self.settings(base_dir);
        let mut problems = Vec::new();
        if let Err(why) = check_state_dir(&settings.state_dir) {
            let at = self
                .state_dir
                .as_ref()
                .map_or_else(|| self.directory.span().start, |d| d.span().start);
            problems.push(Problem::pending(
                at,
                format!("tls.acme.state_dir {}: {why}", settings.state_dir.display()),
            ));
        }
        if let (Some(path), Some(key)) = (&settings.ca, &self.ca) {
            if let Err(e) = super::backend_tls::read_ca(path) {
                problems.push(Problem::pending(key.span().start, format!("tls.acme.{e}")));
            }
        }
        problems
    }
}

/// Whether `url` is an https URL with a host (an ACME directory is always HTTPS).
fn check_directory(url: &str) -> Result<(), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("not a URL ({e}); expected https://HOST/…"))?;
    if uri.scheme_str() != Some("https") {
        return Err("must be an https:// URL (ACME servers speak HTTPS only)".into());
    }
    match uri.host() {
        Some(host) if !host.is_empty() => Ok(()),
        _ => Err("has no host".into()),
    }
}

/// Whether `email` looks like an address: `LOCAL@DOMAIN`, no spaces, commas or angle brackets,
/// the domain a DNS name with a dot.
fn check_email(email: &str) -> Result<(), String> {
    let Some((local, domain)) = email.rsplit_once('@') else {
        return Err("is not an email address (no @)".into());
    };
    if local.is_empty()
        || email.len() > 254
        || email
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, ',' | '<' | '>' | ':'))
    {
        return Err("is not an email address".into());
    }
    if !domain.contains('.') || check_domain(domain).is_err() {
        return Err(format!("is not an email address ({domain:?} is no domain)"));
    }
    Ok(())
}

/// Whether `name` is a DNS name a certificate can be ordered for by these challenges: letters,
/// digits and hyphens in labels of at most 63, at most 253 in all, no wildcard (HTTP-01 and
/// TLS-ALPN-01 cannot prove one), not an IP address.
pub(crate) fn check_domain(name: &str) -> Result<(), &'static str> {
    if name.starts_with("*.") {
        return Err(
            "is a wildcard: HTTP-01 and TLS-ALPN-01 cannot prove one (DNS-01 can; not supported)",
        );
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Err("is an IP address, not a DNS name");
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err("is not a valid DNS name");
    }
    Ok(())
}

/// Whether `dir` is a directory `lb` may write in, or one it could create (its nearest existing
/// ancestor is a writable directory). Nothing is created here.
fn check_state_dir(dir: &Path) -> Result<(), String> {
    use rustix::fs::{access, Access};
    let mut at = dir;
    loop {
        match std::fs::metadata(at) {
            Ok(meta) if !meta.is_dir() => {
                return Err(if at == dir {
                    "is not a directory".into()
                } else {
                    format!("cannot be created: {} is not a directory", at.display())
                });
            }
            Ok(_) => {
                return access(at, Access::WRITE_OK | Access::EXEC_OK).map_err(|e| {
                    if at == dir {
                        format!("is not writable ({e})")
                    } else {
                        format!("cannot be created: {} is not writable ({e})", at.display())
                    }
                });
            }
            // Not there (or under a file: found as a file one step up).
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                at = match at.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ if at != Path::new(".") => Path::new("."),
                    _ => return Err(format!("cannot be read ({e})")),
                };
            }
            Err(e) => return Err(format!("cannot be read ({e})")),
        }
    }
}

#[cfg(test)]
mod tests;
