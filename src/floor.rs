//! Bare ping-pong peers with no engine: the floor each transport's figure is a ratio to.
//!
//! `ferry floor pipe-echo SIZE` reads `SIZE`-byte messages on stdin and writes each back
//! on stdout, with nothing else in between. [`PipeFloor`] drives it from the host the same
//! way (one `write`, then `read` until `SIZE` bytes are back), so the difference between
//! this and an engine round trip is the engine's cost, measured in the same run.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// The peer's loop: echo fixed-size messages from stdin to stdout until EOF.
pub fn pipe_echo(size: usize) -> std::io::Result<()> {
    let mut buf = vec![0u8; size.max(1)];
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let mut input = stdin.lock();
    let mut output = stdout.lock();
    loop {
        match input.read_exact(&mut buf) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        output.write_all(&buf)?;
        output.flush()?;
    }
}

/// The host side of the bare pipe ping-pong.
#[derive(Debug)]
pub struct PipeFloor {
    child: Child,
    to: ChildStdin,
    from: ChildStdout,
    buf: Vec<u8>,
}

impl PipeFloor {
    /// Starts `program args...` (a peer running [`pipe_echo`] with `size`).
    pub fn spawn(program: &str, args: &[&str], size: usize) -> std::io::Result<Self> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let to = child
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("no stdin pipe"))?;
        let from = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout pipe"))?;
        Ok(PipeFloor {
            child,
            to,
            from,
            buf: vec![0; size.max(1)],
        })
    }

    /// One round trip of `message` (its length must be the peer's size).
    pub fn round_trip(&mut self, message: &[u8]) -> std::io::Result<()> {
        self.to.write_all(message)?;
        self.from.read_exact(&mut self.buf[..message.len()])
    }
}

impl Drop for PipeFloor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
