//! `lb`: run the load balancer, validate a configuration, or run as a replica.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use lb::{CheckError, DEFAULTS_PATH, DEFAULT_PATH};
use lb_balance::ring::{Probing, RingParams};
use lb_balance::{Algorithm, Balancer};

/// Consistent-hashing HTTP load balancer.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    args_conflicts_with_subcommands = true,
    after_help = "Signals: SIGHUP re-reads the configuration; SIGUSR2 upgrades the binary (lb \
                  upgrade); SIGTERM and SIGINT stop accepting, \
                  let in-flight requests finish (up to drain_timeout_ms), stop the replicas and \
                  exit 0; a second SIGINT exits at once.\n\
                  Documentation: README.md; the contract (endpoints, JSON bodies, hash math): \
                  docs/SPEC.md; the code's map: docs/ARCHITECTURE.md."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// The configuration file lb follows and writes replica changes back to. Where it does not
    /// exist it is created as a copy of --defaults (the default path is ignored by git).
    #[arg(long, default_value = DEFAULT_PATH)]
    config: PathBuf,
    /// What a new configuration file is copied from; where this does not exist either, the
    /// copy of config/lb.toml compiled into lb.
    #[arg(long, default_value = DEFAULTS_PATH)]
    defaults: PathBuf,
    /// Listen on this address (HOST:PORT; a host name such as localhost is resolved) instead of
    /// the configuration's `listen`.
    #[arg(long, value_parser = parse_listen)]
    listen: Option<SocketAddr>,
}

/// `HOST:PORT` with HOST an IP address (`[::1]` for IPv6) or a name to resolve.
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    match text.to_socket_addrs() {
        // IPv4 first, so `localhost:5000` means 127.0.0.1 as users expect.
        Ok(addrs) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            addrs
                .iter()
                .find(|a| a.is_ipv4())
                .or(addrs.first())
                .copied()
                .ok_or_else(|| format!("{text} resolves to no address"))
        }
        Err(e) => Err(format!(
            "{text} is not HOST:PORT with a known host ({})",
            e.kind()
        )),
    }
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Validate a configuration file without starting anything: every problem, with line and
    /// column. Exit status 0 when it is valid, 1 otherwise.
    Check {
        /// The file. Default: the one `lb` with no options would run on (config/lb.local.toml,
        /// or before that exists config/lb.toml, or the embedded copy).
        path: Option<PathBuf>,
    },
    /// Show how a ring (or Maglev, or rendezvous) shares slots and request ids among replicas
    /// 1..=N, for any hash.
    Share(ShareArgs),
    /// Docker Swarm: remove an instance's replica services (they outlive every lb on purpose).
    #[command(subcommand)]
    Swarm(SwarmCmd),
    /// HTTPS helpers.
    #[command(subcommand)]
    Tls(TlsCmd),
    /// Upgrade a running lb on this machine to the binary now at the path it was started from
    /// (SIGUSR2): the new process takes the listening sockets and the replicas, the old one
    /// finishes its connections and exits; no connection is refused or dropped. Waits until
    /// the new generation serves (exit 0) or says why not (exit 1; the old one goes on
    /// serving).
    Upgrade {
        /// Where the running lb serves /_lb/status (its admin address with [admin] listen).
        #[arg(long, default_value = "http://127.0.0.1:5000")]
        url: String,
        /// The admin token, if one is set.
        #[arg(long, env = "LB_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// How long to wait for the new generation, in seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Show what a change would move before it is made: per replica its share before → after
    /// and the keys it gains and loses, and the total moved against the least possible. Asks
    /// the running lb (POST /_lb/plan) about a new file or an API change; with --from, compares
    /// two files offline.
    Plan {
        /// A new configuration file.
        new: Option<PathBuf>,
        /// Offline: the file the change starts from (instead of the running lb).
        #[arg(long)]
        from: Option<PathBuf>,
        /// Replicas an /add would add.
        #[arg(long)]
        add: Option<usize>,
        /// A replica an /rm would remove, by hostname (repeat for more).
        #[arg(long)]
        rm: Vec<String>,
        /// A new weight, HOSTNAME=W (repeat for more).
        #[arg(long)]
        weight: Vec<String>,
        /// Where the running lb serves /_lb/plan (its admin address with [admin] listen).
        #[arg(long, default_value = "http://127.0.0.1:5000")]
        url: String,
        /// The admin token, if one is set.
        #[arg(long, env = "LB_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Print the plan as JSON (with every slot's owner after the change).
        #[arg(long)]
        json: bool,
    },
    /// Run as a replica (what the process supervisor starts).
    #[command(hide = true)]
    Replica(server::ServerArgs),
    /// Run a replica and kill it once every lb holding the lifeline is gone (what the process
    /// supervisor runs each replica under).
    #[command(hide = true)]
    Keep {
        /// The replica's name, for its log lines.
        #[arg(long)]
        name: String,
        /// The lifeline's read end.
        #[arg(long)]
        lifeline_fd: i32,
        /// The program and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
}

#[derive(Subcommand, Debug)]
enum SwarmCmd {
    /// Remove every replica service of an instance (`[supervisor] instance`) from the swarm
    /// this machine's Docker engine manages; lb processes of the instance that still run see
    /// their replicas leave.
    Down {
        /// The instance.
        #[arg(long)]
        instance: String,
    },
}

#[derive(Subcommand, Debug)]
enum TlsCmd {
    /// Write a local certificate authority (ca.pem, ca.key) and a certificate it signed for the
    /// given names (cert.pem with the chain, key.pem) into --out, for trying HTTPS on this
    /// machine: `curl --cacert DIR/ca.pem https://localhost:5443/home`. Never overwrites a file.
    SelfSigned {
        /// A DNS name (`localhost`, `*.example.test`) or IP address the certificate is for; may
        /// be repeated. The first is also its common name.
        #[arg(long = "name", required = true)]
        names: Vec<String>,
        /// The directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(clap::Args, Debug)]
struct ShareArgs {
    /// ring, maglev (--slots must be a prime, such as 65537) or rendezvous.
    #[arg(long, default_value = "ring")]
    algorithm: String,
    /// Hash functions: "spec" or a plugin name.
    #[arg(long, default_value = "spec")]
    hash: String,
    /// Number of replicas (server ids 1..=N).
    #[arg(long, short = 'n', default_value_t = 3)]
    replicas: u64,
    /// M.
    #[arg(long, default_value_t = 512)]
    slots: u32,
    /// K (the ring's only).
    #[arg(long, default_value_t = 9)]
    virtual_nodes: u32,
    /// linear or quadratic (the ring's only).
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
        Some(Cmd::Keep {
            name,
            lifeline_fd,
            command,
        }) => keep(name, lifeline_fd, command),
        Some(Cmd::Check { path }) => check(path),
        Some(Cmd::Share(args)) => share(&args),
        Some(Cmd::Swarm(SwarmCmd::Down { instance })) => swarm_down(&instance),
        Some(Cmd::Tls(TlsCmd::SelfSigned { names, out })) => self_signed(&names, &out),
        Some(Cmd::Upgrade {
            url,
            token,
            timeout,
        }) => upgrade(&url, token.as_deref(), timeout),
        Some(Cmd::Plan {
            new,
            from,
            add,
            rm,
            weight,
            url,
            token,
            json,
        }) => plan(
            &lb::PlanRequest {
                new,
                from,
                add,
                rm,
                weights: weight,
                url,
                token,
            },
            json,
        ),
        None => lb::run(lb::Options {
            create_dirs: cli.config != std::path::Path::new(DEFAULT_PATH),
            config: cli.config,
            defaults: cli.defaults,
            listen: cli.listen,
        })
        .map_err(anyhow::Error::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lb: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `lb plan`: the table, or the JSON with `--json`.
fn plan(request: &lb::PlanRequest, json: bool) -> anyhow::Result<()> {
    let plan = lb::plan(request)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", plan.table());
    }
    Ok(())
}

/// `lb keep --name NAME --lifeline-fd N -- PROGRAM ARGS…`: ends as the replica ended.
fn keep(name: String, lifeline_fd: i32, command: Vec<std::ffi::OsString>) -> anyhow::Result<()> {
    let ended = lb::keep(lb::Keep {
        name,
        lifeline_fd,
        command,
    })?;
    ended.mirror()
}

/// `lb upgrade [--url URL] [--token T] [--timeout S]`.
fn upgrade(url: &str, token: Option<&str>, timeout: u64) -> anyhow::Result<()> {
    let done = lb::upgrade(url, token, std::time::Duration::from_secs(timeout))?;
    println!(
        "upgraded: pid {} (generation {}) -> pid {} (generation {})",
        done.from_pid, done.from_generation, done.pid, done.generation
    );
    Ok(())
}

/// `lb swarm down --instance NAME`.
fn swarm_down(instance: &str) -> anyhow::Result<()> {
    let removed = lb::swarm_down(instance)?;
    if removed.is_empty() {
        println!("nothing of instance {instance} in the swarm");
    } else {
        println!("removed from instance {instance}: {}", removed.join(", "));
    }
    Ok(())
}

/// `lb tls self-signed --name NAME… --out DIR`.
fn self_signed(names: &[String], out: &std::path::Path) -> anyhow::Result<()> {
    let files = lb::self_signed(names, out)?;
    println!(
        "certificate for {} (90 days), signed by a local CA (10 years):",
        files.names.join(", ")
    );
    for (what, path) in [
        ("cert", &files.cert),
        ("key", &files.key),
        ("CA (trust this)", &files.ca),
        ("CA key (keep private)", &files.ca_key),
    ] {
        println!("  {what:<22} {}", path.display());
    }
    // lb.toml's paths are relative to its own folder: show absolute ones.
    let absolute = |path: &std::path::Path| {
        std::fs::canonicalize(path)
            .unwrap_or_else(|_| path.to_path_buf())
            .display()
            .to_string()
    };
    println!(
        "in lb.toml:\n  [tls]\n  listen = \"127.0.0.1:5443\"\n  [[tls.certificates]]\n  cert = {:?}\n  key = {:?}",
        absolute(&files.cert),
        absolute(&files.key)
    );
    println!(
        "then: curl --cacert {} https://{}:5443/home",
        files.ca.display(),
        files.names[0].replacen('*', "www", 1)
    );
    Ok(())
}

/// `lb check`: print every problem as `lb: FILE: line L, column C: message`, or one `ok` line.
fn check(path: Option<PathBuf>) -> anyhow::Result<()> {
    match lb::check(path.as_deref()) {
        Ok(checked) => {
            println!("{}: {}", checked.name, checked.summary);
            Ok(())
        }
        Err(CheckError::Invalid { name, problems }) => {
            for problem in &problems {
                eprintln!("lb: {name}: {problem}");
            }
            if problems.len() > 1 {
                eprintln!("lb: {name}: {} problems", problems.len());
            }
            std::process::exit(1);
        }
        Err(e) => Err(e.into()),
    }
}

fn share(args: &ShareArgs) -> anyhow::Result<()> {
    let probing = match args.probing.as_str() {
        "linear" => Probing::Linear,
        "quadratic" => Probing::Quadratic,
        other => anyhow::bail!("probing must be linear or quadratic, not {other:?}"),
    };
    let algorithm = match Algorithm::ALL
        .into_iter()
        .find(|a| a.name() == args.algorithm)
    {
        Some(algorithm) => algorithm,
        None => anyhow::bail!(
            "algorithm must be ring, maglev or rendezvous, not {:?}",
            args.algorithm
        ),
    };
    let params = RingParams {
        slots: args.slots,
        virtual_nodes: args.virtual_nodes,
        probing,
    };
    let balancer = Balancer::new(algorithm, params);
    let hash = lb_balance::plugin::resolve_any(
        &args.hash,
        &lb_balance::plugin::search_path(&args.plugin_dir),
    )?;
    let ids: Vec<u64> = (1..=args.replicas).collect();
    let ring = balancer.place(Arc::clone(&hash), &ids)?;
    let slots = ring.slot_counts();
    // The assignment's request ids: every 6-digit number.
    let mut requests = vec![0u64; ids.len()];
    for r in 100_000..=999_999u64 {
        if let Some(member) = ring.lookup(r) {
            requests[member] += 1;
        }
    }
    let total_requests: u64 = requests.iter().sum();
    match balancer {
        Balancer::Ring(_) => println!(
            "hash {} — M = {}, K = {}, {} probing, N = {} (server ids 1..={})",
            hash.name(),
            params.slots,
            params.virtual_nodes,
            params.probing,
            ids.len(),
            ids.len()
        ),
        other => println!(
            "hash {} — {other}, M = {}, N = {} (server ids 1..={})",
            hash.name(),
            params.slots,
            ids.len(),
            ids.len()
        ),
    }
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
