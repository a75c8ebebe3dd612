//! Finding the Python interpreter that has the `ferry_worker` package installed, for the
//! tests and benches that spawn Python workers.
//!
//! The rule: `$FERRY_PYTHON` if set, else the project's virtual environment
//! (`.venv/bin/python` at the repository root) if it exists. `scripts/test` creates that
//! environment, builds the package into it, and sets both `FERRY_PYTHON` and
//! `FERRY_REQUIRE_PYTHON=1`, so there the Python tests always run. A plain `cargo test` on a
//! checkout without the environment skips them with a notice instead of failing.
#![allow(dead_code)]

use ferry::codec::{Codec, CodecKind, DEFAULT_MAX_FRAME};
use ferry::transport::TransportKind;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The interpreter to use, overriding the default `.venv/bin/python`.
pub const FERRY_PYTHON: &str = "FERRY_PYTHON";
/// Set to `1` to make a missing or broken interpreter a test failure instead of a skip.
pub const FERRY_REQUIRE_PYTHON: &str = "FERRY_REQUIRE_PYTHON";

/// The interpreter with `ferry_worker` importable, or why there is none.
pub fn ferry_python() -> Result<PathBuf, String> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND.get_or_init(locate).clone()
}

fn locate() -> Result<PathBuf, String> {
    let python = match std::env::var_os(FERRY_PYTHON) {
        Some(p) => PathBuf::from(p),
        None => {
            let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
            if !venv.exists() {
                return Err(format!(
                    "no Python with ferry_worker: {FERRY_PYTHON} is unset and {} does not exist; \
                     run scripts/test once to create it",
                    venv.display()
                ));
            }
            venv
        }
    };
    let out = Command::new(&python)
        .args(["-c", "import ferry_worker._native"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} cannot import ferry_worker (run scripts/test to build it): {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(python)
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
