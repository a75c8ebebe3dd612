//! Forwards a worker's stderr into the host's `tracing` log, tagged with the worker id.

use std::io::{BufRead, BufReader, Read};
use std::thread::JoinHandle;

/// Log target of forwarded worker stderr lines; filter it with `RUST_LOG`.
pub const STDERR_TARGET: &str = "ferry::worker::stderr";

/// Runs when a worker's stderr reaches end of file (it has exited, or closed it).
pub type ExitHook = std::sync::Arc<dyn Fn() + Send + Sync>;

/// Starts a thread that logs each line of `stderr` until it closes, then runs `on_close`.
pub(crate) fn forward(
    stderr: impl Read + Send + 'static,
    worker_id: String,
    on_close: Option<ExitHook>,
) -> Option<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("stderr-{worker_id}"))
        .spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&line);
                        tracing::info!(target: STDERR_TARGET, worker = %worker_id, "{}", text.trim_end());
                    }
                }
            }
            if let Some(hook) = on_close {
                hook();
            }
        })
        .ok()
}
