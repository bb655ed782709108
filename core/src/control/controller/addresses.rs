//! Backends by address whose name resolves anew: on every reload their names are resolved
//! again off the controller, and one that now gives another address is swapped for the same
//! backend (id, name, slots) at the new one, in one snapshot. `swap` also serves a kept
//! replica whose pipelining or TLS setting changed.

use std::sync::Arc;

use crate::config::{BackendTls, Protocol};
use crate::control::launch::{self, Running};
use crate::control::supervisor::Handle;
use crate::state::Backend;

use super::{Controller, Done};

impl Controller {
    /// Resolve the names of the backends by address in the ring again, on a task of its own
    /// (on every reload: a saved file or SIGHUP); one whose name now gives another address is
    /// switched over by [`Done::Resolved`].
    pub(super) fn resolve_again(&self) {
        let backends: Vec<(u64, String, Handle, String)> = self
            .replicas
            .values()
            .filter_map(|r| {
                let configured = r.handle.address()?;
                let b = &r.backend;
                // An IP literal resolves to itself.
                (configured.parse::<std::net::SocketAddr>().is_err())
                    .then(|| (b.id, b.hostname.clone(), r.handle.clone(), b.addr.clone()))
            })
            .collect();
        if backends.is_empty() {
            return;
        }
        let done = self.done.clone();
        tokio::spawn(async move {
            for (id, hostname, handle, current) in backends {
                let Handle::Address(configured) = &handle else {
                    continue;
                };
                match launch::resolve(&hostname, configured).await {
                    Ok(address) if address != current => {
                        let _ = done.send(Done::Resolved {
                            id,
                            handle,
                            address,
                        });
                    }
                    Ok(_) => {}
                    // Keep the address that works; its health checks say if it stops working.
                    Err(e) => {
                        tracing::warn!(error = %e, "resolving a backend again failed; keeping its address")
                    }
                }
            }
        });
    }

    /// A backend by address's name resolves to `address` now: the same backend (id, name,
    /// slots) at the new address replaces it in one snapshot; requests in flight to the old one
    /// finish there.
    pub(super) fn resolved(&mut self, id: u64, handle: &Handle, address: String) {
        let Some(old) = self
            .replicas
            .get(&id)
            .filter(|r| &r.handle == handle)
            .map(|r| &r.backend)
        else {
            return; // gone or replaced meanwhile
        };
        if old.addr == address {
            return;
        }
        tracing::info!(hostname = %old.hostname, id, from = %old.addr, to = %address, "backend's name resolves to another address; moved");
        let (pipelining, tls, protocol) = (old.pipelining, old.tls.clone(), old.protocol);
        if let Some(old) = self.swap(id, address, pipelining, tls, protocol) {
            self.publish();
            drop(self.retire(vec![old], false));
        }
    }

    /// Replace the backend with server id `id` by the same backend (name, id, handle) at
    /// `address` with `pipelining`, `tls` and `protocol`; returns the old one, for the caller to retire once
    /// it has published (requests in flight to it finish there).
    pub(super) fn swap(
        &mut self,
        id: u64,
        address: String,
        pipelining: bool,
        tls: Option<Arc<BackendTls>>,
        protocol: Protocol,
    ) -> Option<Running> {
        let old = self.replicas.get(&id)?;
        let new = Backend::new(
            old.backend.hostname.clone(),
            id,
            address,
            old.backend.by_address,
            old.backend.described.clone(),
        )?
        .with_pipelining(pipelining)
        .with_tls(tls)
        .with_protocol(protocol)
        .incarnation_of(&old.backend);
        let new = Running {
            backend: Arc::new(new),
            handle: old.handle.clone(),
            joined: tokio::time::Instant::now(),
        };
        self.replicas.insert(id, new)
    }
}
