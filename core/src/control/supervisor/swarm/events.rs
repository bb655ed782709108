//! The Swarm supervisor's two event followers: the deaths of the instance's task containers
//! (reported at once as [`SupervisorEvent::Exited`]) and the membership (the instance's
//! services, sent as [`SupervisorEvent::Members`] on every service event and every
//! [`RESYNC`]). Both reopen the engine's event stream whenever it ends ([`engine::follow`]).

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::super::engine;
use super::super::{Handle, SupervisorEvent};
use super::labels::{label_filter, newly_repeated, Listing, WEIGHT_LABEL};
use super::services::list_all;
use super::SwarmSupervisor;

/// Longest time between two listings of the services.
pub(crate) const RESYNC: Duration = Duration::from_secs(1);

impl SwarmSupervisor {
    /// Report every `die` of one of the instance's task containers: the health checker would
    /// notice too, but later.
    pub(super) async fn follow_deaths(
        self: Arc<Self>,
        events: mpsc::UnboundedSender<SupervisorEvent>,
    ) {
        let mut filters = label_filter(&self.instance);
        filters.insert("type".into(), vec!["container".into()]);
        filters.insert("event".into(), vec!["die".into()]);
        engine::follow(&self.docker, filters, |message| {
            let Some(actor) = message.actor else {
                return ControlFlow::Continue(());
            };
            let (Some(container_id), Some(attributes)) = (actor.id, actor.attributes) else {
                return ControlFlow::Continue(());
            };
            let label = |key: &str| attributes.get(key).cloned();
            let (Some(service), Some(task)) = (
                label("com.docker.swarm.service.id"),
                label("com.docker.swarm.task.id"),
            ) else {
                return ControlFlow::Continue(());
            };
            let code = label("exitCode").unwrap_or_else(|| "?".into());
            let handle = Handle::SwarmTask {
                service,
                task,
                container_id,
            };
            let detail = format!("task container died, exit code {code}");
            match events.send(SupervisorEvent::Exited { handle, detail }) {
                Ok(()) => ControlFlow::Continue(()),
                Err(_) => ControlFlow::Break(()), // the load balancer is shutting down
            }
        })
        .await
    }

    /// Send the instance's services at once when Docker reports a service change, and every
    /// [`RESYNC`] in any case (an event stream can miss things, or break).
    pub(super) async fn follow_membership(
        self: Arc<Self>,
        events: mpsc::UnboundedSender<SupervisorEvent>,
    ) {
        let (changed, mut change) = mpsc::channel::<()>(1);
        let watcher = {
            let docker = self.docker.clone();
            tokio::spawn(async move {
                let filters = HashMap::from([("type".to_owned(), vec!["service".to_owned()])]);
                engine::follow(&docker, filters, |_| match changed.try_send(()) {
                    // Full: a listing is due anyway.
                    Ok(()) | Err(TrySendError::Full(())) => ControlFlow::Continue(()),
                    Err(TrySendError::Closed(())) => ControlFlow::Break(()),
                })
                .await
            })
        };
        let mut resync = tokio::time::interval(RESYNC);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        // Services left out for a repeated id or hostname, warned about once each.
        let mut repeated_before = std::collections::BTreeSet::new();
        // Weight labels that are not weights, warned about once each (service, value).
        let mut bad_weights_before = std::collections::BTreeSet::new();
        loop {
            tokio::select! {
                _ = resync.tick() => {}
                Some(()) = change.recv() => {}
            }
            let listed_at = tokio::time::Instant::now();
            match list_all(&self.docker, &self.instance).await {
                Ok(Listing {
                    kept,
                    repeated,
                    bad_weights,
                }) => {
                    if failing {
                        tracing::info!("listing the swarm's services works again");
                        failing = false;
                    }
                    for (spec, service) in newly_repeated(&repeated, &repeated_before) {
                        tracing::warn!(%service, hostname = %spec.hostname, id = spec.id, "service repeats a server id or hostname of another; ignored");
                    }
                    repeated_before = repeated.into_iter().map(|(_, s)| s).collect();
                    for (service, value) in &bad_weights {
                        if !bad_weights_before.contains(&(service.clone(), value.clone())) {
                            tracing::warn!(%service, label = WEIGHT_LABEL, %value, max = lb_balance::MAX_WEIGHT, "service's weight label is not a weight (an integer from 1 to max); the replica weighs 1");
                        }
                    }
                    bad_weights_before = bad_weights.into_iter().collect();
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
}
