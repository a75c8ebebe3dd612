//! The Rust echo worker's handler, served by `ferry worker echo`; used by tests, benches
//! and the README's first run.
//!
//! Operations:
//! - `echo`: answers the request's data and attachments unchanged, with no metrics (it is
//!   not timed: [`Handler::timed`]).
//! - `sleep` `{"ms": 100, "steps": 10}`: works for `ms` in `steps` steps, sending a progress
//!   event and checking for cancellation after each; answers `{"slept_ms", "steps"}`.
//! - `fail` `{"code": "invalid_request", "message": "..."}`: answers that error.
//! - `print` : writes a line to stdout (which the runtime points at stderr) and echoes (not
//!   timed either).

use super::{Context, Handler, HandlerError, Reply, ReplyRef, Request};
use crate::protocol::ErrorCode;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::time::Duration;

/// The operations the echo handler serves.
pub const OPERATIONS: [&str; 4] = ["echo", "sleep", "fail", "print"];

/// The echo worker's handler as a [`Handler`] that answers `echo` and `print` with the
/// request's own data and attachments, borrowed (nothing copied); what `ferry worker echo`
/// serves. [`handle`] is the same handler as a function, copying.
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl Handler for Echo {
    fn handle(
        &mut self,
        request: &Request<'_>,
        ctx: &mut Context<'_>,
    ) -> Result<Reply, HandlerError> {
        handle(request, ctx)
    }

    fn handle_borrowed<'r>(
        &mut self,
        request: &Request<'r>,
        ctx: &mut Context<'_>,
    ) -> Result<ReplyRef<'r>, HandlerError> {
        let echo = || ReplyRef {
            data: Cow::Borrowed(request.data_ref()),
            attachments: request
                .attachments
                .iter()
                .map(|a| Cow::Borrowed(*a))
                .collect(),
            metrics: None,
        };
        match request.operation() {
            "echo" => Ok(echo()),
            "print" => {
                print_line();
                Ok(echo())
            }
            _ => handle(request, ctx).map(ReplyRef::from),
        }
    }

    /// `echo`, `print` and `fail` answer at once; `sleep` runs long and checks for cancels.
    fn in_place(&self, operation: &str) -> bool {
        matches!(operation, "echo" | "print" | "fail")
    }

    /// An echo takes a fraction of a microsecond: timing it would cost 5-7% of a small shm
    /// round trip and say nothing. `sleep` is timed.
    fn timed(&self, operation: &str) -> bool {
        !matches!(operation, "echo" | "print")
    }
}

fn print_line() {
    println!("a library printing to stdout must not corrupt the channel");
}

/// The echo worker's handler.
pub fn handle(request: &Request<'_>, ctx: &mut Context<'_>) -> Result<Reply, HandlerError> {
    match request.operation() {
        "echo" => Ok(echo(request)),
        "print" => {
            print_line();
            Ok(echo(request))
        }
        "sleep" => sleep(request.data(), ctx),
        "fail" => {
            let data = request.data();
            let code = data
                .get("code")
                .and_then(Value::as_str)
                .and_then(ErrorCode::parse)
                .unwrap_or(ErrorCode::Internal);
            let message = data
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("requested failure");
            Err(HandlerError::new(code, message))
        }
        other => Err(HandlerError::new(
            ErrorCode::UnknownOperation,
            format!("echo worker has no operation `{other}`"),
        )),
    }
}

fn echo(request: &Request<'_>) -> Reply {
    Reply {
        data: request.data().clone(),
        attachments: request.attachments.iter().map(|a| a.to_vec()).collect(),
        metrics: None,
    }
}

fn sleep(data: &Value, ctx: &mut Context<'_>) -> Result<Reply, HandlerError> {
    let field = |name: &str, default: u64| -> Result<u64, HandlerError> {
        match data.get(name) {
            None => Ok(default),
            Some(v) => v.as_u64().ok_or_else(|| {
                HandlerError::invalid_request(format!(
                    "data.{name}: expected a non-negative integer"
                ))
            }),
        }
    };
    let ms = field("ms", 100)?;
    // The step count divides a `Duration`, which takes a `u32`: a larger count is refused
    // instead of being truncated (4294967296 would become 0 and panic on the division).
    let steps = u32::try_from(field("steps", 10)?.max(1))
        .map_err(|_| HandlerError::invalid_request(format!("data.steps: at most {}", u32::MAX)))?;
    let step = Duration::from_millis(ms) / steps;
    for i in 1..=steps {
        std::thread::sleep(step);
        ctx.check_cancelled()?;
        let fraction = f64::from(i) / f64::from(steps);
        ctx.progress(fraction, "sleep", &format!("step {i}/{steps}"))
            .map_err(|e| HandlerError::internal(e.to_string()))?;
    }
    Ok(Reply::data(json!({"slept_ms": ms, "steps": steps})))
}
