//! The web console's routes against a real `ferry serve`: the page and its assets (with their
//! content types), `GET /api/events` (lifecycle events as server-sent events) and
//! `GET /api/bench/latest`. The page itself is tested in a browser: tests/browser/.

use crate::common;

use common::http::Server;
use common::{with_watchdog, WATCHDOG};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn config(extra_server: &str) -> String {
    format!(
        r#"
[server]
bind = "127.0.0.1:0"
{extra_server}

[workers.echo]
command = "{ferry}"
args = ["worker", "echo"]
[workers.echo.pool]
min_workers = 1
max_workers = 1
"#,
        ferry = common::ferry_bin()
    )
}

/// One answer read to the end (`Connection: close`): status, lower-cased headers, body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn send(addr: &str, method: &str, path: &str, token: Option<&str>) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let length = if method == "POST" {
        "Content-Length: 0\r\n"
    } else {
        ""
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{auth}{length}\r\n"
    )
    .unwrap();
    s
}

fn read_head(r: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            return (status, headers);
        }
        let (k, v) = line.split_once(':').unwrap();
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
}

fn get(addr: &str, path: &str, token: Option<&str>) -> Answer {
    let mut r = BufReader::new(send(addr, "GET", path, token));
    let (status, headers) = read_head(&mut r);
    let mut raw = Vec::new();
    r.read_to_end(&mut raw).unwrap();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(&raw) } else { raw };
    Answer {
        status,
        headers,
        body: String::from_utf8(body).unwrap(),
    }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let end = raw.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&raw[..end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[end + 2..end + 2 + size]);
        raw = &raw[end + 2 + size + 2..];
    }
}

/// An open `GET /api/events` stream, read event by event.
struct Events {
    reader: BufReader<TcpStream>,
}

impl Events {
    fn open(addr: &str, token: Option<&str>) -> Events {
        let mut reader = BufReader::new(send(addr, "GET", "/api/events", token));
        let (status, headers) = read_head(&mut reader);
        assert_eq!(status, 200);
        let content_type = headers.iter().find(|(k, _)| k == "content-type").unwrap();
        assert_eq!(content_type.1, "text/event-stream");
        Events { reader }
    }

    /// The next event's name and data, or None at the end of the stream. Keep-alive
    /// comments are skipped. The body is chunked: chunk-size lines are told apart from
    /// event lines because an event line always has a colon.
    fn next(&mut self) -> Option<(String, Value)> {
        let (mut name, mut data) = (None, None);
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if let Some(v) = line.strip_prefix("event: ") {
                name = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("data: ") {
                data = Some(serde_json::from_str(v).unwrap());
            } else if line == "0" && name.is_none() {
                return None; // the last chunk
            } else if line.is_empty() {
                if let (Some(n), Some(d)) = (name.take(), data.take()) {
                    return Some((n, d));
                }
            }
        }
    }

    /// Events until one matches `want` (panics if the stream ends first).
    fn until(&mut self, want: impl Fn(&str, &Value) -> bool) -> Vec<(String, Value)> {
        let mut seen = Vec::new();
        loop {
            let (name, data) = self
                .next()
                .unwrap_or_else(|| panic!("stream ended; seen {seen:?}"));
            let done = want(&name, &data);
            seen.push((name, data));
            if done {
                return seen;
            }
        }
    }
}

fn echo_worker_id(server: &Server) -> String {
    let status = server
        .client()
        .request("GET", "/api/workers/status", None)
        .json();
    status["workers"][0]["id"].as_str().unwrap().to_owned()
}

#[test]
fn the_page_and_its_assets_have_their_content_types() {
    with_watchdog(WATCHDOG, || {
        let server = Server::start(&config("token = \"sesame\""));
        // Open without the token: the page asks for it.
        let page = get(&server.addr, "/", None);
        assert_eq!(page.status, 200);
        assert_eq!(
            page.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert!(page
            .header("content-security-policy")
            .is_some_and(|csp| csp.contains("default-src 'self'")));
        assert!(page.body.contains("<script src=\"/console/app.js\""));
        for (path, content_type, marker) in [
            (
                "/console/app.js",
                "text/javascript; charset=utf-8",
                "/api/events",
            ),
            ("/console/app.css", "text/css; charset=utf-8", ".progress"),
            ("/console/favicon.svg", "image/svg+xml", "<svg"),
        ] {
            let a = get(&server.addr, path, None);
            assert_eq!(a.status, 200, "{path}");
            assert_eq!(a.header("content-type"), Some(content_type), "{path}");
            assert_eq!(a.header("x-content-type-options"), Some("nosniff"));
            assert!(a.body.contains(marker), "{path}");
        }
        // The API stays behind the token, the new routes included.
        for path in ["/api/events", "/api/bench/latest"] {
            let a = get(&server.addr, path, None);
            assert_eq!(a.status, 401, "{path}");
            let body: Value = serde_json::from_str(&a.body).unwrap();
            assert_eq!(body["error"]["code"], "unauthorized", "{path}");
        }
        // An unknown asset is the API's JSON 404.
        let missing = get(&server.addr, "/console/nope.js", None);
        assert_eq!(missing.status, 404);
        assert!(missing.body.contains("not_found"));
    });
}

#[test]
fn events_stream_lifecycle_events_of_a_restart() {
    with_watchdog(WATCHDOG, || {
        let server = Server::start(&config(""));
        let id = echo_worker_id(&server);
        let mut events = Events::open(&server.addr, None);
        let (name, open) = events.next().unwrap();
        assert_eq!(name, "open");
        assert_eq!(open["worker_types"], serde_json::json!(["echo"]));

        let restart =
            server
                .client()
                .request("POST", &format!("/api/workers/restart/{id}"), Some("{}"));
        assert_eq!(restart.status, 202, "{}", restart.body);
        let seen = events.until(|name, e| {
            name == "lifecycle" && e["worker_id"] == id.as_str() && e["kind"] == "ready"
        });
        let kinds: Vec<&str> = seen
            .iter()
            .filter(|(n, e)| n == "lifecycle" && e["worker_id"] == id.as_str())
            .map(|(_, e)| e["kind"].as_str().unwrap())
            .collect();
        assert!(kinds.contains(&"started"), "{seen:?}");
        let ready = &seen.last().unwrap().1;
        assert_eq!(ready["worker_type"], "echo");
        assert!(ready["pid"].as_u64().is_some_and(|p| p > 0), "{ready}");
        assert!(ready["at_ms"].as_u64().is_some_and(|t| t > 0), "{ready}");
        assert!(ready["detail"].is_string(), "{ready}");
    });
}

/// A pool with `devices = 2`: each worker is shown with its own device in
/// `/api/workers/status`, `/metrics` and the lifecycle events, and a restarted worker comes
/// back on the device it had.
#[test]
fn workers_show_their_devices_in_status_metrics_and_events() {
    with_watchdog(WATCHDOG, || {
        let config = config("").replace("max_workers = 1", "max_workers = 2\ndevices = 2");
        let config = config.replace("min_workers = 1", "min_workers = 2");
        let server = Server::start(&config);
        let status = server
            .client()
            .request("GET", "/api/workers/status", None)
            .json();
        let workers = status["workers"].as_array().unwrap();
        let mut devices: Vec<&str> = workers
            .iter()
            .map(|w| w["device"].as_str().unwrap())
            .collect();
        devices.sort_unstable();
        assert_eq!(devices, ["cuda:0", "cuda:1"], "{status}");
        for w in workers {
            assert!(
                w["memory_rss_mb"].as_f64().is_some_and(|mb| mb > 0.0),
                "{w}"
            );
            assert!(
                w["telemetry"].is_null(),
                "the echo worker reports none: {w}"
            );
        }
        let page = server.client().request("GET", "/metrics", None).body;
        for w in workers {
            let labels = format!(
                "worker_type=\"echo\",worker_id=\"{}\",device=\"{}\"",
                w["id"].as_str().unwrap(),
                w["device"].as_str().unwrap()
            );
            assert!(
                page.contains(&format!("ferry_worker_info{{{labels}}} 1")),
                "{page}"
            );
            assert!(
                page.contains(&format!("ferry_worker_memory_rss_bytes{{{labels}}} ")),
                "{page}"
            );
        }

        let on_one = workers.iter().find(|w| w["device"] == "cuda:1").unwrap();
        let id = on_one["id"].as_str().unwrap();
        let mut events = Events::open(&server.addr, None);
        assert_eq!(events.next().unwrap().0, "open");
        let restart =
            server
                .client()
                .request("POST", &format!("/api/workers/restart/{id}"), Some("{}"));
        assert_eq!(restart.status, 202, "{}", restart.body);
        let seen = events
            .until(|name, e| name == "lifecycle" && e["worker_id"] == id && e["kind"] == "ready");
        for (_, e) in seen.iter().filter(|(_, e)| e["worker_id"] == id) {
            assert_eq!(e["device"], "cuda:1", "{e}");
        }
        let status = server
            .client()
            .request("GET", "/api/workers/status", None)
            .json();
        let again = status["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["id"] == id)
            .unwrap();
        assert_eq!(again["device"], "cuda:1", "{again}");
        assert_ne!(again["pid"], on_one["pid"], "{again}");
    });
}

#[test]
fn an_open_events_stream_does_not_hold_the_shutdown() {
    with_watchdog(WATCHDOG, || {
        // A grace period far above the watchdog: only the stream's end lets it stop in time.
        let server = Server::start(&config("shutdown_grace_ms = 600000"));
        let mut events = Events::open(&server.addr, None);
        assert_eq!(events.next().unwrap().0, "open");
        let status = server.stop();
        assert!(status.success(), "{status:?}");
        while events.next().is_some() {}
    });
}

fn start_with_args(config_text: &str, args: &[&str]) -> (Child, String) {
    let dir = tempfile::tempdir().unwrap().keep();
    let path = dir.join("ferry.toml");
    std::fs::write(&path, config_text).unwrap();
    let mut child = Command::new(common::ferry_bin())
        .args(["serve", "--config", path.to_str().unwrap()])
        .args(["--bind", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let addr = first.trim().rsplit("http://").next().unwrap().to_owned();
    (child, addr)
}

#[test]
fn bench_latest_serves_the_file_or_a_json_404() {
    with_watchdog(WATCHDOG, || {
        // Default: docs/bench/latest.json beside the config file; there is none here.
        let server = Server::start(&config(""));
        let none = get(&server.addr, "/api/bench/latest", None);
        assert_eq!(none.status, 404);
        let body: Value = serde_json::from_str(&none.body).unwrap();
        assert_eq!(body["error"]["code"], "not_found");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("docs/bench/latest.json"));
        drop(server);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bench.json");
        let text =
            r#"{"ferry_version": "0.1.0", "results": [{"transport": "shm", "p50_us": 2.5}]}"#;
        std::fs::write(&file, text).unwrap();
        let (mut child, addr) =
            start_with_args(&config(""), &["--bench-json", file.to_str().unwrap()]);
        let a = get(&addr, "/api/bench/latest", None);
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.header("content-type"), Some("application/json"));
        assert_eq!(a.body, text);
        // Read at each request: a newer run shows at once; a broken file is a JSON 500.
        std::fs::write(&file, "{not json").unwrap();
        let broken = get(&addr, "/api/bench/latest", None);
        assert_eq!(broken.status, 500);
        assert!(broken.body.contains("\"internal\""), "{}", broken.body);
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        }
        assert!(child.wait().unwrap().success());
    });
}

#[test]
fn a_dropped_stream_cancels_its_request_at_the_worker() {
    with_watchdog(WATCHDOG, || {
        let server = Server::start(&config(""));
        let body =
            r#"{"worker_type": "echo", "operation": "sleep", "data": {"ms": 60000, "steps": 600}}"#;
        let mut s = TcpStream::connect(&server.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "POST /api/inference/stream HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut events = Events {
            reader: BufReader::new(s),
        };
        let (status, _) = read_head(&mut events.reader);
        assert_eq!(status, 200);
        events.until(|name, _| name == "progress");
        let in_flight = |server: &Server| {
            server
                .client()
                .request("GET", "/api/workers/status", None)
                .json()["workers"][0]["in_flight"]
                .as_u64()
                .unwrap()
        };
        assert_eq!(in_flight(&server), 1);
        drop(events);
        // The worker checks for a cancel after each 100 ms step: well before the 60 s.
        while in_flight(&server) != 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}
