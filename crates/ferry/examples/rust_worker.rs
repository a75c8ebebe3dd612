//! A worker written in Rust with `handler_fn`, and a host that starts it and calls it.
//!
//! ```sh
//! cargo run -p ferry --example rust_worker -- --host
//! ```
//!
//! With `--host` this program starts itself again as the worker, over shared memory, and
//! calls it; started by a host (which sets `FERRY_TRANSPORT`), it serves. Run without
//! `--host` from a terminal it is the host too: one command shows both ends.

use ferry::prelude::*;
use ferry::worker::env::FERRY_TRANSPORT;
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let started_by_host = std::env::var_os(FERRY_TRANSPORT).is_some();
    if started_by_host && !std::env::args().any(|a| a == "--host") {
        worker()?;
    } else {
        host()?;
    }
    Ok(())
}

// ANCHOR: worker
fn worker() -> Result<(), ferry::worker::ServeError> {
    let handler = handler_fn(|request, ctx| match request.operation() {
        "upper" => {
            let text = request.data()["text"].as_str().unwrap_or_default();
            Ok(json!({"text": text.to_uppercase()}))
        }
        "count" => {
            let to = request.data()["to"].as_u64().unwrap_or(3);
            for i in 1..=to {
                ctx.check_cancelled()?;
                ctx.progress(i as f64 / to as f64, "count", &format!("{i} of {to}"))?;
            }
            Ok(json!({"counted": to}))
        }
        other => Err(HandlerError::unknown_operation(other)),
    });
    serve("text", &["upper", "count"], handler)
}
// ANCHOR_END: worker

// ANCHOR: host
fn host() -> Result<(), Box<dyn std::error::Error>> {
    let this_program = std::env::current_exe()?.display().to_string();
    let spec = WorkerSpec::new("text", this_program, Vec::<String>::new())
        .shm(ShmOptions::default())
        .codec(CodecKind::Bincode);
    let mut worker = WorkerProcess::spawn(spec)?;

    let reply = worker.send(Call::new("upper").data(json!({"text": "ferry"})))?;
    println!("upper: {}", reply.data);

    let count = Call::new("count").data(json!({"to": 3})).on_event(|event| {
        if let Event::Progress(p) = event {
            println!("{:>3.0}% {}", p.fraction * 100.0, p.message);
        }
    });
    println!("count: {}", worker.send(count)?.data);

    let err = worker.send(Call::new("lower")).unwrap_err();
    println!("lower: {err} ({})", err.code());
    worker.shutdown()?;
    Ok(())
}
// ANCHOR_END: host
