//! `ferry call` as a user runs it.

use crate::common;

use common::ferry_bin;
use std::process::Command;

fn ferry(args: &[&str]) -> std::process::Output {
    Command::new(ferry_bin())
        .args(args)
        .output()
        .expect("ferry runs")
}

#[test]
fn call_prints_the_response_data_as_json() {
    let out = ferry(&["call", "echo", r#"{"prompt":"a"}"#]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(data, serde_json::json!({"prompt": "a"}));
}

#[test]
fn call_against_the_legacy_six_line_worker() {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/legacy_worker.py"
    );
    let cmd = format!("python3 {script}");
    let out = ferry(&[
        "call",
        "--dialect",
        "legacy",
        "--cmd",
        &cmd,
        "inference",
        r#"{"prompt":"a"}"#,
    ]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let data: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(data["echo"], serde_json::json!({"prompt": "a"}));
}

#[test]
fn progress_goes_to_stderr_and_data_to_stdout() {
    let out = ferry(&["call", "sleep", r#"{"ms":30,"steps":3}"#]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("progress  33% sleep: step 1/3"),
        "stderr: {stderr}"
    );
    let data: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(data["steps"], 3);
}

#[test]
fn error_response_prints_code_and_message_and_exits_non_zero() {
    let out = ferry(&[
        "call",
        "fail",
        r#"{"code":"invalid_request","message":"data.prompt: required"}"#,
    ]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: invalid_request: data.prompt: required"),
        "stderr: {stderr}"
    );
}

#[test]
fn invalid_json_data_is_invalid_request() {
    let out = ferry(&["call", "echo", "{not json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("error: invalid_request: JSON_DATA is not valid JSON"));
}

#[test]
fn worker_that_cannot_start_is_startup_failed() {
    let out = ferry(&["call", "--cmd", "/nonexistent/worker", "echo"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("error: startup_failed:"));
}

#[test]
fn unknown_transport_is_refused_by_the_parser() {
    let out = ferry(&["call", "--transport", "carrier-pigeon", "echo"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown transport"));
}

#[test]
fn the_python_worker_in_docs_protocol_md_works() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/protocol.md"
    ))
    .unwrap();
    let code = doc
        .split("## 8. A complete worker in Python, without the SDK\n\n```python\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("section 8 holds a python block");
    let path = std::env::temp_dir().join(format!("ferry-doc-worker-{}.py", std::process::id()));
    std::fs::write(&path, code).unwrap();
    let cmd = format!("python3 {}", path.display());
    let out = ferry(&["call", "--cmd", &cmd, "echo", r#"{"a":[1,2]}"#]);
    let unknown = ferry(&["call", "--cmd", &cmd, "paint"]);
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
        serde_json::json!({"a": [1, 2]})
    );
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("error: unknown_operation: paint"));
}

#[test]
fn shm_options_reach_the_transport_and_bad_ones_are_refused() {
    // 20,000 bytes through 4 KiB rings: the frame is chunked, with sleeping waits.
    let blob = "x".repeat(20_000);
    let data = serde_json::json!({ "blob": blob }).to_string();
    let out = ferry(&[
        "call",
        "--transport",
        "shm",
        "--shm-capacity",
        "4096",
        "--shm-wait",
        "block",
        "echo",
        &data,
    ]);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let echoed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(echoed["blob"].as_str().map(str::len), Some(20_000));

    let out = ferry(&[
        "call",
        "--transport",
        "shm",
        "--shm-capacity",
        "5000",
        "echo",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid_request: --shm-capacity"),
        "stderr: {stderr}"
    );

    let out = ferry(&["call", "--shm-wait", "nap", "echo"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
}
