//! The data path's threads: one event loop per worker thread, like nginx's and HAProxy's workers.
//!
//! Each worker has its own current-thread runtime, its own listening socket on the shared
//! address (`SO_REUSEPORT`: the kernel spreads new connections over them) and its own
//! [`front::App`] with its own connection pool to the replicas, so a request and the backend
//! connection serving it stay on one thread. Workers share only the controller's immutable
//! snapshots (`ArcSwap`) and its command channel.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::watch;

use super::front::{self, Role, Seed};
use super::live::Live;
use crate::api::Access;
use crate::control::ControllerHandle;
use crate::metrics::WorkerMetrics;
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

/// Running worker threads; traffic workers come and go with `[proxy] workers`.
pub(crate) struct Workers {
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// `Some(drain time)` once the workers are to stop.
    stop: watch::Sender<Option<Duration>>,
    live: watch::Receiver<Arc<Live>>,
    shared: Arc<Shared>,
    controller: ControllerHandle,
    /// Whether there is an admin listener (lb's own routes are served there only).
    admin: bool,
    /// How many traffic workers run (roles `0..n`), and the metric blocks by role index (a
    /// worker started again in a role counts in the block of the one before it).
    traffic: Mutex<(usize, Vec<Arc<WorkerMetrics>>)>,
}

impl Workers {
    /// Serve each traffic listener (with its TLS listener, if any) and the admin listener on a
    /// thread of its own, each taking its sockets from, and building its [`front::App`]s from,
    /// the latest `live` settings: `live.workers` traffic workers, and an admin thread when `live` has an admin listener. [`Workers::follow`] starts more when a
    /// save asks for more; the ones a save no longer wants stop by themselves (`front::serve`).
    ///
    /// With an `admin` listener (`[admin] listen`), `/add`, `/rm` and `/_lb/*` are served there
    /// only, on a thread of its own; the admin token (`Shared::admin_token`) protects the routes
    /// that change state or reveal processes wherever they are served. Each thread counts its
    /// requests in a block of `shared.metrics` of its own.
    pub(crate) fn start(
        live: &watch::Receiver<Arc<Live>>,
        shared: &Arc<Shared>,
        controller: &ControllerHandle,
    ) -> Result<Arc<Workers>, WorkersError> {
        let (stop, _) = watch::channel(None);
        let (traffic, admin) = {
            let live = live.borrow();
            (live.workers, live.listeners.admin.is_some())
        };
        let workers = Arc::new(Workers {
            threads: Mutex::new(Vec::new()),
            stop,
            live: live.clone(),
            shared: Arc::clone(shared),
            controller: controller.clone(),
            admin,
            traffic: Mutex::new((0, Vec::new())),
        });
        workers.resize(traffic)?;
        if admin {
            workers.spawn(Role::Admin, shared.metrics.worker())?;
        }
        Ok(workers)
    }

    /// Start traffic workers up to `count` (fewer: the extra ones stop by themselves).
    fn resize(&self, count: usize) -> Result<(), WorkersError> {
        let mut traffic = self.traffic.lock().unwrap_or_else(|e| e.into_inner());
        let (running, blocks) = &mut *traffic;
        *running = (*running).min(count);
        while *running < count {
            let index = *running;
            if blocks.len() <= index {
                blocks.push(self.shared.metrics.worker());
            }
            self.spawn(Role::Traffic(index), Arc::clone(&blocks[index]))?;
            *running += 1;
        }
        Ok(())
    }

    /// Start a worker thread in `role`, counting in `metrics`.
    fn spawn(&self, role: Role, metrics: Arc<WorkerMetrics>) -> Result<(), WorkersError> {
        let proxies = matches!(role, Role::Traffic(_));
        let seed = Seed {
            shared: Arc::clone(&self.shared),
            controller: self.controller.clone(),
            access: Access {
                // With an admin listener, lb's own routes are served there only.
                admin_routes: !proxies || !self.admin,
            },
            proxies,
            role,
            metrics,
        };
        let live = self.live.clone();
        let stopped = self.stop.subscribe();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(WorkersError::Spawn)?;
        let name = match role {
            Role::Traffic(i) => format!("lb-worker-{i}"),
            Role::Admin => "lb-admin".to_owned(),
        };
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                runtime.block_on(async move {
                    let tunnels = Arc::clone(&seed.shared);
                    let mut stopped = stopped;
                    let ended = front::serve(seed, live, stopped.clone()).await;
                    if !proxies {
                        return;
                    }
                    // WebSocket tunnels outlive their connections and run on this runtime:
                    // a worker a save no longer wants lasts until they are closed (or lb
                    // stops); on a stop they close at the end of the drain
                    // (`Tunnels::shutdown`).
                    if ended == front::Ended::Retired {
                        while tunnels.tunnels.open_now() > 0 && stopped.borrow().is_none() {
                            let _ =
                                tokio::time::timeout(Duration::from_millis(100), stopped.changed())
                                    .await;
                        }
                    }
                    let drain = stopped.borrow().unwrap_or_default();
                    super::tunnel::outlast(&tunnels, drain + TUNNEL_CLOSE).await;
                });
            })
            .map_err(WorkersError::Spawn)?;
        self.threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(thread);
        Ok(())
    }

    /// Start the traffic workers each new version of the settings asks for, until the workers
    /// stop. Runs on the control plane's runtime.
    pub(crate) async fn follow(self: Arc<Self>) {
        let mut live = self.live.clone();
        live.mark_unchanged();
        while live.changed().await.is_ok() {
            if self.stop.borrow().is_some() {
                return;
            }
            let count = live.borrow_and_update().workers;
            if let Err(e) = self.resize(count) {
                tracing::error!(error = %e, "cannot start more workers");
            }
        }
    }

    /// Wait until every worker thread has ended by itself (after a handover, once its
    /// connections are done), for at most `limit`; whether they all did.
    pub(crate) fn wait_ended(&self, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let ended = (self.threads.lock().unwrap_or_else(|e| e.into_inner()))
                .iter()
                .all(JoinHandle::is_finished);
            if ended || std::time::Instant::now() >= deadline {
                return ended;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop accepting on every worker, let requests in flight finish for up to `drain`, and
    /// wait for the threads to end.
    pub(crate) fn stop(&self, drain: Duration) {
        self.stop.send_replace(Some(drain));
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for thread in threads {
            let _ = thread.join();
        }
    }
}
