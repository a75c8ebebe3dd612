//! Finding a Python interpreter for the Python echo worker and the HTTP baseline, for the
//! benches, `ferry bench` and the integration tests that spawn Python workers.
//!
//! The rule: `$FERRY_PYTHON` if set, else `.venv/bin/python` in the current directory, else
//! the one at the root of the source checkout this build came from. `scripts/test` creates
//! that environment, builds the package into it, and sets both `FERRY_PYTHON` and
//! `FERRY_REQUIRE_PYTHON=1`, so there the Python tests always run; a plain `cargo test` on a
//! checkout without it skips them with a notice instead ([`python_or_skip`]).

use ferry::codec::{Codec, CodecKind, DEFAULT_MAX_FRAME};
use ferry::transport::TransportKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The interpreter to use, overriding the default `.venv/bin/python`.
pub const FERRY_PYTHON: &str = "FERRY_PYTHON";
/// Set to `1` to make a missing or broken interpreter a failure instead of a skip.
pub const FERRY_REQUIRE_PYTHON: &str = "FERRY_REQUIRE_PYTHON";

/// The interpreter that has the `ferry_worker` package: `$FERRY_PYTHON`, else
/// `.venv/bin/python` in the current directory, else the one in the source checkout this
/// build came from. `Err` says why there is none (the Python worker is then skipped).
pub fn ferry_python() -> Result<PathBuf, String> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND.get_or_init(locate).clone()
}

fn locate() -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = match std::env::var_os("FERRY_PYTHON") {
        Some(p) => vec![PathBuf::from(p)],
        None => vec![
            PathBuf::from(".venv/bin/python"),
            Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join(".venv/bin/python"),
        ],
    };
    let mut why = Vec::new();
    for python in candidates {
        if std::env::var_os("FERRY_PYTHON").is_none() && !python.exists() {
            why.push(format!("{} does not exist", python.display()));
            continue;
        }
        match imports(&python, "ferry_worker._native") {
            Ok(()) => return Ok(python),
            Err(e) => why.push(e),
        }
    }
    Err(format!(
        "no Python with ferry_worker ({}); set FERRY_PYTHON or run scripts/python-env",
        why.join("; ")
    ))
}

/// Any Python 3 for the HTTP baseline's server (standard library only): the
/// `ferry_worker` interpreter when there is one, else `python3` on `PATH`.
pub fn any_python() -> Result<PathBuf, String> {
    if let Ok(p) = ferry_python() {
        return Ok(p);
    }
    let python = PathBuf::from("python3");
    imports(&python, "http.server").map(|()| python)
}

fn imports(python: &Path, module: &str) -> Result<(), String> {
    let out = Command::new(python)
        .args(["-c", &format!("import {module}")])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} cannot import {module}: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The interpreter, or `None` after printing why `what` is skipped. Panics instead when
/// `FERRY_REQUIRE_PYTHON=1` (as `scripts/test` sets), so a broken set-up cannot pass silently.
pub fn python_or_skip(what: &str) -> Option<PathBuf> {
    match ferry_python() {
        Ok(p) => Some(p),
        Err(why) if std::env::var(FERRY_REQUIRE_PYTHON).as_deref() == Ok("1") => {
            panic!("{what}: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED {what}: {why}");
            None
        }
    }
}

/// Every (transport, codec) pair a host and a Python worker can speak in this build: each
/// transport of `TransportKind::ALL` with each codec that fits its framing.
pub fn transport_codec_cases() -> Vec<(TransportKind, CodecKind)> {
    let mut cases = Vec::new();
    for transport in TransportKind::ALL {
        for codec in CodecKind::ALL {
            if Codec::new(codec, transport.framing(), DEFAULT_MAX_FRAME).is_ok() {
                cases.push((transport, codec));
            }
        }
    }
    cases
}
