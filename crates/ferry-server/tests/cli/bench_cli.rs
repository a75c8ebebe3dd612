//! `ferry bench` as a user runs it, with tiny iteration counts: the JSON's shape and fields
//! (never its values: no timing is asserted), skips, and CLI errors.

use crate::common;

use common::{ferry_bin, with_watchdog};
use serde_json::Value;
use std::process::{Command, Output};
use std::time::Duration;

/// Far above any expected run time; only there so a hang fails instead of stalling CI.
const LIMIT: Duration = Duration::from_secs(300);

/// Runs `ferry bench ARGS --json FILE` and returns the process output and the JSON.
fn bench(args: &[&str], env: &[(&str, &str)]) -> (Output, Option<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out.json");
    let mut cmd = Command::new(ferry_bin());
    cmd.arg("bench")
        .args(args)
        .arg("--json")
        .arg(&json)
        .envs(env.iter().copied());
    let out = with_watchdog(LIMIT, move || cmd.output().expect("ferry runs"));
    let value = std::fs::read(&json)
        .ok()
        .map(|bytes| serde_json::from_slice(&bytes).expect("the JSON parses"));
    (out, value)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A few round trips per case: enough to exercise every path, too few to mean anything.
const TINY: [&str; 6] = [
    "--iterations",
    "20",
    "--max-case-seconds",
    "1",
    "--pipelined",
    "2",
];

fn number(row: &Value, field: &str) -> f64 {
    row[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is not a number in {row}"))
}

#[test]
fn json_has_every_transport_and_payload_with_percentiles_and_floor_ratio() {
    let mut args = vec![
        "--transport",
        "stdio,socket,tcp,http",
        "--worker",
        "rust",
        "--payload",
        "64,4k",
    ];
    args.extend(TINY);
    let (out, json) = bench(&args, &[]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let json = json.expect("the JSON file is written");

    let machine = &json["machine"];
    assert!(machine["cpu_model"].is_string(), "{machine}");
    assert!(machine["cores"].as_u64().unwrap() >= 1);
    assert!(machine["kernel"].is_string());

    let results = json["results"].as_array().expect("results");
    for transport in ["stdio", "socket", "tcp", "http"] {
        for payload in [64u64, 4096] {
            let row = results
                .iter()
                .find(|r| r["transport"] == transport && r["payload_bytes"] == payload)
                .unwrap_or_else(|| panic!("no {transport} {payload} row in {results:?}"));
            let worker = if transport == "http" {
                "python"
            } else {
                "rust"
            };
            assert_eq!(row["worker"], worker);
            assert_eq!(row["pin"], "none");
            assert!(row["iterations"].as_u64().unwrap() >= 1);
            for field in [
                "p50_us",
                "p99_us",
                "p999_us",
                "mean_us",
                "throughput_per_s",
                "floor_p50_us",
                "ratio_to_floor",
            ] {
                assert!(number(row, field) > 0.0, "{field} in {row}");
            }
            assert!(row["floor"].is_string(), "{row}");
            // What the engine adds to its floor, consistent with the two medians.
            let added = number(row, "p50_us") - number(row, "floor_p50_us");
            assert!(
                (number(row, "over_floor_us") - added).abs() < 1e-9,
                "over_floor_us in {row}"
            );
        }
    }
    let claims: Vec<(&str, Option<f64>)> = results
        .iter()
        .map(|r| (r["transport"].as_str().unwrap(), r["claim_us"].as_f64()))
        .collect();
    assert!(claims.contains(&("stdio", Some(10.0))));
    assert!(claims.contains(&("tcp", None)));

    let floors = json["floors"].as_array().expect("floors");
    for floor in ["pipe", "unix_socket", "tcp"] {
        assert!(floors.iter().any(|f| f["floor"] == floor), "{floor} floor");
    }
    let pipelined = json["pipelined"].as_array().expect("pipelined");
    assert!(pipelined
        .iter()
        .any(|p| p["transport"] == "socket" && p["depth"] == 2));
    assert!(number(&pipelined[0], "throughput_per_s") > 0.0);
    assert!(json["method"]["notes"].as_array().unwrap().len() > 3);
    assert_eq!(json["failures"].as_array().unwrap().len(), 0);

    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("| transport") && table.contains("x floor"),
        "{table}"
    );
}

#[test]
fn transports_absent_from_this_build_are_skipped_not_errors() {
    let absent: Vec<&str> = ferry_bench::Target::all()
        .iter()
        .filter(|t| matches!(t, ferry_bench::Target::Absent(_)))
        .map(|t| t.name())
        .collect();
    if absent.is_empty() {
        eprintln!("every planned transport is in this build: nothing to skip");
        return;
    }
    let list = format!("{},stdio", absent.join(","));
    let mut args = vec!["--transport", &list, "--worker", "rust", "--payload", "64"];
    args.extend(TINY);
    let (out, json) = bench(&args, &[]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let json = json.unwrap();
    let skipped = json["skipped"].as_array().unwrap();
    for name in absent {
        assert!(
            skipped.iter().any(|s| s["transport"] == name),
            "{name} not in {skipped:?}"
        );
        assert!(stderr(&out).contains(&format!("skipping {name}")));
    }
    assert!(json["results"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["transport"] == "stdio"));
}

#[test]
fn missing_python_worker_is_skipped_with_a_notice() {
    let mut args = vec![
        "--transport",
        "stdio",
        "--worker",
        "rust,python",
        "--payload",
        "64",
    ];
    args.extend(TINY);
    let (out, json) = bench(&args, &[("FERRY_PYTHON", "/nonexistent/python")]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let json = json.unwrap();
    assert!(json["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["worker"] == "python"));
    let workers: Vec<&str> = json["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["worker"].as_str().unwrap())
        .collect();
    assert_eq!(workers, ["rust"]);
    assert!(
        stderr(&out).contains("skipping all (python worker)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn pinned_to_one_cpu_is_recorded_and_plot_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("p50.svg");
    let svg_arg = svg.display().to_string();
    let mut args = vec![
        "--transport",
        "stdio",
        "--worker",
        "rust",
        "--payload",
        "64",
        "--pin",
        "same",
        "--plot",
        &svg_arg,
    ];
    args.extend(TINY);
    let (out, json) = bench(&args, &[]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let json = json.unwrap();
    assert_eq!(json["results"][0]["pin"], "same");
    assert_eq!(json["floors"][0]["pin"], "same");
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
}

#[test]
fn unknown_transport_is_a_cli_error_naming_the_known_ones() {
    let (out, json) = bench(&["--transport", "stdio,carrier-pigeon"], &[]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let err = stderr(&out);
    assert!(err.contains("unknown transport `carrier-pigeon`"), "{err}");
    assert!(err.contains("stdio") && err.contains("http"), "{err}");
    assert!(json.is_none(), "nothing measured, nothing written");
}

#[test]
fn unknown_worker_and_pin_are_cli_errors() {
    for args in [["--worker", "cobol"], ["--pin", "both"]] {
        let (out, _) = bench(&args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(args[1]), "{}", stderr(&out));
    }
}

#[test]
fn cmd_worker_rows_say_cmd_on_every_transport_asked() {
    let cmd = format!("'{}' worker echo", ferry_bin());
    let mut args = vec![
        "--cmd",
        &cmd,
        "--transport",
        "stdio,socket",
        "--payload",
        "64,4k",
    ];
    args.extend(TINY);
    let (out, json) = bench(&args, &[]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let json = json.expect("the JSON file is written");
    let results = json["results"].as_array().expect("results");
    for transport in ["stdio", "socket"] {
        for payload in [64u64, 4096] {
            let row = results
                .iter()
                .find(|r| r["transport"] == transport && r["payload_bytes"] == payload)
                .unwrap_or_else(|| panic!("no {transport} {payload} row in {results:?}"));
            assert_eq!(row["worker"], "cmd", "{row}");
            assert!(number(row, "p50_us") > 0.0, "{row}");
            assert!(number(row, "ratio_to_floor") > 0.0, "{row}");
        }
    }
    assert!(
        results.iter().all(|r| r["worker"] == "cmd"),
        "--cmd alone benches the cmd worker only: {results:?}"
    );
    assert!(json["pipelined"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["worker"] == "cmd" && p["transport"] == "socket"));
    let notes = json["method"]["notes"].to_string();
    assert!(notes.contains("cmd worker"), "{notes}");
    assert_eq!(json["failures"].as_array().unwrap().len(), 0);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("cmd"), "{table}");
}

#[test]
fn cmd_worker_that_never_answers_fails_with_no_answer() {
    let cmd = format!("'{}' hang", common::fault_bin());
    let mut args = vec![
        "--cmd",
        &cmd,
        "--cmd-timeout-ms",
        "200",
        "--transport",
        "stdio",
        "--payload",
        "64,4k",
    ];
    args.extend(TINY);
    let (out, json) = bench(&args, &[]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("[bench_no_answer]"), "{err}");
    assert!(err.contains("no answer to `echo` within 200 ms"), "{err}");
    let json = json.expect("the JSON file is written even when cases fail");
    let failures = json["failures"].as_array().unwrap();
    // 64 B, 4 KiB, and the pipelined 64 B and 4 KiB cases: the first waited out the
    // deadline, the others were not run.
    assert_eq!(failures.len(), 4, "{failures:?}");
    for f in failures {
        assert_eq!(f["code"], "bench_no_answer", "{f}");
        assert_eq!(f["worker"], "cmd", "{f}");
    }
    assert!(json["results"].as_array().unwrap().is_empty());
}

#[test]
fn cmd_worker_that_cannot_start_fails_with_the_spawn_error() {
    let mut args = vec![
        "--cmd",
        "/nonexistent/ferry-worker --flag",
        "--transport",
        "stdio,socket",
        "--payload",
        "64",
        "--pipelined",
        "0",
    ];
    args.extend(&TINY[..4]);
    let (out, json) = bench(&args, &[]);
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("[startup_failed]"), "{err}");
    assert!(err.contains("/nonexistent/ferry-worker"), "{err}");
    let failures = json.unwrap()["failures"].as_array().unwrap().clone();
    assert_eq!(failures.len(), 2, "one per transport: {failures:?}");
    assert!(failures.iter().all(|f| f["code"] == "startup_failed"));
}

#[test]
fn cmd_that_is_not_a_command_line_is_a_cli_error() {
    let (out, json) = bench(&["--cmd", "python3 'unclosed"], &[]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a usage error: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("not a valid command line"),
        "{}",
        stderr(&out)
    );
    assert!(json.is_none());
}

#[test]
fn python_echo_raw_rows_are_benched_over_shm_and_said_in_the_notes() {
    let Some(python) = common::python::python_or_skip("bench --python-echo raw") else {
        return;
    };
    let python = python.display().to_string();
    // Each echo is checked by the bench itself (its length every time, its bytes on the
    // first round trip), so a raw handler answering wrongly fails the case.
    let mut args = vec![
        "--transport",
        "shm",
        "--worker",
        "python",
        "--python-echo",
        "raw",
        "--payload",
        "64,1m",
    ];
    args.extend(TINY);
    let (out, json) = bench(&args, &[("FERRY_PYTHON", python.as_str())]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let json = json.unwrap();
    let rows: Vec<&Value> = json["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["worker"] == "python" && r["transport"] == "shm" && r["pin"] == "none")
        .collect();
    assert_eq!(rows.len(), 2, "{json}");
    for row in &rows {
        assert!(number(row, "ratio_to_floor") > 0.0, "{row}");
    }
    // The same-core extra case: the busy-polling ring's median is kept, no ratio to it.
    let same = json["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["transport"] == "shm" && r["pin"] == "same")
        .unwrap_or_else(|| panic!("no same-core shm row in {json}"));
    assert!(number(same, "floor_p50_us") > 0.0, "{same}");
    assert!(same["ratio_to_floor"].is_null(), "{same}");
    assert!(same["over_floor_us"].is_null(), "{same}");
    let notes: Vec<&str> = json["method"]["notes"]
        .as_array()
        .expect("the notes are in the JSON")
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("python echo: the raw handler")),
        "{notes:?}"
    );
    assert!(
        notes.iter().any(|n| n.starts_with("shm rings:")),
        "{notes:?}"
    );
}

#[test]
fn unknown_python_echo_is_a_cli_error() {
    let (out, json) = bench(&["--python-echo", "cooked"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("plain or raw"), "{}", stderr(&out));
    assert!(json.is_none());
}

#[test]
fn rounds_time_floors_and_workers_in_turns_with_every_round_trip_counted() {
    // 30 round trips in 3 turns of 10 per case; the time limit is far off, so all are timed.
    let (out, json) = bench(
        &[
            "--transport",
            "socket,shm",
            "--worker",
            "rust",
            "--payload",
            "64",
            "--pin",
            "split",
            "--iterations",
            "30",
            "--max-case-seconds",
            "300",
            "--pipelined",
            "0",
            "--rounds",
            "3",
        ],
        &[],
    );
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let json = json.expect("the JSON file is written");
    assert!(
        stderr(&out).contains("in turns, 3 rounds"),
        "{}",
        stderr(&out)
    );
    let results = json["results"].as_array().expect("results");
    for (transport, pin) in [("socket", "split"), ("shm", "split"), ("shm", "same")] {
        let row = results
            .iter()
            .find(|r| r["transport"] == transport && r["pin"] == pin)
            .unwrap_or_else(|| panic!("no {transport} {pin} row in {results:?}"));
        assert_eq!(row["iterations"], 30, "{row}");
        assert!(number(row, "floor_p50_us") > 0.0, "{row}");
    }
    for floor in json["floors"].as_array().expect("floors") {
        assert_eq!(floor["iterations"], 30, "{floor}");
    }
    let notes = json["method"]["notes"].to_string();
    assert!(notes.contains("in turns: "), "{notes}");
}

#[test]
fn rounds_out_of_range_are_a_cli_error() {
    for rounds in ["0", "1001", "many"] {
        let (out, json) = bench(&["--rounds", rounds], &[]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains("--rounds"), "{}", stderr(&out));
        assert!(json.is_none());
    }
}
