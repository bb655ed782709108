//! Wiring for `lb` with no subcommand: load the configuration, bind the listeners, start the
//! supervisor, the controller, health checks, the file watcher and the workers, then wait for a
//! signal and shut down in order.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::signal::unix::{signal, Signal, SignalKind};

use lb::config::{Config, Source, SupervisorKind};
use lb::control::health;
use lb::control::probe::Prober;
use lb::control::supervisor::{DockerSupervisor, ProcessSupervisor, Supervisor, SwarmSupervisor};
use lb::control::{watch, Command, Controller, ControllerHandle};
use lb::data::access::AccessLog;
use lb::data::workers::{self, Workers};
use lb::state::Meta;

/// What `lb` with no subcommand was asked to run on.
pub(crate) struct Options {
    /// The configuration file to follow (created from `defaults` where missing).
    pub(crate) config: PathBuf,
    /// What a new configuration file is copied from.
    pub(crate) defaults: PathBuf,
    /// Whether `config`'s directory may be created.
    pub(crate) create_dirs: bool,
    /// Overrides the configuration's `listen`.
    pub(crate) listen: Option<SocketAddr>,
}

/// Run the load balancer until a shutdown signal.
pub(crate) async fn run(options: Options) -> anyhow::Result<()> {
    let Options {
        config: config_path,
        defaults,
        create_dirs,
        listen,
    } = options;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // Before anything slow: from here on SIGHUP and SIGTERM no longer kill the process.
    let signals = Signals::install()?;
    let loaded = Config::load_runtime(&config_path, &defaults, create_dirs)
        .with_context(|| config_path.display().to_string())?;
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
    let mut proxy = config.proxy;
    if let Some(open_files) = open_files {
        tracing::debug!(limit = open_files, "open files");
        let listeners = proxy.worker_count() + usize::from(config.admin.listen.is_some());
        let reserved = workers::files_reserved(listeners, config.limits.max_replicas);
        let allowed = workers::connection_limit(proxy.max_connections, open_files, reserved);
        if allowed != proxy.max_connections {
            tracing::warn!(
                max_connections = proxy.max_connections,
                allowed,
                open_files,
                reserved,
                "max_connections lowered to what the open files limit allows \
                 (two per connection, the reserve for replicas, listeners and files)"
            );
            proxy.max_connections = allowed;
        }
    }
    if let Some(seed) = &loaded.created_from {
        tracing::info!(config = %loaded.source, from = %seed, "configuration file created");
    }
    tracing::info!(config = %loaded.source, "configuration loaded");
    let listen = listen.unwrap_or(config.listen);
    let listeners = workers::listen(listen, config.proxy.worker_count())?;
    let admin = match config.admin.listen {
        Some(addr) => Some(workers::listen(addr, 1)?.remove(0)),
        None => None,
    };
    let token = config.admin.effective_token();
    if token.is_none() {
        let open_to_others = admin
            .as_ref()
            .and_then(|a| a.local_addr().ok())
            .map_or(!listen.ip().is_loopback(), |a| !a.ip().is_loopback());
        if open_to_others {
            tracing::warn!(
                "/add, /rm and /_lb/* are open to anyone who can reach this address: \
                 set [admin] token (or LB_ADMIN_TOKEN), or [admin] listen on a loopback address"
            );
        }
    }
    let local = listeners[0].local_addr()?;

    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let supervisor: Arc<dyn Supervisor> = match config.supervisor.kind {
        SupervisorKind::Process => Arc::new(
            ProcessSupervisor::new(&config.supervisor.command, events_tx)
                .context("cannot set up the process supervisor")?,
        ),
        SupervisorKind::Docker => DockerSupervisor::connect(
            &config.supervisor,
            Duration::from_millis(config.health.start_timeout_ms),
            events_tx,
        )
        .await
        .context("cannot set up the docker supervisor")?,
        SupervisorKind::Swarm => SwarmSupervisor::connect(
            &config.supervisor,
            Duration::from_millis(config.health.start_timeout_ms),
            events_tx,
        )
        .await
        .context("cannot set up the swarm supervisor")?,
    };
    let meta = Meta {
        listen: local,
        admin: admin.as_ref().and_then(|a| a.local_addr().ok()),
        supervisor: supervisor.kind(),
        started: Instant::now(),
        workers: listeners.len() + usize::from(admin.is_some()),
    };
    let hash = config
        .resolve_hash()
        .with_context(|| loaded.source.to_string())?;
    tracing::info!(hash = hash.name(), "ring hash functions");
    let (mut controller, shared, handle) = Controller::new(&loaded, hash, supervisor, meta)?;
    controller.start().await;
    let health_settings = controller.health_settings();
    let settings = health_settings.clone();
    if let Source::File(path) = &loaded.source {
        watch::spawn(path.clone(), handle.clone())?;
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

    let access_log = AccessLog::start(&config.access_log(), config.log.access_format, &shared)?;
    let admin_addr = admin.as_ref().and_then(|a| a.local_addr().ok());
    let workers = Workers::start(
        listeners,
        admin,
        token,
        proxy,
        &shared,
        &handle,
        access_log.as_ref(),
    )?;
    if let Some(addr) = admin_addr {
        println!("lb admin on http://{addr}");
    }
    // Tests and scripts wait for this line.
    println!("lb listening on http://{local}");
    signals.until_shutdown(&handle, access_log.as_ref()).await;
    let drain = Duration::from_millis(settings.borrow().drain_timeout_ms);
    let in_flight: usize = shared
        .snapshot
        .load()
        .backends
        .iter()
        .map(|b| b.in_flight.load(Ordering::Relaxed))
        .sum();
    tracing::info!(
        in_flight,
        drain_ms = drain.as_millis() as u64,
        "shutting down: no new connections; letting requests in flight finish"
    );
    tokio::task::spawn_blocking(move || {
        workers.stop(drain);
        // The workers' ends of the access log are gone: write out the last lines.
        if let Some(access_log) = access_log {
            access_log.close();
        }
    })
    .await?;
    tracing::info!("stopping replicas");
    handle.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Heartbeats on a thread of their own: their timing never shares a thread with the
/// controller's work (a large table build, a huge file), so a late check can only mean a late
/// replica. A panic in them is logged, counted, and they start again.
fn spawn_health_checks(
    shared: Arc<lb::state::Shared>,
    settings: tokio::sync::watch::Receiver<lb::config::HealthSection>,
    handle: ControllerHandle,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the health checks' runtime")?;
    std::thread::Builder::new()
        .name("lb-health".into())
        .spawn(move || {
            runtime.block_on(lb::control::guard::restart_on_panic(
                "the health checks",
                Arc::clone(&shared),
                || {
                    health::run(
                        Arc::clone(&shared),
                        settings.clone(),
                        handle.clone(),
                        Prober::default(),
                    )
                },
            ))
        })
        .context("cannot start the health checks' thread")?;
    Ok(())
}

/// The signals `lb` answers, like nginx: SIGHUP re-reads the configuration (and reopens the
/// access log file); SIGTERM and SIGINT shut down gracefully; a second SIGINT exits at once.
struct Signals {
    hangup: Signal,
    terminate: Signal,
    interrupt: Signal,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            hangup: signal(SignalKind::hangup())?,
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// Answer SIGHUP until SIGTERM or SIGINT; after that, a second SIGINT ends the process.
    async fn until_shutdown(self, controller: &ControllerHandle, access_log: Option<&AccessLog>) {
        let Signals {
            mut hangup,
            mut terminate,
            mut interrupt,
        } = self;
        loop {
            tokio::select! {
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP: re-reading the configuration");
                    controller.send(Command::Reload);
                    if let Some(access_log) = access_log {
                        access_log.reopen();
                    }
                }
                _ = terminate.recv() => {
                    tracing::info!("SIGTERM: shutting down");
                    break;
                }
                _ = interrupt.recv() => {
                    tracing::info!("SIGINT: shutting down (interrupt again to exit at once)");
                    break;
                }
            }
        }
        tokio::spawn(async move {
            interrupt.recv().await;
            tracing::warn!("second SIGINT: exiting at once");
            std::process::exit(130);
        });
    }
}
