//! A scriptable misbehaving worker for tests: `ferry-fault-worker MODE [N]`.
//!
//! Modes that break the protocol write raw NDJSON themselves; the others run the real
//! runtime with the echo handler and fail on purpose.
//!
//! | mode | behaviour |
//! |---|---|
//! | `garbage` | prints non-protocol lines before `ready` and before every answer, answers correctly |
//! | `oversize` | answers the first request with a line longer than `FERRY_MAX_FRAME`, later ones correctly |
//! | `invalid-utf8` | precedes every answer with a line that is not UTF-8 |
//! | `exit-before-ready` | exits with status 3 at once |
//! | `never-ready` | says nothing for N seconds (default 60), then exits |
//! | `die-mid-response` | sends `ready`, then half an answer, then exits with status 1 |
//! | `wrong-version` | sends a `ready` event with protocol version 2 |
//! | `crash-on-nth` | echo worker that aborts on its Nth request (default 1) |
//! | `hang` | sends `ready`, then reads requests and never answers (not even `health`) |
//! | `slow` | echo worker that sleeps N ms (default 50) before each answer, ignoring cancels |
//! | `stuck-step` | echo worker whose every request writes `$TMPDIR/started` (its pid), then sleeps N s (default 60) without looking at the link |
//! | `flaky-start` | `flaky-start FILE N`: the first N starts (counted in FILE) exit before `ready`, later ones serve echo |

use ferry::protocol::{Envelope, ReadyInfo};
use ferry::worker::{echo, serve, Context, HandlerError, Reply, Request};
use serde_json::{json, Value};
use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

fn ready_line(version: u32) -> String {
    let mut env = Envelope::ready(
        "w-0",
        &ReadyInfo::new(
            "fault",
            echo::OPERATIONS.iter().map(|s| (*s).to_owned()).collect(),
        ),
    );
    env.version = version;
    serde_json::to_string(&env).unwrap_or_default()
}

fn answer_line(request: &Value) -> String {
    let id = request
        .get("message_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let data = request.get("data").cloned().unwrap_or(Value::Null);
    serde_json::to_string(&Envelope::response("w-1", id, data)).unwrap_or_default()
}

fn raw_loop(
    before_ready: &[&[u8]],
    mut per_request: impl FnMut(&Value, &mut dyn Write) -> std::io::Result<bool>,
) -> ExitCode {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for line in before_ready {
        let _ = out.write_all(line);
        let _ = out.write_all(b"\n");
    }
    let _ = writeln!(out, "{}", ready_line(1));
    let _ = out.flush();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let Ok(request) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if request.get("type").and_then(Value::as_str) != Some("request") {
            continue;
        }
        match per_request(&request, &mut out) {
            Ok(true) => {}
            Ok(false) | Err(_) => break,
        }
        let _ = out.flush();
    }
    ExitCode::SUCCESS
}

fn is_shutdown(request: &Value) -> bool {
    request.get("operation").and_then(Value::as_str) == Some("shutdown")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("");
    let n: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    match mode {
        "garbage" => raw_loop(
            &[
                b"Loading model weights...",
                b"\x1b[32mbanner\x1b[0m",
                br#"{"not":"an envelope"}"#,
            ],
            |req, out| {
                writeln!(out, "progress: 50% (a stray print)")?;
                writeln!(out, "{}", answer_line(req))?;
                Ok(!is_shutdown(req))
            },
        ),
        "oversize" => {
            let max: usize = std::env::var("FERRY_MAX_FRAME")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1 << 20);
            let mut first = true;
            raw_loop(&[], move |req, out| {
                if first {
                    first = false;
                    let id = req
                        .get("message_id")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    let big = Envelope::response("w-1", id, json!("x".repeat(max + 16)));
                    writeln!(out, "{}", serde_json::to_string(&big).unwrap_or_default())?;
                } else {
                    writeln!(out, "{}", answer_line(req))?;
                }
                Ok(!is_shutdown(req))
            })
        }
        "invalid-utf8" => raw_loop(&[], |req, out| {
            out.write_all(b"\xff\xfe not utf-8 \xc3\x28\n")?;
            writeln!(out, "{}", answer_line(req))?;
            Ok(!is_shutdown(req))
        }),
        "exit-before-ready" => ExitCode::from(3),
        "never-ready" => {
            std::thread::sleep(Duration::from_secs(if n == 0 { 60 } else { n }));
            ExitCode::SUCCESS
        }
        "die-mid-response" => raw_loop(&[], |req, out| {
            let line = answer_line(req);
            out.write_all(&line.as_bytes()[..line.len() / 2])?;
            out.flush()?;
            std::process::exit(1);
        }),
        "wrong-version" => {
            println!("{}", ready_line(2));
            std::thread::sleep(Duration::from_secs(5));
            ExitCode::SUCCESS
        }
        "hang" => raw_loop(&[], |_req, _out| {
            std::thread::sleep(Duration::from_secs(3600));
            Ok(false)
        }),
        "crash-on-nth" => {
            let nth = n.max(1);
            let mut seen = 0u64;
            run(move |req: &Request<'_>, ctx: &mut Context<'_>| {
                seen += 1;
                if seen == nth {
                    std::process::abort();
                }
                echo::handle(req, ctx)
            })
        }
        "flaky-start" => {
            let path = args.get(1).cloned().unwrap_or_default();
            let fail_first: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
            let starts = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(0)
                + 1;
            if std::fs::write(&path, starts.to_string()).is_err() {
                return ExitCode::from(4);
            }
            if starts <= fail_first {
                return ExitCode::from(3);
            }
            run(echo::handle)
        }
        "slow" => {
            let ms = if n == 0 { 50 } else { n };
            run(move |req: &Request<'_>, ctx: &mut Context<'_>| {
                std::thread::sleep(Duration::from_millis(ms));
                echo::handle(req, ctx)
            })
        }
        "stuck-step" => {
            let secs = if n == 0 { 60 } else { n };
            run(move |req: &Request<'_>, ctx: &mut Context<'_>| {
                // The marker says the handler runs; the test kills the host after it.
                let marker = std::env::temp_dir().join("started");
                std::fs::write(&marker, std::process::id().to_string())
                    .map_err(|e| HandlerError::internal(e.to_string()))?;
                std::thread::sleep(Duration::from_secs(secs));
                echo::handle(req, ctx)
            })
        }
        other => {
            eprintln!(
                "ferry-fault-worker: unknown mode `{other}`; see the module docs for the list"
            );
            ExitCode::from(2)
        }
    }
}

fn run(
    handler: impl FnMut(&Request<'_>, &mut Context<'_>) -> Result<Reply, HandlerError>,
) -> ExitCode {
    match serve("fault", &echo::OPERATIONS, handler) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
