//! `ferry serve` against hostile clients: slow heads and bodies, idle and excess
//! connections, oversized requests, error shapes, and `/metrics` size, layout and access.
//!
//! Every wait is on an event (an answer, the server closing the connection); the
//! watchdogs only turn a hang into a failure.

use crate::common;

use common::http::Server;
use common::with_watchdog;
use serde_json::Value;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The watchdog of these tests: far above any expected run time.
const WATCHDOG: Duration = Duration::from_secs(30);

fn config(extra_server: &str) -> String {
    format!(
        r#"
[server]
bind = "127.0.0.1:0"
body_limit_bytes = 4096
{extra_server}

[workers.echo]
command = "{ferry}"
args = ["worker", "echo"]
[workers.echo.pool]
min_workers = 1
max_workers = 1
max_in_flight = 8
idempotent_operations = ["echo"]

[[workflows]]
id = "one"
[[workflows.steps]]
name = "first"
worker_type = "echo"
operation = "sleep"
"#,
        ferry = common::ferry_bin()
    )
}

/// An answer read off a raw connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Header names in lower case.
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The JSON error body, checked to have the API's shape.
    fn error(&self) -> &'static str {
        let v: Value = serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("status {}: not JSON ({e}): {:?}", self.status, self.body));
        let e = &v["error"];
        assert!(
            e["message"].is_string() && e["retryable"].is_boolean(),
            "not the API's error shape: {v}"
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{self:?}"
        );
        e["code"].as_str().unwrap().to_owned().leak()
    }
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).unwrap();
    s
}

/// Reads one answer (body by `Content-Length`).
fn read_answer(reader: &mut impl BufRead) -> Answer {
    let mut line = String::new();
    reader.read_line(&mut line).expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').expect("header");
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("body");
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Sends `request` as is on a new connection and reads the answer.
fn exchange(addr: &str, request: &[u8]) -> Answer {
    let mut s = connect(addr);
    s.write_all(request).unwrap();
    read_answer(&mut BufReader::new(s))
}

/// [`exchange`], for a connection the server may reset before answering.
fn try_exchange(addr: &str, request: &'static [u8]) -> Option<Answer> {
    let addr = addr.to_owned();
    std::thread::spawn(move || exchange(&addr, request))
        .join()
        .ok()
}

/// Blocks until the server closes `s` (end of file or reset), discarding what comes.
fn wait_closed(s: &mut TcpStream) {
    let mut buf = [0; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                assert!(
                    matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                    ),
                    "{e}"
                );
                return;
            }
        }
    }
}

#[test]
fn a_head_sent_a_byte_at_a_time_is_cut_off() {
    with_watchdog(WATCHDOG, || {
        let server = Server::start(&config("header_timeout_ms = 300"));
        let mut s = connect(&server.addr);
        let mut reader = s.try_clone().unwrap();
        let closed = std::thread::spawn(move || {
            let mut got = Vec::new();
            let _ = reader.read_to_end(&mut got);
            got
        });
        // A header line that never ends, one byte at a time, until the server hangs up.
        let head = b"GET /health HTTP/1.1\r\nHost: test\r\nX-Slow: ";
        for byte in head.iter().copied().chain(std::iter::repeat(b'a')) {
            if closed.is_finished() || s.write_all(&[byte]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let got = closed.join().unwrap();
        assert!(got.is_empty(), "unexpected answer: {got:?}");
    });
}

#[test]
fn an_idle_connection_is_closed() {
    with_watchdog(WATCHDOG, || {
        let server = Server::start(&config("idle_timeout_ms = 300"));
        let mut s = connect(&server.addr);
        wait_closed(&mut s);
        // A kept-alive connection is closed once idle too, after being served.
        let mut s = connect(&server.addr);
        s.write_all(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
            .unwrap();
        let mut reader = BufReader::new(s.try_clone().unwrap());
        assert_eq!(read_answer(&mut reader).status, 200);
        let mut rest = Vec::new();
        let _ = reader.read_to_end(&mut rest);
        assert!(rest.is_empty());
    });
}

#[test]
fn a_huge_declared_body_is_refused_at_once() {
    with_watchdog(WATCHDOG, || {
        let server = Server::start(&config(""));
        let a = exchange(
            &server.addr,
            b"POST /api/inference/generate HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n",
        );
        assert_eq!((a.status, a.error()), (413, "payload_too_large"));
        assert_eq!(a.header("connection"), Some("close"));
    });
}

#[test]
fn a_body_slower_than_its_deadline_gets_408() {
    with_watchdog(WATCHDOG, || {
        let server = Server::start(&config("body_timeout_ms = 300"));
        let mut s = connect(&server.addr);
        s.write_all(b"POST /api/inference/generate HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"worker_")
            .unwrap();
        let mut reader = BufReader::new(s);
        let a = read_answer(&mut reader);
        assert_eq!((a.status, a.error()), (408, "request_timeout"));
        assert_eq!(a.header("connection"), Some("close"));
    });
}

#[test]
fn health_answers_past_the_connection_cap() {
    with_watchdog(WATCHDOG, || {
        let server = Server::start(&config(
            "max_connections = 3\nhealth_connections = 2\nidle_timeout_ms = 600000\nheader_timeout_ms = 600000",
        ));
        // Fill the cap with kept-alive connections, each known to be served.
        let mut held: Vec<_> = (0..3)
            .map(|_| {
                let mut c = server.client();
                assert_eq!(c.request("GET", "/health", None).status, 200);
                c
            })
            .collect();
        let mut probe = server.client();
        assert_eq!(probe.request("GET", "/health", None).status, 200);
        assert_eq!(probe.request("GET", "/health", None).status, 200);
        let a = exchange(
            &server.addr,
            b"GET /api/workers/status HTTP/1.1\r\nHost: test\r\n\r\n",
        );
        assert_eq!((a.status, a.error()), (503, "overloaded"));
        assert_eq!(a.header("connection"), Some("close"));
        // A slot freed: the API is served again (once the server has seen the close).
        drop(held.pop());
        loop {
            let request = b"GET /api/workers/status HTTP/1.1\r\nHost: test\r\n\r\n";
            match try_exchange(&server.addr, request) {
                Some(a) if a.status == 200 => break,
                Some(a) => assert_eq!((a.status, a.error()), (503, "overloaded")),
                None => {} // refused over every cap, reset before the answer was read
            }
        }
    });
}

#[test]
fn every_error_is_json() {
    with_watchdog(WATCHDOG, || {
        let server = Server::start(&config(""));
        let get = |target: &str, extra: &str| {
            exchange(
                &server.addr,
                format!("GET {target} HTTP/1.1\r\nHost: test\r\n{extra}\r\n").as_bytes(),
            )
        };
        let a = exchange(
            &server.addr,
            b"DELETE /health HTTP/1.1\r\nHost: test\r\n\r\n",
        );
        assert_eq!((a.status, a.error()), (405, "method_not_allowed"));
        let a = get("/api/inference/generate", "");
        assert_eq!((a.status, a.error()), (405, "method_not_allowed"));
        let a = get("/api/processing/sessions/%FF", "");
        assert_eq!((a.status, a.error()), (400, "invalid_request"));
        let a = get("/api/processing/batches/%FF%FE/cancel", "");
        assert_eq!((a.status, a.error()), (405, "method_not_allowed"));
        let a = get(&format!("/health?pad={}", "x".repeat(9_000)), "");
        assert_eq!((a.status, a.error()), (414, "uri_too_long"));
        let big: String = (0..10)
            .map(|i| format!("X-Pad-{i}: {}\r\n", "y".repeat(4_000)))
            .collect();
        let a = get("/health", &big);
        assert_eq!((a.status, a.error()), (431, "headers_too_large"));
        let many: String = (0..120).map(|i| format!("X-H-{i}: 1\r\n")).collect();
        let a = get("/health", &many);
        assert_eq!((a.status, a.error()), (431, "headers_too_large"));
        let a = get("/nowhere", "");
        assert_eq!((a.status, a.error()), (404, "not_found"));
        // Still serving normally.
        assert_eq!(get("/health", "").status, 200);
    });
}

/// Checks the page the way a strict exposition-format parser does: each family's
/// `# HELP` and `# TYPE` once, before its samples, which all follow it contiguously.
fn check_layout(page: &str) -> Vec<String> {
    let mut families: Vec<String> = Vec::new();
    let mut current: Option<(String, String)> = None;
    let mut help: Option<String> = None;
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap().to_owned();
            assert!(!families.contains(&name), "family {name} appears twice");
            help = Some(name);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(matches!(kind, "counter" | "gauge" | "histogram"), "{line}");
            assert_eq!(
                help.take().as_deref(),
                Some(name),
                "HELP before TYPE: {line}"
            );
            assert!(!families.iter().any(|f| f == name), "family {name} twice");
            families.push(name.to_owned());
            current = Some((name.to_owned(), kind.to_owned()));
        } else if line.starts_with('#') || line.is_empty() {
            panic!("unexpected line {line:?}");
        } else {
            let (family, kind) = current
                .as_ref()
                .unwrap_or_else(|| panic!("sample before any TYPE: {line}"));
            let name_end = line.find(['{', ' ']).unwrap();
            let name = &line[..name_end];
            let belongs = match kind.as_str() {
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(family.as_str())),
                _ => name == family,
            };
            assert!(belongs, "sample {name} under family {family}: {line}");
            let rest = &line[name_end..];
            let value = if let Some(labels) = rest.strip_prefix('{') {
                let close = labels.rfind('}').expect("labels end");
                check_labels(&labels[..close]);
                &labels[close + 1..]
            } else {
                rest
            };
            let value = value.trim();
            assert!(
                value.parse::<f64>().is_ok() || value == "+Inf",
                "value {value:?}: {line}"
            );
        }
    }
    families
}

/// `name="value",...` with escaped values.
fn check_labels(labels: &str) {
    let mut chars = labels.chars().peekable();
    while chars.peek().is_some() {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "label name {name:?} in {labels}"
        );
        assert_eq!(chars.next(), Some('"'), "{labels}");
        loop {
            match chars.next().expect("unterminated label value") {
                '\\' => assert!(matches!(chars.next(), Some('\\' | '"' | 'n')), "{labels}"),
                '"' => break,
                '\n' => panic!("newline in {labels}"),
                _ => {}
            }
        }
        match chars.next() {
            None => break,
            Some(',') => {}
            Some(c) => panic!("{c:?} after a label value in {labels}"),
        }
    }
}

#[test]
fn metrics_page_is_well_formed() {
    with_watchdog(WATCHDOG, || {
        let server = Server::start(&config(""));
        let mut c = server.client();
        let ok = c.request(
            "POST",
            "/api/inference/generate",
            Some(r#"{"worker_type":"echo","operation":"echo","data":{}}"#),
        );
        assert_eq!(ok.status, 200, "{}", ok.body);
        let page = c.request("GET", "/metrics", None);
        assert_eq!(page.status, 200);
        let families = check_layout(&page.body);
        for f in [
            "ferry_requests_total",
            "ferry_request_duration_seconds",
            "ferry_queue_depth",
            "ferry_workers_ready",
            "ferry_worker_restarts_total",
        ] {
            assert!(
                families.iter().any(|g| g == f),
                "{f} missing: {}",
                page.body
            );
        }
        assert!(page
            .body
            .contains(r#"ferry_workers_ready{worker_type="echo"} 1"#));
    });
}

#[test]
fn metrics_stay_small_whatever_the_operation_names() {
    with_watchdog(WATCHDOG * 4, || {
        let server = Server::start(&config(""));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let addr = server.addr.clone();
                std::thread::spawn(move || {
                    let mut c = common::http::Client::connect(&addr);
                    for i in 0..2_500 {
                        let body = format!(
                            r#"{{"worker_type":"echo","operation":"op-{t}-{i}-{}","data":{{}}}}"#,
                            "n".repeat(40)
                        );
                        let r = c.request("POST", "/api/inference/generate", Some(&body));
                        assert_eq!(r.status, 400, "{}", r.body);
                    }
                    for i in 0..100 {
                        let body =
                            format!(r#"{{"worker_type":"ghost-{t}-{i}","operation":"echo"}}"#);
                        let r = c.request("POST", "/api/inference/generate", Some(&body));
                        assert_eq!(r.status, 400, "{}", r.body);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let page = server.client().request("GET", "/metrics", None).body;
        assert!(page.len() < 100_000, "{} bytes", page.len());
        assert!(
            !page.contains("op-0-1") && !page.contains("ghost"),
            "{page}"
        );
        assert!(
            page.contains(r#"operation="other""#),
            "refused operations are counted under `other`: {page}"
        );
        check_layout(&page);
    });
}

#[test]
fn metrics_need_the_token_unless_public() {
    with_watchdog(WATCHDOG, || {
        let server = Server::start(&config(r#"token = "s3cret""#));
        let r = server.client().request("GET", "/metrics", None);
        assert_eq!((r.status, r.error_code().as_str()), (401, "unauthorized"));
        let r = server
            .client()
            .with_token("s3cret")
            .request("GET", "/metrics", None);
        assert_eq!(r.status, 200);
        assert!(r.body.contains("ferry_queue_depth"));
        assert_eq!(server.client().request("GET", "/health", None).status, 200);
        drop(server);

        let server = Server::start(&config("token = \"s3cret\"\npublic_metrics = true"));
        assert_eq!(server.client().request("GET", "/metrics", None).status, 200);
        let r = server.client().request("GET", "/api/workers/status", None);
        assert_eq!(r.status, 401);
    });
}

#[test]
fn a_server_under_limits_still_drains_on_sigint() {
    with_watchdog(WATCHDOG, || {
        let server = Server::start(&config("max_connections = 4"));
        let mut idle = server.client();
        assert_eq!(idle.request("GET", "/health", None).status, 200);
        assert!(
            server.stop().success(),
            "clean exit with an idle connection open"
        );
    });
}
