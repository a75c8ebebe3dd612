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
//! | `bad-attachment` | answers the first request with an envelope whose attachment is not base64, later ones correctly |
//! | `wrong-type` | before the first answer prints a JSON log line naming the request, then answers it with `"success": "yes"` (a string); later requests correctly |
//! | `too-deep` | answers the first request with `data` nested 2,000 levels (past every JSON parser's limit), later ones correctly |
//! | `exit-before-ready` | exits with status 3 at once |
//! | `never-ready` | says nothing for N seconds (default 60), then exits |
//! | `die-mid-response` | sends `ready`, then half an answer, then exits with status 1 |
//! | `wrong-version` | sends a `ready` event with protocol version 2 |
//! | `crash-on-nth` | echo worker that aborts on its Nth request (default 1) |
//! | `hang` | sends `ready`, then reads requests and never answers (not even `health`) |
//! | `slow` | echo worker that sleeps N ms (default 50) before each answer, ignoring cancels |
//! | `stuck-step` | echo worker whose every request writes `$TMPDIR/started` (its pid), then sleeps N s (default 60) without looking at the link |
//! | `flaky-start` | `flaky-start FILE N`: the first N starts (counted in FILE) exit before `ready`, later ones serve echo |
//! | `gated` | `gated DIR [fail-starts=N] [hold-ready]`: echo worker whose steps wait for the test (below) |
//!
//! ## `gated DIR`: steps the test releases
//!
//! For tests that must not depend on timing: instead of sleeping and hoping the other side
//! got somewhere in the meantime, the test waits for what the worker records and releases
//! the worker when it is ready to.
//!
//! - Every start takes the next number `n` (files `DIR/start-n`, created exclusively, so
//!   concurrent starts never share one) and logs `start n <pid>`. With `fail-starts=N` the
//!   first `N` starts log `exit n` and exit with status 3 before `ready`; with
//!   `hold-ready` every other start first waits at the gate `ready-n`.
//! - A request whose data has a string `label` logs `started LABEL` before it runs and
//!   `finished LABEL` after; requests without one are not logged.
//! - The operation `gate` (data `{"label": "..."}`) waits until the file
//!   `DIR/release-LABEL` or `DIR/release-all` exists, then answers its data. While it
//!   waits it looks at the link (so `health` is answered and cancels are seen): a cancel,
//!   a passed deadline or a vanished host ends it with `cancelled LABEL` logged and the
//!   error `cancelled`. With `"deaf": true` it does not look at the link while it waits:
//!   a hung worker on demand (no `health` answers, cancels unseen).
//! - The other operations are the echo handler's.
//!
//! `DIR/log` is appended one whole line per write, so the lines of all the workers sharing
//! `DIR` are in the order they happened. The wait polls the release file every 2 ms; that
//! interval is the worker's own business, not a time window any test relies on.

use ferry::protocol::{Envelope, ReadyInfo};
use ferry::worker::{echo, serve, Context, HandlerError, Reply, Request};
use serde_json::{json, Value};
use std::io::{BufRead, Write};
use std::path::PathBuf;
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

/// How deep `too-deep` nests its first answer's data: past serde_json's own limit (128),
/// so the line cannot be read as an envelope at all.
const TOO_DEEP: usize = 2000;

/// A raw loop that answers the first request with what `broken` writes, later ones
/// correctly.
fn first_answer_broken(
    mut broken: impl FnMut(&Value, &mut dyn Write) -> std::io::Result<()>,
) -> ExitCode {
    let mut first = true;
    raw_loop(&[], move |req, out| {
        if std::mem::take(&mut first) {
            broken(req, out)?;
        } else {
            writeln!(out, "{}", answer_line(req))?;
        }
        Ok(!is_shutdown(req))
    })
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
        "bad-attachment" => first_answer_broken(|req, out| {
            let mut line: Value = serde_json::from_str(&answer_line(req))?;
            line["attachments"] = json!([{"size": 3, "data_base64": "!!!"}]);
            writeln!(out, "{line}")
        }),
        "wrong-type" => first_answer_broken(|req, out| {
            let id = req.get("message_id").cloned().unwrap_or(Value::Null);
            let log = json!({"level": "info", "request_id": id, "msg": "working"});
            writeln!(out, "{log}")?;
            let mut line: Value = serde_json::from_str(&answer_line(req))?;
            line["success"] = json!("yes");
            writeln!(out, "{line}")
        }),
        "too-deep" => first_answer_broken(|req, out| {
            // Written by hand: serializing (or dropping) a `Value` this deep recurses once
            // per level.
            let id = req.get("message_id").cloned().unwrap_or(Value::Null);
            let (open, close) = ("[".repeat(TOO_DEEP), "]".repeat(TOO_DEEP));
            writeln!(
                out,
                r#"{{"version":1,"message_id":"w-1","type":"response","request_id":{id},"success":true,"data":{open}1{close}}}"#
            )
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
        "gated" => gated(&args[1..]),
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

/// The operations of the `gated` mode: the echo handler's and `gate`.
const GATED_OPERATIONS: [&str; 5] = ["echo", "sleep", "fail", "print", "gate"];

/// The folder of a `gated` worker and its log.
struct GateDir(PathBuf);

impl GateDir {
    /// Appends `line` to `DIR/log` in one write (`O_APPEND`: lines of several workers
    /// never interleave).
    fn log(&self, line: &str) -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.0.join("log"))?;
        file.write_all(format!("{line}\n").as_bytes())
    }

    fn released(&self, label: &str) -> bool {
        self.0.join(format!("release-{label}")).exists() || self.0.join("release-all").exists()
    }

    /// Takes the next start number: the first `start-n` this process creates.
    fn next_start(&self) -> std::io::Result<u64> {
        for n in 1.. {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(self.0.join(format!("start-{n}")))
            {
                Ok(_) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        unreachable!("u64 start numbers ran out")
    }
}

/// A label names a file: letters, digits, `-`, `_` and `.` only.
fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && !label.starts_with('.')
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn gated(args: &[String]) -> ExitCode {
    let Some(dir) = args.first() else {
        eprintln!("ferry-fault-worker: gated DIR [fail-starts=N] [hold-ready]");
        return ExitCode::from(2);
    };
    let dir = GateDir(PathBuf::from(dir));
    let mut fail_starts = 0u64;
    let mut hold_ready = false;
    for option in &args[1..] {
        match option.split_once('=') {
            Some(("fail-starts", n)) if n.parse::<u64>().is_ok() => {
                fail_starts = n.parse().unwrap_or(0);
            }
            None if option == "hold-ready" => hold_ready = true,
            _ => {
                eprintln!("ferry-fault-worker: gated: unknown option `{option}`");
                return ExitCode::from(2);
            }
        }
    }
    let started = dir.next_start().and_then(|n| {
        dir.log(&format!("start {n} {}", std::process::id()))
            .map(|()| n)
    });
    let n = match started {
        Ok(n) => n,
        Err(e) => {
            eprintln!("ferry-fault-worker: gated: {}: {e}", dir.0.display());
            return ExitCode::from(4);
        }
    };
    if n <= fail_starts {
        let _ = dir.log(&format!("exit {n}"));
        return ExitCode::from(3);
    }
    if hold_ready {
        // Before `ready` there is no link to watch: the host's startup timeout or its
        // death (this process is then killed, or sees end-of-file later) ends the wait.
        let label = format!("ready-{n}");
        let _ = dir.log(&format!("started {label}"));
        while !dir.released(&label) {
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = dir.log(&format!("finished {label}"));
    }
    let handler = move |req: &Request<'_>, ctx: &mut Context<'_>| {
        let label = req.data().get("label").and_then(Value::as_str);
        if let Some(label) = label {
            if !valid_label(label) {
                return Err(HandlerError::invalid_request(format!(
                    "data.label: `{label}` is not a file name part"
                )));
            }
            dir.log(&format!("started {label}"))
                .map_err(|e| HandlerError::internal(e.to_string()))?;
        }
        let result = if req.operation() == "gate" {
            let Some(label) = label else {
                return Err(HandlerError::invalid_request("data.label: required"));
            };
            gate(&dir, label, req, ctx)
        } else {
            echo::handle(req, ctx)
        };
        if let Some(label) = label {
            let outcome = match &result {
                Ok(_) => "finished",
                Err(e) if e.code == ferry::protocol::ErrorCode::Cancelled => "cancelled",
                Err(_) => "failed",
            };
            dir.log(&format!("{outcome} {label}"))
                .map_err(|e| HandlerError::internal(e.to_string()))?;
        }
        result
    };
    match serve("fault", &GATED_OPERATIONS, handler) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Waits until `label` is released (answers the request's data) or the request is
/// cancelled.
fn gate(
    dir: &GateDir,
    label: &str,
    req: &Request<'_>,
    ctx: &mut Context<'_>,
) -> Result<Reply, HandlerError> {
    let deaf = req.data().get("deaf").and_then(Value::as_bool) == Some(true);
    loop {
        if dir.released(label) {
            return Ok(Reply::data(req.data().clone()));
        }
        if !deaf {
            ctx.check_cancelled()?;
        }
        std::thread::sleep(Duration::from_millis(2));
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
