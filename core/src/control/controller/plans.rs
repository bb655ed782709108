//! `POST /_lb/plan`: the table a change would give, built and compared with the published one
//! off the controller (a rendezvous table of millions of slots takes seconds); the answer goes
//! straight to the asker. Nothing changes.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::control::command::{ControlError, PlanAsk, PlanChange, PlanReply};
use crate::control::plan::{sample_keys, view, Side};
use crate::control::reconcile::{plan_add, plan_remove};

use super::Controller;

impl Controller {
    /// Plan `ask` against the published table; the reply comes from a blocking task.
    pub(super) fn plan(&mut self, ask: PlanAsk, reply: oneshot::Sender<PlanReply>) {
        let side = match self.side_after(ask) {
            Ok(side) => side,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let current = self.shared.snapshot.load_full();
        let names: BTreeMap<u64, String> = current
            .backends
            .iter()
            .map(|b| (b.id, b.hostname.clone()))
            .collect();
        tokio::spawn(async move {
            let planned = tokio::task::spawn_blocking(move || {
                let after = side.place().map_err(ControlError::Unplaceable)?;
                Ok(view(
                    &current.placement,
                    &names,
                    &after,
                    &side,
                    &sample_keys(),
                ))
            })
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "planning a change failed");
                Err(ControlError::Failed)
            });
            let _ = reply.send(planned);
        });
    }

    /// The replicas, weights and ring `ask` would give. An `/add` is planned as the real one
    /// would be right now (the same ids and names: a copy of the random source it would use).
    fn side_after(&self, ask: PlanAsk) -> Result<Side, ControlError> {
        let PlanChange { rm, add, weights } = match ask {
            PlanAsk::Config { config, hash } => return Ok(Side::of_config(&config, hash)),
            PlanAsk::Change(change) => *change,
        };
        let mut members = self.members();
        let mut replicas: BTreeMap<u64, (String, u32)> = members
            .running
            .iter()
            .map(|(id, name)| (*id, (name.clone(), self.weight_of(*id))))
            .collect();
        let mut rng = self.rng.clone();
        if let Some(rm) = rm {
            for id in plan_remove(&members, &rm, &mut rng)? {
                replicas.remove(&id);
                members.running.remove(&id);
                members.addresses.remove(&id);
                members.weights.remove(&id);
            }
        }
        if let Some(add) = add {
            let specs = plan_add(
                &members,
                &add,
                &self.ring.balancer,
                &self.ring.hash,
                self.applied.limits.max_replicas,
                &mut rng,
            )?;
            for (i, spec) in specs.into_iter().enumerate() {
                let weight = add.weights.get(i).copied().unwrap_or(1);
                replicas.insert(spec.id, (spec.hostname, weight));
            }
        }
        for (name, weight) in weights {
            match replicas.values_mut().find(|(n, _)| *n == name) {
                Some(entry) => entry.1 = weight,
                None => {
                    return Err(ControlError::UnknownName {
                        name,
                        replicas: replicas.values().map(|(n, _)| n.clone()).collect(),
                    })
                }
            }
        }
        Ok(Side {
            balancer: self.ring.balancer,
            hash: Arc::clone(&self.ring.hash),
            replicas,
        })
    }
}
