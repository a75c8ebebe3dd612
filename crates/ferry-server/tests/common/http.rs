//! A minimal HTTP/1.1 client for tests against a real `ferry serve` on loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One answer.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Body text.
    pub body: String,
}

impl HttpResponse {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// `error.code` of a JSON error body.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// A keep-alive connection.
pub struct Client {
    addr: String,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    token: Option<String>,
}

impl Client {
    /// Connects to `addr` (`127.0.0.1:PORT`).
    pub fn connect(addr: &str) -> Client {
        let (reader, writer) = Self::open(addr);
        Client {
            addr: addr.to_owned(),
            reader,
            writer,
            token: None,
        }
    }

    fn open(addr: &str) -> (BufReader<TcpStream>, TcpStream) {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        (BufReader::new(stream.try_clone().unwrap()), stream)
    }

    /// Sends `Authorization: Bearer token` from now on.
    pub fn with_token(mut self, token: &str) -> Client {
        self.token = Some(token.to_owned());
        self
    }

    /// Sends a request; `body` is sent as JSON text when given.
    pub fn request(&mut self, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
        self.raw(method, path, body.map(str::as_bytes), "application/json")
    }

    /// Sends a JSON request with extra headers.
    pub fn request_with_headers(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> HttpResponse {
        self.send(
            method,
            path,
            body.map(str::as_bytes),
            "application/json",
            headers,
        )
    }

    /// Sends a request with raw body bytes.
    pub fn raw(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        content_type: &str,
    ) -> HttpResponse {
        self.send(method, path, body, content_type, &[])
    }

    fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        content_type: &str,
        headers: &[(&str, &str)],
    ) -> HttpResponse {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(t) = &self.token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        let body = body.unwrap_or_default();
        if !body.is_empty() || method == "POST" {
            head.push_str(&format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        if let Some(response) = self.exchange(&request) {
            return response;
        }
        // A server may close a keep-alive connection between requests (hyper does after an
        // error answered before the body was read): the request never reached it, so it
        // goes again on a new connection, as an HTTP client's retry of a stale one does.
        (self.reader, self.writer) = Self::open(&self.addr);
        self.exchange(&request)
            .expect("the server closed a fresh connection without answering")
    }

    /// Sends `request` and reads the response; `None` when the connection was closed
    /// before any of the response arrived.
    fn exchange(&mut self, request: &[u8]) -> Option<HttpResponse> {
        self.writer.write_all(request).ok()?;
        let mut status_line = String::new();
        match self.reader.read_line(&mut status_line) {
            Ok(0) => return None,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("status line: {e}"),
            Ok(_) => {}
        }
        Some(self.read_response(status_line))
    }

    fn read_response(&mut self, status_line: String) -> HttpResponse {
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        let mut length = None;
        let mut chunked = false;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse::<usize>().ok();
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut size_line = String::new();
                self.reader.read_line(&mut size_line).unwrap();
                let size = usize::from_str_radix(size_line.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk).unwrap();
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(n) = length {
            body.resize(n, 0);
            self.reader.read_exact(&mut body).unwrap();
        }
        HttpResponse {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

/// A `ferry serve` child process on a free loopback port, stopped (SIGINT) on drop.
pub struct Server {
    child: std::process::Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The folder holding its configuration file.
    dir: std::path::PathBuf,
    /// The temporary folder [`Server::start`] made, removed when the server is dropped
    /// (after it has exited: fields drop after `Drop::drop`).
    _made: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts `ferry serve` with `config_text` written to a file in a new temporary folder,
    /// removed with everything the server wrote there when the server is dropped.
    pub fn start(config_text: &str) -> Server {
        let made = tempfile::Builder::new()
            .prefix("ferry-http-")
            .tempdir()
            .unwrap();
        let path = made.path().join("ferry.toml");
        std::fs::write(&path, config_text).unwrap();
        let mut server = Server::start_file(&path);
        server._made = Some(made);
        server
    }

    /// Starts `ferry serve` with the configuration file at `path` (a restart on the same
    /// file finds the same default state database beside it).
    pub fn start_file(path: &std::path::Path) -> Server {
        let mut child = std::process::Command::new(super::ferry_bin())
            .args([
                "serve",
                "--config",
                path.to_str().unwrap(),
                "--bind",
                "127.0.0.1:0",
            ])
            .env(
                "RUST_LOG",
                std::env::var("FERRY_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("ferry serve starts");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let addr = first
            .trim()
            .rsplit("http://")
            .next()
            .unwrap_or_default()
            .to_owned();
        assert!(
            addr.starts_with("127.0.0.1:"),
            "unexpected first line: {first:?}"
        );
        let dir = path
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .to_path_buf();
        Server {
            child,
            addr,
            dir,
            _made: None,
        }
    }

    /// The folder holding its configuration file (and the default state database).
    pub fn config_dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// A new connection.
    pub fn client(&self) -> Client {
        Client::connect(&self.addr)
    }

    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGINT and waits for the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.interrupt();
        self.child.wait().unwrap()
    }

    /// Sends SIGKILL (no shutdown of any kind) and waits for the exit status.
    pub fn kill9(mut self) -> std::process::ExitStatus {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        self.child.wait().unwrap()
    }

    fn interrupt(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.interrupt();
            for _ in 0..500 {
                if matches!(self.child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
