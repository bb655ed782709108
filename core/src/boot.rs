//! Wiring for `lb` with no subcommand: load the configuration, bind the listeners, start the
//! supervisor, the controller, health checks, the file watcher and the workers, then wait for a
//! signal and shut down in order.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use lb::config::{Config, Source, SupervisorKind};
use lb::control::health::{self, Prober};
use lb::control::supervisor::{DockerSupervisor, ProcessSupervisor, Supervisor};
use lb::control::{watch, Command, Controller};
use lb::data::workers::{self, Workers};
use lb::state::Meta;

/// Run the load balancer until a shutdown signal.
pub(crate) async fn run(config_path: PathBuf, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let loaded = Config::load_or_embedded(&config_path)
        .with_context(|| config_path.display().to_string())?;
    let config = &loaded.config;
    tracing::info!(config = %loaded.source, "configuration loaded");
    let listen = listen.unwrap_or(config.listen);
    let listeners = workers::listen(listen, config.proxy.worker_count())?;
    let local = listeners[0].local_addr()?;

    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let supervisor: Arc<dyn Supervisor> = match config.supervisor.kind {
        SupervisorKind::Process => Arc::new(
            ProcessSupervisor::new(&config.supervisor.command, events_tx)
                .context("cannot set up the process supervisor")?,
        ),
        SupervisorKind::Docker => DockerSupervisor::connect(&config.supervisor, events_tx)
            .await
            .context("cannot set up the docker supervisor")?,
    };
    let meta = Meta {
        listen: local,
        supervisor: supervisor.kind(),
        started: Instant::now(),
    };
    let hash = config
        .resolve_hash()
        .with_context(|| loaded.source.to_string())?;
    tracing::info!(hash = hash.name(), "ring hash functions");
    let (mut controller, shared, handle) = Controller::new(&loaded, hash, supervisor, meta)?;
    controller.start().await;
    let health_settings = controller.health_settings();
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
    tokio::spawn(health::run(
        Arc::clone(&shared),
        health_settings,
        handle.clone(),
        Prober::default(),
    ));

    let workers = Workers::start(listeners, config.proxy, &shared, &handle)?;
    // Tests and scripts wait for this line.
    println!("lb listening on http://{local}");
    server::shutdown_signal().await;
    tracing::info!("shutting down: stopping replicas");
    tokio::task::spawn_blocking(move || workers.stop()).await?;
    handle.shutdown().await;
    Ok(())
}
