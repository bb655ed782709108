//! The Docker supervisor: each replica is a container on a user-defined bridge network.
//!
//! - Containers carry labels: [`OWNER_LABEL`] (this load balancer's instance name), the exact
//!   hostname and the server id. The supervisor only ever touches containers whose owner label
//!   is its own instance.
//! - The container name is `<instance>-<id>-<hostname with anything but [A-Za-z0-9_.-] as _>`,
//!   its DNS hostname and network alias the hostname with spaces as `-`; the replica reads its
//!   exact hostname from `SERVER_ID`.
//! - The load balancer reaches a replica by its alias when it runs in a container on the same
//!   network, and by the container's address on that network when it runs on the host
//!   (`address = "auto"` decides by looking for `/.dockerenv`).
//! - Docker's event stream reports a container that dies at once; heartbeats catch the rest.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptions, EventsOptions, InspectContainerOptions, ListContainersOptions,
    RemoveContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::{Handle, ReplicaSpec, Started, Supervisor, SupervisorError, SupervisorEvent};
use crate::config::{AddressMode, SupervisorSection};

/// Label naming the load-balancer instance that owns a container.
pub const OWNER_LABEL: &str = "io.lb.owner";
/// Label with the replica's exact hostname.
pub const HOSTNAME_LABEL: &str = "io.lb.hostname";
/// Label with the replica's server id.
pub const ID_LABEL: &str = "io.lb.server-id";
/// Port the replica image listens on (the assignment's choice).
pub const REPLICA_PORT: u16 = 5000;
/// Seconds a replica gets between SIGTERM and SIGKILL.
const STOP_GRACE_SECS: i32 = 3;

/// Runs replicas as containers.
pub struct DockerSupervisor {
    docker: Docker,
    instance: String,
    image: String,
    network: String,
    by_alias: bool,
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

/// The hostname as a DNS label (network alias and container hostname).
pub(super) fn dns_name(hostname: &str) -> String {
    hostname
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn docker_error(hostname: &str, e: bollard::errors::Error) -> SupervisorError {
    SupervisorError::Start {
        hostname: hostname.to_owned(),
        reason: format!("docker: {e}"),
    }
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl DockerSupervisor {
    /// Connect to the local engine (`DOCKER_HOST` or `/var/run/docker.sock`), make sure the
    /// network exists, and start following container events.
    pub async fn connect(
        settings: &SupervisorSection,
        events: mpsc::UnboundedSender<SupervisorEvent>,
    ) -> Result<Arc<Self>, SupervisorError> {
        let engine = |e: bollard::errors::Error| SupervisorError::Engine(e.to_string());
        let docker = Docker::connect_with_local_defaults()
            .map_err(engine)?
            .negotiate_version()
            .await
            .map_err(engine)?;
        let by_alias = match settings.address {
            AddressMode::Alias => true,
            // `published` is refused for this kind when the file is checked.
            AddressMode::Ip | AddressMode::Published => false,
            AddressMode::Auto => std::path::Path::new("/.dockerenv").exists(),
        };
        let supervisor = Arc::new(DockerSupervisor {
            docker,
            instance: settings.instance.clone(),
            image: settings.image.clone(),
            network: settings.network.clone(),
            by_alias,
        });
        supervisor.ensure_network().await?;
        tokio::spawn(Arc::clone(&supervisor).follow_events(events));
        Ok(supervisor)
    }

    async fn ensure_network(&self) -> Result<(), SupervisorError> {
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
                        SupervisorError::Engine(format!(
                            "cannot create network {}: {e}",
                            self.network
                        ))
                    })?;
                tracing::info!(network = %self.network, "created docker network");
                Ok(())
            }
            Err(e) => Err(SupervisorError::Engine(format!(
                "cannot inspect network {}: {e}",
                self.network
            ))),
        }
    }

    fn owner_filter(&self) -> HashMap<String, Vec<String>> {
        HashMap::from([(
            "label".to_owned(),
            vec![format!("{OWNER_LABEL}={}", self.instance)],
        )])
    }

    /// Report every `die` of one of our containers; reconnect with backoff if the stream ends.
    async fn follow_events(self: Arc<Self>, events: mpsc::UnboundedSender<SupervisorEvent>) {
        let mut delay = Duration::from_millis(200);
        loop {
            let mut filters = self.owner_filter();
            filters.insert("type".into(), vec!["container".into()]);
            filters.insert("event".into(), vec!["die".into()]);
            let mut stream = self.docker.events(Some(EventsOptions {
                filters: Some(filters),
                ..Default::default()
            }));
            while let Some(event) = stream.next().await {
                match event {
                    Ok(message) => {
                        delay = Duration::from_millis(200);
                        let Some(actor) = message.actor else { continue };
                        let Some(id) = actor.id else { continue };
                        let code = actor
                            .attributes
                            .as_ref()
                            .and_then(|a| a.get("exitCode").cloned())
                            .unwrap_or_else(|| "?".into());
                        let detail = format!("container died, exit code {code}");
                        if events
                            .send(SupervisorEvent::Exited {
                                handle: Handle::ContainerId(id),
                                detail,
                            })
                            .is_err()
                        {
                            return; // the load balancer is shutting down
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "docker event stream failed");
                        break;
                    }
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Where the load balancer reaches the container `id`.
    async fn address_of(&self, id: &str, hostname: &str) -> Result<String, SupervisorError> {
        if self.by_alias {
            return Ok(format!("{}:{REPLICA_PORT}", dns_name(hostname)));
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

    /// Whether `id` is a container of ours (carries our owner label).
    async fn owns(&self, id: &str) -> bool {
        match self
            .docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => info
                .config
                .and_then(|c| c.labels)
                .and_then(|l| l.get(OWNER_LABEL).cloned())
                .is_some_and(|owner| owner == self.instance),
            Err(_) => false,
        }
    }

    async fn remove(&self, id: &str) -> Result<(), bollard::errors::Error> {
        let stopped = self
            .docker
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
        match self
            .docker
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

    async fn start(&self, spec: &ReplicaSpec) -> Result<Started, SupervisorError> {
        let name = container_name(&self.instance, spec);
        let dns = dns_name(&spec.hostname);
        let labels = HashMap::from([
            (OWNER_LABEL.to_owned(), self.instance.clone()),
            (HOSTNAME_LABEL.to_owned(), spec.hostname.clone()),
            (ID_LABEL.to_owned(), spec.id.to_string()),
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
            }) if self.owns(&name).await => {
                let _ = self.remove(&name).await;
                self.docker.create_container(options(), body).await
            }
            other => other,
        }
        .map_err(|e| docker_error(&spec.hostname, e))?;
        let id = created.id;
        if let Err(e) = self.docker.start_container(&id, None).await {
            let _ = self.remove(&id).await;
            return Err(docker_error(&spec.hostname, e));
        }
        let address = match self.address_of(&id, &spec.hostname).await {
            Ok(address) => address,
            Err(e) => {
                let _ = self.remove(&id).await;
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

    async fn stop(&self, handle: &Handle) -> Result<(), SupervisorError> {
        let Handle::ContainerId(id) = handle else {
            return Err(SupervisorError::Unknown(handle.clone()));
        };
        if !self.owns(id).await {
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
                    match self.address_of(&id, &hostname).await {
                        Ok(address) => adopted.push(Started {
                            spec: ReplicaSpec::managed(hostname, server_id),
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
        assert_eq!(dns_name("Server 1"), "Server-1");
        assert_eq!(dns_name("a_b.c"), "a-b-c");
        let odd = ReplicaSpec::managed("x y.z", 12);
        assert_eq!(container_name("my lb", &odd), "my_lb-12-x_y.z");
    }
}
