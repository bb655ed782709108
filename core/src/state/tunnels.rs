//! The open WebSocket tunnels (`Upgrade: websocket`, [`crate::data::tunnel`]), kept beside the
//! snapshot: how many are open and how many were opened, by replica hostname, and the signal
//! every tunnel task listens on.
//!
//! Only tunnels touch it (when one opens and when it closes: a short lock, never on the plain
//! request path); `/_lb/status` and `/_lb/metrics` read it. The controller calls
//! [`Tunnels::ring_changed`] each time it publishes a snapshot: one `watch` send that wakes
//! every tunnel, which looks its slot up again in the new snapshot (a pure lookup) and, if its
//! replica left the ring or no longer owns the slot, closes after the drain time. `run.rs`
//! calls [`Tunnels::shutdown`] on SIGTERM: every tunnel closes at the end of the drain.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

/// What every tunnel task is told (a `watch`: each send wakes them all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Signal {
    /// Bumped with every published snapshot: look the slot up again.
    pub generation: u64,
    /// How long a tunnel whose replica left (or lost its slot) stays open: `[health]
    /// drain_timeout_ms`, as of the last snapshot.
    pub drain: Duration,
    /// `lb` is shutting down: close after `drain`.
    pub shutdown: bool,
}

/// Tunnels open and opened so far for one replica hostname.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Count {
    /// Open now.
    pub open: u64,
    /// Opened since `lb` started.
    pub total: u64,
}

/// The registry (see the module's documentation).
#[derive(Debug)]
pub(crate) struct Tunnels {
    by_replica: Mutex<BTreeMap<Arc<str>, Count>>,
    signal: watch::Sender<Signal>,
}

impl Default for Tunnels {
    fn default() -> Self {
        Tunnels {
            by_replica: Mutex::default(),
            signal: watch::Sender::new(Signal {
                generation: 0,
                drain: Duration::from_secs(10),
                shutdown: false,
            }),
        }
    }
}

impl Tunnels {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<Arc<str>, Count>> {
        // Nothing that can panic runs under the lock.
        self.by_replica
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A tunnel to `hostname` opened: counted open until the guard is dropped.
    pub(crate) fn open(self: &Arc<Self>, hostname: &Arc<str>) -> Open {
        let mut counts = self.lock();
        let count = counts.entry(Arc::clone(hostname)).or_default();
        count.open += 1;
        count.total += 1;
        Open {
            tunnels: Arc::clone(self),
            hostname: Arc::clone(hostname),
        }
    }

    /// Tunnels by replica hostname (every hostname that had one, up to [`KEPT`] of them).
    pub(crate) fn counts(&self) -> BTreeMap<Arc<str>, Count> {
        self.lock().clone()
    }

    /// Tunnels open now, over every replica.
    pub(crate) fn open_now(&self) -> u64 {
        self.lock().values().map(|c| c.open).sum()
    }

    /// A new snapshot was published (`drain`: the drain time now). Never waits.
    pub(crate) fn ring_changed(&self, drain: Duration) {
        self.signal.send_modify(|s| {
            s.generation += 1;
            s.drain = drain;
        });
    }

    /// `lb` is shutting down: every tunnel closes after `drain`. Never waits.
    pub(crate) fn shutdown(&self, drain: Duration) {
        self.signal.send_modify(|s| {
            s.shutdown = true;
            s.drain = drain;
        });
    }

    /// The signal, for a new tunnel.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Signal> {
        self.signal.subscribe()
    }
}

/// One open tunnel, counted in its replica's [`Count::open`] while alive.
#[derive(Debug)]
pub(crate) struct Open {
    tunnels: Arc<Tunnels>,
    hostname: Arc<str>,
}

/// Hostnames kept beyond which those without an open tunnel are forgotten (replaced replicas
/// get new names: the map must not grow for ever).
const KEPT: usize = 1024;

impl Drop for Open {
    fn drop(&mut self) {
        let mut counts = self.tunnels.lock();
        if let Some(count) = counts.get_mut(&self.hostname) {
            count.open = count.open.saturating_sub(1);
        }
        if counts.len() > KEPT {
            counts.retain(|_, c| c.open > 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnels_are_counted_open_until_dropped_and_in_total_for_good() {
        let tunnels = Arc::new(Tunnels::default());
        let a: Arc<str> = "a".into();
        let first = tunnels.open(&a);
        let second = tunnels.open(&a);
        let other = tunnels.open(&"b".into());
        assert_eq!(tunnels.counts()[&a], Count { open: 2, total: 2 });
        assert_eq!(tunnels.open_now(), 3);
        drop(first);
        drop(other);
        assert_eq!(tunnels.counts()[&a], Count { open: 1, total: 2 });
        drop(second);
        assert_eq!(tunnels.open_now(), 0);
        assert_eq!(tunnels.counts()[&a].total, 2);
    }

    #[test]
    fn every_change_wakes_the_tunnels_with_the_drain_time() {
        let tunnels = Tunnels::default();
        let mut rx = tunnels.subscribe();
        tunnels.ring_changed(Duration::from_millis(250));
        assert!(rx.has_changed().unwrap());
        let seen = *rx.borrow_and_update();
        assert_eq!(
            (seen.generation, seen.drain),
            (1, Duration::from_millis(250))
        );
        // The same drain again still wakes them (a new snapshot).
        tunnels.ring_changed(Duration::from_millis(250));
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        tunnels.shutdown(Duration::from_secs(1));
        assert!(rx.borrow_and_update().shutdown);
    }
}
