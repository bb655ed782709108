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

use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::watch;

use super::front::{self, App};
use crate::config::ProxySection;
use crate::control::ControllerHandle;
use crate::state::Shared;

/// Pending connections each listening socket queues.
const BACKLOG: i32 = 4096;

/// Why the workers could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkersError {
    /// Binding or listening failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A thread or runtime could not be created.
    #[error("cannot start a worker: {0}")]
    Spawn(std::io::Error),
}

/// `count` listening sockets on `addr`, all bound to the same port (the first one's, when `addr`
/// asks for port 0).
pub fn listen(addr: SocketAddr, count: usize) -> Result<Vec<std::net::TcpListener>, WorkersError> {
    let mut sockets = Vec::with_capacity(count);
    let mut bound = addr;
    for _ in 0..count.max(1) {
        let err = |source| WorkersError::Listen {
            addr: bound,
            source,
        };
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

/// Running worker threads.
pub struct Workers {
    threads: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl Workers {
    /// Serve each listener on its own thread with its own [`App`].
    pub fn start(
        listeners: Vec<std::net::TcpListener>,
        settings: ProxySection,
        shared: &Arc<Shared>,
        controller: &ControllerHandle,
    ) -> Result<Workers, WorkersError> {
        let (stop, stopped) = watch::channel(false);
        let mut threads = Vec::with_capacity(listeners.len());
        for (i, listener) in listeners.into_iter().enumerate() {
            let shared = Arc::clone(shared);
            let controller = controller.clone();
            let mut stopped = stopped.clone();
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
                        let app = Arc::new(App::new(shared, controller, settings));
                        let shutdown = async move {
                            let _ = stopped.wait_for(|stop| *stop).await;
                        };
                        front::serve(listener, app, shutdown).await;
                    });
                })
                .map_err(WorkersError::Spawn)?;
            threads.push(thread);
        }
        Ok(Workers { threads, stop })
    }

    /// Stop accepting on every worker and wait for the threads to end.
    pub fn stop(self) {
        let _ = self.stop.send(true);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}
