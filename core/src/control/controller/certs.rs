//! The TLS listener's certificates: the set served (`Shared::certs`, swapped whole), read again
//! when a certificate or key file changes (the watcher's [`Command::CertificatesChanged`]) or
//! when a saved file changes `[[tls.certificates]]`. Files are read and checked on a blocking
//! task that reports back as a [`Done::CertificatesRead`]; the controller never waits for
//! them. A bad set keeps the one served, is logged and shows as `config.last_error`.
//!
//!
//! Certificates ordered over ACME (`[tls.acme]`) come from the ACME task
//! ([`crate::control::acme`]) as a [`Command::Acme`], already read and checked; they are served
//! after the files' certificates, and a failed order keeps them and shows in
//! `config.last_error`.
//!
//! [`Command::CertificatesChanged`]: crate::control::Command::CertificatesChanged
//! [`Command::Acme`]: crate::control::Command::Acme

use std::path::PathBuf;

use tokio::sync::watch;

use crate::config::tls::CertificateFiles;
use crate::config::{load_all, unix_now, LoadedCert};
use crate::control::file;
use crate::state::tls::CertSet;
use crate::state::Issue;

use super::{Controller, Done};
use crate::config::acme::AcmeSettings;
use crate::control::AcmeEvent;

/// How an ACME failure shown in `config.last_error` ends.
const ACME_KEEPING: &str = "the certificates served stay; retried with backoff";

/// What the controller knows of the certificates.
#[derive(Debug)]
pub(super) struct Certificates {
    /// The configured pairs (from the configuration last applied).
    files: Vec<CertificateFiles>,
    /// Digests of the pairs served: the same files again are no change.
    digests: Vec<[u8; 32]>,
    /// A read is running.
    busy: bool,
    /// Read again when it is done.
    again: bool,
    /// The last refusal's message (the same one is not logged or counted twice), and whether
    /// `config.last_error` is ours.
    failure: Option<String>,
    /// The files the watcher follows.
    watched: watch::Sender<Vec<PathBuf>>,
    /// The file certificates served (in configured order).
    from_files: Vec<LoadedCert>,
    /// The certificates ordered over ACME served after them (`[tls.acme]`).
    acme: Vec<LoadedCert>,
    /// The last ACME failure reported (the same one is not logged twice).
    acme_failure: Option<String>,
    /// `[tls.acme]` as the ACME task is to run it (`None`: not configured).
    acme_settings: watch::Sender<Option<AcmeSettings>>,
}

impl Default for Certificates {
    fn default() -> Self {
        Certificates {
            files: Vec::new(),
            digests: Vec::new(),
            busy: false,
            again: false,
            failure: None,
            watched: watch::Sender::new(Vec::new()),
            from_files: Vec::new(),
            acme: Vec::new(),
            acme_failure: None,
            acme_settings: watch::Sender::new(None),
        }
    }
}

/// Every file of `files`, for the watcher.
fn paths(files: &[CertificateFiles]) -> Vec<PathBuf> {
    files
        .iter()
        .flat_map(|f| [f.cert.clone(), f.key.clone()])
        .collect()
}

impl Controller {
    /// The files the certificate watcher is to follow (updated when the set of pairs changes).
    pub(crate) fn certificate_paths(&self) -> watch::Receiver<Vec<PathBuf>> {
        self.certs.watched.subscribe()
    }

    /// Serve `certs` (read and checked already: at start, or with a saved file) from the next
    /// handshake on, unless they are the ones served.
    pub(crate) fn serve_certificates(&mut self, certs: Vec<LoadedCert>) {
        if certs.is_empty() && !self.certs.files.is_empty() {
            // `[tls]` left the file: its listener runs until a restart (`needs_restart`), with
            // the certificates it has rather than none.
            tracing::warn!(
                "no certificates in the file any more; serving the last ones until a restart"
            );
            return;
        }
        let files: Vec<CertificateFiles> = certs.iter().map(|c| c.files.clone()).collect();
        let digests: Vec<[u8; 32]> = certs.iter().map(|c| c.digest).collect();
        if files != self.certs.files {
            self.certs.watched.send_replace(paths(&files));
        }
        let first = self.certs.files.is_empty() && self.certs.digests.is_empty();
        if files == self.certs.files && digests == self.certs.digests {
            return;
        }
        self.certs.from_files = certs;
        self.publish_certificates();
        self.certs.files = files;
        self.certs.digests = digests;
        self.certificates_fixed();
        if !first {
            self.shared.metrics.tls_reloads.count(true);
            for cert in &self.certs.from_files {
                tracing::info!(cert = %cert.files.cert.display(), names = ?cert.names, "certificate served");
            }
        }
    }

    /// Serve the file certificates and, after them, the ACME ones (the first file certificate,
    /// else the first ACME one, is the default).
    fn publish_certificates(&self) {
        let mut all = self.certs.from_files.clone();
        all.extend(self.certs.acme.iter().cloned());
        self.shared.certs.store(CertSet::new(&all));
    }

    /// `[tls.acme]` as the ACME task is to run it; follows the configuration applied.
    pub(crate) fn acme_settings(&self) -> watch::Receiver<Option<AcmeSettings>> {
        self.certs
            .acme_settings
            .send_replace(self.applied.acme_settings());
        self.certs.acme_settings.subscribe()
    }

    /// A saved file was applied: tell the ACME task when `[tls.acme]` changed (it starts over
    /// with the new settings; live, no restart).
    pub(super) fn follow_acme(&self, config: &crate::config::Config) {
        let wanted = config.acme_settings();
        self.certs.acme_settings.send_if_modified(|now| {
            if *now == wanted {
                return false;
            }
            tracing::info!(acme = wanted.is_some(), "configuration change: [tls.acme]");
            *now = wanted;
            true
        });
    }

    /// News from the ACME task.
    pub(super) fn acme_event(&mut self, event: AcmeEvent) {
        match event {
            AcmeEvent::Certificates(certs) => {
                let same = certs.len() == self.certs.acme.len()
                    && certs
                        .iter()
                        .zip(&self.certs.acme)
                        .all(|(a, b)| a.digest == b.digest);
                if same {
                    return;
                }
                for cert in &certs {
                    tracing::info!(names = ?cert.names, not_after = cert.not_after, "ACME certificate served");
                }
                self.certs.acme = certs;
                self.publish_certificates();
                self.shared.metrics.tls_reloads.count(true);
                self.acme_fixed();
            }
            AcmeEvent::Failed(message) => {
                if self.certs.acme_failure.as_deref() == Some(message.as_str()) {
                    return;
                }
                let issue = format!("ACME: {message}; {ACME_KEEPING}");
                tracing::error!("{issue}");
                self.update_config_status(|s| s.last_error = Some(Issue::now(issue)));
                self.certs.acme_failure = Some(message);
            }
            AcmeEvent::Off => {
                if !self.certs.acme.is_empty() {
                    tracing::info!("[tls.acme] removed: no ACME certificate served any more");
                    self.certs.acme.clear();
                    self.publish_certificates();
                }
                self.acme_fixed();
            }
        }
    }

    /// An ACME error shown is cleared once a certificate comes.
    fn acme_fixed(&mut self) {
        if self.certs.acme_failure.take().is_some() {
            self.update_config_status(|s| {
                if s.last_error
                    .as_ref()
                    .is_some_and(|e| e.message.ends_with(ACME_KEEPING))
                {
                    s.last_error = None;
                }
            });
        }
    }

    /// A certificate or key file may have changed: read the pairs again, off the loop.
    pub(super) fn certificates_changed(&mut self) {
        if self.certs.files.is_empty() {
            return;
        }
        if self.certs.busy {
            self.certs.again = true;
            return;
        }
        self.certs.busy = true;
        let files = self.certs.files.clone();
        let done = self.done.clone();
        tokio::spawn(async move {
            let work = tokio::task::spawn_blocking(move || {
                load_all(&files, unix_now()).map_err(|e| e.to_string())
            });
            let result = match tokio::time::timeout(file::READ_LIMIT, work).await {
                Ok(Ok(result)) => result,
                Ok(Err(e)) => Err(format!("internal error while reading certificates: {e}")),
                Err(_) => Err(format!(
                    "reading the certificates took over {} s",
                    file::READ_LIMIT.as_secs()
                )),
            };
            let _ = done.send(Done::CertificatesRead { result });
        });
    }

    /// A read of the certificate files ended.
    pub(super) fn certificates_read(&mut self, result: Result<Vec<LoadedCert>, String>) {
        self.certs.busy = false;
        match result {
            // Read for pairs that a saved file has replaced since: read again.
            Ok(certs) if certs.iter().map(|c| &c.files).ne(self.certs.files.iter()) => {
                self.certs.again = true;
            }
            Ok(certs) => self.serve_certificates(certs),
            Err(message) => self.certificates_refused(message),
        }
        if std::mem::take(&mut self.certs.again) {
            self.certificates_changed();
        }
    }

    /// The certificates read are bad: keep the ones served, say why (once per reason).
    pub(super) fn certificates_refused(&mut self, message: String) {
        if self.certs.failure.as_deref() == Some(message.as_str()) {
            return;
        }
        tracing::error!("{message}; keeping the certificates served");
        self.shared.metrics.tls_reloads.count(false);
        let issue = format!("{message}; keeping the certificates served");
        self.update_config_status(|s| s.last_error = Some(Issue::now(issue)));
        self.certs.failure = Some(message);
    }

    /// Good certificates are served again: a certificate error shown is cleared.
    fn certificates_fixed(&mut self) {
        if self.certs.failure.take().is_some() {
            self.update_config_status(|s| {
                if s.last_error
                    .as_ref()
                    .is_some_and(|e| e.message.ends_with("keeping the certificates served"))
                {
                    s.last_error = None;
                }
            });
        }
    }
}
