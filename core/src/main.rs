//! `lb`: run the load balancer, validate a configuration, or run as a replica.

mod boot;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};

use lb::config::{Config, DEFAULT_PATH};
use lb_balance::ring::{self, Probing, RingParams};

/// Consistent-hashing HTTP load balancer.
#[derive(Parser, Debug)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Configuration file. When the default path does not exist, the embedded default is used.
    #[arg(long, default_value = DEFAULT_PATH)]
    config: PathBuf,
    /// Listen on this address instead of the configuration's `listen`.
    #[arg(long)]
    listen: Option<SocketAddr>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Validate a configuration file without starting anything.
    Check {
        /// The file.
        path: PathBuf,
    },
    /// Show how a ring shares slots and request ids among replicas 1..=N, for any hash.
    Share(ShareArgs),
    /// Run as a replica (what the process supervisor starts).
    #[command(hide = true)]
    Replica(server::ServerArgs),
}

#[derive(clap::Args, Debug)]
struct ShareArgs {
    /// Hash functions: "spec" or a plugin name.
    #[arg(long, default_value = "spec")]
    hash: String,
    /// Number of replicas (server ids 1..=N).
    #[arg(long, short = 'n', default_value_t = 3)]
    replicas: u64,
    /// M.
    #[arg(long, default_value_t = 512)]
    slots: u32,
    /// K.
    #[arg(long, default_value_t = 9)]
    virtual_nodes: u32,
    /// linear or quadratic.
    #[arg(long, default_value = "linear")]
    probing: String,
    /// Extra plugin directory (searched before the defaults); may be repeated.
    #[arg(long)]
    plugin_dir: Vec<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Cmd::Replica(args)) => server::run(args),
        Some(Cmd::Check { path }) => check(&path),
        Some(Cmd::Share(args)) => share(&args),
        // The control plane (controller, health checks, file watcher, supervisor) needs little;
        // requests are served by the worker threads (see lb::data::workers).
        None => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(boot::run(cli.config, cli.listen))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lb: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path).with_context(|| path.display().to_string())?;
    config
        .resolve_hash()
        .with_context(|| path.display().to_string())?;
    let p = config.ring_params();
    println!(
        "{}: ok ({} replicas, {} slots, {} virtual nodes, {} probing, hash {:?})",
        path.display(),
        config.replicas.len(),
        p.slots,
        p.virtual_nodes,
        p.probing,
        config.ring.hash.get_ref()
    );
    Ok(())
}

fn share(args: &ShareArgs) -> anyhow::Result<()> {
    let probing = match args.probing.as_str() {
        "linear" => Probing::Linear,
        "quadratic" => Probing::Quadratic,
        other => anyhow::bail!("probing must be linear or quadratic, not {other:?}"),
    };
    let params = RingParams {
        slots: args.slots,
        virtual_nodes: args.virtual_nodes,
        probing,
    };
    let hash = lb_balance::plugin::resolve_any(
        &args.hash,
        &lb_balance::plugin::search_path(&args.plugin_dir),
    )?;
    let ids: Vec<u64> = (1..=args.replicas).collect();
    let ring = ring::build(params, Arc::clone(&hash), &ids)?;
    let slots = ring.slot_counts();
    // The assignment's request ids: every 6-digit number.
    let mut requests = vec![0u64; ids.len()];
    for r in 100_000..=999_999u64 {
        if let Some(member) = ring.lookup(r) {
            requests[member] += 1;
        }
    }
    let total_requests: u64 = requests.iter().sum();
    println!(
        "hash {} — M = {}, K = {}, {} probing, N = {} (server ids 1..={})",
        hash.name(),
        params.slots,
        params.virtual_nodes,
        params.probing,
        ids.len(),
        ids.len()
    );
    println!("server id  slots  share of slots  share of request ids 100000..=999999");
    for (k, id) in ids.iter().enumerate() {
        println!(
            "{id:>9}  {:>5}  {:>13.1}%  {:>13.1}%",
            slots[k],
            100.0 * f64::from(slots[k]) / f64::from(params.slots),
            100.0 * requests[k] as f64 / total_requests as f64
        );
    }
    let shares: Vec<f64> = slots.iter().map(|&s| f64::from(s)).collect();
    let mean = shares.iter().sum::<f64>() / shares.len() as f64;
    let max = shares.iter().copied().fold(0.0, f64::max);
    let cv = (shares.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / shares.len() as f64).sqrt()
        / mean;
    println!(
        "slots: max/avg {:.2}, coefficient of variation {:.2}",
        max / mean,
        cv
    );
    Ok(())
}
