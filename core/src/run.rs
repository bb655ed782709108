//! [`run`]: what `lb` with no subcommand does — load the configuration, bind the listeners,
//! start the supervisor, the controller, health checks, the file watcher and the workers, then
//! wait for a signal and shut down in order.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::config::{Config, HealthSection, Source, SupervisorKind};
use crate::control::health;
use crate::control::probe::Prober;
use crate::control::supervisor::process::{Adoptee, Lifeline};
use crate::control::supervisor::{
    DockerSupervisor, Handle, ProcessSupervisor, Supervisor, SwarmSupervisor,
};
use crate::control::{watch, Command, Controller, ControllerHandle};
use crate::data::live::{self, Front, FrontCommand};
use crate::data::workers::Workers;
use crate::state::{Listening, Meta, Shared};
use crate::upgrade::{self, Inherited, UpgradeError};

/// Why `lb` could not start, or stopped with an error. Its `source()` chain says why.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file could not be read, created or checked, or its hash not loaded.
    #[error("{path}")]
    Config {
        /// The file (or "embedded default").
        path: String,
        /// What was wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A listener could not be bound (the message names the address).
    #[error(transparent)]
    Listen(Box<dyn std::error::Error + Send + Sync>),
    /// Something `lb` needs could not be set up (a listener, the supervisor, a thread, …).
    #[error("{what}")]
    Setup {
        /// What could not be set up.
        what: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Wraps an error as [`Error::Setup`] of `what`.
fn setup<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    what: impl Into<String>,
) -> impl FnOnce(E) -> Error {
    move |source| Error::Setup {
        what: what.into(),
        source: source.into(),
    }
}

/// Wraps an error as [`Error::Config`] of `path`.
fn config_error<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    path: impl std::fmt::Display,
) -> impl FnOnce(E) -> Error {
    move |source| Error::Config {
        path: path.to_string(),
        source: source.into(),
    }
}

/// What to run on: the `lb` binary's options.
#[derive(Debug, Clone)]
pub struct Options {
    /// The configuration file to follow (created from `defaults` where missing).
    pub config: PathBuf,
    /// What a new configuration file is copied from; where that does not exist either, the
    /// copy of `config/lb.toml` compiled into `lb`.
    pub defaults: PathBuf,
    /// Whether `config`'s directory may be created.
    pub create_dirs: bool,
    /// Overrides the configuration's `listen`.
    pub listen: Option<SocketAddr>,
}

impl Options {
    /// The files `lb` uses with no options: [`DEFAULT_PATH`], created from [`DEFAULTS_PATH`].
    pub fn new() -> Options {
        Options {
            config: PathBuf::from(DEFAULT_PATH),
            defaults: PathBuf::from(DEFAULTS_PATH),
            create_dirs: false,
            listen: None,
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options::new()
    }
}

pub use crate::config::{DEFAULTS_PATH, DEFAULT_PATH};

/// Run the load balancer until SIGTERM or SIGINT (SIGHUP re-reads the configuration), on a
/// runtime of its own: the control plane needs one thread, requests are served by the worker
/// threads (one per core, see `data/workers.rs`). Logs go to stderr (`RUST_LOG`, default
/// `info`); `lb listening on http://ADDR` is printed on stdout once requests are accepted.
pub fn run(options: Options) -> Result<(), Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(setup("the control plane's runtime"))?
        .block_on(serve(options))
}

/// [`run`] on the caller's runtime.
async fn serve(options: Options) -> Result<(), Error> {
    let Options {
        config: config_path,
        defaults,
        create_dirs,
        listen,
    } = options;
    crate::logs::to_stderr();
    // Before anything slow: from here on SIGHUP, SIGTERM and SIGUSR2 no longer kill the
    // process.
    let signals = Signals::install().map_err(setup("signal handlers"))?;
    // What an upgrade starts again: this executable (its path now, before a new build
    // replaces the file) with these arguments.
    let again = Again {
        exe: std::env::current_exe().ok(),
        args: std::env::args_os().skip(1).collect(),
    };
    // Started by an upgrade: the listeners, the lifeline and the replicas of the lb before.
    let mut inherited = Inherited::take().map_err(setup("the upgrade's handover"))?;
    let generation = inherited.as_ref().map_or(1, |i| i.generation);
    let loaded = Config::load_runtime(&config_path, &defaults, create_dirs)
        .map_err(config_error(config_path.display()))?;
    let config = &loaded.config;
    // Each client and each replica connection is a file descriptor: use all the system allows,
    // and accept no more connections than that allows.
    let open_files = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open files limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .ok()
                .map(|(soft, _)| soft)
        }
    };
    if let Some(open_files) = open_files {
        tracing::debug!(limit = open_files, "open files");
    }
    // The TLS listener has a socket per worker, like the plain one.
    let traffic_workers = config.proxy.worker_count();
    let tls_listeners = if config.tls.is_some() {
        traffic_workers
    } else {
        0
    };
    let listening = traffic_workers + usize::from(config.admin.listen.is_some()) + tls_listeners;
    let descriptors = live::Descriptors {
        open_files,
        reserved: live::files_reserved(listening, config.limits.max_replicas),
        traffic_workers,
    };
    if let Some(seed) = &loaded.created_from {
        tracing::info!(config = %loaded.source, from = %seed, "configuration file created");
    }
    tracing::info!(config = %loaded.source, "configuration loaded");
    let listen_override = listen;
    let listen = listen.unwrap_or(config.listen);
    let mut handed = |pick: fn(&mut Inherited) -> Option<upgrade::InheritedListener>| {
        inherited.as_mut().and_then(pick)
    };
    let (plain, admin, tls) = (
        handed(|i| i.plain.take()),
        handed(|i| i.admin.take()),
        handed(|i| i.tls.take()),
    );
    let bind = |inherited, addr, count| {
        upgrade::listener_at(inherited, addr, count)
            .map(Arc::new)
            .map_err(|e| Error::Listen(Box::new(e)))
    };
    let plain = bind(plain, listen, traffic_workers)?;
    let admin = config
        .admin
        .listen
        .map(|addr| bind(admin, addr, 1))
        .transpose()?;
    // Certificates are checked before anything listens: a bad one stops the start.
    let certs = config
        .load_certificates()
        .map_err(config_error(&loaded.source))?;
    let tls = config
        .tls
        .as_ref()
        .map(|settings| bind(tls, settings.listen, traffic_workers))
        .transpose()?;
    let listeners = live::Listeners { plain, tls, admin };
    if config.admin.effective_token().is_none() {
        let open_to_others = listeners
            .admin
            .as_ref()
            .map_or(!listen.ip().is_loopback(), |a| !a.local.ip().is_loopback());
        if open_to_others {
            tracing::warn!(
                "/add, /rm and /_lb/* are open to anyone who can reach this address: \
                 set [admin] token (or LB_ADMIN_TOKEN), or [admin] listen on a loopback address"
            );
        }
    }

    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    // Held by every generation of lb: process replicas die with the last one.
    let lifeline = match inherited.as_mut().and_then(|i| i.lifeline.take()) {
        Some(lifeline) => lifeline,
        None => Lifeline::new().map_err(setup("the replicas' lifeline"))?,
    };
    let lifeline = Arc::new(lifeline);
    let supervisor: Arc<dyn Supervisor> = match config.supervisor.kind {
        SupervisorKind::Process => Arc::new(
            ProcessSupervisor::new(
                &config.supervisor.command,
                Arc::clone(&lifeline),
                inherited
                    .as_mut()
                    .map(|i| std::mem::take(&mut i.replicas))
                    .unwrap_or_default(),
                events_tx,
            )
            .map_err(setup("cannot set up the process supervisor"))?,
        ),
        SupervisorKind::Docker => DockerSupervisor::connect(
            &config.supervisor,
            Duration::from_millis(config.health.start_timeout_ms),
            events_tx,
        )
        .await
        .map_err(setup("cannot set up the docker supervisor"))?,
        SupervisorKind::Swarm => SwarmSupervisor::connect(
            &config.supervisor,
            Duration::from_millis(config.health.start_timeout_ms),
            events_tx,
        )
        .await
        .map_err(setup("cannot set up the swarm supervisor"))?,
    };
    if let Some(inherited) = inherited.as_mut() {
        // Process replicas of the lb before, which a [supervisor] changed with the upgrade
        // no longer runs.
        crate::control::supervisor::process::release(std::mem::take(&mut inherited.replicas));
    }
    let addresses = Listening {
        listen: listeners.plain.local,
        admin: listeners.admin.as_ref().map(|a| a.local),
        tls: listeners.tls.as_ref().map(|t| t.local),
    };
    let meta = Meta {
        listening: Arc::new(ArcSwap::from_pointee(addresses)),
        supervisor: supervisor.kind(),
        started: Instant::now(),
        started_at: std::time::SystemTime::now(),
        generation,
        workers: traffic_workers + usize::from(listeners.admin.is_some()),
        base_dir: config.base_dir().to_path_buf(),
    };
    let hash = config
        .resolve_hash()
        .map_err(config_error(&loaded.source))?;
    tracing::info!(hash = hash.name(), "ring hash functions");
    let (mut controller, shared, handle) =
        Controller::new(&loaded, hash, supervisor, meta).map_err(config_error(&loaded.source))?;
    controller.serve_certificates(certs);
    if config.tls.is_some() {
        watch::spawn_certificates(controller.certificate_paths(), handle.clone())
            .map_err(setup("cannot follow the certificate files"))?;
    }
    if config.tls.is_some() {
        crate::control::acme::spawn(
            controller.acme_settings(),
            handle.clone(),
            Arc::clone(&shared),
        );
    }
    controller.start().await;
    let health_settings = controller.health_settings();
    let controller_front = controller.front_settings();
    let settings = health_settings.clone();
    if let Source::File(path) = &loaded.source {
        watch::spawn(path.clone(), handle.clone())
            .map_err(setup(format!("cannot follow {}", path.display())))?;
        tracing::info!(path = %path.display(), "following the configuration file");
    }
    let forward = handle.clone();
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            forward.send(Command::Supervisor(event));
        }
    });
    tokio::spawn(controller.run());
    spawn_health_checks(Arc::clone(&shared), health_settings, handle.clone())?;

    // The data plane's settings, followed live: the workers take each new version for the
    // connections they accept from then on.
    let (front, live) = Front::start(
        config.front(),
        descriptors,
        listeners,
        listen_override,
        &shared,
    )
    .map_err(setup("the data plane's settings"))?;
    let (front_tx, front_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(front.follow(controller_front, handle.clone(), front_rx));
    let workers = Workers::start(&live, &shared, &handle).map_err(setup("the worker threads"))?;
    tokio::spawn(Arc::clone(&workers).follow());
    if let Some(addr) = addresses.admin {
        println!("lb admin on http://{addr}");
    }
    if let Some(addr) = addresses.tls {
        println!("lb listening on https://{addr}");
    }
    // Tests and scripts wait for this line.
    println!("lb listening on http://{}", addresses.listen);
    upgrade::notify_systemd();
    if let Some(inherited) = &mut inherited {
        inherited.ready();
        tracing::info!(
            generation,
            previous = inherited.from,
            "upgrade: this lb serves now; the previous one drains and exits"
        );
    }
    let upgrades = Upgrades {
        again,
        generation,
        lifeline,
        controller: handle.clone(),
        front: front_tx.clone(),
    };
    let ending = signals.until_shutdown(&handle, &front_tx, upgrades).await;
    let drain = Duration::from_millis(settings.borrow().drain_timeout_ms);
    let in_flight: usize = shared
        .snapshot
        .load()
        .backends
        .iter()
        .map(|b| b.in_flight.load(Ordering::Relaxed))
        .sum();
    // WebSocket tunnels close at the end of the drain.
    shared.tunnels.shutdown(drain);
    if let Ending::Upgraded { pid, keep } = &ending {
        tracing::info!(
            new_pid = pid,
            in_flight,
            drain_ms = drain.as_millis() as u64,
            "upgrade: the new lb serves; this one stops accepting, lets its connections finish \
             (each closes after its next answer) and exits without stopping the replicas"
        );
        // From now on the new lb alone manages the replicas (no respawn here during the drain).
        handle.detach(keep.clone()).await;
        let _ = front_tx.send(FrontCommand::HandedOver);
        let waiting = Arc::clone(&workers);
        let ended = tokio::task::spawn_blocking(move || waiting.wait_ended(drain))
            .await
            .unwrap_or(false);
        if !ended {
            tracing::info!("drain time over: closing the connections left");
        }
    } else {
        tracing::info!(
            in_flight,
            drain_ms = drain.as_millis() as u64,
            "shutting down: no new connections; letting requests in flight finish"
        );
    }
    let (logs_tx, logs) = tokio::sync::oneshot::channel();
    let _ = front_tx.send(FrontCommand::Stop(logs_tx));
    let access_logs = logs.await.unwrap_or_default();
    tokio::task::spawn_blocking(move || {
        workers.stop(drain);
        // The workers' ends of the access logs are gone: write out the last lines.
        for access_log in access_logs {
            access_log.close();
        }
    })
    .await
    .map_err(setup("stopping the workers"))?;
    if let Ending::Shutdown = ending {
        tracing::info!("stopping replicas");
        handle.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Heartbeats on a thread of their own: their timing never shares a thread with the
/// controller's work (a large table build, a huge file), so a late check can only mean a late
/// replica. A panic in them is logged, counted, and they start again.
fn spawn_health_checks(
    shared: Arc<Shared>,
    settings: tokio::sync::watch::Receiver<HealthSection>,
    handle: ControllerHandle,
) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(setup("cannot start the health checks' runtime"))?;
    std::thread::Builder::new()
        .name("lb-health".into())
        .spawn(move || {
            runtime.block_on(crate::control::guard::restart_on_panic(
                "the health checks",
                Arc::clone(&shared),
                || {
                    health::run(
                        Arc::clone(&shared),
                        settings.clone(),
                        handle.clone(),
                        Prober::new(Arc::clone(&shared.backend_tls)),
                    )
                },
            ))
        })
        .map_err(setup("cannot start the health checks' thread"))?;
    Ok(())
}

/// What starts this `lb` again: its executable and arguments.
struct Again {
    /// `None` if the OS did not say where the executable is.
    exe: Option<PathBuf>,
    args: Vec<OsString>,
}

/// What a binary upgrade needs from this process.
struct Upgrades {
    again: Again,
    generation: u64,
    lifeline: Arc<Lifeline>,
    controller: ControllerHandle,
    front: tokio::sync::mpsc::UnboundedSender<FrontCommand>,
}

impl Upgrades {
    /// Start the new binary with this process' listeners and replicas; once it is ready, its
    /// pid and the handles of the replicas it adopted (or found itself: containers).
    async fn start(&self) -> Result<(u32, Vec<Handle>), UpgradeError> {
        let exe = self.again.exe.as_deref().ok_or_else(|| {
            UpgradeError::Prepare(std::io::Error::other(
                "the OS did not say where lb's executable is",
            ))
        })?;
        let (reply, listeners) = tokio::sync::oneshot::channel();
        let _ = self.front.send(FrontCommand::Listeners(reply));
        let listeners = listeners.await.map_err(|_| {
            UpgradeError::Prepare(std::io::Error::other("the data plane is shutting down"))
        })?;
        let handed = self.controller.handover().await;
        let replicas = handed
            .iter()
            .filter_map(|r| match r.handle {
                Handle::Pid(pid) => Some(Adoptee {
                    hostname: r.hostname.clone(),
                    id: r.id,
                    pid,
                    address: r.address.clone(),
                }),
                _ => None,
            })
            .collect();
        let pid = upgrade::start_new(upgrade::Plan {
            exe,
            args: &self.again.args,
            generation: self.generation + 1,
            plain: &listeners.plain,
            tls: listeners.tls.as_deref(),
            admin: listeners.admin.as_deref(),
            lifeline: Some(&self.lifeline),
            replicas,
        })
        .await?;
        Ok((pid, handed.into_iter().map(|r| r.handle).collect()))
    }
}

/// How the signal loop ended.
enum Ending {
    /// SIGTERM or SIGINT: stop everything.
    Shutdown,
    /// A binary upgrade: the new `lb` (pid) serves and runs the replicas (`keep`).
    Upgraded { pid: u32, keep: Vec<Handle> },
}

/// The signals `lb` answers, like nginx: SIGHUP re-reads the configuration (and reopens the
/// access log file); SIGUSR2 upgrades the binary; SIGTERM and SIGINT shut down gracefully; a
/// second SIGINT exits at once.
struct Signals {
    hangup: Signal,
    terminate: Signal,
    interrupt: Signal,
    upgrade: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            hangup: signal(SignalKind::hangup())?,
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            upgrade: signal(SignalKind::user_defined2())?,
        })
    }

    /// Answer SIGHUP and SIGUSR2 until SIGTERM or SIGINT, or an upgrade that succeeded; after
    /// that, a second SIGINT ends the process.
    async fn until_shutdown(
        self,
        controller: &ControllerHandle,
        front: &tokio::sync::mpsc::UnboundedSender<FrontCommand>,
        upgrades: Upgrades,
    ) -> Ending {
        let Signals {
            mut hangup,
            mut terminate,
            mut interrupt,
            mut upgrade,
        } = self;
        let upgrades = Arc::new(upgrades);
        let mut upgrading: Option<tokio::task::JoinHandle<_>> = None;
        let ending = loop {
            let upgraded = async {
                match upgrading.as_mut() {
                    Some(task) => task.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = upgrade.recv() => {
                    if upgrading.is_some() {
                        tracing::warn!("SIGUSR2: an upgrade is already under way");
                        continue;
                    }
                    tracing::info!("SIGUSR2: upgrading: starting {}", upgrades.again.exe.as_deref().map_or("lb".into(), |p| p.display().to_string()));
                    let upgrades = Arc::clone(&upgrades);
                    upgrading = Some(tokio::spawn(async move { upgrades.start().await }));
                }
                result = upgraded => {
                    upgrading = None;
                    match result {
                        Ok(Ok((pid, keep))) => break Ending::Upgraded { pid, keep },
                        Ok(Err(e)) => upgrade_failed(controller, &e),
                        Err(e) => upgrade_failed(controller, &e),
                    }
                }
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP: re-reading the configuration");
                    controller.send(Command::Reload);
                    let _ = front.send(FrontCommand::Reopen);
                }
                _ = terminate.recv() => {
                    tracing::info!("SIGTERM: shutting down");
                    break Ending::Shutdown;
                }
                _ = interrupt.recv() => {
                    tracing::info!("SIGINT: shutting down (interrupt again to exit at once)");
                    break Ending::Shutdown;
                }
            }
        };
        if let Some(task) = upgrading {
            // Shutting down during an upgrade: the new process is stopped by its task's end.
            task.abort();
        }
        tokio::spawn(async move {
            interrupt.recv().await;
            tracing::warn!("second SIGINT: exiting at once");
            std::process::exit(130);
        });
        ending
    }
}

/// Say why an upgrade failed (log and `config.last_error`); this `lb` goes on serving.
fn upgrade_failed(controller: &ControllerHandle, why: &dyn std::fmt::Display) {
    controller.send(Command::Failed(format!(
        "upgrade failed: {why}; this lb (pid {}) goes on serving",
        std::process::id()
    )));
}
