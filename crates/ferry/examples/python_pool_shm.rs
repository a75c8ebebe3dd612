//! A host that starts a pool of two Python workers over shared memory and calls one.
//!
//! ```sh
//! cargo run -p ferry --example python_pool_shm
//! ```
//!
//! The workers run `python -m ferry_worker.echo` (the Python package in `workers/`, which
//! `scripts/test` builds into `.venv`): the Python is `$FERRY_PYTHON`, else the workspace's
//! `.venv/bin/python`. `docs/embedding.md` walks through it.

use ferry::prelude::*;
use serde_json::json;
use std::process::ExitCode;

fn main() -> ExitCode {
    let python = std::env::var("FERRY_PYTHON").unwrap_or_else(|_| {
        let workspace = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        format!("{workspace}/.venv/bin/python")
    });
    match run(&python).and_then(|()| errors(&python)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("python_pool_shm: {e} (code {})", e.code());
            ExitCode::FAILURE
        }
    }
}

// ANCHOR: host
fn run(python: &str) -> Result<(), PoolError> {
    let spec = WorkerSpec::new("echo", python, ["-m", "ferry_worker.echo"])
        .shm(ShmOptions::default())
        .codec(CodecKind::MsgPack);
    let pool = Pool::start(spec, PoolConfig::default().workers(2, 2).strict_start(true))?;
    let reply = pool.send(Call::new("echo").data(json!({"hello": "world"})))?;
    println!("{}", reply.data);
    pool.shutdown();
    Ok(())
}
// ANCHOR_END: host

// ANCHOR: errors
fn errors(python: &str) -> Result<(), PoolError> {
    // A worker that cannot start: with `strict_start`, `Pool::start` says why.
    let missing = WorkerSpec::new("echo", "/nonexistent/python", ["-m", "ferry_worker.echo"]);
    match Pool::start(missing, PoolConfig::default().strict_start(true)) {
        Err(PoolError::Spawn(e @ SpawnError::CannotStart { .. })) => {
            assert_eq!(e.code(), ErrorCode::StartupFailed);
            println!("no pool: {e}");
        }
        Err(other) => return Err(other),
        Ok(_) => panic!("a missing program started"),
    }

    // A worker that answers with an error: its code and message, as the worker sent them.
    let spec = WorkerSpec::new("echo", python, ["-m", "ferry_worker.echo"]);
    let pool = Pool::start(spec, PoolConfig::default())?;
    let fail = json!({"code": "invalid_request", "message": "no prompt"});
    match pool.send(Call::new("fail").data(fail)) {
        Err(PoolError::Call(CallError::Remote(body))) => {
            assert_eq!(body.code, ErrorCode::InvalidRequest);
            println!(
                "refused: {} ({}, retryable: {})",
                body.message, body.code, body.retryable
            );
        }
        Err(other) => return Err(other),
        Ok(reply) => panic!("`fail` answered {}", reply.data),
    }

    // Any error, by its stable code: a deadline that passes is `timeout`.
    let slow = Call::new("sleep")
        .data(json!({"ms": 5_000, "steps": 50}))
        .deadline(std::time::Duration::from_millis(200));
    let err = pool.send(slow).expect_err("5 s of work in 200 ms");
    assert_eq!(err.code(), ErrorCode::Timeout);
    println!("{} (retryable: {})", err, err.code().is_retryable());
    pool.shutdown();
    Ok(())
}
// ANCHOR_END: errors
