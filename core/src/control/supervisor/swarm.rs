//! The Swarm supervisor: each replica is a Docker Swarm service with one task, and the replica
//! set lives in Swarm, shared by every load balancer with the same `instance`.
//!
//! - A service is named `<instance>-<server id>` and labelled [`INSTANCE_LABEL`] (the instance),
//!   [`HOSTNAME_LABEL`] and [`ID_LABEL`]; its task's container carries the instance label too.
//!   Restart policy `any` with no delay, `init` (a fast stop), `endpoint_mode: dnsrr` on an
//!   attachable overlay network, port 5000 published in host mode on a random port.
//! - Swarm restarts a failed task; the load balancer finds the new task and its address again
//!   ([`Supervisor::locate`]), and the replica keeps its id, hostname and slots.
//! - Membership: Docker's service events and a resync every [`RESYNC`] send the labelled
//!   services as [`SupervisorEvent::Members`]; the controller follows them, so two load
//!   balancers of one instance build the same ring.
//! - The load balancer reaches a task by its overlay address when it runs in a container (on
//!   the overlay), else by the node's address and the task's published port (`address =
//!   "auto"` decides by looking for `/.dockerenv`; `"ip"` or `"published"` force one).
//! - Services outlive the load balancer (the others use them): `lb swarm down --instance NAME`
//!   ([`remove_instance`]) removes them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum,
    EndpointSpec, EndpointSpecModeEnum, LocalNodeState, NetworkAttachmentConfig,
    NetworkCreateRequest, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, Task, TaskSpec,
    TaskSpecContainerSpec, TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{
    EventsOptions, InspectNetworkOptions, ListServicesOptions, ListTasksOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::docker::{
    attempt_token, connect_engine, unanswered, ATTEMPT_LABEL, ENGINE_WAIT, HOSTNAME_LABEL,
    ID_LABEL, REPLICA_PORT,
};
use super::{
    Handle, Membership, ReplicaSpec, Started, Supervisor, SupervisorError, SupervisorEvent,
};
use crate::config::{check_hostname, AddressMode, SupervisorSection};

/// Label naming the load-balancer instance a service (and its task's container) belongs to.
pub const INSTANCE_LABEL: &str = "io.lb.swarm.instance";
/// Longest time between two listings of the services.
pub const RESYNC: Duration = Duration::from_secs(1);
/// Nanoseconds a task gets between SIGTERM and SIGKILL.
const STOP_GRACE_NS: i64 = 3_000_000_000;
/// Pause between two looks for a service's running task.
const TASK_POLL: Duration = Duration::from_millis(100);
/// How long a given-up create is looked for, to remove it once the engine answers again.
const CLEANUP_WINDOW: Duration = Duration::from_secs(120);

/// How the load balancer reaches a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// By its address on the overlay network (the load balancer is on it too).
    Overlay,
    /// By its node's address and its host-mode published port.
    Published,
}

/// Runs replicas as Swarm services.
pub struct SwarmSupervisor {
    docker: Docker,
    instance: String,
    image: String,
    network: String,
    reach: Reach,
    /// How long a new service may take to have a running task.
    task_timeout: Duration,
}

/// The service name of server id `id` of `instance`.
pub fn service_name(instance: &str, id: u64) -> String {
    format!("{instance}-{id}")
}

fn engine(e: bollard::errors::Error) -> SupervisorError {
    SupervisorError::Engine(e.to_string())
}

fn status_of(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Connect to the engine (`DOCKER_HOST`, else the local socket; tried again for up to `wait`
/// when it does not answer) and check it is a manager of an active swarm.
async fn manager(wait: Duration) -> Result<Docker, SupervisorError> {
    let docker = connect_engine(wait).await?;
    let info = docker.info().await.map_err(engine)?;
    let swarm = info.swarm.unwrap_or_default();
    if swarm.local_node_state != Some(LocalNodeState::ACTIVE) {
        return Err(SupervisorError::Engine(
            "this Docker engine is not part of a swarm: run `docker swarm init \
             --advertise-addr 127.0.0.1` (or join one)"
                .into(),
        ));
    }
    if swarm.control_available != Some(true) {
        return Err(SupervisorError::Engine(
            "this Docker engine is a swarm worker: lb needs a manager's API to manage services"
                .into(),
        ));
    }
    Ok(docker)
}

fn label_filter(instance: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_owned(),
        vec![format!("{INSTANCE_LABEL}={instance}")],
    )])
}

/// The replica a service's labels describe, when they are complete and valid (a hostname
/// `lb.toml` would accept, an id from 1). Anyone with the engine's API can label a service.
fn spec_from_labels(labels: &HashMap<String, String>) -> Option<ReplicaSpec> {
    let hostname = labels.get(HOSTNAME_LABEL)?;
    check_hostname(hostname).ok()?;
    // An id lb.toml can hold (a TOML integer), so that the write-back keeps it.
    let id = labels
        .get(ID_LABEL)?
        .parse::<u64>()
        .ok()
        .filter(|&id| id > 0 && i64::try_from(id).is_ok())?;
    Some(ReplicaSpec::managed(hostname.clone(), id))
}

/// A listing of the instance's services: the replicas (with their service ids), by id, and the
/// services left out because they repeat another's server id or hostname.
struct Listing {
    kept: Vec<(ReplicaSpec, String)>,
    repeated: Vec<(ReplicaSpec, String)>,
}

/// One service per server id and per hostname: the first by id wins, the rest are left out
/// (two replicas with one name could not be told apart by `/rm`).
fn distinct(found: Vec<(ReplicaSpec, String)>) -> Listing {
    let mut ids = std::collections::BTreeSet::new();
    let mut names = std::collections::BTreeSet::new();
    let (kept, repeated) = found.into_iter().partition(|(spec, _)| {
        let fresh = !ids.contains(&spec.id) && !names.contains(&spec.hostname);
        if fresh {
            ids.insert(spec.id);
            names.insert(spec.hostname.clone());
        }
        fresh
    });
    Listing { kept, repeated }
}

/// The services of `repeated` that are not in `before` (service ids): what to warn about once.
fn newly_repeated<'a>(
    repeated: &'a [(ReplicaSpec, String)],
    before: &std::collections::BTreeSet<String>,
) -> Vec<&'a (ReplicaSpec, String)> {
    repeated
        .iter()
        .filter(|(_, service)| !before.contains(service))
        .collect()
}

/// The services of `instance` on `docker`, as replicas, by id; and their service ids.
async fn list(
    docker: &Docker,
    instance: &str,
) -> Result<Vec<(ReplicaSpec, String)>, SupervisorError> {
    Ok(list_all(docker, instance).await?.kept)
}

/// [`list`], with the services left out for repeating an id or a hostname.
async fn list_all(docker: &Docker, instance: &str) -> Result<Listing, SupervisorError> {
    let services = docker
        .list_services(Some(ListServicesOptions {
            filters: Some(label_filter(instance)),
            ..Default::default()
        }))
        .await
        .map_err(engine)?;
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
            Some((replica, s.id?, canonical))
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
    ))
}

/// How long `lb swarm down` waits for the services' tasks to let go of the network.
const NETWORK_RELEASE: Duration = Duration::from_secs(20);

/// Why `lb swarm down` could not remove everything.
#[derive(Debug, thiserror::Error)]
pub enum SwarmDownError {
    /// The engine could not be reached, or failed a listing.
    #[error(transparent)]
    Engine(#[from] SupervisorError),
    /// Some of the instance's services or networks are still there.
    #[error("removed {}; still there: {}", if .removed.is_empty() { "nothing".to_owned() } else { .removed.join(", ") }, .left.join("; "))]
    Left {
        /// What was removed.
        removed: Vec<String>,
        /// What is left, and why.
        left: Vec<String>,
    },
}

/// Every service carrying the instance label of `instance`, whatever its other labels (a
/// service with a bad hostname or id label is one too): (service id, name, networks it uses).
async fn labelled_services(
    docker: &Docker,
    instance: &str,
) -> Result<Vec<(String, String, Vec<String>)>, SupervisorError> {
    let services = docker
        .list_services(Some(ListServicesOptions {
            filters: Some(label_filter(instance)),
            ..Default::default()
        }))
        .await
        .map_err(engine)?;
    Ok(services
        .into_iter()
        .filter_map(|s| {
            let spec = s.spec?;
            let labels = spec.labels.unwrap_or_default();
            if labels.get(INSTANCE_LABEL).map(String::as_str) != Some(instance) {
                return None;
            }
            let networks = spec
                .task_template
                .and_then(|t| t.networks)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|n| n.target)
                .collect();
            Some((s.id?, spec.name.unwrap_or_default(), networks))
        })
        .collect())
}

/// Remove every service of `instance` (`lb swarm down`) — every service carrying its instance
/// label, whatever its other labels — then the overlay networks lb created for it and the
/// networks its services were attached to that nothing else uses any more (a stack removed
/// first leaves its network behind while the services use it), once their tasks are gone.
/// Returns the names of what was removed; fails, naming what is left, if anything of the
/// instance remains.
pub async fn remove_instance(instance: &str) -> Result<Vec<String>, SwarmDownError> {
    let docker = manager(Duration::ZERO).await?;
    let mut removed = Vec::new();
    let mut left = Vec::new();
    let services = labelled_services(&docker, instance).await?;
    let mut attached: Vec<String> = Vec::new();
    for (service, name, networks) in &services {
        attached.extend(networks.iter().cloned());
        match docker.delete_service(service).await {
            Ok(()) => removed.push(name.clone()),
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => left.push(format!("service {name}: {e}")),
        }
    }
    // Anything still listed (a failed delete, or one created meanwhile) is left.
    for (_, name, _) in labelled_services(&docker, instance).await? {
        if !left
            .iter()
            .any(|l| l.starts_with(&format!("service {name}:")))
        {
            left.push(format!("service {name}"));
        }
    }
    let ours = docker
        .list_networks(Some(bollard::query_parameters::ListNetworksOptions {
            filters: Some(label_filter(instance)),
        }))
        .await
        .map_err(engine)?;
    let mut networks: Vec<(String, bool)> = ours
        .into_iter()
        .filter_map(|n| Some((n.id?, true)))
        .collect();
    attached.sort();
    attached.dedup();
    for network in attached {
        if !networks.iter().any(|(id, _)| *id == network) {
            networks.push((network, false));
        }
    }
    let others = docker
        .list_services(None::<ListServicesOptions>)
        .await
        .map_err(engine)?;
    for (network, created_by_lb) in networks {
        let name = match docker.inspect_network(&network, None).await {
            Ok(n) => n.name.unwrap_or_else(|| network.clone()),
            Err(e) if status_of(&e) == Some(404) => continue,
            Err(e) => {
                left.push(format!("network {network}: {e}"));
                continue;
            }
        };
        if !created_by_lb {
            // Not lb's (a stack's): removed only when no service outside the instance uses it.
            let used = others.iter().any(|s| {
                let spec = s.spec.as_ref();
                let of_instance = spec
                    .and_then(|s| s.labels.as_ref())
                    .and_then(|l| l.get(INSTANCE_LABEL))
                    .is_some_and(|i| i == instance);
                let on_it = spec
                    .and_then(|s| s.task_template.as_ref())
                    .and_then(|t| t.networks.as_ref())
                    .is_some_and(|ns| {
                        ns.iter().any(|n| {
                            n.target.as_deref() == Some(network.as_str())
                                || n.target.as_deref() == Some(name.as_str())
                        })
                    });
                !of_instance && on_it
            });
            if used {
                continue;
            }
        }
        // A network is in use until the removed services' tasks have stopped.
        let deadline = Instant::now() + NETWORK_RELEASE;
        loop {
            match docker.remove_network(&network).await {
                Ok(()) => {
                    removed.push(format!("network {name}"));
                    break;
                }
                Err(e) if status_of(&e) == Some(404) => break,
                Err(e) if Instant::now() >= deadline => {
                    // A network lb created for the instance must go; another one (a stack's)
                    // still in use by a container is not the instance's to force.
                    if created_by_lb {
                        left.push(format!("network {name}: {e}"));
                    } else {
                        tracing::warn!(network = %name, error = %e, "network left in place");
                    }
                    break;
                }
                Err(_) => tokio::time::sleep(TASK_POLL).await,
            }
        }
    }
    if left.is_empty() {
        Ok(removed)
    } else {
        Err(SwarmDownError::Left { removed, left })
    }
}

impl SwarmSupervisor {
    /// Connect to the local engine (a swarm manager), make sure the overlay network exists,
    /// and start following task deaths and the membership.
    pub async fn connect(
        settings: &SupervisorSection,
        task_timeout: Duration,
        events: mpsc::UnboundedSender<SupervisorEvent>,
    ) -> Result<Arc<Self>, SupervisorError> {
        let docker = manager(ENGINE_WAIT).await?;
        let mut supervisor = SwarmSupervisor {
            docker,
            instance: settings.instance.clone(),
            image: settings.image.clone(),
            network: settings.network.clone(),
            reach: Reach::Published,
            task_timeout,
        };
        supervisor.ensure_network().await?;
        supervisor.reach = match settings.address {
            AddressMode::Ip | AddressMode::Alias => Reach::Overlay,
            AddressMode::Published => Reach::Published,
            AddressMode::Auto if supervisor.on_the_network().await => Reach::Overlay,
            AddressMode::Auto => Reach::Published,
        };
        tracing::info!(network = %settings.network, reach = ?supervisor.reach, "reaching replica tasks");
        let supervisor = Arc::new(supervisor);
        tokio::spawn(Arc::clone(&supervisor).follow_deaths(events.clone()));
        tokio::spawn(Arc::clone(&supervisor).follow_membership(events));
        Ok(supervisor)
    }

    /// Whether this load balancer runs in a container attached to the network (a container's
    /// hostname is its id's first 12 characters unless set otherwise). A file such as
    /// `/.dockerenv` does not tell: a host may run in a container itself.
    async fn on_the_network(&self) -> bool {
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

    async fn ensure_network(&self) -> Result<(), SupervisorError> {
        match self.docker.inspect_network(&self.network, None).await {
            Ok(network) => {
                if network.scope.as_deref() != Some("swarm") {
                    return Err(SupervisorError::Engine(format!(
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
                        _ => Err(SupervisorError::Engine(format!(
                            "cannot create overlay network {}: {e}",
                            self.network
                        ))),
                    },
                }
            }
            Err(e) => Err(SupervisorError::Engine(format!(
                "cannot inspect network {}: {e}",
                self.network
            ))),
        }
    }

    /// Report every `die` of one of the instance's task containers: the health checker would
    /// notice too, but later.
    async fn follow_deaths(self: Arc<Self>, events: mpsc::UnboundedSender<SupervisorEvent>) {
        let mut delay = Duration::from_millis(200);
        loop {
            let mut filters = label_filter(&self.instance);
            filters.insert("type".into(), vec!["container".into()]);
            filters.insert("event".into(), vec!["die".into()]);
            let mut stream = self.docker.events(Some(EventsOptions {
                filters: Some(filters),
                ..Default::default()
            }));
            while let Some(event) = stream.next().await {
                let message = match event {
                    Ok(message) => message,
                    Err(e) => {
                        tracing::warn!(error = %e, "docker event stream failed");
                        break;
                    }
                };
                delay = Duration::from_millis(200);
                let Some(actor) = message.actor else { continue };
                let (Some(container_id), Some(attributes)) = (actor.id, actor.attributes) else {
                    continue;
                };
                let label = |key: &str| attributes.get(key).cloned();
                let (Some(service), Some(task)) = (
                    label("com.docker.swarm.service.id"),
                    label("com.docker.swarm.task.id"),
                ) else {
                    continue;
                };
                let code = label("exitCode").unwrap_or_else(|| "?".into());
                let handle = Handle::SwarmTask {
                    service,
                    task,
                    container_id,
                };
                let detail = format!("task container died, exit code {code}");
                if events
                    .send(SupervisorEvent::Exited { handle, detail })
                    .is_err()
                {
                    return; // the load balancer is shutting down
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Send the instance's services at once when Docker reports a service change, and every
    /// [`RESYNC`] in any case (an event stream can miss things, or break).
    async fn follow_membership(self: Arc<Self>, events: mpsc::UnboundedSender<SupervisorEvent>) {
        let (changed, mut change) = mpsc::channel::<()>(1);
        let watcher = {
            let docker = self.docker.clone();
            tokio::spawn(async move {
                let mut delay = Duration::from_millis(200);
                loop {
                    let filters = HashMap::from([("type".to_owned(), vec!["service".to_owned()])]);
                    let mut stream = docker.events(Some(EventsOptions {
                        filters: Some(filters),
                        ..Default::default()
                    }));
                    while let Some(event) = stream.next().await {
                        if event.is_err() {
                            break;
                        }
                        delay = Duration::from_millis(200);
                        // Full: a listing is due anyway.
                        let _ = changed.try_send(());
                    }
                    if changed.is_closed() {
                        return;
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            })
        };
        let mut resync = tokio::time::interval(RESYNC);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        // Services left out for a repeated id or hostname, warned about once each.
        let mut repeated_before = std::collections::BTreeSet::new();
        loop {
            tokio::select! {
                _ = resync.tick() => {}
                Some(()) = change.recv() => {}
            }
            let listed_at = tokio::time::Instant::now();
            match list_all(&self.docker, &self.instance).await {
                Ok(Listing { kept, repeated }) => {
                    if failing {
                        tracing::info!("listing the swarm's services works again");
                        failing = false;
                    }
                    for (spec, service) in newly_repeated(&repeated, &repeated_before) {
                        tracing::warn!(%service, hostname = %spec.hostname, id = spec.id, "service repeats a server id or hostname of another; ignored");
                    }
                    repeated_before = repeated.into_iter().map(|(_, s)| s).collect();
                    let members = kept.into_iter().map(|(spec, _)| spec).collect();
                    if events
                        .send(SupervisorEvent::Members { listed_at, members })
                        .is_err()
                    {
                        watcher.abort();
                        return;
                    }
                }
                Err(e) => {
                    // Keep the ring as it is: no listing is not an empty listing.
                    if !failing {
                        tracing::warn!(error = %e, "cannot list the swarm's services; keeping the ring");
                        failing = true;
                    }
                }
            }
        }
    }

    /// The service of `spec`: the instance's service labelled with its id and hostname,
    /// whatever its name (a service created by hand with the labels counts).
    async fn find_service(&self, spec: &ReplicaSpec) -> Result<String, SupervisorError> {
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
            Err(e) => return Err(engine(e)),
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

    /// The service's running task and where it is reached, or why there is none yet.
    async fn running_task(
        &self,
        spec: &ReplicaSpec,
        service: &str,
    ) -> Result<Started, SupervisorError> {
        let filters = HashMap::from([("service".to_owned(), vec![service.to_owned()])]);
        let mut tasks = self
            .docker
            .list_tasks(Some(ListTasksOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(engine)?;
        let not_yet = |why: String| SupervisorError::Start {
            hostname: spec.hostname.clone(),
            reason: why,
        };
        // Most recently changed first: the running task, or the latest attempt's reason (a
        // rejected task, e.g. "No such image", is no longer desired running).
        tasks.sort_by_key(|t| std::cmp::Reverse(t.version.as_ref().and_then(|v| v.index)));
        let running = tasks.iter().find(|t| {
            t.status.as_ref().and_then(|s| s.state) == Some(TaskState::RUNNING)
                && t.desired_state == Some(TaskState::RUNNING)
                && t.service_id.as_deref() == Some(service)
        });
        let Some(task) = running else {
            // The latest error says more than the latest state ("assigned" while the next
            // attempt is scheduled after a rejection).
            let describe = |s: &bollard::models::TaskStatus| {
                let state = s.state.map(|s| s.to_string()).unwrap_or_default();
                let detail = s.err.clone().or(s.message.clone()).unwrap_or_default();
                format!("{state}: {detail}")
            };
            let statuses = tasks.iter().filter_map(|t| t.status.as_ref());
            let last = statuses
                .clone()
                .find(|s| s.err.as_ref().is_some_and(|e| !e.is_empty()))
                .or(statuses.clone().next())
                .map(describe)
                .unwrap_or_else(|| "no task scheduled".into());
            return Err(not_yet(format!("service has no running task yet ({last})")));
        };
        let task_id = task.id.clone().unwrap_or_default();
        let container_id = task
            .status
            .as_ref()
            .and_then(|s| s.container_status.as_ref())
            .and_then(|c| c.container_id.clone())
            .unwrap_or_default();
        let address = self.address_of(task, service).await.map_err(not_yet)?;
        Ok(Started {
            spec: spec.clone(),
            address,
            handle: Handle::SwarmTask {
                service: service.to_owned(),
                task: task_id,
                container_id,
            },
        })
    }

    /// Where the load balancer reaches `task`.
    async fn address_of(&self, task: &Task, service: &str) -> Result<String, String> {
        match self.reach {
            Reach::Published => {
                let port = task
                    .status
                    .as_ref()
                    .and_then(|s| s.port_status.as_ref())
                    .and_then(|p| p.ports.as_ref())
                    .and_then(|ports| {
                        ports.iter().find(|p| {
                            p.target_port == Some(i64::from(REPLICA_PORT))
                                && p.published_port.is_some_and(|port| port > 0)
                        })
                    })
                    .and_then(|p| p.published_port)
                    .ok_or("the task has no published port yet")?;
                let node = match &task.node_id {
                    Some(node) => self
                        .docker
                        .inspect_node(node)
                        .await
                        .ok()
                        .and_then(|n| n.status)
                        .and_then(|s| s.addr),
                    None => None,
                };
                // A node that advertises no usable address is this one.
                let host = node
                    .filter(|a| !a.is_empty() && a != "0.0.0.0")
                    .unwrap_or_else(|| "127.0.0.1".into());
                Ok(format!("{host}:{port}"))
            }
            Reach::Overlay => {
                let network = self
                    .docker
                    .inspect_network(
                        &self.network,
                        Some(InspectNetworkOptions {
                            verbose: true,
                            ..Default::default()
                        }),
                    )
                    .await
                    .map_err(|e| format!("cannot inspect network {}: {e}", self.network))?;
                let task_id = task.id.as_deref().unwrap_or("?");
                overlay_ip(network.services.as_ref(), task_id)
                    .map(|ip| format!("{ip}:{REPLICA_PORT}"))
                    .ok_or_else(|| {
                        format!(
                            "task {task_id} of service {service} has no address on {} yet",
                            self.network
                        )
                    })
            }
        }
    }

    /// Wait until `deadline` for a new service's running task (every look bounded by it).
    async fn wait_running(
        &self,
        spec: &ReplicaSpec,
        service: &str,
        deadline: Instant,
    ) -> Result<Started, SupervisorError> {
        let mut last = None;
        loop {
            let look = tokio::time::timeout_at(deadline.into(), self.running_task(spec, service));
            match look.await {
                Ok(Ok(started)) => return Ok(started),
                Ok(Err(e)) if Instant::now() >= deadline => return Err(e),
                Ok(Err(e)) => last = Some(e),
                Err(_) => {
                    return Err(last.unwrap_or_else(|| SupervisorError::Start {
                        hostname: spec.hostname.clone(),
                        reason: "the container engine did not answer in time".into(),
                    }))
                }
            }
            tokio::time::sleep(TASK_POLL).await;
        }
    }

    /// Create the replica's service and wait for its running task, all within the task
    /// timeout (`start_timeout_ms`). A service another lb of the instance made for the same
    /// replica at the same moment is taken over, unless `exclusive` (the replica must be new),
    /// when it is [`SupervisorError::Taken`]. A service of this attempt that does not run in
    /// time is removed — also when the engine answers only later (a create that lands after
    /// lb gave up on it).
    async fn create(
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
                None => Err(SupervisorError::Engine(
                    "the engine created a service without an id".into(),
                )),
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
        ServiceSpec {
            name: Some(name.clone()),
            labels: Some(labels.clone()),
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

/// The overlay address of task `task_id` in a verbose network inspection's `Services`
/// (`{"<service>": {"Tasks": [{"Name": "<service>.<slot>.<task id>", "EndpointIP": …}]}}`).
fn overlay_ip(
    services: Option<&HashMap<String, serde_json::Value>>,
    task_id: &str,
) -> Option<String> {
    services?
        .values()
        .filter_map(|s| s.get("Tasks")?.as_array())
        .flatten()
        .find(|t| {
            t.get("Name")
                .and_then(|n| n.as_str())
                .is_some_and(|n| n.rsplit('.').next() == Some(task_id))
        })
        .and_then(|t| t.get("EndpointIP")?.as_str())
        .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
        .map(str::to_owned)
}

#[async_trait]
impl Supervisor for SwarmSupervisor {
    fn kind(&self) -> &'static str {
        "swarm"
    }

    /// Create the replica's service (or take the one another load balancer of the instance
    /// created for the same replica) and wait for its running task.
    async fn start(&self, spec: &ReplicaSpec) -> Result<Started, SupervisorError> {
        self.create(spec, false).await
    }

    /// Remove the replica's service (its task stops with it).
    async fn stop(&self, handle: &Handle) -> Result<(), SupervisorError> {
        let Handle::SwarmTask { service, .. } = handle else {
            return Err(SupervisorError::Unknown(handle.clone()));
        };
        match self.docker.delete_service(service).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(SupervisorError::Engine(format!(
                "cannot remove service {service}: {e}"
            ))),
        }
    }

    /// Nothing: the services outlive this load balancer, which other load balancers of the
    /// instance may be using.
    async fn stop_all(&self) {
        tracing::info!(instance = %self.instance, "leaving the swarm's services running (remove them with `lb swarm down --instance {}`)", self.instance);
    }

    fn membership(&self) -> Option<&dyn Membership> {
        Some(self)
    }
}

#[async_trait]
impl Membership for SwarmSupervisor {
    async fn members(&self) -> Result<Vec<ReplicaSpec>, SupervisorError> {
        Ok(list(&self.docker, &self.instance)
            .await?
            .into_iter()
            .map(|(spec, _)| spec)
            .collect())
    }

    /// Create the replica's service; another lb's service for the same replica is an error
    /// (two `/add`s at the same moment each add a replica).
    async fn start_new(&self, spec: &ReplicaSpec) -> Result<Started, SupervisorError> {
        self.create(spec, true).await
    }

    async fn remove_replica(&self, spec: &ReplicaSpec) -> Result<(), SupervisorError> {
        match self.find_service(spec).await {
            Ok(service) => match self.docker.delete_service(&service).await {
                Err(e) if status_of(&e) != Some(404) => Err(SupervisorError::Engine(format!(
                    "cannot remove service {service}: {e}"
                ))),
                _ => Ok(()),
            },
            Err(SupervisorError::Gone { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn locate(&self, spec: &ReplicaSpec) -> Result<Started, SupervisorError> {
        let service = self.find_service(spec).await?;
        self.running_task(spec, &service).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_make_a_replica_only_when_complete_and_valid() {
        let labels = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let full = labels(&[(HOSTNAME_LABEL, "Server 1"), (ID_LABEL, "7")]);
        assert_eq!(
            spec_from_labels(&full),
            Some(ReplicaSpec::managed("Server 1", 7))
        );
        assert_eq!(spec_from_labels(&labels(&[(ID_LABEL, "7")])), None);
        for bad in [
            "0",
            "-1",
            "x",
            "",
            "9223372036854775808",
            "18446744073709551615",
        ] {
            let l = labels(&[(HOSTNAME_LABEL, "a"), (ID_LABEL, bad)]);
            assert_eq!(spec_from_labels(&l), None, "id {bad:?}");
        }
    }

    #[test]
    fn overlay_ip_is_found_by_task_id() {
        let services: HashMap<String, serde_json::Value> = HashMap::from([(
            "lb-1".to_owned(),
            json!({"Tasks": [
                {"Name": "lb-1.1.aaa", "EndpointIP": "10.0.1.2"},
                {"Name": "lb-1.1.bbb", "EndpointIP": "10.0.1.9"},
                {"Name": "lb-1.1.ccc", "EndpointIP": "not an ip"}
            ]}),
        )]);
        assert_eq!(
            overlay_ip(Some(&services), "bbb").as_deref(),
            Some("10.0.1.9")
        );
        assert_eq!(
            overlay_ip(Some(&services), "aaa").as_deref(),
            Some("10.0.1.2")
        );
        assert_eq!(overlay_ip(Some(&services), "ccc"), None);
        assert_eq!(overlay_ip(Some(&services), "zzz"), None);
        assert_eq!(overlay_ip(None, "aaa"), None);
    }

    #[test]
    fn one_service_per_id_and_per_hostname() {
        let found = vec![
            (ReplicaSpec::managed("a", 1), "s1".to_owned()),
            (ReplicaSpec::managed("b", 1), "s2".to_owned()),
            (ReplicaSpec::managed("a", 2), "s3".to_owned()),
            (ReplicaSpec::managed("c", 3), "s4".to_owned()),
        ];
        let listing = distinct(found);
        let kept: Vec<&str> = listing.kept.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(kept, ["s1", "s4"]);
        let repeated: Vec<&str> = listing.repeated.iter().map(|(_, s)| s.as_str()).collect();
        assert_eq!(repeated, ["s2", "s3"]);
    }

    /// The "repeats a server id" warning comes once per service left out, not every listing.
    #[test]
    fn a_repeated_id_is_warned_about_once() {
        let repeated = vec![
            (ReplicaSpec::managed("b", 1), "s2".to_owned()),
            (ReplicaSpec::managed("a", 2), "s3".to_owned()),
        ];
        let none = std::collections::BTreeSet::new();
        assert_eq!(newly_repeated(&repeated, &none).len(), 2);
        let seen: std::collections::BTreeSet<String> =
            repeated.iter().map(|(_, s)| s.clone()).collect();
        assert!(newly_repeated(&repeated, &seen).is_empty());
        let one: std::collections::BTreeSet<String> = ["s2".to_owned()].into();
        assert_eq!(newly_repeated(&repeated, &one)[0].1, "s3");
    }

    #[test]
    fn hostile_labels_make_no_replica() {
        for hostname in ["", "a\nb", &"x".repeat(10_000)] {
            let labels = HashMap::from([
                (HOSTNAME_LABEL.to_owned(), hostname.to_owned()),
                (ID_LABEL.to_owned(), "1".to_owned()),
            ]);
            assert_eq!(spec_from_labels(&labels), None, "{hostname:?}");
        }
    }

    #[test]
    fn service_names_carry_instance_and_id() {
        assert_eq!(service_name("lb-swarm", 12), "lb-swarm-12");
    }
}
