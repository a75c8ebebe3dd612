//! `ferry serve` and `ferry check`.

use clap::Args;
use ferry_server::api::ConsoleOptions;
use ferry_server::config::FerryConfig;
use ferry_server::orchestrator::Orchestrator;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct ServeArgs {
    /// The configuration file.
    #[arg(long, default_value = "ferry.toml")]
    config: PathBuf,
    /// Listen here instead of `server.bind` (port 0 picks a free port).
    #[arg(long)]
    bind: Option<String>,
    /// The `ferry bench --json` file the console charts (`GET /api/bench/latest`). Default:
    /// `docs/bench/latest.json` in the configuration file's folder.
    #[arg(long)]
    bench_json: Option<PathBuf>,
}

#[derive(Args)]
pub struct CheckArgs {
    /// The configuration file.
    #[arg(long, default_value = "ferry.toml")]
    config: PathBuf,
}

pub fn check(args: CheckArgs) -> ExitCode {
    match FerryConfig::load(&args.config) {
        Ok(c) => {
            println!(
                "ok: {} worker type(s), {} workflow(s), listening on {}",
                c.workers.len(),
                c.workflows.len(),
                c.server.bind
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

pub fn serve(args: ServeArgs) -> ExitCode {
    let mut config = match FerryConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(bind) = args.bind {
        config.server.bind = bind;
    }
    raise_fd_limit(&config.server);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bench_json = args
        .bench_json
        .unwrap_or_else(|| ConsoleOptions::default_bench_json(&args.config));
    match runtime.block_on(run(config, ConsoleOptions::new(Some(bench_json)))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: FerryConfig, console: ConsoleOptions) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(&config.server.bind)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.server.bind))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let start_config = config.clone();
    let orch = Orchestrator::start(&start_config)
        .await
        .map_err(|e| e.to_string())?;
    let app = ferry_server::api::with_console(
        ferry_server::api::router(orch.clone(), &config.server),
        console.clone(),
    );
    let stopped = stop_signal();
    // The first line on stdout: scripts and tests read the address from it.
    println!("ferry listening on http://{addr}");
    tracing::info!(%addr, worker_types = ?orch.worker_types().collect::<Vec<_>>(), "serving");
    let stop = Arc::new(tokio::sync::Notify::new());
    let stop_signal = stop.clone();
    let server_config = config.server.clone();
    let server = tokio::spawn(async move {
        ferry_server::api::serve(listener, app, &server_config, async move {
            stop_signal.notified().await
        })
        .await
    });
    stopped.await;
    tracing::info!("stopping: draining in-flight requests");
    stop.notify_one();
    console.close_streams();
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    match tokio::time::timeout(grace, server).await {
        Ok(Ok(())) => tracing::info!("drained"),
        Ok(Err(e)) => tracing::warn!(error = %e, "server task failed"),
        Err(_) => tracing::warn!(
            ?grace,
            "grace period over; abandoning requests still in flight"
        ),
    }
    tokio::task::spawn_blocking(move || orch.shutdown())
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!("stopped");
    Ok(())
}

/// Raises the soft limit on open files to the hard limit: each connection is a
/// descriptor, and running out of them stops `/health` from answering too. Warns when the
/// limit is still below what the connection caps may use.
fn raise_fd_limit(server: &ferry_server::config::ServerConfig) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let soft = match (limit.current, limit.maximum) {
        (Some(current), Some(maximum)) if current < maximum => {
            let raised = Rlimit {
                current: Some(maximum),
                maximum: Some(maximum),
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => Some(maximum),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot raise the open-files limit");
                    Some(current)
                }
            }
        }
        (current, _) => current,
    };
    // Listener, workers' pipes and sockets, logs: a margin over the connections.
    let wanted = (server.max_connections + server.health_connections) as u64 + 256;
    if let Some(soft) = soft.filter(|s| *s < wanted) {
        tracing::warn!(
            limit = soft,
            wanted,
            "the open-files limit is below max_connections + health_connections + 256; \
             accepting will pause when it is reached"
        );
    }
}

/// SIGINT or SIGTERM, listened for from creation (so one sent right after the listening
/// line is printed is not lost to the default action).
fn stop_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let int = signal(SignalKind::interrupt());
        let term = signal(SignalKind::terminate());
        async move {
            match (int, term) {
                (Ok(mut int), Ok(mut term)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
