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
//!
//! The parts: `labels.rs` (what makes a service a replica), `services.rs` (creating, finding
//! and removing a replica's service; the network), `tasks.rs` (a service's running task and its
//! address), `events.rs` (task deaths and the membership), `down.rs` (`lb swarm down`). This
//! file holds the supervisor and its [`Supervisor`] implementation.

mod down;
mod events;
mod labels;
mod services;
mod tasks;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::LocalNodeState;
use bollard::Docker;
use tokio::sync::mpsc;

pub(crate) use down::remove_instance;

use super::engine::{self, status_of, EngineError, ENGINE_WAIT};
use super::{
    Handle, Membership, ReplicaSpec, Started, Supervisor, SupervisorError, SupervisorEvent,
};
use crate::config::{AddressMode, SupervisorSection};
use services::list;

/// How the load balancer reaches a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// By its address on the overlay network (the load balancer is on it too).
    Overlay,
    /// By its node's address and its host-mode published port.
    Published,
}

/// Runs replicas as Swarm services.
pub(crate) struct SwarmSupervisor {
    docker: Docker,
    instance: String,
    image: String,
    network: String,
    reach: Reach,
    /// How long a new service may take to have a running task.
    task_timeout: Duration,
}

/// Connect to the engine (`DOCKER_HOST`, else the local socket; tried again for up to `wait`
/// when it does not answer) and check it is a manager of an active swarm.
async fn manager(wait: Duration) -> Result<Docker, EngineError> {
    let docker = engine::connect(wait).await?;
    let info = docker.info().await?;
    let swarm = info.swarm.unwrap_or_default();
    if swarm.local_node_state != Some(LocalNodeState::ACTIVE) {
        return Err(EngineError::Unsuitable(
            "this Docker engine is not part of a swarm: run `docker swarm init \
             --advertise-addr 127.0.0.1` (or join one)"
                .into(),
        ));
    }
    if swarm.control_available != Some(true) {
        return Err(EngineError::Unsuitable(
            "this Docker engine is a swarm worker: lb needs a manager's API to manage services"
                .into(),
        ));
    }
    Ok(docker)
}

impl SwarmSupervisor {
    /// Connect to the local engine (a swarm manager), make sure the overlay network exists,
    /// and start following task deaths and the membership.
    pub(crate) async fn connect(
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

    async fn set_weight(&self, spec: &ReplicaSpec) -> Result<(), SupervisorError> {
        self.relabel(spec).await
    }
}
