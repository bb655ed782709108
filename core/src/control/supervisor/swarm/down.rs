//! `lb swarm down --instance NAME` ([`remove_instance`]): removing every service of an
//! instance, and the networks it leaves unused. The services outlive every load balancer of the
//! instance, so this is the one way they go.

use std::time::{Duration, Instant};

use bollard::query_parameters::ListServicesOptions;
use bollard::Docker;

use super::super::engine::{status_of, EngineError};
use super::labels::{label_filter, INSTANCE_LABEL};
use super::manager;
use super::tasks::TASK_POLL;

/// How long `lb swarm down` waits for the services' tasks to let go of the network.
const NETWORK_RELEASE: Duration = Duration::from_secs(20);

/// Why `lb swarm down` could not remove everything.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SwarmDownError {
    /// The engine could not be reached, or failed a listing.
    #[error("container engine: {0}")]
    Engine(#[from] EngineError),
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
) -> Result<Vec<(String, String, Vec<String>)>, EngineError> {
    let services = docker
        .list_services(Some(ListServicesOptions {
            filters: Some(label_filter(instance)),
            ..Default::default()
        }))
        .await?;
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
pub(crate) async fn remove_instance(instance: &str) -> Result<Vec<String>, SwarmDownError> {
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
        .map_err(EngineError::from)?;
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
        .map_err(EngineError::from)?;
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
