//! The data plane's live settings: what each applied configuration changes for the workers,
//! without a restart.
//!
//! The controller publishes [`FrontSettings`] (`[proxy]`, `[log]`, the TLS handshake rules) on a
//! `watch`; [`Front`] follows it on the control plane's runtime and turns each version into a
//! [`Live`] for the workers: the `[proxy]` settings with `max_connections` held to what the
//! open-files limit allows, each traffic worker's share of it, the access log's sink (a changed
//! target or format starts a new writer; the old one finishes the lines it has) and the TLS
//! acceptor (rebuilt when `min_version` changes). Each worker builds a new [`super::front::App`]
//! from it for the connections it accepts from then on; open connections finish with theirs.
//! Nothing here is on the request path: a worker looks at the `watch` only between accepts.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_rustls::TlsAcceptor;

use super::access::{AccessLog, AccessLogError, Sink};
use super::sockets::Bound;
use super::tls::TlsSetupError;
use crate::config::tls::MinVersion;
use crate::config::{AccessFormat, AccessTarget, FrontSettings, ProxySection};
use crate::control::{Command, ControllerHandle};
use crate::state::{Listening, Shared};

/// Descriptors kept for everything but connections and replicas: the standard streams, the
/// configuration file and its watcher, the access log, the runtimes' event loops and signals,
/// the Docker socket.
pub(crate) const FILES_RESERVED: u64 = 64;
/// Descriptors kept per listener (a worker's socket, the admin address): the socket and its
/// worker's event loop.
pub(crate) const FILES_PER_LISTENER: u64 = 2;
/// Descriptors kept per replica `[limits] max_replicas` allows: its health checks' connection,
/// a started process' pipes.
pub(crate) const FILES_PER_REPLICA: u64 = 4;

/// Descriptors to keep aside from proxied connections for `listeners` listening sockets and up
/// to `max_replicas` replicas.
pub(crate) fn files_reserved(listeners: usize, max_replicas: usize) -> u64 {
    FILES_RESERVED + FILES_PER_LISTENER * listeners as u64 + FILES_PER_REPLICA * max_replicas as u64
}

/// The most client connections an open-files limit of `open_files` allows, for a configured
/// `max_connections` (0: no limit): every proxied connection takes two descriptors (the client's
/// and the replica's), once `reserved` ([`files_reserved`]) are kept for the rest; at least one.
/// Past it, clients would get 502 "Too many open files" instead of waiting their turn.
pub(crate) fn connection_limit(max_connections: usize, open_files: u64, reserved: u64) -> usize {
    let allowed = open_files.saturating_sub(reserved) / 2;
    let allowed = usize::try_from(allowed).unwrap_or(usize::MAX).max(1);
    match max_connections {
        0 => allowed,
        n => n.min(allowed),
    }
}

/// A new set of `count` sockets for the listener `what` when its address changed from
/// `bound`'s to `wanted` (bound before the old one is let go); `None` when it did not change or
/// could not be bound (said to `controller`: the old address stays).
fn rebind(
    what: &str,
    bound: &Bound,
    wanted: SocketAddr,
    count: usize,
    controller: &ControllerHandle,
) -> Option<Arc<Bound>> {
    let moved = if wanted != bound.requested {
        Bound::bind(wanted, count)
    } else if count > bound.len() {
        // More workers: more sockets beside the ones there (never fewer: see `Listeners`).
        bound.grown(count)
    } else {
        return None;
    };
    match moved {
        Ok(moved) => {
            if moved.local != bound.local {
                tracing::info!(
                    from = %bound.local,
                    to = %moved.local,
                    "configuration change: {what} moved (the old address stops accepting; its \
                     connections finish)"
                );
            }
            Some(Arc::new(moved))
        }
        Err(e) => {
            controller.send(Command::Failed(format!(
                "{what}: {e}; still listening on {}",
                bound.local
            )));
            None
        }
    }
}

/// What the workers serve new connections by.
#[derive(Clone)]
pub(crate) struct Live {
    /// `[proxy]`, with `max_connections` no more than the open-files limit allows.
    pub(crate) proxy: ProxySection,
    /// The most connections each traffic worker keeps open (`None`: no limit).
    pub(crate) per_worker: Option<usize>,
    /// The access log's sink, when it is on.
    pub(crate) access: Option<Sink>,
    /// The TLS listener's handshake configuration, when there is a TLS listener.
    pub(crate) acceptor: Option<TlsAcceptor>,
    /// `[tls] redirect_http` on: the TLS listener's address plain requests are sent to (308).
    pub(crate) redirect: Option<SocketAddr>,
    /// How many traffic workers serve (`[proxy] workers`; no more than `listen` has sockets).
    pub(crate) workers: usize,
    /// The listeners' sockets: a worker takes its own from each; a moved listener is a new
    /// set.
    pub(crate) listeners: Listeners,
    /// A binary upgrade handed the listeners to the next `lb`: every worker stops accepting
    /// and finishes its connections (each closes after its next answer).
    pub(crate) handed_over: bool,
}

/// The listening sockets of every listener.
#[derive(Debug, Clone)]
pub(crate) struct Listeners {
    /// `listen`'s, one per traffic worker (more after `workers` was lowered: the sockets of
    /// stopped workers are shared out, never closed while clients may be queued on them).
    pub(crate) plain: Arc<Bound>,
    /// `[tls] listen`'s, likewise, if `[tls]` is on.
    pub(crate) tls: Option<Arc<Bound>>,
    /// `[admin] listen`'s (one), if set.
    pub(crate) admin: Option<Arc<Bound>>,
}

impl Listeners {
    /// Where they listen.
    fn addresses(&self) -> Listening {
        Listening {
            listen: self.plain.local,
            admin: self.admin.as_ref().map(|b| b.local),
            tls: self.tls.as_ref().map(|b| b.local),
        }
    }
}

/// Why the data plane could not start with its first settings.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrontError {
    /// The access log could not be started.
    #[error(transparent)]
    AccessLog(#[from] AccessLogError),
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
}

/// What the process' descriptors allow (see [`connection_limit`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Descriptors {
    /// The open-files limit, if known.
    pub(crate) open_files: Option<u64>,
    /// Descriptors kept for everything but connections ([`files_reserved`]).
    pub(crate) reserved: u64,
    /// Traffic workers the connection limit is shared out over.
    pub(crate) traffic_workers: usize,
}

/// What [`Front::follow`] is asked by the process' signals and its shutdown.
#[derive(Debug)]
pub(crate) enum FrontCommand {
    /// SIGHUP: reopen the access log file (logrotate moved it away).
    Reopen,
    /// Shutting down: stop following, hand back every access log still writing (to be closed
    /// once the workers are gone).
    Stop(oneshot::Sender<Vec<AccessLog>>),
    /// An upgrade: the listeners in use now, to hand to the new process.
    Listeners(oneshot::Sender<Listeners>),
    /// The new process of an upgrade serves: stop accepting, stop following the settings
    /// (the listeners are the new process' to move now).
    HandedOver,
}

/// The follower of the controller's [`FrontSettings`]: owns the access logs, the acceptor and
/// the listeners' sockets, publishes [`Live`]s.
pub(crate) struct Front {
    shared: Arc<Shared>,
    descriptors: Descriptors,
    /// The listeners, bound.
    listeners: Listeners,
    /// `--listen` given on the command line: it wins over the file's `listen`.
    listen_override: Option<SocketAddr>,
    /// The `max_connections` the open-files limit last lowered (said once).
    lowered: Option<usize>,
    /// The settings the current [`Live`] was built from.
    settings: FrontSettings,
    /// The access log in use, and what it was started for.
    access: Option<AccessLog>,
    access_for: (AccessTarget, AccessFormat),
    /// Access logs replaced by a change, still writing the lines open connections send them.
    retired: Vec<AccessLog>,
    /// The acceptor in use and the `min_version` it was built for.
    acceptor: Option<(TlsAcceptor, MinVersion)>,
    live: watch::Sender<Arc<Live>>,
    /// Set by [`FrontCommand::HandedOver`].
    handed_over: bool,
}

impl Front {
    /// The data plane's first settings, from `settings`, over the `listeners` bound at start
    /// (`listen_override`: `--listen`, if given); the workers follow the receiver.
    pub(crate) fn start(
        settings: FrontSettings,
        descriptors: Descriptors,
        listeners: Listeners,
        listen_override: Option<SocketAddr>,
        shared: &Arc<Shared>,
    ) -> Result<(Front, watch::Receiver<Arc<Live>>), FrontError> {
        let access = AccessLog::start(&settings.access_target, settings.access_format, shared)?;
        let acceptor = match &listeners.tls {
            Some(_) => Some((
                super::tls::acceptor(Arc::clone(&shared.certs), settings.tls_min_version)?,
                settings.tls_min_version,
            )),
            None => None,
        };
        let mut front = Front {
            shared: Arc::clone(shared),
            descriptors,
            listen_override,
            lowered: None,
            access_for: (settings.access_target.clone(), settings.access_format),
            settings,
            access,
            retired: Vec::new(),
            acceptor,
            live: watch::Sender::new(Arc::new(Live {
                proxy: ProxySection::default(),
                per_worker: None,
                access: None,
                acceptor: None,
                redirect: None,
                workers: listeners.plain.len(),
                listeners: listeners.clone(),
                handed_over: false,
            })),
            listeners,
            handed_over: false,
        };
        front.publish();
        let rx = front.live.subscribe();
        Ok((front, rx))
    }

    /// The effective `[proxy] max_connections` (logged when the open-files limit lowers a value
    /// it did not lower before).
    fn limited(&mut self, mut proxy: ProxySection) -> ProxySection {
        let Descriptors {
            open_files,
            reserved,
            ..
        } = self.descriptors;
        if let Some(open_files) = open_files {
            let allowed = connection_limit(proxy.max_connections, open_files, reserved);
            if allowed != proxy.max_connections && self.lowered != Some(proxy.max_connections) {
                self.lowered = Some(proxy.max_connections);
                tracing::warn!(
                    max_connections = proxy.max_connections,
                    allowed,
                    open_files,
                    reserved,
                    "max_connections lowered to what the open files limit allows \
                     (two per connection, the reserve for replicas, listeners and files)"
                );
            }
            proxy.max_connections = allowed;
        }
        proxy
    }

    /// Publish a [`Live`] from the current settings, access log and acceptor.
    fn publish(&mut self) {
        let proxy = self.limited(self.settings.proxy);
        let per_worker = (proxy.max_connections > 0).then(|| {
            proxy
                .max_connections
                .div_ceil(self.descriptors.traffic_workers.max(1))
        });
        let live = Live {
            proxy,
            per_worker,
            access: self.access.as_ref().and_then(AccessLog::sink),
            acceptor: self.acceptor.as_ref().map(|(a, _)| a.clone()),
            redirect: self
                .listeners
                .tls
                .as_ref()
                .map(|b| b.local)
                .filter(|_| self.settings.redirect_http),
            workers: self.descriptors.traffic_workers,
            listeners: self.listeners.clone(),
            handed_over: self.handed_over,
        };
        self.live.send_replace(Arc::new(live));
    }

    /// Take `settings`: a new access log or acceptor where those changed; what cannot be taken
    /// is kept as it was and said to `controller`.
    fn take(&mut self, settings: FrontSettings, controller: &ControllerHandle) {
        let access_for = (settings.access_target.clone(), settings.access_format);
        if access_for != self.access_for {
            match AccessLog::start(&access_for.0, access_for.1, &self.shared) {
                Ok(access) => {
                    tracing::info!(
                        target = ?access_for.0,
                        format = ?access_for.1,
                        "configuration change: the access log"
                    );
                    self.retired
                        .extend(std::mem::replace(&mut self.access, access).map(AccessLog::retire));
                    self.access_for = access_for;
                }
                Err(e) => controller.send(Command::Failed(format!(
                    "[log] access: {e}; the access log stays as it was"
                ))),
            }
        }
        if let Some((_, version)) = &self.acceptor {
            if *version != settings.tls_min_version {
                match super::tls::acceptor(Arc::clone(&self.shared.certs), settings.tls_min_version)
                {
                    Ok(acceptor) => self.acceptor = Some((acceptor, settings.tls_min_version)),
                    Err(e) => controller.send(Command::Failed(format!(
                        "[tls] min_version: {e}; handshakes stay as they were"
                    ))),
                }
            }
        }
        self.move_listeners(&settings, controller);
        self.settings = settings;
        self.publish();
    }

    /// Bind the listeners whose address `settings` change, before the workers leave the old
    /// ones; one that cannot be bound keeps its old address and is said to `controller`. (A
    /// listener that appears or goes away waits for a restart: `config.needs_restart`.)
    fn move_listeners(&mut self, settings: &FrontSettings, controller: &ControllerHandle) {
        let before = self.listeners.addresses();
        if let Some(given) = self.listen_override {
            if settings.listen != self.settings.listen {
                controller.send(Command::Failed(format!(
                    "listen: --listen {given} on the command line wins over the file's listen = \
                     \"{}\"; still listening on {}",
                    settings.listen, self.listeners.plain.local
                )));
            }
        }
        let listen = match self.listen_override {
            Some(_) => self.listeners.plain.requested,
            None => settings.listen,
        };
        let workers = settings.proxy.worker_count();
        if let Some(moved) = rebind("listen", &self.listeners.plain, listen, workers, controller) {
            self.listeners.plain = moved;
        }
        // No more traffic workers than the plain listener has sockets (growing it may fail).
        let workers = workers.min(self.listeners.plain.len());
        if let (Some(bound), Some(wanted)) = (&self.listeners.admin, settings.admin_listen) {
            if let Some(moved) = rebind("[admin] listen", bound, wanted, 1, controller) {
                self.listeners.admin = Some(moved);
            }
        }
        if let (Some(bound), Some(wanted)) = (&self.listeners.tls, settings.tls_listen) {
            if let Some(moved) = rebind("[tls] listen", bound, wanted, workers, controller) {
                self.listeners.tls = Some(moved);
            }
        }
        if self.descriptors.traffic_workers != workers {
            tracing::info!(
                from = self.descriptors.traffic_workers,
                to = workers,
                "configuration change: workers (new ones start; stopped ones finish their \
                 connections first)"
            );
            self.descriptors.traffic_workers = workers;
        }
        let after = self.listeners.addresses();
        if after != before {
            self.shared.meta.listening.store(Arc::new(after));
            // Scripts and tests read the addresses from these lines, as at start.
            if after.admin != before.admin {
                if let Some(addr) = after.admin {
                    println!("lb admin on http://{addr}");
                }
            }
            if after.tls != before.tls {
                if let Some(addr) = after.tls {
                    println!("lb listening on https://{addr}");
                }
            }
            if after.listen != before.listen {
                println!("lb listening on http://{}", after.listen);
            }
        }
    }

    /// Follow `settings` (the controller's) until told to stop; `commands`: SIGHUP's reopen
    /// and the shutdown. Runs on the control plane's runtime.
    pub(crate) async fn follow(
        mut self,
        mut settings: watch::Receiver<FrontSettings>,
        controller: ControllerHandle,
        mut commands: mpsc::UnboundedReceiver<FrontCommand>,
    ) {
        settings.mark_unchanged();
        // Until the controller is gone (then nothing changes any more).
        let mut following = true;
        loop {
            tokio::select! {
                changed = settings.changed(), if following => {
                    if changed.is_err() {
                        following = false;
                        continue;
                    }
                    let next = settings.borrow_and_update().clone();
                    // Opening a file may block: off the runtime's thread.
                    self = match tokio::task::spawn_blocking({
                        let controller = controller.clone();
                        move || {
                            self.take(next, &controller);
                            self
                        }
                    })
                    .await
                    {
                        Ok(front) => front,
                        Err(e) => {
                            tracing::error!(error = %e, "the data plane's settings follower failed");
                            return;
                        }
                    };
                    // Writers whose lines are all written (no connection sends to them) end.
                    self.retired.retain(|log| !log.finished());
                }
                command = commands.recv() => match command {
                    Some(FrontCommand::Reopen) => {
                        for log in self.access.iter().chain(&self.retired) {
                            log.reopen();
                        }
                    }
                    Some(FrontCommand::Listeners(reply)) => {
                        let _ = reply.send(self.listeners.clone());
                    }
                    Some(FrontCommand::HandedOver) => {
                        self.handed_over = true;
                        following = false;
                        self.publish();
                    }
                    Some(FrontCommand::Stop(reply)) => {
                        let mut logs = std::mem::take(&mut self.retired);
                        logs.extend(self.access.take());
                        let _ = reply.send(logs);
                        return;
                    }
                    None => return,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_connections_is_what_the_open_files_limit_allows() {
        let reserved = files_reserved(2, 64);
        assert_eq!(reserved, 64 + 2 * 2 + 4 * 64);
        // Plenty of descriptors: the setting stands.
        assert_eq!(connection_limit(10_000, 1 << 20, reserved), 10_000);
        // 1024 descriptors: two per connection after the reserve.
        assert_eq!(connection_limit(10_000, 1024, reserved), (1024 - 324) / 2);
        // "No limit" is limited too.
        assert_eq!(connection_limit(0, 1024, reserved), 350);
        assert_eq!(connection_limit(0, u64::MAX, 0), usize::MAX / 2);
        // Fewer descriptors than the reserve: one connection, not none (0 would mean no limit).
        assert_eq!(connection_limit(10_000, 100, reserved), 1);
        // Exactly at the edge.
        assert_eq!(connection_limit(350, 1024, reserved), 350);
        assert_eq!(connection_limit(351, 1024, reserved), 350);
    }
}
