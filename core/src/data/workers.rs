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

use super::front::{self, Seed};
use super::live::Live;
use crate::api::Access;
use crate::control::ControllerHandle;
use crate::state::Shared;

/// Pending connections each listening socket queues.
const BACKLOG: i32 = 4096;

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
}

/// The listening sockets the workers serve.
pub(crate) struct Sockets {
    /// The plain listener's, one per traffic worker.
    pub(crate) traffic: Vec<std::net::TcpListener>,
    /// The TLS listener's, one per traffic worker, if `[tls]` is on.
    pub(crate) tls: Vec<std::net::TcpListener>,
    /// `[admin] listen`'s, if set.
    pub(crate) admin: Option<std::net::TcpListener>,
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
    /// thread of its own, each building its [`front::App`]s from the latest `live` settings.
    ///
    /// With an `admin` listener (`[admin] listen`), `/add`, `/rm` and `/_lb/*` are served there
    /// only, on a thread of its own; the admin token (`Shared::admin_token`) protects the routes
    /// that change state or reveal processes wherever they are served. Each thread counts its
    /// requests in a block of `shared.metrics` of its own.
    pub(crate) fn start(
        sockets: Sockets,
        live: &watch::Receiver<Arc<Live>>,
        shared: &Arc<Shared>,
        controller: &ControllerHandle,
    ) -> Result<Workers, WorkersError> {
        let Sockets {
            traffic: listeners,
            tls: mut tls_sockets,
            admin,
        } = sockets;
        let (stop, stopped) = watch::channel(None);
        let traffic = Access {
            admin_routes: admin.is_none(),
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
            let access = Access { admin_routes: true };
            serving.push((admin, None, access, false));
        }
        let mut threads = Vec::with_capacity(serving.len());
        for (i, (listener, tls_socket, access, proxies)) in serving.into_iter().enumerate() {
            let seed = Seed {
                shared: Arc::clone(shared),
                controller: controller.clone(),
                access,
                proxies,
                metrics: shared.metrics.worker(),
            };
            let live = live.clone();
            let stopped = stopped.clone();
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
                        let tls = match tls_socket.map(tokio::net::TcpListener::from_std) {
                            Some(Err(e)) => {
                                tracing::error!(error = %e, "worker cannot use its TLS socket");
                                return;
                            }
                            Some(Ok(tls)) => Some(tls),
                            None => None,
                        };
                        let tunnels = Arc::clone(&seed.shared);
                        front::serve(listener, tls, seed, live, stopped.clone()).await;
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
