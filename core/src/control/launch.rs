//! Starting a replica: ask the supervisor, then wait for its first heartbeat. A backend by
//! address is not started: its name is resolved and it joins after `rise` health checks in a
//! row. Runs on tasks of its own, so the controller never waits for a start. A started replica
//! is a [`Running`]: the [`Backend`] readers see and the supervisor's [`Handle`], which only the
//! controller keeps. Heartbeats go through [`Heartbeats`] (the HTTP [`Prober`]; the
//! controller's unit tests give a fake).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use arc_swap::ArcSwap;

use crate::config::{own, BackendTls, HealthCheck, HealthSection};
use crate::state::{Backend, Listening, TlsTable};

use super::probe::{ProbeError, Prober};
use super::supervisor::{Handle, ReplicaSpec, Started, Supervisor, SupervisorError};

/// Pause between two tries of [`Launcher::rejoin`].
const REJOIN_POLL: Duration = Duration::from_millis(100);

/// Why a replica could not join the ring.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LaunchError {
    /// The supervisor could not start it.
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    /// It started but never answered a heartbeat (it was stopped again).
    #[error("replica '{hostname}' {source}")]
    NotAlive {
        /// The replica.
        hostname: String,
        /// The last heartbeat's failure.
        source: ProbeError,
    },
    /// A backend's address did not resolve.
    #[error("backend '{hostname}' {address}: {reason}")]
    Resolve {
        /// The backend.
        hostname: String,
        /// Its configured address.
        address: String,
        /// What the resolver said.
        reason: String,
    },
    /// A backend's address resolves to one of `lb`'s own listeners: it would be `lb` itself,
    /// and every request sent to it would come back (a loop). It stays out of the ring.
    #[error(
        "backend '{hostname}' {address} resolves to this load balancer itself ({resolved}, \
         where lb listens): requests would loop"
    )]
    Itself {
        /// The backend.
        hostname: String,
        /// Its configured address.
        address: String,
        /// What it resolved to.
        resolved: String,
    },
    /// The supervisor reported an address that is not `host:port`.
    #[error("replica '{hostname}' {address} is not a valid host:port")]
    BadAddress {
        /// The replica.
        hostname: String,
        /// What it reported.
        address: String,
    },
    /// Starting it panicked (a bug; logged and counted in `lb_control_panics_total`).
    #[error("replica '{hostname}': internal error while starting it: {message}")]
    Panicked {
        /// The replica.
        hostname: String,
        /// The panic's message.
        message: String,
    },
}

/// A replica in the ring as the controller holds it: what readers see, and how its supervisor
/// refers to it.
#[derive(Debug, Clone)]
pub(crate) struct Running {
    /// What snapshots hold.
    pub(crate) backend: Arc<Backend>,
    /// The supervisor's handle (a backend by address: its configured `HOST:PORT`).
    pub(crate) handle: Handle,
    /// When it joined (the controller's clock: a crash loop is judged by it).
    pub(crate) joined: tokio::time::Instant,
}

impl Running {
    /// `started` as a backend with `pipelining`; `None` if its address is not `host:port`.
    fn new(started: Started, pipelining: bool, tls: Option<Arc<BackendTls>>) -> Option<Running> {
        let handle = started.handle;
        let protocol = started.spec.protocol;
        let backend = Backend::new(
            started.spec.hostname,
            started.spec.id,
            started.address,
            !handle.is_supervised(),
            handle.describe(),
        )?;
        Some(Running {
            backend: Arc::new(
                backend
                    .with_pipelining(pipelining)
                    .with_tls(tls)
                    .with_protocol(protocol),
            ),
            handle,
            joined: tokio::time::Instant::now(),
        })
    }
}

/// The heartbeats a new replica must answer before it joins (the HTTP [`Prober`]).
#[async_trait]
pub(crate) trait Heartbeats: Send + Sync {
    /// One heartbeat ([`Prober::beat`]).
    async fn beat(
        &self,
        addr: &str,
        check: HealthCheck<'_>,
        timeout: Duration,
    ) -> Result<(), ProbeError>;

    /// Poll until the first heartbeat answers ([`Prober::wait_alive`]).
    async fn wait_alive(
        &self,
        addr: &str,
        check: HealthCheck<'_>,
        deadline: Duration,
    ) -> Result<(), ProbeError>;

    /// `rise` checks in a row, `interval` apart ([`Prober::wait_healthy`]).
    #[allow(clippy::too_many_arguments)] // the checks' settings, as `Prober::wait_healthy`
    async fn wait_healthy(
        &self,
        addr: &str,
        check: HealthCheck<'_>,
        rise: u32,
        interval: Duration,
        timeout: Duration,
        deadline: Duration,
        tls: Option<Arc<BackendTls>>,
    ) -> Result<(), ProbeError>;
}

#[async_trait]
impl Heartbeats for Prober {
    async fn beat(
        &self,
        addr: &str,
        check: HealthCheck<'_>,
        timeout: Duration,
    ) -> Result<(), ProbeError> {
        Prober::beat(self, addr, check, timeout).await
    }

    async fn wait_alive(
        &self,
        addr: &str,
        check: HealthCheck<'_>,
        deadline: Duration,
    ) -> Result<(), ProbeError> {
        Prober::wait_alive(self, addr, check, deadline).await
    }

    #[allow(clippy::too_many_arguments)] // the checks' settings, as `Prober::wait_healthy`
    async fn wait_healthy(
        &self,
        addr: &str,
        check: HealthCheck<'_>,
        rise: u32,
        interval: Duration,
        timeout: Duration,
        deadline: Duration,
        tls: Option<Arc<BackendTls>>,
    ) -> Result<(), ProbeError> {
        match tls {
            // Its own client: the backend is not in the table of the ring yet.
            Some(tls) => {
                Prober::fixed(tls)
                    .wait_healthy(addr, check, rise, interval, timeout, deadline)
                    .await
            }
            None => {
                Prober::wait_healthy(self, addr, check, rise, interval, timeout, deadline).await
            }
        }
    }
}

/// Starts replicas and waits for their first heartbeat; cheap to clone onto a task, so the
/// controller never waits for a start itself.
#[derive(Clone)]
pub(crate) struct Launcher {
    pub(crate) supervisor: Arc<dyn Supervisor>,
    pub(crate) prober: Arc<dyn Heartbeats>,
    /// Where `lb` itself listens now ([`crate::state::Meta::listening`]): a backend by
    /// address that resolves to one of these is refused.
    pub(crate) listening: Arc<ArcSwap<Listening>>,
    /// The TLS settings of the backends by address with `tls = true`, by their configured
    /// `HOST:PORT` (published by the controller when it applies a configuration).
    pub(crate) tls: Arc<ArcSwap<TlsTable>>,
}

impl Launcher {
    pub(crate) async fn launch_all(
        &self,
        specs: Vec<ReplicaSpec>,
        health: &HealthSection,
        deadline: Duration,
    ) -> Vec<Result<Running, LaunchError>> {
        let launches = specs
            .into_iter()
            .map(|spec| self.launch(spec, health, deadline));
        futures_util::future::join_all(launches).await
    }

    /// [`Launcher::launch_all`] for replicas that must be new (`/add`): a replica the runtime
    /// already runs under one of the ids is an error
    /// ([`super::supervisor::Membership::start_new`]).
    pub(crate) async fn launch_all_new(
        &self,
        specs: Vec<ReplicaSpec>,
        health: &HealthSection,
        deadline: Duration,
    ) -> Vec<Result<Running, LaunchError>> {
        let launches = specs.into_iter().map(|spec| async move {
            if spec.address.is_some() {
                return self.launch(spec, health, deadline).await;
            }
            let started = match self.supervisor.membership() {
                Some(membership) => membership.start_new(&spec).await?,
                None => self.supervisor.start(&spec).await?,
            };
            self.join_when_alive(started, health, deadline).await
        });
        futures_util::future::join_all(launches).await
    }

    /// Start one replica and wait up to `deadline` for its first heartbeat; stop it again if it
    /// never answers. A backend by address is resolved and checked instead.
    pub(crate) async fn launch(
        &self,
        spec: ReplicaSpec,
        health: &HealthSection,
        deadline: Duration,
    ) -> Result<Running, LaunchError> {
        let started = match &spec.address {
            Some(address) => Started {
                address: self.resolve_elsewhere(&spec.hostname, address).await?,
                handle: Handle::Address(address.clone()),
                spec,
            },
            None => self.supervisor.start(&spec).await?,
        };
        self.join_when_alive(started, health, deadline).await
    }

    /// [`resolve`] a backend's address, refusing one that leads to `lb` itself (any of its
    /// listeners, on any of this machine's addresses).
    async fn resolve_elsewhere(
        &self,
        hostname: &str,
        address: &str,
    ) -> Result<String, LaunchError> {
        let resolved = resolve(hostname, address).await?;
        let listening = self.listening.load().all();
        if own::reached_listener(&resolved, &listening, &own::on_this_machine).is_some() {
            return Err(LaunchError::Itself {
                hostname: hostname.to_owned(),
                address: address.to_owned(),
                resolved,
            });
        }
        Ok(resolved)
    }

    /// A backend for a running replica once it answers a heartbeat within `deadline` (a backend
    /// by address: `rise` in a row, one interval apart); a replica is stopped if it does not.
    pub(crate) async fn join_when_alive(
        &self,
        started: Started,
        health: &HealthSection,
        deadline: Duration,
    ) -> Result<Running, LaunchError> {
        let hostname = started.spec.hostname.clone();
        let by_address = !started.handle.is_supervised();
        // The file's settings for that address win over those the replica was added with (a
        // saved file may have changed them since).
        let tls = started
            .handle
            .address()
            .and_then(|configured| self.tls.load().get(configured).cloned())
            .or_else(|| started.spec.tls.clone().filter(|_| by_address));
        let checks = if by_address {
            self.prober
                .wait_healthy(
                    &started.address,
                    health.check(true),
                    health.rise,
                    Duration::from_millis(health.interval_ms),
                    Duration::from_millis(health.timeout_ms),
                    deadline,
                    tls.clone(),
                )
                .await
        } else {
            self.prober
                .wait_alive(&started.address, health.check(false), deadline)
                .await
        };
        let alive = checks.map_err(|source| LaunchError::NotAlive {
            hostname: hostname.clone(),
            source,
        });
        let pipelining = started.spec.pipelining.unwrap_or(!by_address);
        let (address, handle) = (started.address.clone(), started.handle.clone());
        let running = alive.and_then(|()| {
            Running::new(started, pipelining, tls)
                .ok_or(LaunchError::BadAddress { hostname, address })
        });
        if running.is_err() {
            let _ = self.stop(&handle).await;
        }
        running
    }

    /// Join a replica the runtime already runs (shared membership: a Swarm service, started
    /// by this or another load balancer, or restarted by Swarm): look up its running task and
    /// send one heartbeat, again and again until one answers or `deadline` passes. Looked up
    /// anew each time, so a replaced task is found at its new address; nothing is stopped
    /// when it does not answer (the runtime owns it).
    pub(crate) async fn rejoin(
        &self,
        spec: ReplicaSpec,
        health: &HealthSection,
        deadline: Duration,
    ) -> Result<Running, LaunchError> {
        let Some(membership) = self.supervisor.membership() else {
            return Err(LaunchError::Supervisor(SupervisorError::Start {
                hostname: spec.hostname,
                reason: format!(
                    "the {} supervisor cannot look up running replicas",
                    self.supervisor.kind()
                ),
            }));
        };
        let start = tokio::time::Instant::now();
        let timeout = Duration::from_millis(health.timeout_ms);
        loop {
            let failure = match membership.locate(&spec).await {
                Ok(started) => {
                    let beat = self
                        .prober
                        .beat(&started.address, health.check(false), timeout)
                        .await;
                    match beat {
                        Ok(()) => {
                            let pipelining = spec.pipelining.unwrap_or(true);
                            let address = started.address.clone();
                            // The replica asked for, wherever the runtime found it.
                            let started = Started {
                                spec: spec.clone(),
                                ..started
                            };
                            return Running::new(started, pipelining, None).ok_or(
                                LaunchError::BadAddress {
                                    hostname: spec.hostname,
                                    address,
                                },
                            );
                        }
                        Err(source) => LaunchError::NotAlive {
                            hostname: spec.hostname.clone(),
                            source,
                        },
                    }
                }
                Err(e @ SupervisorError::Gone { .. }) => return Err(e.into()),
                Err(e) => e.into(),
            };
            if start.elapsed() >= deadline {
                return Err(failure);
            }
            tokio::time::sleep(REJOIN_POLL).await;
        }
    }

    /// Stop a replica through the supervisor; a backend by address is left alone (`lb` did not
    /// start it and never stops it).
    pub(crate) async fn stop(&self, handle: &Handle) -> Result<(), SupervisorError> {
        if handle.is_supervised() {
            self.supervisor.stop(handle).await
        } else {
            Ok(())
        }
    }
}

/// Resolve a backend's `HOST:PORT` to the socket address `lb` connects to (the first one the
/// resolver gives, IPv4 first). Resolved each time the backend joins the ring.
pub(crate) async fn resolve(hostname: &str, address: &str) -> Result<String, LaunchError> {
    let failed = |reason: String| LaunchError::Resolve {
        hostname: hostname.to_owned(),
        address: address.to_owned(),
        reason,
    };
    let found: Vec<std::net::SocketAddr> = tokio::net::lookup_host(address)
        .await
        .map_err(|e| failed(e.to_string()))?
        .collect();
    found
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| found.first())
        .map(ToString::to_string)
        .ok_or_else(|| failed("the name has no address".into()))
}
