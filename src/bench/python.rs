//! Finding a Python interpreter for the Python echo worker and the HTTP baseline.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The interpreter that has the `ferry_worker` package: `$FERRY_PYTHON`, else
/// `.venv/bin/python` in the current directory, else the one in the source checkout this
/// build came from. `Err` says why there is none (the Python worker is then skipped).
pub fn ferry_python() -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = match std::env::var_os("FERRY_PYTHON") {
        Some(p) => vec![PathBuf::from(p)],
        None => vec![
            PathBuf::from(".venv/bin/python"),
            Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"),
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
