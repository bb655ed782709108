//! Command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::experiments::A3Phase;

/// Run the assignment's experiments A-1..A-6 against the load balancer and write charts, data
/// and a report.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
pub struct Cli {
    /// Which experiments.
    #[command(subcommand)]
    pub which: Which,
    /// Options shared by every experiment.
    #[command(flatten)]
    pub options: Options,
}

/// The experiments to run.
#[derive(Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// one report.
    All,
    /// N = 3, requests per replica.
    A1,
    /// N = 2..6, load and spread per N.
    A2,
    /// every endpoint checked; a replica killed under traffic, recovery timed; a replica
    /// hung (SIGSTOP) for 5 s under 32 clients; a slow-loris attack next to normal clients; the
    /// kill again with the process, Docker and Swarm supervisors, each with an lb of its own;
    /// hostile saves of lb.toml with a kill at the same moment, and a loop attempt, with an lb
    /// of 64 replicas of their own (`--a3-phases` chooses among them).
    A3,
    /// A-4: A-1 and A-2 for every hash plugin, plus the ring's shares and key moves offline.
    A4,
    /// the ring, Maglev and rendezvous compared (balance, keys moved, build and lookup
    /// time offline for N = 2..100; shares live at N = 3; a hot key with and without bounded
    /// loads).
    A5,
    /// weights, slow start and plans (weighted shares against w/Σw and the keys a weight
    /// change moves, offline for N = 3..50; live: a plan against the /add made, and a replica
    /// ramping in with slow start under traffic).
    A6,
}

impl Which {
    /// The experiments selected, in running order.
    pub fn experiments(self) -> &'static [Which] {
        match self {
            Which::All => &[
                Which::A1,
                Which::A2,
                Which::A3,
                Which::A4,
                Which::A5,
                Which::A6,
            ],
            Which::A1 => &[Which::A1],
            Which::A2 => &[Which::A2],
            Which::A3 => &[Which::A3],
            Which::A4 => &[Which::A4],
            Which::A5 => &[Which::A5],
            Which::A6 => &[Which::A6],
        }
    }
}

/// Options shared by every experiment.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Use the load balancer at this URL (e.g. http://127.0.0.1:5000) instead of starting one.
    /// A-4 then cannot switch hashes (it does not own the lb.toml) and runs only its offline part.
    #[arg(long, global = true, value_name = "URL")]
    pub lb: Option<String>,
    /// The `lb` binary to start [default: `lb` next to this executable].
    #[arg(long, global = true, value_name = "PATH")]
    pub lb_bin: Option<PathBuf>,
    /// Directory holding the hash plugins (liblb_hash_*.so) [default: the lb binary's directory].
    #[arg(long, global = true, value_name = "DIR")]
    pub plugin_dir: Option<PathBuf>,
    /// Requests per measurement (A-1, and each N of A-2).
    #[arg(long, global = true, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub requests: u32,
    /// Requests in flight at once.
    #[arg(long, global = true, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=2_000))]
    pub concurrency: u32,
    /// Seed for the random 6-digit request ids [default: random, printed and put in the report].
    #[arg(long, global = true)]
    pub seed: Option<u64>,
    /// Output directory for charts, data and report.md.
    #[arg(
        long,
        global = true,
        default_value = "analysis/out",
        value_name = "DIR"
    )]
    pub out: PathBuf,
    /// Upper bound on the duration of one measurement, in seconds (requests not sent by then are
    /// reported as not sent).
    #[arg(long, global = true, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub phase_timeout: u64,
    /// A-5's replica counts of the offline comparison, comma-separated (each 1..=1000).
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_values_t = crate::experiments::a5::COUNTS,
        value_parser = clap::value_parser!(u64).range(1..=1000)
    )]
    pub a5_counts: Vec<u64>,
    /// A-6's replica counts of the offline weighted tables, comma-separated (each 1..=1000;
    /// weights cycle 1, 2, 3).
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_values_t = crate::experiments::a6::COUNTS,
        value_parser = clap::value_parser!(u64).range(1..=1000)
    )]
    pub a6_counts: Vec<u64>,
    /// A-3's parts to run, comma-separated: checks, kill, hang, slowloris, supervisors (the kill
    /// per supervisor), stall (hostile saves of lb.toml with a kill at the same moment), loop
    /// (lb's own address at /add, a request with its own loop mark).
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_values_t = A3Phase::ALL,
        value_name = "PHASES"
    )]
    pub a3_phases: Vec<A3Phase>,
}
