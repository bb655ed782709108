//! Shared membership (Swarm): the replica set lives in the runtime and several load balancers
//! follow it. [`SharedMembership`] is the one optional part of the controller that holds what
//! following it takes — ids being changed locally and when they settled, vacancies whose
//! service this load balancer creates, the file version a save is compared with — and the
//! `impl Controller` block here follows the runtime's listings. Its decisions are pure functions
//! in `reconcile.rs` (`plan_membership`, `file_touched`, `room`).

use std::collections::{BTreeMap, BTreeSet};

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::config::Config;
use crate::control::reconcile::{file_touched, plan_membership, room, MembershipChange, Plan};
use crate::control::supervisor::ReplicaSpec;

use super::{listed_in, vacancy_of, Controller, Done};

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
    /// The replica list (id → hostname) of the file version this load balancer last wrote or
    /// applied; a save changes only the ids it differs in from this.
    pub(super) file_base: BTreeMap<u64, String>,
}

impl SharedMembership {
    /// Following a shared membership, with the file's replica list (`file_base`) as the base.
    pub(super) fn new(file_base: BTreeMap<u64, String>) -> SharedMembership {
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
    /// join (once their task answers), services that are gone leave the ring. Ids this load
    /// balancer is changing itself are judged only by listings asked for after its change.
    pub(super) fn follow(&mut self, listed_at: Instant, listed: Vec<ReplicaSpec>) {
        let members = self.members();
        let Some(membership) = &mut self.membership else {
            return;
        };
        let listed: BTreeMap<u64, String> =
            listed.into_iter().map(|s| (s.id, s.hostname)).collect();
        membership.listed(listed_at);
        let MembershipChange { gone, new } =
            plan_membership(&members, &listed, |id| membership.speaks_for(id));
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
        if gone.is_empty() && new.is_empty() {
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
    /// runtime's listings say (they may be newer than the text that was saved).
    pub(super) fn only_what_the_save_changed(&mut self, plan: &mut Plan, config: &Config) {
        let Some(membership) = &mut self.membership else {
            return;
        };
        let touched = file_touched(&membership.file_base, config);
        plan.only(&touched);
        membership.file_base = listed_in(config);
    }
}
