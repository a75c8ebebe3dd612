//! ferry's own HTTP path: one keep-alive client POSTing `/api/inference/generate` to a
//! real `ferry serve`, whose one pool runs the Rust echo worker over shared memory.
//!
//! The server is the `ferry` executable the suite runs (`ferry serve --config FILE --bind
//! 127.0.0.1:0`), with a configuration written to a private temporary folder: state in
//! memory, one worker type `echo` (`@ferry worker echo`, transport `shm` with MessagePack
//! where this build has it, else `socket`), `api_operations = ["echo"]`, one worker. The
//! server prints its address once every pool has started its workers (`Orchestrator::start`
//! waits for them); `GET /health/ready` must then answer `200`, else the case fails. No
//! sleeps: each step waits for the server's own answer.
//!
//! Each round trip is what an HTTP client of ferry does: the request
//! `{"worker_type": "echo", "operation": "echo", "data": "<payload>"}` (the payload as a
//! JSON string, so it must be printable ASCII without `"` or `\`, as
//! [`payload`](crate::payload) makes it), and the whole `200` answer read
//! (`{"data": "<payload>", "metrics", "attachments": [], "request_id"}`); the first answer
//! is parsed and its `data` compared with the payload, every later one must be at least as
//! long as the payload.

use super::http::Client;
use super::{BenchError, RoundTrip};
use ferry::transport::TransportKind;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};

/// The route timed.
pub const ROUTE: &str = "/api/inference/generate";

const BODY_PREFIX: &[u8] = br#"{"worker_type":"echo","operation":"echo","data":""#;
const BODY_SUFFIX: &[u8] = br#""}"#;

/// The transport of the server's echo pool: shared memory where this build has it.
pub fn worker_transport() -> TransportKind {
    if TransportKind::ALL.contains(&TransportKind::Shm) {
        TransportKind::Shm
    } else {
        TransportKind::LocalSocket
    }
}

/// The configuration `ferry serve` runs with.
fn config(transport: TransportKind) -> String {
    format!(
        "# Written by ferry bench (the `serve` case).\n\
         [server]\nbind = \"127.0.0.1:0\"\nshutdown_grace_ms = 2000\n\n\
         [state]\nurl = \"memory\"\n\n\
         [workers.echo]\ncommand = \"@ferry\"\nargs = [\"worker\", \"echo\"]\n\
         transport = \"{}\"\ncodec = \"msgpack\"\napi_operations = [\"echo\"]\n\n\
         [workers.echo.pool]\nmin_workers = 1\nmax_workers = 1\n",
        transport.as_str()
    )
}

/// A private folder for the configuration and the server's log, removed on drop.
#[derive(Debug)]
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> std::io::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "ferry-bench-serve-{}-{nanos:08x}",
            std::process::id()
        ));
        std::fs::create_dir(&dir)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `ferry serve` and one keep-alive connection to it.
#[derive(Debug)]
pub struct ServePeer {
    /// `None` once dropped (closed before the server is stopped, so it drains at once).
    client: Option<Client>,
    child: Child,
    /// Kept open: the server may write to its stdout again.
    _stdout: BufReader<ChildStdout>,
    /// Removed once the server has stopped (fields drop after `Drop::drop`).
    _scratch: Scratch,
    /// Whether an answer was parsed and compared yet (only the first one is).
    checked: bool,
    size: usize,
}

impl ServePeer {
    /// Starts `ferry_exe serve` over an echo pool and connects, for `size`-byte payloads.
    pub fn spawn(ferry_exe: &Path, size: usize) -> Result<Self, BenchError> {
        let scratch = Scratch::new()?;
        let config_path = scratch.0.join("ferry.toml");
        std::fs::write(&config_path, config(worker_transport()))?;
        let log = std::fs::File::create(scratch.0.join("serve.log"))?;
        let mut child = Command::new(ferry_exe)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .args(["--bind", "127.0.0.1:0"])
            .current_dir(&scratch.0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()?;
        let started = Self::connect(&mut child, size);
        match started {
            Ok((stdout, client)) => Ok(ServePeer {
                client: Some(client),
                child,
                _stdout: stdout,
                _scratch: scratch,
                checked: false,
                size,
            }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(scratch.0.join("serve.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                Err(BenchError::Harness(format!(
                    "ferry serve did not start: {e}; its log ends: {}",
                    tail.join(" / ")
                )))
            }
        }
    }

    /// Reads the listening line, checks readiness, connects the client.
    fn connect(
        child: &mut Child,
        size: usize,
    ) -> Result<(BufReader<ChildStdout>, Client), BenchError> {
        let out = child
            .stdout
            .take()
            .ok_or_else(|| BenchError::Harness("no stdout pipe".into()))?;
        let mut out = BufReader::new(out);
        let mut line = String::new();
        out.read_line(&mut line)?;
        let port = line
            .trim()
            .strip_prefix("ferry listening on http://")
            .and_then(|addr| addr.rsplit_once(':'))
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .ok_or_else(|| BenchError::Harness(format!("bad listening line {line:?}")))?;
        let ready = get(port, "/health/ready")?;
        if !ready.starts_with("HTTP/1.1 200") {
            let status = ready.lines().next().unwrap_or_default();
            return Err(BenchError::Harness(format!(
                "GET /health/ready answered `{status}`"
            )));
        }
        let body_len = BODY_PREFIX.len() + size + BODY_SUFFIX.len();
        let client = Client::connect(port, ROUTE, "application/json", body_len)?;
        Ok((out, client))
    }
}

/// A one-shot `GET` (connection closed after it): the whole answer as text.
fn get(port: u16, path: &str) -> Result<String, BenchError> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer)
}

impl RoundTrip for ServePeer {
    fn round_trip(&mut self, payload: &[u8]) -> Result<(), BenchError> {
        if payload.len() != self.size {
            return Err(BenchError::Harness(format!(
                "a {}-byte payload on a peer started for {}",
                payload.len(),
                self.size
            )));
        }
        if !self.checked
            && payload
                .iter()
                .any(|b| !b.is_ascii_graphic() || b"\"\\".contains(b))
        {
            return Err(BenchError::Harness(
                "the serve case sends the payload as a JSON string: printable ASCII without `\"` or `\\`".into(),
            ));
        }
        let client = self
            .client
            .as_mut()
            .ok_or_else(|| BenchError::Harness("the connection is closed".into()))?;
        let body = client.post(&[BODY_PREFIX, payload, BODY_SUFFIX])?;
        if body.len() < payload.len() {
            return Err(BenchError::BadEcho(format!(
                "a {}-byte answer for a {}-byte payload",
                body.len(),
                payload.len()
            )));
        }
        if !self.checked {
            let answer: serde_json::Value = serde_json::from_slice(body)
                .map_err(|e| BenchError::BadEcho(format!("the answer is not JSON: {e}")))?;
            let data = answer.get("data").and_then(serde_json::Value::as_str);
            if data.map(str::as_bytes) != Some(payload) {
                return Err(BenchError::BadEcho(
                    "the answer's `data` differs from the payload".into(),
                ));
            }
            self.checked = true;
        }
        Ok(())
    }
}

impl Drop for ServePeer {
    fn drop(&mut self) {
        // Closed first, so the graceful stop has no connection to drain.
        self.client = None;
        let pid = rustix::process::Pid::from_child(&self.child);
        if rustix::process::kill_process(pid, rustix::process::Signal::TERM).is_err() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
