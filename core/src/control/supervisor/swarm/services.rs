//! A replica's service: creating it (and taking over one another load balancer of the instance
//! made for the same replica at the same moment), finding it again, removing a create given up
//! on, listing the instance's services, and the overlay network they share.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
    EndpointSpec, EndpointSpecModeEnum, NetworkAttachmentConfig, NetworkCreateRequest, ServiceSpec,
    ServiceSpecMode, ServiceSpecModeReplicated, TaskSpec, TaskSpecContainerSpec,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum,
};
use bollard::query_parameters::{ListServicesOptions, UpdateServiceOptions};
use bollard::Docker;

use super::super::engine::{
    attempt_token, status_of, unanswered, EngineError, ATTEMPT_LABEL, HOSTNAME_LABEL, ID_LABEL,
    REPLICA_PORT,
};
use super::super::{ReplicaSpec, Started, SupervisorError};
use super::labels::{
    distinct, label_filter, service_name, spec_from_labels, weight_label, Listing, INSTANCE_LABEL,
    WEIGHT_LABEL,
};
use super::SwarmSupervisor;

/// Nanoseconds a task gets between SIGTERM and SIGKILL.
const STOP_GRACE_NS: i64 = 3_000_000_000;
/// How long a given-up create is looked for, to remove it once the engine answers again.
const CLEANUP_WINDOW: Duration = Duration::from_secs(120);

/// The services of `instance` on `docker`, as replicas, by id; and their service ids.
pub(super) async fn list(
    docker: &Docker,
    instance: &str,
) -> Result<Vec<(ReplicaSpec, String)>, EngineError> {
    Ok(list_all(docker, instance).await?.kept)
}

/// [`list`], with the services left out for repeating an id or a hostname.
pub(super) async fn list_all(docker: &Docker, instance: &str) -> Result<Listing, EngineError> {
    let services = docker
        .list_services(Some(ListServicesOptions {
            filters: Some(label_filter(instance)),
            ..Default::default()
        }))
        .await?;
    let mut bad_weights = Vec::new();
    let mut found: Vec<(ReplicaSpec, String, bool)> = services
        .into_iter()
        .filter_map(|s| {
            let spec = s.spec?;
            let labels = spec.labels?;
            // The filter is the engine's; check again rather than trust it.
            if labels.get(INSTANCE_LABEL).map(String::as_str) != Some(instance) {
                return None;
            }
            let replica = spec_from_labels(&labels)?;
            let canonical = spec.name.as_deref() == Some(&service_name(instance, replica.id));
            let service = s.id?;
            if let Err(value) = weight_label(&labels) {
                bad_weights.push((service.clone(), value));
            }
            Some((replica, service, canonical))
        })
        .collect();
    // Per id, the service lb would have named so first, then by service id: every lb of the
    // instance picks the same one.
    found.sort_by(|a, b| (a.0.id, !a.2, &a.1).cmp(&(b.0.id, !b.2, &b.1)));
    Ok(distinct(
        found
            .into_iter()
            .map(|(spec, service, _)| (spec, service))
            .collect(),
        bad_weights,
    ))
}

impl SwarmSupervisor {
    /// Whether this load balancer runs in a container attached to the network (a container's
    /// hostname is its id's first 12 characters unless set otherwise). A file such as
    /// `/.dockerenv` does not tell: a host may run in a container itself.
    pub(super) async fn on_the_network(&self) -> bool {
        let Ok(hostname) = std::fs::read_to_string("/etc/hostname") else {
            return false;
        };
        let hostname = hostname.trim();
        if hostname.len() < 12 || !hostname.chars().all(|c| c.is_ascii_hexdigit()) {
            return false;
        }
        match self.docker.inspect_network(&self.network, None).await {
            Ok(network) => network
                .containers
                .unwrap_or_default()
                .keys()
                .any(|id| id.starts_with(hostname)),
            Err(_) => false,
        }
    }

    pub(super) async fn ensure_network(&self) -> Result<(), EngineError> {
        match self.docker.inspect_network(&self.network, None).await {
            Ok(network) => {
                if network.scope.as_deref() != Some("swarm") {
                    return Err(EngineError::Unsuitable(format!(
                        "network {} exists but is not a swarm overlay network; name another \
                         one in [supervisor] network",
                        self.network
                    )));
                }
                Ok(())
            }
            Err(e) if status_of(&e) == Some(404) => {
                let labels = HashMap::from([(INSTANCE_LABEL.to_owned(), self.instance.clone())]);
                let created = self
                    .docker
                    .create_network(NetworkCreateRequest {
                        name: self.network.clone(),
                        driver: Some("overlay".into()),
                        attachable: Some(true),
                        labels: Some(labels),
                        ..Default::default()
                    })
                    .await;
                match created {
                    Ok(_) => {
                        tracing::info!(network = %self.network, "created overlay network");
                        Ok(())
                    }
                    // Another lb of the instance created it at the same moment (the engine
                    // says 409, or 500 "name conflicts with an existing object").
                    Err(e) => match self.docker.inspect_network(&self.network, None).await {
                        Ok(network) if network.scope.as_deref() == Some("swarm") => Ok(()),
                        _ => Err(EngineError::during(
                            format!("cannot create overlay network {}", self.network),
                            e,
                        )),
                    },
                }
            }
            Err(e) => Err(EngineError::during(
                format!("cannot inspect network {}", self.network),
                e,
            )),
        }
    }

    /// The service of `spec`: the instance's service labelled with its id and hostname,
    /// whatever its name (a service created by hand with the labels counts).
    pub(super) async fn find_service(&self, spec: &ReplicaSpec) -> Result<String, SupervisorError> {
        list(&self.docker, &self.instance)
            .await?
            .into_iter()
            .find(|(found, _)| found.same_replica(spec))
            .map(|(_, service)| service)
            .ok_or_else(|| SupervisorError::Gone {
                hostname: spec.hostname.clone(),
                id: spec.id,
            })
    }

    /// Set the weight label of `spec`'s service to `spec.weight`: the service's labels only,
    /// so its task keeps running. Retried when another writer updated the service meanwhile
    /// (the engine refuses an update of an older version).
    pub(super) async fn relabel(&self, spec: &ReplicaSpec) -> Result<(), SupervisorError> {
        let service = self.find_service(spec).await?;
        let mut last = String::new();
        for _ in 0..3 {
            let found = self
                .docker
                .inspect_service(&service, None)
                .await
                .map_err(EngineError::from)?;
            let (Some(mut current), Some(version)) =
                (found.spec, found.version.and_then(|v| v.index))
            else {
                return Err(SupervisorError::Engine(format!(
                    "service {service} has no spec or version"
                )));
            };
            let labels = current.labels.get_or_insert_with(HashMap::new);
            let weight = spec.weight.to_string();
            if labels.get(WEIGHT_LABEL) == Some(&weight) {
                return Ok(());
            }
            labels.insert(WEIGHT_LABEL.to_owned(), weight);
            let options = UpdateServiceOptions {
                version: i32::try_from(version).unwrap_or(i32::MAX),
                ..Default::default()
            };
            match self
                .docker
                .update_service(&service, current, options, None)
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if status_of(&e) == Some(404) => {
                    return Err(SupervisorError::Gone {
                        hostname: spec.hostname.clone(),
                        id: spec.id,
                    })
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(SupervisorError::Engine(format!(
            "cannot update the weight label of service {service}: {last}"
        )))
    }

    /// The service named for `spec` (`<instance>-<id>`), if it is this instance's and that
    /// replica's (a create that found the name taken).
    async fn service_of(&self, spec: &ReplicaSpec) -> Result<String, SupervisorError> {
        let name = service_name(&self.instance, spec.id);
        let gone = || SupervisorError::Gone {
            hostname: spec.hostname.clone(),
            id: spec.id,
        };
        let service = match self.docker.inspect_service(&name, None).await {
            Ok(service) => service,
            Err(e) if status_of(&e) == Some(404) => return Err(gone()),
            Err(e) => return Err(EngineError::from(e).into()),
        };
        let labels = service.spec.and_then(|s| s.labels).unwrap_or_default();
        let ours = labels.get(INSTANCE_LABEL).map(String::as_str) == Some(&self.instance);
        match spec_from_labels(&labels) {
            Some(found) if ours && found.same_replica(spec) => service.id.ok_or_else(gone),
            Some(found) if ours => Err(SupervisorError::Taken {
                hostname: spec.hostname.clone(),
                id: spec.id,
                by: format!(
                    "service {name}, which runs replica {:?} with server id {}",
                    found.hostname, found.id
                ),
            }),
            _ => Err(SupervisorError::Taken {
                hostname: spec.hostname.clone(),
                id: spec.id,
                by: format!(
                    "service {name}, which does not carry the labels of a replica of instance {} \
                     (remove or rename it to free the id)",
                    self.instance
                ),
            }),
        }
    }

    /// Create the replica's service and wait for its running task, all within the task
    /// timeout (`start_timeout_ms`). A service another lb of the instance made for the same
    /// replica at the same moment is taken over, unless `exclusive` (the replica must be new),
    /// when it is [`SupervisorError::Taken`]. A service of this attempt that does not run in
    /// time is removed — also when the engine answers only later (a create that lands after
    /// lb gave up on it).
    pub(super) async fn create(
        &self,
        spec: &ReplicaSpec,
        exclusive: bool,
    ) -> Result<Started, SupervisorError> {
        let deadline = Instant::now() + self.task_timeout;
        let attempt = attempt_token();
        let created = tokio::time::timeout_at(
            deadline.into(),
            self.create_service(spec, exclusive, &attempt),
        )
        .await;
        let (service, ours) = match created {
            Ok(Ok(created)) => created,
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                self.clean_up_later(spec.id, attempt);
                return Err(SupervisorError::Start {
                    hostname: spec.hostname.clone(),
                    reason: format!(
                        "the container engine did not create its service within \
                         start_timeout_ms ({} ms)",
                        self.task_timeout.as_millis()
                    ),
                });
            }
        };
        match self.wait_running(spec, &service, deadline).await {
            Ok(started) => {
                tracing::info!(hostname = %spec.hostname, id = spec.id, service = %service_name(&self.instance, spec.id), address = %started.address, "replica service running");
                Ok(started)
            }
            Err(e) => {
                if ours {
                    match self.docker.delete_service(&service).await {
                        Ok(()) => {}
                        Err(e) if status_of(&e) == Some(404) => {}
                        Err(_) => self.clean_up_later(spec.id, attempt),
                    }
                }
                Err(e)
            }
        }
    }

    /// Send the create of the replica's service; its service id, and whether this attempt
    /// created it (rather than finding another lb's service for the same replica). A create
    /// the engine did not answer is looked for and removed later.
    async fn create_service(
        &self,
        spec: &ReplicaSpec,
        exclusive: bool,
        attempt: &str,
    ) -> Result<(String, bool), SupervisorError> {
        let mut created = self
            .docker
            .create_service(self.service_spec(spec, attempt), None)
            .await;
        if created.as_ref().is_err_and(|e| {
            let text = e.to_string();
            text.contains("network") && text.contains("not found")
        }) {
            // Removed since (`lb swarm down`): make it again, once.
            self.ensure_network().await?;
            created = self
                .docker
                .create_service(self.service_spec(spec, attempt), None)
                .await;
        }
        match created {
            Ok(response) => match response.id {
                Some(id) => Ok((id, true)),
                None => Err(EngineError::Unsuitable(
                    "the engine created a service without an id".into(),
                )
                .into()),
            },
            Err(e) if unanswered(&e) => {
                // It may land once the engine gets to it.
                self.clean_up_later(spec.id, attempt.to_owned());
                Err(SupervisorError::Start {
                    hostname: spec.hostname.clone(),
                    reason: format!("cannot create service: {e}"),
                })
            }
            // The name is taken (409, or 500 "name conflicts with an existing object" when
            // another lb of the instance created it at the same moment): take the service if
            // it is this replica's (unless this one must be new).
            Err(e) => match self.service_of(spec).await {
                Ok(service) if exclusive => Err(SupervisorError::Taken {
                    hostname: spec.hostname.clone(),
                    id: spec.id,
                    by: format!("service {service}, just created by another lb"),
                }),
                Ok(service) => Ok((service, false)),
                Err(SupervisorError::Gone { .. }) => Err(SupervisorError::Start {
                    hostname: spec.hostname.clone(),
                    reason: format!("cannot create service: {e}"),
                }),
                Err(other) => Err(other),
            },
        }
    }

    /// Remove the service of server id `id` once the engine answers again, if this `attempt`
    /// created it (a create given up on that may land late); looked for up to
    /// [`CLEANUP_WINDOW`]. Another attempt's service (another lb's) is left alone.
    fn clean_up_later(&self, id: u64, attempt: String) {
        let docker = self.docker.clone();
        let name = service_name(&self.instance, id);
        tokio::spawn(async move {
            let start = Instant::now();
            while start.elapsed() < CLEANUP_WINDOW {
                // Not there (yet), or no answer: a late create may still land.
                if let Ok(service) = docker.inspect_service(&name, None).await {
                    let labels = service.spec.and_then(|s| s.labels).unwrap_or_default();
                    if labels.get(ATTEMPT_LABEL) != Some(&attempt) {
                        return; // another attempt's (another lb's) service
                    }
                    let id = service.id.unwrap_or_else(|| name.clone());
                    match docker.delete_service(&id).await {
                        Ok(()) => {
                            tracing::info!(service = %name, "removed a service whose create was given up on");
                            return;
                        }
                        Err(e) if status_of(&e) == Some(404) => return,
                        Err(_) => {}
                    }
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
    }

    /// The service of `spec`, labelled with `attempt`. Its DNS name on the network is the
    /// service name (one per server id); the task's hostname is the same.
    fn service_spec(&self, spec: &ReplicaSpec, attempt: &str) -> ServiceSpec {
        let labels = HashMap::from([
            (INSTANCE_LABEL.to_owned(), self.instance.clone()),
            (HOSTNAME_LABEL.to_owned(), spec.hostname.clone()),
            (ID_LABEL.to_owned(), spec.id.to_string()),
            (ATTEMPT_LABEL.to_owned(), attempt.to_owned()),
        ]);
        let name = service_name(&self.instance, spec.id);
        // The weight on the service only: changing it must not restart the task.
        let mut service_labels = labels.clone();
        service_labels.insert(WEIGHT_LABEL.to_owned(), spec.weight.to_string());
        ServiceSpec {
            name: Some(name.clone()),
            labels: Some(service_labels),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(self.image.clone()),
                    labels: Some(labels),
                    hostname: Some(name),
                    env: Some(vec![
                        format!("SERVER_ID={}", spec.hostname),
                        format!("PORT={REPLICA_PORT}"),
                    ]),
                    init: Some(true),
                    stop_grace_period: Some(STOP_GRACE_NS),
                    ..Default::default()
                }),
                restart_policy: Some(TaskSpecRestartPolicy {
                    condition: Some(TaskSpecRestartPolicyConditionEnum::ANY),
                    delay: Some(0),
                    max_attempts: Some(0),
                    ..Default::default()
                }),
                networks: Some(vec![NetworkAttachmentConfig {
                    target: Some(self.network.clone()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
                ..Default::default()
            }),
            endpoint_spec: Some(EndpointSpec {
                mode: Some(EndpointSpecModeEnum::DNSRR),
                ports: Some(vec![EndpointPortConfig {
                    protocol: Some(EndpointPortConfigProtocolEnum::TCP),
                    target_port: Some(i64::from(REPLICA_PORT)),
                    publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        }
    }
}
