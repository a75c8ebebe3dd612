//! Binary inputs over HTTP (base64 `attachments`, multipart) and cancel from HTTP (a
//! dropped connection, `DELETE /api/inference/{request_id}`), against a real `ferry serve`.

use crate::common;

use common::gates::Gates;
use common::http::{Client, Server};
use common::{with_watchdog, WATCHDOG};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const BODY_LIMIT: usize = 16 * 1024;

/// The echo worker as `echo`, the gated worker (`common/gates.rs`) as `gated`, one request
/// at a time each, so a test sees exactly the request it sent.
fn config(gates: &Gates) -> String {
    let args: Vec<String> = gates.args(&[]).iter().map(|a| format!("{a:?}")).collect();
    format!(
        r#"
[server]
bind = "127.0.0.1:0"
body_limit_bytes = {BODY_LIMIT}

[workers.echo]
command = "{ferry}"
args = ["worker", "echo"]
[workers.echo.pool]
min_workers = 1
max_workers = 1

[workers.gated]
command = "{fault}"
args = [{args}]
[workers.gated.pool]
min_workers = 1
max_workers = 1
max_in_flight = 1
# Only a cancel ends a held step: no restart may take it away, however slow.
cancel_grace_ms = 600000
"#,
        ferry = common::ferry_bin(),
        fault = common::fault_bin(),
        args = args.join(", ")
    )
}

fn worker<'a>(status: &'a Value, worker_type: &str) -> &'a Value {
    status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["worker_type"] == worker_type)
        .unwrap_or_else(|| panic!("no {worker_type} worker in {status}"))
}

fn in_flight(c: &mut Client, worker_type: &str) -> u64 {
    let status = c.request("GET", "/api/workers/status", None).json();
    worker(&status, worker_type)["in_flight"].as_u64().unwrap()
}

/// Waits until the `worker_type` worker has nothing in flight (an event: the test's
/// watchdog bounds the wait).
fn wait_idle(c: &mut Client, worker_type: &str) {
    while in_flight(c, worker_type) != 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One part of a multipart body: its name, file name, content type and bytes.
type Part<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a [u8]);

fn multipart(boundary: &str, parts: &[Part<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, file_name, content_type, bytes) in parts {
        write!(
            body,
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\""
        )
        .unwrap();
        if let Some(f) = file_name {
            write!(body, "; filename=\"{f}\"").unwrap();
        }
        body.extend_from_slice(b"\r\n");
        if let Some(t) = content_type {
            write!(body, "Content-Type: {t}\r\n").unwrap();
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    write!(body, "--{boundary}--\r\n").unwrap();
    body
}

fn b64(answer: &Value, i: usize) -> &str {
    answer["attachments"][i]["data_base64"].as_str().unwrap()
}

#[test]
fn attachments_reach_the_worker_from_json_and_multipart() {
    with_watchdog(WATCHDOG, || {
        let gates = Gates::new();
        let server = Server::start(&config(&gates));
        let mut c = server.client();

        // JSON: a base64 string and an object with a name, in order.
        let r = c.request(
            "POST",
            "/api/inference/generate",
            Some(
                &json!({"worker_type": "echo", "operation": "echo", "data": {"x": 1},
                    "attachments": ["aGk=", {"name": "b.bin", "content_type": "application/octet-stream", "data": "AAEC"}]})
                .to_string(),
            ),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        assert_eq!(v["data"], json!({"x": 1}));
        assert_eq!(v["attachments"].as_array().unwrap().len(), 2);
        assert_eq!(b64(&v, 0), "aGk=");
        assert_eq!(b64(&v, 1), "AAEC");
        assert!(v["request_id"].as_str().unwrap().starts_with("req-"));

        // Multipart: the JSON part's attachments first, then the file parts in order.
        let request = json!({"worker_type": "echo", "operation": "echo", "data": "m",
            "attachments": ["AA=="]})
        .to_string();
        let body = multipart(
            "XyZ",
            &[
                (
                    "request",
                    None,
                    Some("application/json"),
                    request.as_bytes(),
                ),
                ("image", Some("a.png"), Some("image/png"), b"\x89PNG"),
                ("mask", Some("b.raw"), None, &[0xff; 3]),
            ],
        );
        let r = c.raw(
            "POST",
            "/api/inference/generate",
            Some(&body),
            "multipart/form-data; boundary=XyZ",
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let v = r.json();
        assert_eq!(v["data"], "m");
        assert_eq!(v["attachments"].as_array().unwrap().len(), 3);
        assert_eq!(b64(&v, 0), "AA==");
        assert_eq!(b64(&v, 1), "iVBORw==");
        assert_eq!(b64(&v, 2), "////");

        // Bad inputs: typed errors naming what is wrong.
        let r = c.request(
            "POST",
            "/api/inference/generate",
            Some(r#"{"worker_type":"echo","operation":"echo","attachments":["aGk=","%%%"]}"#),
        );
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "invalid_request")
        );
        assert!(r.body.contains("attachments[1]"), "{}", r.body);
        let r = c.raw(
            "POST",
            "/api/inference/generate",
            Some(&multipart("B", &[("image", Some("a.png"), None, b"x")])),
            "multipart/form-data; boundary=B",
        );
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "invalid_request")
        );
        assert!(r.body.contains("`request`"), "{}", r.body);
        let r = c.raw(
            "POST",
            "/api/inference/generate",
            Some(b"--B\r\nnot a part"),
            "multipart/form-data; boundary=B",
        );
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "invalid_request")
        );

        // Bigger than server.body_limit_bytes: 413, as JSON and as multipart.
        let big = "A".repeat(BODY_LIMIT * 2);
        let r = c.request(
            "POST",
            "/api/inference/generate",
            Some(
                &json!({"worker_type": "echo", "operation": "echo", "attachments": [big]})
                    .to_string(),
            ),
        );
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (413, "payload_too_large")
        );
        let body = multipart(
            "B",
            &[
                ("request", None, None, request.as_bytes()),
                ("image", Some("big"), None, big.as_bytes()),
            ],
        );
        let r = c.raw(
            "POST",
            "/api/inference/generate",
            Some(&body),
            "multipart/form-data; boundary=B",
        );
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (413, "payload_too_large")
        );

        // Chunked (no Content-Length to refuse up front): the multipart reader stops at the
        // limit.
        let mut s = TcpStream::connect(&server.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut raw = format!(
            "POST /api/inference/generate HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=B\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(&body);
        raw.extend_from_slice(b"\r\n0\r\n\r\n");
        // The server may answer (and close) before it has read everything.
        let _ = s.write_all(&raw);
        let mut answer = BufReader::new(s);
        assert_eq!(read_head(&mut answer), 413);
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut answer, &mut rest);
        assert!(rest.contains("payload_too_large"), "{rest}");

        // The server is fine after all that.
        let mut c = server.client();
        let r = c.request(
            "POST",
            "/api/inference/generate",
            Some(r#"{"worker_type":"echo","operation":"echo","data":"ok"}"#),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    });
}

/// A raw request on its own connection (to be dropped, or read as a stream).
fn send(addr: &str, path: &str, body: &str) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    BufReader::new(s)
}

fn read_head(r: &mut impl BufRead) -> u16 {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line.trim_end().is_empty() {
            return status;
        }
    }
}

/// The next server-sent event's name and data (keep-alive comments and chunk-size lines
/// skipped), or `None` at the end of the stream.
fn next_event(r: &mut impl BufRead) -> Option<(String, Value)> {
    let (mut name, mut data) = (None, None);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if let Some(v) = line.strip_prefix("event: ") {
            name = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("data: ") {
            data = Some(serde_json::from_str(v).unwrap());
        } else if line == "0" && name.is_none() {
            return None;
        } else if line.is_empty() {
            if let (Some(n), Some(d)) = (name.take(), data.take()) {
                return Some((n, d));
            }
        }
    }
}

fn gate_body(label: &str, request_id: Option<&str>) -> String {
    let mut body = json!({"worker_type": "gated", "operation": "gate", "data": {"label": label}});
    if let Some(id) = request_id {
        body["request_id"] = json!(id);
    }
    body.to_string()
}

#[test]
fn a_dropped_connection_cancels_its_request_at_the_worker() {
    with_watchdog(WATCHDOG, || {
        let gates = Gates::new();
        let server = Server::start(&config(&gates));
        let mut c = server.client();
        // `gate` sends no events while it waits: only the closed socket can tell the
        // server the client went away.
        for (path, label) in [
            ("/api/inference/generate", "generate"),
            ("/api/inference/stream", "stream"),
        ] {
            let mut conn = send(&server.addr, path, &gate_body(label, None));
            if path.ends_with("stream") {
                assert_eq!(read_head(&mut conn), 200);
                let (name, data) = next_event(&mut conn).unwrap();
                assert_eq!(name, "request");
                assert!(data["request_id"].as_str().unwrap().starts_with("req-"));
            }
            gates.wait_for(&format!("started {label}"));
            assert_eq!(in_flight(&mut c, "gated"), 1);
            let dropped = Instant::now();
            drop(conn);
            gates.wait_for(&format!("cancelled {label}"));
            eprintln!(
                "{path}: cancelled at the worker {:?} after the drop",
                dropped.elapsed()
            );
            wait_idle(&mut c, "gated");
        }
        let status = c.request("GET", "/api/workers/status", None).json();
        assert_eq!(
            worker(&status, "gated")["restarts"],
            0,
            "cancelled, not killed"
        );
    });
}

#[test]
fn delete_cancels_a_request_by_its_own_id() {
    with_watchdog(WATCHDOG, || {
        let gates = Gates::new();
        let server = Server::start(&config(&gates));
        let mut c = server.client();

        // generate, named by the client.
        let mut held = send(
            &server.addr,
            "/api/inference/generate",
            &gate_body("named", Some("my-job.1")),
        );
        gates.wait_for("started named");
        let dup = c.request(
            "POST",
            "/api/inference/generate",
            Some(&gate_body("dup", Some("my-job.1"))),
        );
        assert_eq!((dup.status, dup.error_code().as_str()), (409, "conflict"));
        let bad = c.request(
            "POST",
            "/api/inference/generate",
            Some(&gate_body("bad", Some("a b"))),
        );
        assert_eq!(
            (bad.status, bad.error_code().as_str()),
            (400, "invalid_request")
        );
        let r = c.request("DELETE", "/api/inference/my-job.1", None);
        assert_eq!(r.status, 202, "{}", r.body);
        assert_eq!(
            r.json(),
            json!({"request_id": "my-job.1", "cancelled": true})
        );
        assert_eq!(read_head(&mut held), 409);
        gates.wait_for("cancelled named");
        wait_idle(&mut c, "gated");
        let r = c.request("DELETE", "/api/inference/my-job.1", None);
        assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
        drop(held);

        // stream: the first event carries the id, the last says cancelled.
        let mut stream = send(
            &server.addr,
            "/api/inference/stream",
            &gate_body("streamed", Some("s-1")),
        );
        assert_eq!(read_head(&mut stream), 200);
        assert_eq!(
            next_event(&mut stream).unwrap(),
            ("request".to_owned(), json!({"request_id": "s-1"}))
        );
        gates.wait_for("started streamed");
        assert_eq!(c.request("DELETE", "/api/inference/s-1", None).status, 202);
        let (name, data) = next_event(&mut stream).unwrap();
        assert_eq!(
            (name.as_str(), &data["error"]["code"]),
            ("error", &json!("cancelled"))
        );
        gates.wait_for("cancelled streamed");
        wait_idle(&mut c, "gated");

        // The id is free again, and a request that ends by itself answers it.
        gates.release("again");
        let r = c.request(
            "POST",
            "/api/inference/generate",
            Some(&gate_body("again", Some("s-1"))),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["request_id"], "s-1");
        let status = c.request("GET", "/api/workers/status", None).json();
        assert_eq!(
            worker(&status, "gated")["restarts"],
            0,
            "cancelled, not killed"
        );
    });
}
