//! The engine's round trip: a request envelope to an echo worker and its response back.

use super::{python, BenchError, RoundTrip};
use ferry::codec::{CodecKind, Framing};
use ferry::protocol::{Envelope, StdioFraming};
use ferry::transport::TransportKind;
use ferry::worker::{CallError, CallOptions, Response, WorkerProcess, WorkerSpec};
use serde::Serialize;
use serde_json::Value;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

/// Which echo worker answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerLang {
    /// `ferry worker echo`.
    Rust,
    /// `python -m ferry_worker.echo` (the pyo3 SDK).
    Python,
    /// Any worker that answers `echo`, started from a command line
    /// ([`SuiteOptions::cmd`](crate::SuiteOptions::cmd), `ferry bench --cmd`).
    Cmd,
}

impl WorkerLang {
    /// The built-in echo workers, the ones `--worker` names (`cmd` comes with `--cmd`).
    pub const ALL: [WorkerLang; 2] = [WorkerLang::Rust, WorkerLang::Python];

    /// The name on the command line and in the JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            WorkerLang::Rust => "rust",
            WorkerLang::Python => "python",
            WorkerLang::Cmd => "cmd",
        }
    }
}

impl fmt::Display for WorkerLang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WorkerLang {
    type Err = BenchError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WorkerLang::ALL
            .into_iter()
            .find(|w| w.as_str() == s)
            .ok_or_else(|| BenchError::UnknownWorker(s.to_string()))
    }
}

/// The codec the suite uses on a transport: JSON on line-framed links (the only one they
/// take), MessagePack with the payload as a raw attachment elsewhere.
pub fn codec_for(transport: TransportKind) -> CodecKind {
    match transport.framing() {
        Framing::Lines => CodecKind::Json,
        _ => CodecKind::MsgPack,
    }
}

/// The codec the suite uses on `transport` when stdio offers `stdio_framing`: MessagePack
/// after a switch to length-prefixed stdio frames, else [`codec_for`].
pub fn codec_for_framing(transport: TransportKind, stdio_framing: StdioFraming) -> CodecKind {
    if transport == TransportKind::Stdio && stdio_framing == StdioFraming::LengthPrefixed {
        CodecKind::MsgPack
    } else {
        codec_for(transport)
    }
}

/// How to start an echo worker of `lang`: the `ferry` executable for Rust, a Python with
/// `ferry_worker` for Python (`Err` says why there is none; always for
/// [`WorkerLang::Cmd`], whose spec is the user's command line).
pub fn echo_spec(lang: WorkerLang, ferry_exe: &Path) -> Result<WorkerSpec, String> {
    Ok(match lang {
        WorkerLang::Rust => {
            WorkerSpec::new("echo", ferry_exe.display().to_string(), ["worker", "echo"])
        }
        WorkerLang::Python => {
            let python: PathBuf = python::ferry_python()?;
            WorkerSpec::new(
                "echo",
                python.display().to_string(),
                ["-m", "ferry_worker.echo"],
            )
        }
        WorkerLang::Cmd => return Err("the cmd worker is started from its command line".into()),
    })
}

/// An echo worker driven through [`WorkerProcess`]: the full engine path (envelope,
/// codec, connection, transport) on both sides.
///
/// On line-framed transports (stdio) the payload travels as the request's `data`, a JSON
/// string; on framed ones (and stdio switched to length-prefixed frames) as one raw
/// attachment with `data` null. Each round trip checks
/// the echo's shape (`data` a string and no attachments, or `data` null and one
/// attachment) and length; the first one also checks its bytes. With a
/// [`timeout`](EnginePeer::with_timeout) every request has that deadline, and a worker
/// that lets it pass fails with [`BenchError::NoAnswer`].
#[derive(Debug)]
pub struct EnginePeer {
    worker: WorkerProcess,
    in_data: bool,
    options: CallOptions,
    checked: bool,
    /// Whether round trips read the answer in place ([`WorkerProcess::call_in_place`])
    /// and copy the echo into `kept`, rather than into an owned `Response`.
    in_place: bool,
    /// The buffer the echo is copied into when `in_place`.
    kept: Vec<u8>,
    /// The request of every round trip whose payload travels as an attachment: built
    /// once and lent to each call, as a latency-minded host keeps a prepared request.
    echo: Envelope,
}

impl EnginePeer {
    /// Gives every request this deadline (none by default): a worker that does not answer
    /// in time fails the round trip with [`BenchError::NoAnswer`] instead of hanging it.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }

    /// How each round trip takes its answer (default [`Answer::Owned`]).
    pub fn answer(mut self, answer: Answer) -> Self {
        self.in_place = answer == Answer::InPlace;
        self
    }

    /// The per-request deadline, from now (`None`: no limit).
    pub fn deadline(&self) -> Option<Instant> {
        self.options.timeout.map(|t| Instant::now() + t)
    }

    /// `e` as the harness's error: a passed deadline is [`BenchError::NoAnswer`] with the
    /// timeout set here (the engine reports the time that was left when the call began).
    pub fn call_error(&self, e: CallError) -> BenchError {
        match (e, self.options.timeout) {
            (CallError::Timeout(_), Some(timeout)) => BenchError::NoAnswer { timeout },
            (e, _) => e.into(),
        }
    }
}

impl EnginePeer {
    /// Starts the worker of `spec` on `transport` with the suite's codec for it.
    pub fn spawn(mut spec: WorkerSpec, transport: TransportKind) -> Result<Self, BenchError> {
        spec.transport = transport;
        spec.codec = codec_for_framing(transport, spec.stdio_framing);
        let worker = WorkerProcess::spawn(spec)?;
        // A stdio worker that accepted length-prefixed frames takes raw attachments.
        let switched = worker
            .ready_info()
            .is_some_and(|i| i.stdio_framing == Some(StdioFraming::LengthPrefixed));
        Ok(EnginePeer {
            worker,
            in_data: transport.framing() == Framing::Lines && !switched,
            options: CallOptions::default(),
            checked: false,
            in_place: false,
            kept: Vec::new(),
            echo: Envelope::request("", "echo", Value::Null),
        })
    }

    /// The request for `payload` and its attachments, as each round trip sends it.
    pub fn request<'p>(&self, payload: &'p [u8]) -> Result<(Envelope, Vec<&'p [u8]>), BenchError> {
        if self.in_data {
            let text = std::str::from_utf8(payload)
                .map_err(|_| BenchError::BadEcho("stdio payloads must be UTF-8".into()))?;
            let request = Envelope::request("", "echo", Value::String(text.to_owned()));
            Ok((request, Vec::new()))
        } else {
            Ok((Envelope::request("", "echo", Value::Null), vec![payload]))
        }
    }

    /// Checks that `reply` echoes `payload` (length always, bytes when `full`).
    pub fn check(&self, reply: &Response, payload: &[u8], full: bool) -> Result<(), BenchError> {
        // The echo has no attachment or one: checked without a vector of slices, so the
        // harness adds no allocation to the round trip it times.
        match reply.attachments.as_slice() {
            [] => check_parts(self.in_data, &reply.data, &[], payload, full),
            [one] => check_parts(self.in_data, &reply.data, &[one.as_slice()], payload, full),
            many => {
                let slices: Vec<&[u8]> = many.iter().map(Vec::as_slice).collect();
                check_parts(self.in_data, &reply.data, &slices, payload, full)
            }
        }
    }

    /// The worker (for pipelined calls over its connection).
    pub fn worker(&self) -> &WorkerProcess {
        &self.worker
    }

    /// Stops the worker gracefully.
    pub fn shutdown(self) -> Result<(), BenchError> {
        self.worker.shutdown()?;
        Ok(())
    }
}

impl RoundTrip for EnginePeer {
    fn round_trip(&mut self, payload: &[u8]) -> Result<(), BenchError> {
        let built;
        let (request, attachments) = if self.in_data {
            built = self.request(payload)?;
            (&built.0, built.1)
        } else {
            // What `request` builds, lent: no envelope or vector per round trip.
            (&self.echo, Vec::new())
        };
        // Its timestamp is the one `call_with` sets on every request that has none.
        let one = [payload];
        let attachments: &[&[u8]] = if self.in_data { &attachments } else { &one };
        let full = !self.checked;
        if self.in_place {
            // The answer is checked where it lies, then copied into the buffer this peer
            // keeps (as the floors and iceoryx2's host copy theirs out), not into a new
            // `Response`.
            let in_data = self.in_data;
            let kept = &mut self.kept;
            let checked = self.worker.call_in_place(
                request,
                attachments,
                &self.options,
                |_| {},
                |answer| {
                    check_parts(in_data, answer.data, answer.attachments, payload, full)?;
                    kept.clear();
                    if let Some(echo) = answer.attachments.first() {
                        kept.extend_from_slice(echo);
                    }
                    Ok::<(), BenchError>(())
                },
            );
            checked.map_err(|e| self.call_error(e))??;
            self.checked = true;
            return Ok(());
        }
        let reply = self
            .worker
            .call_with(request, attachments, &self.options, |_| {})
            .map_err(|e| self.call_error(e))?;
        self.check(&reply, payload, full)?;
        self.checked = true;
        Ok(())
    }
}

/// Checks that an answer's `data` and `attachments` echo `payload` (length always, bytes
/// when `full`): in `data` as a string when `in_data`, else as the one attachment.
fn check_parts(
    in_data: bool,
    data: &Value,
    attachments: &[&[u8]],
    payload: &[u8],
    full: bool,
) -> Result<(), BenchError> {
    let echoed: &[u8] = if in_data {
        if !attachments.is_empty() {
            return Err(BenchError::BadEcho(format!(
                "{} attachments back, expected none",
                attachments.len()
            )));
        }
        match data.as_str() {
            Some(text) => text.as_bytes(),
            None => {
                return Err(BenchError::BadEcho(format!(
                    "data back is {}, expected the string sent",
                    kind_of(data)
                )))
            }
        }
    } else {
        if !data.is_null() {
            return Err(BenchError::BadEcho(format!(
                "data back is {}, expected null",
                kind_of(data)
            )));
        }
        match attachments {
            [one] => one,
            other => {
                return Err(BenchError::BadEcho(format!(
                    "{} attachments back, expected 1",
                    other.len()
                )))
            }
        }
    };
    if echoed.len() != payload.len() {
        return Err(BenchError::BadEcho(format!(
            "{} bytes back for {} sent",
            echoed.len(),
            payload.len()
        )));
    }
    if full && echoed != payload {
        return Err(BenchError::BadEcho(format!(
            "{} bytes back as sent, but not the bytes sent",
            echoed.len()
        )));
    }
    Ok(())
}

/// How the engine cases take each answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Answer {
    /// As an owned `Response` (`WorkerProcess::call_with`): the echo is copied out of the
    /// link into new vectors. The default.
    #[default]
    Owned,
    /// Read where it lies (`WorkerProcess::call_in_place`; in the ring on shm), checked
    /// there and copied into one buffer the harness keeps, as the floors and the iceoryx2
    /// peer copy theirs out. Pipelined cases still take owned answers.
    InPlace,
}

impl Answer {
    /// The name in `--answer`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Answer::Owned => "owned",
            Answer::InPlace => "in_place",
        }
    }
}

impl std::str::FromStr for Answer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "owned" => Ok(Answer::Owned),
            "in_place" => Ok(Answer::InPlace),
            other => Err(format!("unknown answer mode {other:?}: owned or in_place")),
        }
    }
}

/// Which handler the Python echo worker (`python -m ferry_worker.echo`) serves `echo` with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PythonEcho {
    /// The plain handler: the data as Python objects, each attachment copied into `bytes`
    /// and the answer's copied back. The default: what a handler written with the default
    /// API costs.
    #[default]
    Plain,
    /// The raw handler (`FERRY_ECHO_RAW=1`): the data as JSON bytes, the attachments lent
    /// as `memoryview`s over the receive buffer and echoed from there, with no copy in
    /// Python.
    Raw,
}

impl PythonEcho {
    /// The name in `--python-echo`.
    pub const fn as_str(self) -> &'static str {
        match self {
            PythonEcho::Plain => "plain",
            PythonEcho::Raw => "raw",
        }
    }
}

impl PythonEcho {
    /// What the handler does with a request, as the method notes say it.
    pub const fn describe(self) -> &'static str {
        match self {
            PythonEcho::Plain => "data as Python objects, attachments copied into bytes and back",
            PythonEcho::Raw => "FERRY_ECHO_RAW=1: data as JSON bytes, attachments lent as memoryviews over the receive buffer and echoed from there",
        }
    }
}

impl std::fmt::Display for PythonEcho {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for PythonEcho {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "plain" => Ok(PythonEcho::Plain),
            "raw" => Ok(PythonEcho::Raw),
            other => Err(format!("unknown Python echo {other:?}: plain or raw")),
        }
    }
}

/// The JSON type of `value`, for a bad-echo message (not the value: it may be large).
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
