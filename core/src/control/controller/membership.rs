//! Shared membership (Swarm): the replica set lives in the runtime and several load balancers
//! follow it. [`SharedMembership`] is the one optional part of the controller that holds what
//! following it takes — ids being changed locally and when they settled, vacancies whose
//! service this load balancer creates, the file version a save is compared with — and the
//! `impl Controller` block here follows the runtime's listings. Its decisions are pure functions
//! in `reconcile.rs` (`plan_membership`, `file_touched`, `room`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::Config;
use crate::control::reconcile::{
    file_touched, plan_membership, room, weights_touched, FileList, MembershipChange, Plan,
};
use crate::control::supervisor::ReplicaSpec;

use super::{listed_in, vacancy_of, Controller, Done};

/// How long the engine may take to set one replica's weight.
const RELABEL_LIMIT: Duration = Duration::from_secs(30);

/// What following a shared membership takes (`Controller::membership` is `Some` exactly when
/// the supervisor offers one).
#[derive(Debug, Default)]
pub(super) struct SharedMembership {
    /// Vacancies whose service this load balancer creates (a seed, or an entry added to the
    /// file), rather than finds.
    pub(super) to_create: BTreeSet<u64>,
    /// Ids this load balancer is changing (`None`: in progress) or changed at that instant. A
    /// listing asked for before then does not speak for them.
    local_changes: BTreeMap<u64, Option<Instant>>,
    /// Services the last listing had no room for in the ring (logged when it changes).
    pub(super) overflow: usize,
    /// The listed weights the ring had no room for, when the last listing's did not fit
    /// (logged when it changes).
    too_heavy: Option<Vec<(u64, u32)>>,
    /// The replica list (id → hostname) of the file version this load balancer last wrote or
    /// applied; a save changes only the ids it differs in from this.
    pub(super) file_base: FileList,
}

impl SharedMembership {
    /// Following a shared membership, with the file's replica list (`file_base`) as the base.
    pub(super) fn new(file_base: FileList) -> SharedMembership {
        SharedMembership {
            file_base,
            ..SharedMembership::default()
        }
    }

    /// `ids` are being changed by this load balancer: no listing speaks for them until they
    /// are [`SharedMembership::changed`].
    pub(super) fn changing(&mut self, ids: impl IntoIterator<Item = u64>) {
        for id in ids {
            self.local_changes.insert(id, None);
        }
    }

    /// `id`'s change was done at `at`: listings asked for after that speak for it again.
    pub(super) fn changed(&mut self, id: u64, at: Instant) {
        self.local_changes.insert(id, Some(at));
    }

    /// Whether a listing may judge `id` (no local change of it is in progress or newer).
    fn speaks_for(&self, id: u64) -> bool {
        !self.local_changes.contains_key(&id)
    }

    /// A listing asked for at `listed_at` speaks from now on for the ids whose local change was
    /// done before it.
    fn listed(&mut self, listed_at: Instant) {
        self.local_changes
            .retain(|_, at| at.is_none_or(|at| listed_at <= at));
    }
}

impl Controller {
    /// Follow the runtime's membership listing (shared membership): services that appeared
    /// join (once their task answers), services that are gone leave the ring, and a weight
    /// changed in the runtime re-places the ring. Ids this load balancer is changing itself
    /// are judged only by listings asked for after its change.
    pub(super) fn follow(&mut self, listed_at: Instant, listed: Vec<ReplicaSpec>) {
        let members = self.members();
        let Some(membership) = &mut self.membership else {
            return;
        };
        let weights: BTreeMap<u64, u32> = listed.iter().map(|s| (s.id, s.weight)).collect();
        let listed: BTreeMap<u64, String> =
            listed.into_iter().map(|s| (s.id, s.hostname)).collect();
        membership.listed(listed_at);
        let MembershipChange { gone, new } =
            plan_membership(&members, &listed, |id| membership.speaks_for(id));
        // Weights the runtime changed, of members that stay (and that this load balancer is
        // not changing itself).
        let current = |id: &u64| {
            (members.running.get(id).or(members.vacant.get(id))) == listed.get(id)
                && !members.adding.contains_key(id)
                && !gone.contains(id)
        };
        let mut reweighed: Vec<(u64, u32)> = weights
            .iter()
            .filter(|(id, w)| {
                membership.speaks_for(**id)
                    && current(id)
                    && self.weights.get(id).copied().unwrap_or(1) != **w
            })
            .map(|(id, w)| (*id, *w))
            .collect();
        if !reweighed.is_empty() {
            // Only if the ring holds every replica at its new weight (K·Σw ≤ M for the ring).
            let after: Vec<u32> = members
                .running
                .keys()
                .chain(members.vacant.keys())
                .chain(members.adding.keys())
                .filter(|id| !gone.contains(id))
                .map(|id| {
                    reweighed
                        .iter()
                        .find(|(r, _)| r == id)
                        .map_or_else(|| self.weights.get(id).copied().unwrap_or(1), |r| r.1)
                })
                .collect();
            match self.ring.balancer.check_weighted_capacity(&after) {
                Ok(()) => membership.too_heavy = None,
                Err(e) => {
                    if membership.too_heavy.as_ref() != Some(&reweighed) {
                        tracing::error!(error = %e, weights = ?reweighed, "the swarm lists weights the ring has no room for; keeping the replicas' weights");
                        membership.too_heavy = Some(reweighed.clone());
                    }
                    reweighed.clear();
                }
            }
        }
        // Removals always apply; new replicas only as far as the ring has room (in id order).
        let base = self.replicas.len() + self.vacancies.len() - gone.len();
        let mut new = new;
        let room = room(&self.ring.balancer, base, new.len());
        let left_out = new.len() - room;
        if left_out != membership.overflow {
            if left_out > 0 {
                let e = self.ring.balancer.check_capacity(base + room + 1).err();
                tracing::error!(left_out, error = ?e, "the swarm lists more replicas than the ring holds; leaving the rest out");
            }
            membership.overflow = left_out;
        }
        new.truncate(room);
        if gone.is_empty() && new.is_empty() && reweighed.is_empty() {
            return;
        }
        let mut left = Vec::new();
        for id in &gone {
            self.vacancies.remove(id);
            membership.to_create.remove(id);
            if let Some(running) = self.replicas.remove(id) {
                tracing::info!(hostname = %running.backend.hostname, id, "replica's service is gone from the swarm; out of the ring");
                left.push(running);
            }
        }
        for spec in &new {
            tracing::info!(hostname = %spec.hostname, id = spec.id, "replica's service appeared in the swarm; joining once it answers");
            self.vacancies.insert(
                spec.id,
                vacancy_of(spec, 0, "service found in the swarm".into()),
            );
        }
        for (id, weight) in reweighed {
            let hostname = listed.get(&id).cloned().unwrap_or_default();
            let before = self.weights.get(&id).copied().unwrap_or(1);
            tracing::info!(%hostname, id, "replica's weight changed in the swarm: {before} → {weight}");
            self.set_weight(id, weight);
        }
        for spec in &new {
            self.set_weight(spec.id, weights.get(&spec.id).copied().unwrap_or(1));
        }
        self.publish();
        // Removed elsewhere: nothing of ours to stop.
        drop(self.retire(left, false));
        for spec in &new {
            self.respawn(spec.id);
        }
        self.write_back(None);
    }

    /// Shared membership: mark `ids` as being changed by this load balancer until
    /// [`Done::Settled`] says the runtime reflects the change.
    pub(super) fn changing(&mut self, ids: impl IntoIterator<Item = u64>) {
        if let Some(membership) = &mut self.membership {
            membership.changing(ids);
        }
    }

    /// Shared membership: `ids`' changes were done at `at`.
    pub(super) fn changed(&mut self, ids: impl IntoIterator<Item = u64>, at: Instant) {
        if let Some(membership) = &mut self.membership {
            for id in ids {
                membership.changed(id, at);
            }
        }
    }

    /// Shared membership: send [`Done::Settled`] for `ids` once `done` completes. Returns what
    /// `done` gives, once it has.
    pub(super) fn settle_after<T: Send + 'static>(
        &self,
        ids: Vec<u64>,
        done: oneshot::Receiver<T>,
    ) -> oneshot::Receiver<T> {
        if self.membership.is_none() || ids.is_empty() {
            return done;
        }
        let report = self.done.clone();
        let (forward, forwarded) = oneshot::channel();
        tokio::spawn(async move {
            let value = done.await;
            let _ = report.send(Done::Settled { ids });
            if let Ok(value) = value {
                let _ = forward.send(value);
            }
        });
        forwarded
    }

    /// Replicas this load balancer changed are settled in the runtime (now).
    pub(super) fn settled(&mut self, ids: Vec<u64>) {
        let now = Instant::now();
        let Some(membership) = &mut self.membership else {
            return;
        };
        for id in ids {
            if let Some(at) = membership.local_changes.get_mut(&id) {
                *at = Some(now);
            }
        }
    }

    /// Shared membership: a saved file speaks only for the ids it changed relative to the
    /// version this load balancer last wrote or applied; every other id keeps what the
    /// runtime's listings say (they may be newer than the text that was saved). Returns the
    /// weights the save changed (`None`: the replica set is this load balancer's own, and the
    /// file speaks for every weight).
    pub(super) fn only_what_the_save_changed(
        &mut self,
        plan: &mut Plan,
        config: &Config,
    ) -> Option<BTreeMap<u64, u32>> {
        let membership = self.membership.as_mut()?;
        let touched = file_touched(&membership.file_base, config);
        plan.only(&touched);
        let weights = weights_touched(&membership.file_base, config);
        membership.file_base = listed_in(config);
        Some(weights)
    }

    /// Shared membership: give the existing replicas of `specs` their weight in the runtime
    /// (Swarm: the service's weight label), off the controller; listings do not speak for
    /// their ids until it is done (or has failed: the next listing then brings the runtime's
    /// weight back, and the log says why).
    pub(super) fn relabel(&mut self, specs: Vec<ReplicaSpec>) {
        if specs.is_empty() || self.membership.is_none() {
            return;
        }
        let ids: Vec<u64> = specs.iter().map(|s| s.id).collect();
        self.changing(ids.clone());
        let supervisor = Arc::clone(&self.launcher.supervisor);
        let (done, settled) = oneshot::channel();
        drop(self.settle_after(ids, settled));
        tokio::spawn(async move {
            if let Some(membership) = supervisor.membership() {
                for spec in specs {
                    let set = tokio::time::timeout(RELABEL_LIMIT, membership.set_weight(&spec));
                    match set.await {
                        Ok(Ok(())) => {
                            tracing::info!(hostname = %spec.hostname, id = spec.id, weight = spec.weight, "weight set in the swarm");
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(hostname = %spec.hostname, id = spec.id, error = %e, "cannot set the replica's weight in the swarm; its listed weight comes back");
                        }
                        Err(_) => {
                            tracing::warn!(hostname = %spec.hostname, id = spec.id, "the engine did not set the replica's weight within {} s; its listed weight comes back", RELABEL_LIMIT.as_secs());
                        }
                    }
                }
            }
            let _ = done.send(());
        });
    }
}
