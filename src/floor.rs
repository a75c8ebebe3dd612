//! Bare ping-pong peers with no engine: the floor each transport's figure is a ratio to.
//!
//! `ferry floor shm-echo` echoes messages over the bare spinning shared-memory ring
//! ([`ShmFloor`] drives it): the same segment as the shm transport, busy-polling on both
//! sides, fixed-size messages, no frames, waiting strategy, liveness or codec.
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

/// The peer's loop of the bare spinning shared-memory ring: echo until stopped or orphaned.
pub fn shm_echo() -> std::io::Result<()> {
    crate::transport::shm::bare::echo()
}

/// The host side of the bare spinning shared-memory ring ping-pong.
#[derive(Debug)]
pub struct ShmFloor(crate::transport::shm::bare::BareHost);

impl ShmFloor {
    /// Starts `program args...` (a peer running [`shm_echo`]) over rings of `capacity`
    /// bytes (give at least twice the message size plus 16).
    pub fn spawn(program: &str, args: &[&str], capacity: usize) -> std::io::Result<Self> {
        crate::transport::shm::bare::BareHost::spawn(program, args, capacity).map(ShmFloor)
    }

    /// One round trip of `message`.
    pub fn round_trip(&mut self, message: &[u8]) -> std::io::Result<()> {
        self.0.round_trip(message)
    }
}

/// The peer's loop of the shm transport *without* the engine: echo every frame of the
/// link the host wired (`FERRY_SHM_FD`), no codec, no worker runtime. Isolates the
/// transport's own cost between the bare ring and the full engine.
pub fn shm_frame_echo(max_frame: usize) -> Result<(), crate::transport::TransportError> {
    use crate::transport::TransportError;
    let mut link = crate::transport::shm::worker_link(max_frame)?;
    let mut buf = Vec::new();
    loop {
        match link.receiver.recv(&mut buf, None) {
            Ok(()) => link.sender.send(&[&buf])?,
            Err(TransportError::Disconnected) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}
