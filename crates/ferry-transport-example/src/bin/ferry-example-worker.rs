//! ferry's echo worker served over the example transport: what a worker of a custom
//! transport looks like. The host (`WorkerSpec::custom_transport(PipeTransport)`) sets the
//! usual `FERRY_*` variables and passes the pipes; this builds the link itself and hands it
//! to `ferry::worker::serve_link`.

use ferry::codec::{Codec, CodecKind, DEFAULT_MAX_FRAME};
use ferry::protocol::ReadyInfo;
use ferry::worker::env::{FERRY_CODEC, FERRY_MAX_FRAME, FERRY_TRANSPORT};
use ferry::worker::{echo, serve_link};
use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry-example-worker: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let var = |k: &str| std::env::var(k).ok();
    if let Some(name) = var(FERRY_TRANSPORT).filter(|n| n != ferry_transport_example::NAME) {
        return Err(format!("{FERRY_TRANSPORT}={name}: this worker speaks only pipes").into());
    }
    let codec = match var(FERRY_CODEC) {
        Some(name) => name.parse::<CodecKind>()?,
        None => CodecKind::default(),
    };
    let max_frame = match var(FERRY_MAX_FRAME) {
        Some(n) => n.parse::<usize>()?,
        None => DEFAULT_MAX_FRAME,
    };
    // End with the host even in the middle of a handler, as `ferry::worker::serve` does
    // for the built-in transports.
    ferry::worker::watchdog::start();
    let link = ferry_transport_example::worker_link(max_frame)?;
    let codec = Codec::new(codec, link.framing, max_frame)?;
    let operations = echo::OPERATIONS.iter().map(|op| (*op).to_owned()).collect();
    serve_link(link, codec, ReadyInfo::new("echo", operations), echo::Echo)?;
    Ok(())
}
