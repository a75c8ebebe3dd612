//! The Rust runtime's log lines (`tracing`) go to stderr, and so into the host's log,
//! beside Python's `logging` output.

/// The variable that sets the runtime's log filter (`tracing` syntax, default `warn`).
pub const FERRY_LOG: &str = "FERRY_LOG";

/// Installs a stderr subscriber once; a no-op if the process already has one.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env(FERRY_LOG)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(false)
        .try_init();
}
