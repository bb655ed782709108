//! The data path's threads: one event loop per worker thread, like nginx's and HAProxy's workers.
//!
//! Each worker has its own current-thread runtime, its own listening socket on the shared
//! address (`SO_REUSEPORT`: the kernel spreads new connections over them) and its own
//! [`front::App`] with its own connection pool to the replicas, so a request and the backend
//! connection serving it stay on one thread. Workers share only the controller's immutable
//! snapshots (`ArcSwap`) and its command channel.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::watch;

use super::front::{self, Role, Seed};
use super::live::Live;
use crate::api::Access;
use crate::control::ControllerHandle;
use crate::state::Shared;

/// Why the workers could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WorkersError {
    /// A thread or runtime could not be created.
    #[error("cannot start a worker: {0}")]
    Spawn(std::io::Error),
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
    /// thread of its own, each taking its sockets from, and building its [`front::App`]s from,
    /// the latest `live` settings: `traffic` traffic workers, and an admin thread when `live`
    /// has an admin listener.
    ///
    /// With an `admin` listener (`[admin] listen`), `/add`, `/rm` and `/_lb/*` are served there
    /// only, on a thread of its own; the admin token (`Shared::admin_token`) protects the routes
    /// that change state or reveal processes wherever they are served. Each thread counts its
    /// requests in a block of `shared.metrics` of its own.
    pub(crate) fn start(
        live: &watch::Receiver<Arc<Live>>,
        traffic: usize,
        shared: &Arc<Shared>,
        controller: &ControllerHandle,
    ) -> Result<Workers, WorkersError> {
        let (stop, stopped) = watch::channel(None);
        let admin = live.borrow().listeners.admin.is_some();
        let roles = (0..traffic.max(1))
            .map(Role::Traffic)
            .chain(admin.then_some(Role::Admin));
        let mut threads = Vec::new();
        for (i, role) in roles.enumerate() {
            let proxies = matches!(role, Role::Traffic(_));
            let seed = Seed {
                shared: Arc::clone(shared),
                controller: controller.clone(),
                access: Access {
                    // With an admin listener, lb's own routes are served there only.
                    admin_routes: !proxies || !admin,
                },
                proxies,
                role,
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
                        let tunnels = Arc::clone(&seed.shared);
                        front::serve(seed, live, stopped.clone()).await;
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
