//! The Docker supervisor: each replica is a container on a user-defined bridge network.
//!
//! - Containers carry labels: [`OWNER_LABEL`] (this load balancer's instance name), the exact
//!   hostname and the server id. The supervisor only ever touches containers whose owner label
//!   is its own instance.
//! - The container name is `<instance>-<id>-<hostname with anything but [A-Za-z0-9_.-] as _>`,
//!   its DNS hostname and network alias `<instance>-<id>` ([`replica_alias`]: one per server id,
//!   whatever the hostname); the replica reads its exact hostname from `SERVER_ID`. An alias
//!   that is one of the load balancer's own names (`localhost`, its hostname, its container's
//!   name or aliases) is refused: it would send the replica's traffic back to the load balancer.
//! - The load balancer reaches a replica by its alias when it runs in a container on the same
//!   network, and by the container's address on that network when it runs on the host
//!   (`address = "auto"` decides by looking for `/.dockerenv`).
//! - Docker's event stream reports a container that dies at once; heartbeats catch the rest.
//! - The engine is the one `DOCKER_HOST` names (`unix://…`, `tcp://…`; default the local
//!   socket), reached through [`super::engine`]. Every call to it is bounded
//!   ([`ENGINE_TIMEOUT`]; a start by `start_timeout_ms`); a container whose create was given up
//!   on is removed once the engine answers again.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, RemoveContainerOptions,
    StopContainerOptions,
};
use bollard::Docker;
use tokio::sync::mpsc;

use super::engine::{self, attempt_token, is_not_found, unanswered, EngineError};
pub(crate) use super::engine::{
    ATTEMPT_LABEL, ENGINE_WAIT, HOSTNAME_LABEL, ID_LABEL, REPLICA_PORT,
};
use super::{Handle, ReplicaSpec, Started, Supervisor, SupervisorError, SupervisorEvent};
use crate::config::{AddressMode, SupervisorSection};

/// Label naming the load-balancer instance that owns a container.
pub(crate) const OWNER_LABEL: &str = "io.lb.owner";
/// Seconds a replica gets between SIGTERM and SIGKILL.
const STOP_GRACE_SECS: i32 = 3;
/// How long a given-up create is looked for, to remove it once the engine answers again.
const CLEANUP_WINDOW: Duration = Duration::from_secs(120);

/// Runs replicas as containers.
pub(crate) struct DockerSupervisor {
    docker: Docker,
    instance: String,
    image: String,
    network: String,
    by_alias: bool,
    /// How long a start may take (`start_timeout_ms`).
    start_timeout: Duration,
    /// Names that resolve to the load balancer itself (lowercase), which no alias may be.
    own_names: Vec<String>,
}

/// `text` with every character Docker does not allow in a container name replaced by `_`.
fn container_name(instance: &str, spec: &ReplicaSpec) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!("{}-{}-{}", clean(instance), spec.id, clean(&spec.hostname))
}

/// The network alias (and container hostname) of server id `id` of `instance`: one per id, so
/// two hostnames that differ only in characters DNS does not allow (`"a b"`, `"a_b"`) never
/// share one.
pub(crate) fn replica_alias(instance: &str, id: u64) -> String {
    let clean: String = instance
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    format!("{clean}-{id}")
}

/// Whether `alias` is one of `own` (lowercase names of the load balancer itself), or
/// `localhost`: a replica reached by it would be the load balancer.
fn alias_is_own(alias: &str, own: &[String]) -> bool {
    let alias = alias.to_ascii_lowercase();
    alias == "localhost" || alias.starts_with("localhost.") || own.contains(&alias)
}

/// The names in a hosts file (`/etc/hosts`): they resolve before DNS.
fn hosts_names(hosts: &str) -> Vec<String> {
    hosts
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .flat_map(|l| l.split_whitespace().skip(1))
        .map(str::to_ascii_lowercase)
        .collect()
}

/// The id of the container this process runs in, from its mounts (Docker bind-mounts
/// `/etc/hostname` from `…/containers/<id>/hostname`).
fn own_container_id(mountinfo: &str) -> Option<String> {
    mountinfo.split_whitespace().find_map(|field| {
        let (_, rest) = field.split_once("/containers/")?;
        let id = rest.split('/').next()?;
        (id.len() == 64 && id.chars().all(|c| c.is_ascii_hexdigit())).then(|| id.to_owned())
    })
}

/// The labels of container `id` on `docker`, `None` when there is no such container.
async fn labels_of(
    docker: &Docker,
    id: &str,
) -> Result<Option<HashMap<String, String>>, bollard::errors::Error> {
    match docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
    {
        Ok(info) => Ok(Some(info.config.and_then(|c| c.labels).unwrap_or_default())),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The names that reach this process itself, lowercase: `localhost`, the names in
/// `/etc/hosts` and `/etc/hostname`, and, in a container, the container's name and network
/// aliases. A replica alias must be none of them.
async fn own_names(docker: &Docker) -> Vec<String> {
    let mut names = vec!["localhost".to_owned()];
    if let Ok(hostname) = std::fs::read_to_string("/etc/hostname") {
        names.push(hostname.trim().to_ascii_lowercase());
    }
    if let Ok(hosts) = std::fs::read_to_string("/etc/hosts") {
        names.extend(hosts_names(&hosts));
    }
    let id = std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|m| own_container_id(&m));
    if let Some(id) = id {
        if let Ok(info) = docker
            .inspect_container(&id, None::<InspectContainerOptions>)
            .await
        {
            names.extend(info.name.map(|n| n.trim_start_matches('/').to_owned()));
            let endpoints = info
                .network_settings
                .and_then(|n| n.networks)
                .unwrap_or_default();
            for endpoint in endpoints.into_values() {
                names.extend(endpoint.aliases.unwrap_or_default());
                names.extend(endpoint.dns_names.unwrap_or_default());
            }
        }
    }
    let mut names: Vec<String> = names
        .into_iter()
        .filter(|n| !n.is_empty())
        .map(|n| n.to_ascii_lowercase())
        .collect();
    names.sort();
    names.dedup();
    names
}

fn docker_error(hostname: &str, e: bollard::errors::Error) -> SupervisorError {
    SupervisorError::Start {
        hostname: hostname.to_owned(),
        reason: format!("docker: {e}"),
    }
}

impl DockerSupervisor {
    /// Connect to the engine (`DOCKER_HOST`, else `/var/run/docker.sock`; retried with backoff
    /// for up to [`ENGINE_WAIT`] when it does not answer), make sure the network exists, and
    /// start following container events. A start may take `start_timeout`.
    pub(crate) async fn connect(
        settings: &SupervisorSection,
        start_timeout: Duration,
        events: mpsc::UnboundedSender<SupervisorEvent>,
    ) -> Result<Arc<Self>, SupervisorError> {
        let docker = engine::connect(ENGINE_WAIT).await?;
        let by_alias = match settings.address {
            AddressMode::Alias => true,
            // `published` is refused for this kind when the file is checked.
            AddressMode::Ip | AddressMode::Published => false,
            AddressMode::Auto => std::path::Path::new("/.dockerenv").exists(),
        };
        let own_names = own_names(&docker).await;
        let supervisor = Arc::new(DockerSupervisor {
            docker,
            instance: settings.instance.clone(),
            image: settings.image.clone(),
            network: settings.network.clone(),
            by_alias,
            start_timeout,
            own_names,
        });
        supervisor.ensure_network().await?;
        tokio::spawn(Arc::clone(&supervisor).follow_events(events));
        Ok(supervisor)
    }

    async fn ensure_network(&self) -> Result<(), EngineError> {
        match self.docker.inspect_network(&self.network, None).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => {
                let labels = HashMap::from([(OWNER_LABEL.to_owned(), self.instance.clone())]);
                self.docker
                    .create_network(NetworkCreateRequest {
                        name: self.network.clone(),
                        driver: Some("bridge".into()),
                        labels: Some(labels),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| {
                        EngineError::during(format!("cannot create network {}", self.network), e)
                    })?;
                tracing::info!(network = %self.network, "created docker network");
                Ok(())
            }
            Err(e) => Err(EngineError::during(
                format!("cannot inspect network {}", self.network),
                e,
            )),
        }
    }

    fn owner_filter(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_owned(),
            vec![format!("{OWNER_LABEL}={}", self.instance)],
        )])
    }

    /// Report every `die` of one of our containers (the stream is opened again whenever it
    /// ends, [`engine::follow`]).
    async fn follow_events(self: Arc<Self>, events: mpsc::UnboundedSender<SupervisorEvent>) {
        let mut filters = self.owner_filter();
        filters.insert("type".into(), vec!["container".into()]);
        filters.insert("event".into(), vec!["die".into()]);
        engine::follow(&self.docker, filters, |message| {
            let Some(actor) = message.actor else {
                return ControlFlow::Continue(());
            };
            let Some(id) = actor.id else {
                return ControlFlow::Continue(());
            };
            let code = actor
                .attributes
                .as_ref()
                .and_then(|a| a.get("exitCode").cloned())
                .unwrap_or_else(|| "?".into());
            let exited = SupervisorEvent::Exited {
                handle: Handle::ContainerId(id),
                detail: format!("container died, exit code {code}"),
            };
            match events.send(exited) {
                Ok(()) => ControlFlow::Continue(()),
                Err(_) => ControlFlow::Break(()), // the load balancer is shutting down
            }
        })
        .await
    }

    /// Where the load balancer reaches the container `id`, replica `spec`.
    async fn address_of(&self, id: &str, spec: &ReplicaSpec) -> Result<String, SupervisorError> {
        let hostname = &spec.hostname;
        if self.by_alias {
            return Ok(format!(
                "{}:{REPLICA_PORT}",
                replica_alias(&self.instance, spec.id)
            ));
        }
        let info = self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(|e| docker_error(hostname, e))?;
        let ip = info
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|mut n| n.remove(&self.network))
            .and_then(|endpoint| endpoint.ip_address)
            .filter(|ip| !ip.is_empty())
            .ok_or_else(|| SupervisorError::Start {
                hostname: hostname.to_owned(),
                reason: format!("container has no address on network {}", self.network),
            })?;
        Ok(format!("{ip}:{REPLICA_PORT}"))
    }

    /// Whether `id` is a container of ours (carries our owner label); an engine that does not
    /// answer is an error, not a "no".
    async fn owns(&self, id: &str) -> Result<bool, bollard::errors::Error> {
        Ok(self.labels_of(id).await?.is_some_and(|labels| {
            labels.get(OWNER_LABEL).map(String::as_str) == Some(self.instance.as_str())
        }))
    }

    /// The labels of container `id`, `None` when there is no such container.
    async fn labels_of(
        &self,
        id: &str,
    ) -> Result<Option<HashMap<String, String>>, bollard::errors::Error> {
        labels_of(&self.docker, id).await
    }

    /// Remove container `name` once the engine answers again, if it carries `attempt` (a
    /// create given up on that may land late); looked for up to [`CLEANUP_WINDOW`].
    fn clean_up_later(&self, name: String, attempt: String) {
        let docker = self.docker.clone();
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            while start.elapsed() < CLEANUP_WINDOW {
                // Not there (yet), or no answer: a late create may still land.
                if let Ok(Some(labels)) = labels_of(&docker, &name).await {
                    if labels.get(ATTEMPT_LABEL) != Some(&attempt) {
                        return; // another attempt's container: not this one's to remove
                    }
                    if remove_container(&docker, &name).await.is_ok() {
                        tracing::info!(container = %name, "removed a container whose start was given up on");
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
    }

    /// Create and start the container of `spec`, labelled with `attempt`.
    async fn create_and_start(
        &self,
        spec: &ReplicaSpec,
        attempt: &str,
    ) -> Result<Started, SupervisorError> {
        let name = container_name(&self.instance, spec);
        let dns = replica_alias(&self.instance, spec.id);
        if alias_is_own(&dns, &self.own_names) {
            return Err(SupervisorError::Start {
                hostname: spec.hostname.clone(),
                reason: format!(
                    "its network alias {dns:?} is a name of the load balancer itself; \
                     choose another [supervisor] instance"
                ),
            });
        }
        let labels = HashMap::from([
            (OWNER_LABEL.to_owned(), self.instance.clone()),
            (HOSTNAME_LABEL.to_owned(), spec.hostname.clone()),
            (ID_LABEL.to_owned(), spec.id.to_string()),
            (ATTEMPT_LABEL.to_owned(), attempt.to_owned()),
        ]);
        let endpoint = EndpointSettings {
            aliases: Some(vec![dns.clone()]),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(self.image.clone()),
            hostname: Some(dns),
            env: Some(vec![
                format!("SERVER_ID={}", spec.hostname),
                format!("PORT={REPLICA_PORT}"),
            ]),
            labels: Some(labels),
            host_config: Some(HostConfig {
                network_mode: Some(self.network.clone()),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(self.network.clone(), endpoint)])),
            }),
            ..Default::default()
        };
        let options = || {
            Some(CreateContainerOptions {
                name: Some(name.clone()),
                ..Default::default()
            })
        };
        let created = match self.docker.create_container(options(), body.clone()).await {
            // A leftover of ours with the same name (e.g. a stopped one): replace it.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) if self.owns(&name).await.unwrap_or(false) => {
                let _ = self.remove(&name).await;
                self.docker.create_container(options(), body).await
            }
            other => other,
        };
        let created = match created {
            Ok(created) => created,
            Err(e) => {
                if unanswered(&e) {
                    // It may land once the engine gets to it.
                    self.clean_up_later(name, attempt.to_owned());
                }
                return Err(docker_error(&spec.hostname, e));
            }
        };
        let id = created.id;
        if let Err(e) = self.docker.start_container(&id, None).await {
            if self.remove(&id).await.is_err() {
                self.clean_up_later(name, attempt.to_owned());
            }
            return Err(docker_error(&spec.hostname, e));
        }
        let address = match self.address_of(&id, spec).await {
            Ok(address) => address,
            Err(e) => {
                if self.remove(&id).await.is_err() {
                    self.clean_up_later(name, attempt.to_owned());
                }
                return Err(e);
            }
        };
        tracing::info!(hostname = %spec.hostname, id = spec.id, container = %name, %address, "replica container started");
        Ok(Started {
            spec: spec.clone(),
            address,
            handle: Handle::ContainerId(id),
        })
    }

    async fn remove(&self, id: &str) -> Result<(), bollard::errors::Error> {
        remove_container(&self.docker, id).await
    }
}

/// Stop container `id` (its grace period, then by force) and remove it; gone already is done.
async fn remove_container(docker: &Docker, id: &str) -> Result<(), bollard::errors::Error> {
    {
        let stopped = docker
            .stop_container(
                id,
                Some(StopContainerOptions {
                    t: Some(STOP_GRACE_SECS),
                    ..Default::default()
                }),
            )
            .await;
        match stopped {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => return Ok(()),
            // 304: already stopped.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => {}
            Err(e) => tracing::warn!(container = id, error = %e, "stop failed; removing by force"),
        }
        match docker
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    ..Default::default()
                }),
            )
            .await
        {
            Err(e) if !is_not_found(&e) => Err(e),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Supervisor for DockerSupervisor {
    fn kind(&self) -> &'static str {
        "docker"
    }

    /// Create and start the replica's container, within `start_timeout_ms`; a create given up
    /// on is removed once the engine answers again.
    async fn start(&self, spec: &ReplicaSpec) -> Result<Started, SupervisorError> {
        let attempt = attempt_token();
        match tokio::time::timeout(self.start_timeout, self.create_and_start(spec, &attempt)).await
        {
            Ok(started) => started,
            Err(_) => {
                self.clean_up_later(container_name(&self.instance, spec), attempt);
                Err(SupervisorError::Start {
                    hostname: spec.hostname.clone(),
                    reason: format!(
                        "the container engine did not start it within start_timeout_ms ({} ms)",
                        self.start_timeout.as_millis()
                    ),
                })
            }
        }
    }

    async fn stop(&self, handle: &Handle) -> Result<(), SupervisorError> {
        let Handle::ContainerId(id) = handle else {
            return Err(SupervisorError::Unknown(handle.clone()));
        };
        let owned = self
            .owns(id)
            .await
            .map_err(|e| SupervisorError::Engine(format!("cannot remove container {id}: {e}")))?;
        if !owned {
            // Gone already, or not ours: never touch a container we do not own.
            return Ok(());
        }
        self.remove(id)
            .await
            .map_err(|e| SupervisorError::Engine(format!("cannot remove container {id}: {e}")))
    }

    async fn adopt(&self) -> Result<Vec<Started>, SupervisorError> {
        let containers = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(self.owner_filter()),
                ..Default::default()
            }))
            .await
            .map_err(|e| SupervisorError::Engine(e.to_string()))?;
        let mut adopted = Vec::new();
        for container in containers {
            let Some(id) = container.id else { continue };
            let labels = container.labels.unwrap_or_default();
            let spec = labels
                .get(HOSTNAME_LABEL)
                .cloned()
                .zip(labels.get(ID_LABEL).and_then(|i| i.parse::<u64>().ok()));
            let running = container
                .state
                .is_some_and(|s| s == bollard::models::ContainerSummaryStateEnum::RUNNING);
            match spec {
                Some((hostname, server_id)) if running => {
                    let spec = ReplicaSpec::managed(hostname, server_id);
                    match self.address_of(&id, &spec).await {
                        Ok(address) => adopted.push(Started {
                            spec,
                            address,
                            handle: Handle::ContainerId(id),
                        }),
                        Err(_) => {
                            let _ = self.remove(&id).await;
                        }
                    }
                }
                // Stopped, or not labelled as a replica: clean it up.
                _ => {
                    let _ = self.remove(&id).await;
                }
            }
        }
        Ok(adopted)
    }

    async fn stop_all(&self) {
        match self.adopt().await {
            Ok(running) => {
                let stops = running.iter().map(|r| self.stop(&r.handle));
                futures_util::future::join_all(stops).await;
            }
            Err(e) => tracing::error!(error = %e, "cannot list replica containers to stop them"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_for_docker_and_dns() {
        let spec = ReplicaSpec::managed("Server 1", 1);
        assert_eq!(container_name("lb", &spec), "lb-1-Server_1");
        let odd = ReplicaSpec::managed("x y.z", 12);
        assert_eq!(container_name("my lb", &odd), "my_lb-12-x_y.z");
        assert_eq!(replica_alias("lb", 1), "lb-1");
        assert_eq!(replica_alias("My_LB", 12), "my-lb-12");
    }

    /// Hostnames that DNS would fold together ("a b", "a_b", "A-B") still get one alias each:
    /// the alias is the server id's, not the hostname's.
    #[test]
    fn aliases_are_one_per_server_id() {
        let aliases: std::collections::BTreeSet<String> =
            (1..=100).map(|id| replica_alias("lb", id)).collect();
        assert_eq!(aliases.len(), 100);
    }

    #[test]
    fn the_load_balancers_own_names_are_never_an_alias() {
        let hosts = "127.0.0.1\tlocalhost\n::1 localhost ip6-localhost # comment\n\
                     172.18.0.2\tlb lb-1 # compose\n";
        let own = hosts_names(hosts);
        assert!(own.contains(&"lb".to_owned()) && own.contains(&"lb-1".to_owned()));
        assert!(!own.contains(&"comment".to_owned()));
        assert!(alias_is_own("lb-1", &own));
        assert!(alias_is_own("LB-1", &own), "DNS is case-insensitive");
        assert!(alias_is_own("localhost", &[]));
        assert!(!alias_is_own("lb-2", &own));
        let id = "a".repeat(64);
        let mountinfo = format!(
            "612 600 0:50 /var/lib/docker/containers/{id}/hostname /etc/hostname rw - ext4 x rw\n"
        );
        assert_eq!(own_container_id(&mountinfo), Some(id));
        assert_eq!(
            own_container_id("1 2 0:1 / / rw - ext4 /dev/sda rw\n"),
            None
        );
    }
}
