//! A-4: A-1 and A-2 again for every hash plugin the load balancer can load, switched live by
//! editing the `lb.toml` we own; plus the offline part ([`super::offline`]).

use std::time::Duration;

use serde::Serialize;

use super::a2::{self, A2};
use super::offline::{self, Offline};
use super::{a1, Context, Measurement};
use crate::config_file;
use crate::error::Result;
use crate::lb_api::eventually;
use crate::progress;

/// The hashes shipped with the project, in the order they are shown.
pub use lb_balance::plugin::SHIPPED;
/// How long a hash switch may take to show in `/_lb/ring`.
const SWITCH_LIMIT: Duration = Duration::from_secs(20);

/// under one hash.
#[derive(Debug, Clone, Serialize)]
pub struct HashRun {
    /// The hash.
    pub name: String,
    /// From writing lb.toml to `/_lb/ring` showing the hash, milliseconds.
    pub switch_ms: f64,
    /// A-1 under this hash.
    pub a1: Measurement,
    /// A-2 under this hash.
    pub a2: A2,
}

/// A hash left out, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Left {
    /// The hash.
    pub name: String,
    /// Why.
    pub reason: String,
}

/// A-4's result.
#[derive(Debug, Clone, Serialize)]
pub struct A4 {
    /// Why the live part did not run, if it did not.
    pub live_skipped: Option<String>,
    /// Per hash, A-1 and A-2.
    pub runs: Vec<HashRun>,
    /// Hashes not run live.
    pub skipped: Vec<Left>,
    /// The offline part.
    pub offline: Offline,
}

/// The hashes to try: the shipped ones, then any other plugin the load balancer lists.
fn candidates(listed: &[String]) -> Vec<String> {
    let mut names: Vec<String> = SHIPPED.iter().map(|s| s.to_string()).collect();
    for name in listed {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

/// Run A-4.
pub fn run(ctx: &Context) -> Result<A4> {
    let plugins = ctx.client.plugins()?;
    let listed: Vec<String> = plugins.iter().map(|p| p.name.clone()).collect();
    let names = candidates(&listed);
    let mut runs = Vec::new();
    let mut skipped = Vec::new();
    let mut usable = Vec::new();
    for name in &names {
        let entries: Vec<_> = plugins.iter().filter(|p| &p.name == name).collect();
        if entries.is_empty() {
            skipped.push(Left {
                name: name.clone(),
                reason: "not listed by GET /_lb/plugins".into(),
            });
        } else if entries.iter().all(|p| p.error.is_some()) {
            skipped.push(Left {
                name: name.clone(),
                reason: entries[0].error.clone().unwrap_or_default(),
            });
        } else {
            usable.push(name.clone());
        }
    }

    let live_skipped = match &ctx.owned_config {
        None => Some(
            "the load balancer was given with --lb, so there is no lb.toml of ours to switch its hash in; only the offline part ran"
                .to_owned(),
        ),
        Some(path) => {
            let original = ctx.client.status()?.ring.hash;
            for name in &usable {
                let switch = switch(ctx, path, name);
                let switch_ms = match switch {
                    Ok(d) => d.as_secs_f64() * 1000.0,
                    Err(e) => {
                        progress::note(&format!("A-4: cannot switch to {name}: {e}"));
                        skipped.push(Left {
                            name: name.clone(),
                            reason: format!("switching failed: {e}"),
                        });
                        continue;
                    }
                };
                let a1 = a1::run(ctx, &format!("A-4 {name} A-1"))?;
                let a2 = a2::run(ctx, &format!("A-4 {name} A-2"))?;
                runs.push(HashRun {
                    name: name.clone(),
                    switch_ms,
                    a1,
                    a2,
                });
            }
            switch(ctx, path, &original)?;
            None
        }
    };
    if let Some(why) = &live_skipped {
        progress::note(&format!("A-4 live part skipped: {why}"));
    }
    for left in &skipped {
        progress::note(&format!("A-4: skipped {}: {}", left.name, left.reason));
    }

    let spinner = progress::spinner("A-4 offline (ring math)");
    let status = ctx.client.status()?;
    let params = lb_balance::ring::RingParams {
        slots: status.ring.slots,
        virtual_nodes: status.ring.virtual_nodes,
        probing: if status.ring.probing == "quadratic" {
            lb_balance::ring::Probing::Quadratic
        } else {
            lb_balance::ring::Probing::Linear
        },
    };
    let mut dirs = vec![ctx.plugin_dir.clone()];
    dirs.extend(status.config.plugin_dirs.iter().map(Into::into));
    let offline_names = candidates(&usable);
    let offline = offline::compute(&offline_names, &dirs, params);
    spinner.finish_and_clear();
    for s in &offline.skipped {
        progress::note(&format!("A-4 offline: skipped {}: {}", s.name, s.reason));
    }
    Ok(A4 {
        live_skipped,
        runs,
        skipped,
        offline,
    })
}

/// Write `[ring] hash = "name"` and wait until `/_lb/ring` shows it.
fn switch(ctx: &Context, path: &std::path::Path, name: &str) -> Result<Duration> {
    if ctx.client.ring()?.hash == name {
        return Ok(Duration::ZERO);
    }
    settle(ctx, path)?;
    config_file::set_hash(path, name)?;
    ctx.client.wait_for_hash(name, SWITCH_LIMIT)
}

/// Wait until the `lb.toml` at `path` lists the running replicas, before editing it.
pub fn settle(ctx: &Context, path: &std::path::Path) -> Result<()> {
    // The load balancer writes /add, /rm and replacements back into the same file; edit it only
    // once that has happened, so the edit cannot bring back an old replica list.
    let mut running: Vec<String> = ctx.client.rep()?.replicas;
    running.sort();
    eventually(SWITCH_LIMIT, "lb.toml to list the running replicas", || {
        let mut listed = config_file::replica_hostnames(path)?;
        listed.sort();
        Ok(listed == running)
    })
}
