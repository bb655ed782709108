//! The data path's threads: one event loop per worker thread, like nginx's and HAProxy's workers.
//!
//! Each worker has its own current-thread runtime, its own listening socket on the shared
//! address (`SO_REUSEPORT`: the kernel spreads new connections over them) and its own
//! [`App`] with its own connection pool to the replicas, so a request and the backend
//! connection serving it stay on one thread. Workers share only the controller's immutable
//! snapshots (`ArcSwap`) and its command channel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::watch;

use super::access::AccessLog;
use super::front::{self, App, TlsListener};
use super::observe::Recorder;
use crate::api::Access;
use crate::config::tls::MinVersion;
use crate::config::ProxySection;
use crate::control::ControllerHandle;
use crate::state::tls::CertStore;
use crate::state::Shared;

/// Pending connections each listening socket queues.
const BACKLOG: i32 = 4096;

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

/// Why the workers could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WorkersError {
    /// Binding or listening failed. (The OS error is kept but not chained as a source, so the
    /// message says it once.)
    #[error("cannot listen on {addr}: {}", describe(error))]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        error: std::io::Error,
    },
    /// A thread or runtime could not be created.
    #[error("cannot start a worker: {0}")]
    Spawn(std::io::Error),
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Tls(super::tls::TlsSetupError),
}

/// The listening sockets the workers serve.
pub(crate) struct Sockets {
    /// The plain listener's, one per traffic worker.
    pub(crate) traffic: Vec<std::net::TcpListener>,
    /// The TLS listener's, if `[tls]` is on.
    pub(crate) tls: Option<TlsSockets>,
    /// `[admin] listen`'s, if set.
    pub(crate) admin: Option<std::net::TcpListener>,
}

/// The TLS listener's sockets (one per traffic worker, [`listen`]ed like the plain ones) and
/// what its acceptors are built from.
pub(crate) struct TlsSockets {
    /// One per traffic worker.
    pub(crate) sockets: Vec<std::net::TcpListener>,
    /// The certificates, swapped live by the controller.
    pub(crate) certs: Arc<CertStore>,
    /// `[tls] min_version`.
    pub(crate) min_version: MinVersion,
    /// `[tls] redirect_http`: the TLS listener's address plain requests are sent to (308).
    pub(crate) redirect: Option<SocketAddr>,
}

/// An OS error in the words of a one-line message (no error number).
fn describe(error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::AddrInUse => "address already in use".into(),
        ErrorKind::AddrNotAvailable => "address not available on this machine".into(),
        ErrorKind::PermissionDenied => "permission denied".into(),
        _ => {
            let text = error.to_string();
            match text.find(" (os error") {
                Some(i) => text[..i].to_owned(),
                None => text,
            }
        }
    }
}

/// Fail if anything already listens on `addr`. The workers' sockets share their port with
/// `SO_REUSEPORT`, which would let a second `lb` (same user) bind beside the first and take half
/// its connections; a socket without it is refused while any other is bound there.
fn check_free(addr: SocketAddr) -> Result<(), WorkersError> {
    if addr.port() == 0 {
        return Ok(());
    }
    let err = |error| WorkersError::Listen { addr, error };
    let probe =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    probe.set_reuse_address(true).map_err(err)?;
    probe.bind(&addr.into()).map_err(err)?;
    Ok(())
}

/// `count` listening sockets on `addr`, all bound to the same port (the first one's, when `addr`
/// asks for port 0).
pub(crate) fn listen(
    addr: SocketAddr,
    count: usize,
) -> Result<Vec<std::net::TcpListener>, WorkersError> {
    check_free(addr)?;
    let mut sockets = Vec::with_capacity(count);
    let mut bound = addr;
    for _ in 0..count.max(1) {
        let err = |error| WorkersError::Listen { addr: bound, error };
        let socket = Socket::new(
            Domain::for_address(bound),
            Type::STREAM,
            Some(Protocol::TCP),
        )
        .map_err(err)?;
        socket.set_reuse_address(true).map_err(err)?;
        socket.set_reuse_port(true).map_err(err)?;
        socket.set_nonblocking(true).map_err(err)?;
        socket.bind(&bound.into()).map_err(err)?;
        socket.listen(BACKLOG).map_err(err)?;
        let listener: std::net::TcpListener = socket.into();
        bound = listener.local_addr().map_err(err)?;
        sockets.push(listener);
    }
    Ok(sockets)
}

/// How long past the drain time a worker waits for its WebSocket tunnels to close.
const TUNNEL_CLOSE: Duration = Duration::from_secs(2);

/// Running worker threads.
pub(crate) struct Workers {
    threads: Vec<JoinHandle<()>>,
    /// `Some(drain time)` once the workers are to stop.
    stop: watch::Sender<Option<Duration>>,
}

impl Workers {
    /// Serve each traffic listener (with its TLS listener, if any) and the admin listener on a
    /// thread of its own with its own [`App`].
    ///
    /// With an `admin` listener (`[admin] listen`), `/add`, `/rm` and `/_lb/*` are served there
    /// only, on a thread of its own; `token` (the admin token) protects the routes that change
    /// state or reveal processes wherever they are served. Each thread counts its requests in a
    /// block of `shared.metrics` of its own, and sends access log lines to `access_log`, if on.
    pub(crate) fn start(
        sockets: Sockets,
        token: Option<String>,
        settings: ProxySection,
        shared: &Arc<Shared>,
        controller: &ControllerHandle,
        access_log: Option<&AccessLog>,
    ) -> Result<Workers, WorkersError> {
        let Sockets {
            traffic: listeners,
            tls,
            admin,
        } = sockets;
        let (stop, stopped) = watch::channel(None);
        let token: Option<Arc<str>> = token.map(Into::into);
        let traffic = Access {
            token: token.clone(),
            admin_routes: admin.is_none(),
        };
        let (mut tls_sockets, tls_setup, redirect) = match tls {
            Some(t) => (t.sockets, Some((t.certs, t.min_version)), t.redirect),
            None => (Vec::new(), None, None),
        };
        let mut serving: Vec<(
            std::net::TcpListener,
            Option<std::net::TcpListener>,
            Access,
            bool,
        )> = listeners
            .into_iter()
            .map(|l| {
                let tls = tls_sockets.pop();
                (l, tls, traffic.clone(), true)
            })
            .collect();
        if let Some(admin) = admin {
            let access = Access {
                token,
                admin_routes: true,
            };
            serving.push((admin, None, access, false));
        }
        // The connection limit, shared out over the traffic workers.
        let traffic_workers = serving
            .iter()
            .filter(|(_, _, _, proxies)| *proxies)
            .count()
            .max(1);
        let per_worker = (settings.max_connections > 0)
            .then(|| settings.max_connections.div_ceil(traffic_workers));
        // One TLS configuration for every worker: one session cache, so a client resumes its
        // session whichever worker the kernel hands its next connection to.
        let acceptor = match tls_setup {
            Some((certs, min_version)) => {
                Some(super::tls::acceptor(certs, min_version).map_err(WorkersError::Tls)?)
            }
            None => None,
        };
        let mut threads = Vec::with_capacity(serving.len());
        for (i, (listener, tls_socket, access, proxies)) in serving.into_iter().enumerate() {
            let tls = tls_socket.zip(acceptor.clone());
            let shared = Arc::clone(shared);
            let controller = controller.clone();
            let stopped = stopped.clone();
            let limit = if proxies { per_worker } else { None };
            let recorder = Recorder {
                metrics: shared.metrics.worker(),
                access: access_log.map(AccessLog::sink),
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(WorkersError::Spawn)?;
            let thread = std::thread::Builder::new()
                .name(format!("lb-worker-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        let listener = match tokio::net::TcpListener::from_std(listener) {
                            Ok(listener) => listener,
                            Err(e) => {
                                tracing::error!(error = %e, "worker cannot use its socket");
                                return;
                            }
                        };
                        let tls = match tls.map(|(socket, acceptor)| {
                            tokio::net::TcpListener::from_std(socket)
                                .map(|listener| TlsListener { listener, acceptor })
                        }) {
                            Some(Err(e)) => {
                                tracing::error!(error = %e, "worker cannot use its TLS socket");
                                return;
                            }
                            Some(Ok(tls)) => Some(tls),
                            None => None,
                        };
                        let tunnels = Arc::clone(&shared);
                        let app = Arc::new(App::new(
                            shared, controller, settings, access, proxies, recorder, redirect,
                        ));
                        front::serve(listener, tls, app, limit, stopped.clone()).await;
                        // WebSocket tunnels outlive their connections: they close at the end
                        // of the drain (`Tunnels::shutdown`); this runtime must last until then.
                        let drain = stopped.borrow().unwrap_or_default();
                        if proxies {
                            super::tunnel::outlast(&tunnels, drain + TUNNEL_CLOSE).await;
                        }
                    });
                })
                .map_err(WorkersError::Spawn)?;
            threads.push(thread);
        }
        Ok(Workers { threads, stop })
    }

    /// Stop accepting on every worker, let requests in flight finish for up to `drain`, and
    /// wait for the threads to end.
    pub(crate) fn stop(self, drain: Duration) {
        let _ = self.stop.send(Some(drain));
        for thread in self.threads {
            let _ = thread.join();
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
