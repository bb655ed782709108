//! Automatic certificates over ACME (RFC 8555) for the TLS listener (`[tls.acme]`).
//!
//! One task ([`spawn`]) runs beside the controller and never inside it: it follows the
//! settings the controller publishes (a `watch`, updated when a saved file changes
//! `[tls.acme]`: live), keeps the certificate in the state directory (`store.rs`), orders one
//! when there is none or it is due (`order.rs`, over `lb`'s own HTTP client, `http.rs`), and
//! reports to the controller with [`Command::Acme`]: the certificate to serve (read and checked
//! here, off the controller's loop) or why an order failed. A failed order keeps the
//! certificate served and is tried again with the project's jittered backoff
//! ([`FAILURE_BACKOFF`]), never in a tight loop.
//!
//! **Renewal**: a certificate is due when less than `renew_before_days` of it is left (default
//! 30), or at half its lifetime when that is shorter than `renew_before_days`.
//!
//! **Several `lb`s sharing `state_dir`** (one Swarm service, a shared volume): whoever finds
//! the certificate missing or due takes the state directory's `flock` (non-blocking), looks
//! again (another `lb` may have just renewed it) and orders; the others find the lock taken,
//! and load the new certificate when its file changes (they look at it every
//! [`STATE_POLL`]: a watch by inotify sees no write made on another host of a network file
//! system). HTTP-01 answers are also left in `state_dir/challenges/`, so whichever `lb` the
//! CA's request reaches answers it.
//!
//! The answers to challenges are published in [`crate::state::tls::AcmeChallenges`] (this
//! task is their only writer); the plain listener answers HTTP-01 from there, rustls
//! TLS-ALPN-01.

mod http;
mod order;
mod store;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use self::store::{Issued, Stamp, Store};
use super::backoff::Backoff;
use super::command::{AcmeEvent, Command, ControllerHandle};
use crate::config::acme::AcmeSettings;
use crate::config::unix_now;
use crate::state::Shared;

/// Waits after a failed order: 30 s doubling to 1 h, up to half again at random (Let's
/// Encrypt allows 5 failed validations per name and hour).
pub(crate) const FAILURE_BACKOFF: Backoff =
    Backoff::new(Duration::from_secs(30), Duration::from_secs(3600), 0.5);
/// How often the certificate file is looked at while it is not due (a renewal by another
/// `lb` sharing the state directory is served within this).
pub(crate) const STATE_POLL: Duration = Duration::from_secs(5);
/// How often an `lb` that finds the lock taken looks for the certificate the holder orders.
const LOCKED_POLL: Duration = Duration::from_secs(2);
/// The longest one order may take, all steps together.
const ORDER_LIMIT: Duration = Duration::from_secs(300);

/// Run `f` on a blocking thread (files, locks) and wait for it without blocking the runtime.
pub(super) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Start the ACME task: it follows `settings` (from [`crate::control::Controller::acme_settings`])
/// and reports to the controller through `handle`.
pub(crate) fn spawn(
    mut settings: watch::Receiver<Option<AcmeSettings>>,
    handle: ControllerHandle,
    shared: Arc<Shared>,
) {
    tokio::spawn(async move {
        loop {
            let current = settings.borrow_and_update().clone();
            match current {
                None => {
                    shared.certs.acme.activate(None);
                    handle.send(Command::Acme(AcmeEvent::Off));
                }
                Some(s) => {
                    let client = Client {
                        store: Store::new(&s),
                        settings: s,
                        handle: handle.clone(),
                        shared: Arc::clone(&shared),
                    };
                    tokio::select! {
                        () = client.run() => {}
                        changed = settings.changed() => {
                            client.abandon().await;
                            if changed.is_err() {
                                return;
                            }
                            continue;
                        }
                    }
                }
            }
            if settings.changed().await.is_err() {
                return;
            }
        }
    });
}

/// The ACME client of one `[tls.acme]`.
struct Client {
    settings: AcmeSettings,
    store: Store,
    handle: ControllerHandle,
    shared: Arc<Shared>,
}

/// When `cert` is due: `renew_before` before its end, or half-way through a lifetime shorter
/// than that.
fn renew_at(cert: &Issued, renew_before: Duration) -> i64 {
    let lifetime = cert.loaded.not_after - cert.not_before;
    let before = i64::try_from(renew_before.as_secs()).unwrap_or(i64::MAX);
    if before >= lifetime {
        cert.not_before + lifetime / 2
    } else {
        cert.loaded.not_after - before
    }
}

impl Client {
    /// Keep a certificate for the settings, for as long as they hold.
    async fn run(&self) {
        self.shared
            .certs
            .acme
            .activate(Some(self.store.challenges_dir()));
        let mut retries = FAILURE_BACKOFF.start();
        let mut seen: Option<Stamp> = None;
        let mut current: Option<Issued> = None;
        loop {
            let store = self.store.clone();
            if let Err(e) = blocking(move || store.prepare()).await {
                self.failed(&format!("state directory: {e}"));
                retries.wait().await;
                continue;
            }
            let store = self.store.clone();
            let stamp = blocking(move || store.stamp()).await;
            if seen != Some(stamp) {
                current = self.look().await;
                seen = Some(stamp);
            }
            let now = unix_now();
            if let Some(at) = current
                .as_ref()
                .map(|c| renew_at(c, self.settings.renew_before))
            {
                if at > now {
                    let wait = Duration::from_secs((at - now).unsigned_abs());
                    tokio::time::sleep(wait.min(STATE_POLL)).await;
                    continue;
                }
            }
            // Missing or due: order it, unless another lb is at it.
            let store = self.store.clone();
            let lock = match blocking(move || store.try_lock()).await {
                Ok(Some(lock)) => lock,
                Ok(None) => {
                    tracing::debug!("another lb holds the ACME lock; waiting for its certificate");
                    tokio::time::sleep(LOCKED_POLL).await;
                    continue;
                }
                Err(e) => {
                    self.failed(&format!("state directory lock: {e}"));
                    retries.wait().await;
                    continue;
                }
            };
            // Another lb may have renewed it just before the lock was ours.
            if let Some(fresh) = self.look().await {
                if renew_at(&fresh, self.settings.renew_before) > unix_now() {
                    drop(lock);
                    seen = None;
                    continue;
                }
            }
            let done = self.order().await;
            drop(lock);
            match done {
                Ok(()) => {
                    self.shared.metrics.acme_orders.count(true);
                    retries.reset();
                    seen = None;
                }
                Err(message) => {
                    self.shared.metrics.acme_orders.count(false);
                    self.failed(&message);
                    retries.wait().await;
                }
            }
        }
    }

    /// The certificate in the state directory, served if it is good for the names.
    async fn look(&self) -> Option<Issued> {
        let store = self.store.clone();
        let found = blocking(move || store.load_cert(unix_now())).await;
        match found {
            Ok(Some(issued)) => {
                let missing: Vec<&String> = self
                    .settings
                    .domains
                    .iter()
                    .filter(|d| !issued.loaded.names.contains(d))
                    .collect();
                if !missing.is_empty() {
                    tracing::info!(
                        ?missing,
                        "the ACME certificate kept lacks names; ordering one for them all"
                    );
                    return None;
                }
                self.handle
                    .send(Command::Acme(AcmeEvent::Certificates(vec![issued
                        .loaded
                        .clone()])));
                Some(issued)
            }
            Ok(None) => None,
            Err(why) => {
                tracing::warn!(
                    "the ACME certificate kept cannot be used ({why}); ordering a new one"
                );
                None
            }
        }
    }

    /// Order a certificate and keep it in the state directory (the loop then serves it).
    async fn order(&self) -> Result<(), String> {
        let names = self.settings.domains.join(", ");
        tracing::info!(%names, directory = %self.settings.directory, challenge = self.settings.challenge.name(), "ordering a certificate over ACME");
        let answers = &self.shared.certs.acme;
        let ordered = tokio::time::timeout(
            ORDER_LIMIT,
            order::order(&self.settings, &self.store, answers),
        )
        .await;
        answers.clear();
        let store = self.store.clone();
        blocking(move || store.clear_challenges()).await;
        let issued = match ordered {
            Ok(Ok(issued)) => issued,
            Ok(Err(e)) => return Err(format!("order for {names} failed: {e}")),
            Err(_) => {
                return Err(format!(
                    "order for {names} failed: not done within {} s",
                    ORDER_LIMIT.as_secs()
                ))
            }
        };
        let store = self.store.clone();
        blocking(move || store.write_cert(&issued.key_pem, &issued.chain_pem))
            .await
            .map_err(|e| format!("cannot keep the certificate for {names}: {e}"))?;
        tracing::info!(%names, file = %self.store.cert_path().display(), "ACME certificate issued");
        Ok(())
    }

    /// An order or the state directory failed: tell the controller (which logs it and shows it
    /// as `config.last_error`; the certificate served stays).
    fn failed(&self, message: &str) {
        self.handle
            .send(Command::Acme(AcmeEvent::Failed(message.to_owned())));
    }

    /// The settings changed while this client ran: its challenges answer no more.
    async fn abandon(&self) {
        self.shared.certs.acme.clear();
        let store = self.store.clone();
        blocking(move || store.clear_challenges()).await;
    }
}

#[cfg(test)]
mod tests;
