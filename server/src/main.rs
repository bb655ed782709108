//! `server`: a standalone replica (SPEC §1). `server --hostname "Server 1" --port 5000`.

use clap::Parser;

/// A load-balancer replica answering `GET /home` and `GET /heartbeat`.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    args: server::ServerArgs,
}

fn main() -> anyhow::Result<()> {
    server::run(Cli::parse().args)
}
