//! Heartbeat results, kept beside the snapshot's backends rather than inside them (as pingora
//! keeps `health` beside its backends): the health checker (`control/health.rs`) is the only
//! writer, `/_lb/status` reads them, and the data plane never touches them.
//!
//! An entry belongs to one incarnation of a replica: the [`Backend`] the checker saw. It holds a
//! [`Weak`] to it, so that the allocation cannot be reused while the entry exists and a new
//! `Backend` for the same server id (a restarted replica, a new address) always starts afresh.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use super::Backend;

/// The heartbeat counters of every replica the health checker has seen, by server id.
#[derive(Debug, Default)]
pub(crate) struct HealthBook {
    by_id: Mutex<HashMap<u64, Health>>,
}

/// One replica incarnation's heartbeat counters.
#[derive(Debug)]
struct Health {
    /// The backend these counters are about.
    backend: Weak<Backend>,
    /// Heartbeats missed in a row.
    missed: u32,
    /// Whether the controller has been told this replica is dead.
    reported_dead: bool,
}

impl Health {
    fn is_of(&self, backend: &Arc<Backend>) -> bool {
        std::ptr::eq(self.backend.as_ptr(), Arc::as_ptr(backend))
    }
}

impl HealthBook {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Health>> {
        // Nothing that can panic runs under the lock; a poisoned book is still consistent.
        self.by_id.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Apply `f` to the counters of `backend` (fresh ones if it is not the incarnation the book
    /// holds for its id).
    fn with<T>(&self, backend: &Arc<Backend>, f: impl FnOnce(&mut Health) -> T) -> T {
        let mut book = self.lock();
        let health = book.entry(backend.id).or_insert_with(|| Health {
            backend: Weak::new(),
            missed: 0,
            reported_dead: false,
        });
        if !health.is_of(backend) {
            *health = Health {
                backend: Arc::downgrade(backend),
                missed: 0,
                reported_dead: false,
            };
        }
        f(health)
    }

    /// `backend` answered its heartbeat: its misses in a row go back to 0.
    pub(crate) fn answered(&self, backend: &Arc<Backend>) {
        self.with(backend, |h| h.missed = 0);
    }

    /// `backend` missed a heartbeat: its misses in a row, this one included.
    pub(crate) fn missed(&self, backend: &Arc<Backend>) -> u32 {
        self.with(backend, |h| {
            h.missed = h.missed.saturating_add(1);
            h.missed
        })
    }

    /// Mark `backend` as reported dead to the controller: `true` the first time only.
    pub(crate) fn report_dead(&self, backend: &Arc<Backend>) -> bool {
        self.with(backend, |h| !std::mem::replace(&mut h.reported_dead, true))
    }

    /// Heartbeats `backend` missed in a row (0 for one not checked yet).
    pub(crate) fn missed_of(&self, backend: &Arc<Backend>) -> u32 {
        self.lock()
            .get(&backend.id)
            .filter(|h| h.is_of(backend))
            .map_or(0, |h| h.missed)
    }

    /// Forget every replica that is not one of `backends` (those the checker checks now).
    pub(crate) fn keep_only(&self, backends: &[Arc<Backend>]) {
        let live: HashSet<*const Backend> = backends.iter().map(Arc::as_ptr).collect();
        self.lock()
            .retain(|_, h| live.contains(&h.backend.as_ptr()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(id: u64, port: u16) -> Arc<Backend> {
        let addr = format!("127.0.0.1:{port}");
        let handle = lb_views::status::Handle {
            pid: Some(u32::from(port)),
            ..Default::default()
        };
        Arc::new(Backend::new(format!("r{id}"), id, addr, false, handle).unwrap())
    }

    #[test]
    fn misses_count_in_a_row_and_an_answer_clears_them() {
        let book = HealthBook::default();
        let a = backend(1, 5001);
        assert_eq!(book.missed_of(&a), 0);
        assert_eq!(book.missed(&a), 1);
        assert_eq!(book.missed(&a), 2);
        assert_eq!(book.missed_of(&a), 2);
        book.answered(&a);
        assert_eq!(book.missed_of(&a), 0);
        assert_eq!(book.missed(&a), 1);
    }

    #[test]
    fn a_replica_is_reported_dead_once_per_incarnation() {
        let book = HealthBook::default();
        let a = backend(1, 5001);
        assert!(book.report_dead(&a));
        assert!(!book.report_dead(&a));
        book.answered(&a);
        assert!(!book.report_dead(&a), "an answer does not undo the report");
        // The same id, a new backend (restarted, or at a new address): counted afresh.
        book.missed(&a);
        let again = backend(1, 5002);
        assert_eq!(book.missed_of(&again), 0);
        assert_eq!(book.missed(&again), 1);
        assert!(book.report_dead(&again));
        // The old incarnation's counters are gone with it.
        assert_eq!(book.missed_of(&a), 0);
    }

    #[test]
    fn replicas_out_of_the_ring_are_forgotten() {
        let book = HealthBook::default();
        let (a, b) = (backend(1, 5001), backend(2, 5002));
        book.missed(&a);
        book.missed(&b);
        book.keep_only(std::slice::from_ref(&b));
        assert_eq!(book.missed_of(&a), 0);
        assert_eq!(book.missed_of(&b), 1);
        // An id kept, but by another backend: forgotten too.
        let b2 = backend(2, 5003);
        book.keep_only(std::slice::from_ref(&b2));
        assert_eq!(book.missed_of(&b), 0);
        assert_eq!(book.lock().len(), 0);
    }
}
