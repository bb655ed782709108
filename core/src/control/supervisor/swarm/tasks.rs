//! A replica's running task: looking it up among its service's tasks, where the load balancer
//! reaches it (the overlay address, or the node's address and the published port), and waiting
//! for a new service's task to run.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::{Task, TaskState};
use bollard::query_parameters::{InspectNetworkOptions, ListTasksOptions};

use super::super::engine::{EngineError, REPLICA_PORT};
use super::super::{Handle, ReplicaSpec, Started, SupervisorError};
use super::{Reach, SwarmSupervisor};

/// Pause between two looks for a service's running task.
pub(super) const TASK_POLL: Duration = Duration::from_millis(100);

impl SwarmSupervisor {
    /// The service's running task and where it is reached, or why there is none yet.
    pub(super) async fn running_task(
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
            .map_err(EngineError::from)?;
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
    pub(super) async fn wait_running(
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
