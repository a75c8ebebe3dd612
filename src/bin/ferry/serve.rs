//! `ferry serve` and `ferry check`.

use clap::Args;
use ferry::api::ConsoleOptions;
use ferry::config::FerryConfig;
use ferry::orchestrator::Orchestrator;
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
    let orch = tokio::task::spawn_blocking(move || Orchestrator::start(&start_config))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let app = ferry::api::with_console(
        ferry::api::router(orch.clone(), &config.server),
        console.clone(),
    );
    // The first line on stdout: scripts and tests read the address from it.
    println!("ferry listening on http://{addr}");
    tracing::info!(%addr, worker_types = ?orch.worker_types().collect::<Vec<_>>(), "serving");
    let stop = Arc::new(tokio::sync::Notify::new());
    let stop_signal = stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop_signal.notified().await })
            .await
    });
    wait_for_signal().await;
    tracing::info!("stopping: draining in-flight requests");
    stop.notify_one();
    console.close_streams();
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    match tokio::time::timeout(grace, server).await {
        Ok(Ok(Ok(()))) => tracing::info!("drained"),
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server ended with an error"),
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

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
