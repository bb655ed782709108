//! The experiments. Each one talks to the load balancer through a [`Context`] and returns plain
//! data; charts, files and the report are made from that data afterwards.

pub mod a1;
pub mod a2;
pub mod a3;
pub mod a4;
pub mod a5;
pub mod a6;
pub mod offline;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::client::LbClient;
use crate::error::Result;
use crate::load::{self, Limits};
use crate::progress;
use crate::stats::Spread;

/// What every experiment needs.
#[derive(Debug, Clone)]
pub struct Context {
    /// The load balancer.
    pub client: LbClient,
    /// Requests per measurement.
    pub requests: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Upper bound on one measurement.
    pub phase_timeout: Duration,
    /// Seed of the request ids.
    pub seed: u64,
    /// The load balancer's `lb.toml`, when we started it (A-4 switches hashes by editing it).
    pub owned_config: Option<PathBuf>,
    /// Where the hash plugins are (for the offline part of A-4 and the routing check of A-3).
    pub plugin_dir: PathBuf,
    /// The `lb` binary, for the load balancers A-3's supervisor comparison and control-plane
    /// phases start of their own (`None`: there is none, and those are skipped).
    pub lb_bin: Option<PathBuf>,
    /// The parts of A-3 to run (`--a3-phases`; all by default).
    pub a3_phases: Vec<A3Phase>,
}

/// A part of A-3, chosen with `analysis a3 --a3-phases …`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum A3Phase {
    /// Every endpoint checked (SPEC §3).
    Checks,
    /// The replica serving the most slots killed under traffic.
    Kill,
    /// A replica hung (SIGSTOP) for 5 s under traffic.
    Hang,
    /// Slow-loris connections next to normal clients.
    Slowloris,
    /// The kill once per supervisor, each with a load balancer of its own.
    Supervisors,
    /// A save that would stall the controller: hostile `lb.toml` files saved with a replica
    /// killed at the same moment ([`a3::control`]).
    Stall,
    /// A loop attempt: `/add` of the load balancer's own address, a request with its own loop
    /// mark ([`a3::loop_attempt`]).
    Loop,
}

impl A3Phase {
    /// Every part, in running order.
    pub const ALL: [A3Phase; 7] = [
        A3Phase::Checks,
        A3Phase::Kill,
        A3Phase::Hang,
        A3Phase::Slowloris,
        A3Phase::Supervisors,
        A3Phase::Stall,
        A3Phase::Loop,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            A3Phase::Checks => "checks",
            A3Phase::Kill => "kill",
            A3Phase::Hang => "hang",
            A3Phase::Slowloris => "slowloris",
            A3Phase::Supervisors => "supervisors",
            A3Phase::Stall => "stall",
            A3Phase::Loop => "loop",
        }
    }
}

impl std::fmt::Display for A3Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Requests served by one replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaLoad {
    /// Hostname.
    pub hostname: String,
    /// Server id (`None` for a name that answered but is not in `/_lb/status`).
    pub id: Option<u64>,
    /// Requests it answered with 200.
    pub requests: u64,
}

/// One measurement: `requests` × `GET /home` at a fixed replica set and hash.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// Hash in use.
    pub hash: String,
    /// Replicas in the ring.
    pub n: usize,
    /// Requests per replica, in server-id order.
    pub replicas: Vec<ReplicaLoad>,
    /// Requests planned.
    pub planned: u64,
    /// Requests sent.
    pub sent: u64,
    /// Failed requests per kind.
    pub failed: BTreeMap<String, u64>,
    /// Spread of the per-replica counts.
    pub spread: Option<Spread>,
    /// Wall time, milliseconds.
    pub elapsed_ms: f64,
}

impl Measurement {
    /// Requests answered with 200.
    pub fn served(&self) -> u64 {
        self.replicas.iter().map(|r| r.requests).sum()
    }

    /// Failed requests.
    pub fn failures(&self) -> u64 {
        self.failed.values().sum()
    }

    /// Requests per second.
    pub fn throughput(&self) -> f64 {
        if self.elapsed_ms > 0.0 {
            self.sent as f64 * 1000.0 / self.elapsed_ms
        } else {
            0.0
        }
    }
}

impl Context {
    /// Whether A-3's part `phase` was chosen.
    pub fn runs(&self, phase: A3Phase) -> bool {
        self.a3_phases.contains(&phase)
    }

    /// Load limits for a measurement.
    pub fn limits(&self, stop: Arc<AtomicBool>, time: Duration) -> Limits {
        Limits {
            concurrency: self.concurrency,
            time,
            stop,
            request_timeout: crate::client::REQUEST_TIMEOUT,
        }
    }

    /// Send `requests` × `GET /home` with the ids of `phase` and count who answered.
    pub fn measure(&self, phase: &str, label: &str) -> Result<Measurement> {
        let status = self.client.status()?;
        let ids = Arc::new(load::request_ids(self.seed, phase, self.requests));
        let bar = progress::bar(ids.len() as u64, label);
        let limits = self.limits(Arc::new(AtomicBool::new(false)), self.phase_timeout);
        let run = load::run(&self.client, ids, limits, Instant::now(), &bar);
        bar.finish_and_clear();
        let tally = run.tally();
        let mut replicas: Vec<ReplicaLoad> = status
            .replicas
            .iter()
            .map(|r| ReplicaLoad {
                hostname: r.hostname.clone(),
                id: Some(r.id),
                requests: tally.served.get(&r.hostname).copied().unwrap_or(0),
            })
            .collect();
        replicas.sort_by_key(|r| r.id);
        let counts: Vec<u64> = replicas.iter().map(|r| r.requests).collect();
        for (host, &count) in &tally.served {
            if status.id_of(host).is_none() {
                replicas.push(ReplicaLoad {
                    hostname: host.clone(),
                    id: None,
                    requests: count,
                });
            }
        }
        let m = Measurement {
            hash: status.ring.hash.clone(),
            n: status.replicas.len(),
            replicas,
            planned: tally.planned,
            sent: tally.sent,
            failed: tally.failed.clone(),
            spread: Spread::of_counts(&counts),
            elapsed_ms: run.elapsed.as_secs_f64() * 1000.0,
        };
        let shares: Vec<String> = m
            .replicas
            .iter()
            .map(|r| format!("{} {}", r.hostname, r.requests))
            .collect();
        progress::note(&format!(
            "{label}: {} sent, {} failed, {:.0} req/s; {}",
            m.sent,
            m.failures(),
            m.throughput(),
            shares.join(", ")
        ));
        Ok(m)
    }
}
