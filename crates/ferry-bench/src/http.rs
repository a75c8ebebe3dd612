//! The old design's baseline: an HTTP/1.1 keep-alive POST to a small Python HTTP worker on
//! loopback, driven by a minimal client over one `TcpStream` (`TCP_NODELAY`).
//!
//! The server is `http_echo.py` beside this file (standard library `http.server`, Nagle
//! off), run with `python -c`; it answers every POST with its body. The client writes the
//! request head and body in one `write`, reads the response head, takes its
//! `Content-Length`, and reads the whole body: what a bridge does per call, minus any JSON.

use super::{BenchError, RoundTrip};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The server's source.
pub const SERVER_SOURCE: &str = include_str!("http_echo.py");

/// The host side of the HTTP baseline: the Python server process and one keep-alive
/// connection to it.
#[derive(Debug)]
pub struct HttpPeer {
    child: Child,
    client: Client,
    /// Whether a body was compared byte for byte yet (only the first one is).
    checked: bool,
}

impl HttpPeer {
    /// Starts the server with `python` and connects, for `size`-byte bodies.
    pub fn spawn(python: &Path, size: usize) -> Result<Self, BenchError> {
        let mut child = Command::new(python)
            .args(["-c", SERVER_SOURCE])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()?;
        let port = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout pipe"))
            .and_then(|out| {
                let mut line = String::new();
                BufReader::new(out).read_line(&mut line)?;
                line.trim()
                    .parse::<u16>()
                    .map_err(|_| std::io::Error::other(format!("bad port line {line:?}")))
            });
        let client =
            port.and_then(|port| Client::connect(port, "/infer", "application/octet-stream", size));
        match client {
            Ok(client) => Ok(HttpPeer {
                child,
                client,
                checked: false,
            }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e.into())
            }
        }
    }
}

/// One keep-alive HTTP/1.1 connection that POSTs fixed-length bodies to one path: the
/// request head is made once, the body appended per call, and the whole response read.
#[derive(Debug)]
pub(crate) struct Client {
    stream: TcpStream,
    /// The request head, then (per call) the body.
    out: Vec<u8>,
    head_len: usize,
    /// Response bytes read and not yet consumed.
    inbuf: Vec<u8>,
    /// Bytes of `inbuf` the last answer took (dropped at the next call).
    consumed: usize,
}

impl Client {
    /// Connects to `127.0.0.1:port` (`TCP_NODELAY`) for POSTs of `body_len`-byte bodies
    /// of `content_type` to `path`.
    pub(crate) fn connect(
        port: u16,
        path: &str,
        content_type: &str,
        body_len: usize,
    ) -> std::io::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Content-Type: {content_type}\r\nContent-Length: {body_len}\r\n\r\n"
        );
        let mut out = Vec::with_capacity(head.len() + body_len);
        out.extend_from_slice(head.as_bytes());
        Ok(Client {
            stream,
            head_len: out.len(),
            out,
            inbuf: Vec::with_capacity(body_len + 1024),
            consumed: 0,
        })
    }

    /// Sends one request whose body is `parts` (together the length given to
    /// [`connect`](Self::connect)) and returns the body of its `200` answer, valid until
    /// the next call.
    pub(crate) fn post(&mut self, parts: &[&[u8]]) -> Result<&[u8], BenchError> {
        self.inbuf.drain(..self.consumed);
        self.consumed = 0;
        self.out.truncate(self.head_len);
        for part in parts {
            self.out.extend_from_slice(part);
        }
        self.stream.write_all(&self.out)?;
        let (head, length) = self.read_head()?;
        let total = head + length;
        if self.inbuf.len() < total {
            let have = self.inbuf.len();
            self.inbuf.resize(total, 0);
            self.stream.read_exact(&mut self.inbuf[have..])?;
        }
        self.consumed = total;
        Ok(&self.inbuf[head..total])
    }

    /// Reads until the buffer holds a whole response head; returns its length and the
    /// body's `Content-Length`.
    fn read_head(&mut self) -> Result<(usize, usize), BenchError> {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(end) = memchr::memmem::find(&self.inbuf, b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.inbuf[..end])
                    .map_err(|_| BenchError::BadEcho("response head is not UTF-8".into()))?;
                if !head.starts_with("HTTP/1.1 200") {
                    let status = head.lines().next().unwrap_or_default();
                    return Err(BenchError::BadEcho(format!("HTTP status `{status}`")));
                }
                let length = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                    .ok_or_else(|| BenchError::BadEcho("no Content-Length".into()))?;
                return Ok((end + 4, length));
            }
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(BenchError::Io(std::io::ErrorKind::UnexpectedEof.into()));
            }
            self.inbuf.extend_from_slice(&chunk[..n]);
        }
    }
}

impl RoundTrip for HttpPeer {
    fn round_trip(&mut self, payload: &[u8]) -> Result<(), BenchError> {
        let check = !self.checked;
        let body = self.client.post(&[payload])?;
        if body.len() != payload.len() {
            return Err(BenchError::BadEcho(format!(
                "{} bytes back for {} sent",
                body.len(),
                payload.len()
            )));
        }
        if check && body != payload {
            return Err(BenchError::BadEcho("body differs from the payload".into()));
        }
        self.checked = true;
        Ok(())
    }
}

impl Drop for HttpPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
