//! An async host: calls from a tokio current-thread runtime with `Pool::send_async`.
//!
//! ```sh
//! cargo run -p ferry --example async_host
//! ```
//!
//! Its workers are this program again, serving the built-in Rust echo handler
//! (`ferry::worker::echo`: `echo`, and `sleep` with progress events), so it needs nothing
//! else.

use ferry::prelude::*;
use ferry::worker::echo;
use ferry::worker::env::FERRY_TRANSPORT;
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os(FERRY_TRANSPORT).is_some() {
        // Started by the pool: be the worker.
        serve("echo", &echo::OPERATIONS, echo::Echo)?;
        return Ok(());
    }
    // ANCHOR: main
    let this_program = std::env::current_exe()?.display().to_string();
    let spec = WorkerSpec::new("echo", this_program, Vec::<String>::new())
        .shm(ShmOptions::default())
        .codec(CodecKind::MsgPack);
    // `Pool::start` blocks until the first workers are ready: start the pool before
    // entering the runtime (or in `spawn_blocking`).
    let pool = Pool::start(spec, PoolConfig::default().workers(2, 2))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    runtime.block_on(calls(&pool))?;
    pool.shutdown();
    Ok(())
    // ANCHOR_END: main
}

// ANCHOR: calls
async fn calls(pool: &Pool) -> Result<(), PoolError> {
    // Two calls in flight at once from one thread; neither blocks the runtime.
    let slow = Call::new("sleep")
        .data(json!({"ms": 300, "steps": 3}))
        .on_event(|event| match event {
            Event::Progress(p) => println!("sleep: {:>3.0}% {}", p.fraction * 100.0, p.message),
            other => println!("sleep: event {}", other.name()),
        });
    let quick = Call::new("echo").data(json!({"hello": "async"}));
    let (slow, quick) = tokio::join!(pool.send_async(slow), pool.send_async(quick));
    println!("echo: {}", quick?.data);
    println!("sleep: {}", slow?.data);
    Ok(())
}
// ANCHOR_END: calls
