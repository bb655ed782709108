//! Where `lb` logs: the same for the load balancer and the keepers of its replicas.

/// `lb`'s log: to stderr, filtered by `RUST_LOG` (default `info`), in colour on a terminal.
/// The keeper of each process replica (`lb keep`) logs the same way.
pub(crate) fn to_stderr() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
