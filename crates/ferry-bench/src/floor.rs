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
//!
//! `ferry floor uds-echo SIZE PATH` and `ferry floor tcp-echo SIZE ADDR` do the same over a
//! Unix domain socket and a TCP connection (`TCP_NODELAY`) to a host listening there;
//! [`SocketFloor`] is that host.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

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

/// Echoes fixed-size messages on a connected stream until the other end closes it.
fn stream_echo(mut stream: impl Read + Write, size: usize) -> std::io::Result<()> {
    let mut buf = vec![0u8; size.max(1)];
    loop {
        match stream.read_exact(&mut buf) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        stream.write_all(&buf)?;
    }
}

/// The peer's loop over a Unix domain socket: connect to `path`, echo `size`-byte messages.
#[cfg(unix)]
pub fn uds_echo(size: usize, path: &str) -> std::io::Result<()> {
    stream_echo(std::os::unix::net::UnixStream::connect(path)?, size)
}

/// The peer's loop over TCP: connect to `addr` (`TCP_NODELAY`), echo `size`-byte messages.
pub fn tcp_echo(size: usize, addr: &str) -> std::io::Result<()> {
    let stream = std::net::TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream_echo(stream, size)
}

/// Which socket a [`SocketFloor`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    /// A Unix domain socket in a fresh private directory (removed once connected).
    #[cfg(unix)]
    Unix,
    /// TCP on loopback, `TCP_NODELAY` on both sides.
    Tcp,
}

#[derive(Debug)]
enum FloorStream {
    #[cfg(unix)]
    Unix(std::os::unix::net::UnixStream),
    Tcp(std::net::TcpStream),
}

/// The host side of the bare socket ping-pong: listens, spawns the peer with the address as
/// its last argument, and does blocking `write` / `read` round trips with no framing.
#[derive(Debug)]
pub struct SocketFloor {
    child: Child,
    stream: FloorStream,
    buf: Vec<u8>,
}

/// Accepts one connection within 30 s, failing early if `child` exits.
fn accept_within<S>(
    child: &mut Child,
    mut accept: impl FnMut() -> std::io::Result<S>,
) -> std::io::Result<S> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match accept() {
            Ok(s) => return Ok(s),
            Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => return Err(e),
            Err(_) => {}
        }
        if child.try_wait()?.is_some() || Instant::now() > deadline {
            return Err(std::io::Error::other("floor peer did not connect"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

impl SocketFloor {
    /// Starts `program args... ADDRESS` (a peer running [`uds_echo`] or [`tcp_echo`] with
    /// `size`) and accepts its connection.
    pub fn spawn(
        kind: SocketKind,
        program: &str,
        args: &[&str],
        size: usize,
    ) -> std::io::Result<Self> {
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null());
        let (child, stream) = match kind {
            #[cfg(unix)]
            SocketKind::Unix => {
                use std::os::unix::fs::DirBuilderExt;
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let dir = std::env::temp_dir()
                    .join(format!("ferry-floor-{}-{nanos}", std::process::id()));
                std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
                let path = dir.join("s");
                let listener = std::os::unix::net::UnixListener::bind(&path);
                let spawned = listener.and_then(|listener| {
                    listener.set_nonblocking(true)?;
                    let mut child = cmd.arg(&path).spawn()?;
                    let accepted = accept_within(&mut child, || listener.accept());
                    Ok((child, accepted))
                });
                let _ = std::fs::remove_dir_all(&dir);
                let (mut child, accepted) = spawned?;
                match accepted {
                    Ok((stream, _)) => (child, FloorStream::Unix(stream)),
                    Err(e) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(e);
                    }
                }
            }
            SocketKind::Tcp => {
                let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
                listener.set_nonblocking(true)?;
                let mut child = cmd.arg(listener.local_addr()?.to_string()).spawn()?;
                match accept_within(&mut child, || listener.accept()) {
                    Ok((stream, _)) => {
                        stream.set_nodelay(true)?;
                        (child, FloorStream::Tcp(stream))
                    }
                    Err(e) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(e);
                    }
                }
            }
        };
        match &stream {
            #[cfg(unix)]
            FloorStream::Unix(s) => s.set_nonblocking(false)?,
            FloorStream::Tcp(s) => s.set_nonblocking(false)?,
        }
        Ok(SocketFloor {
            child,
            stream,
            buf: vec![0; size.max(1)],
        })
    }

    /// One round trip of `message` (its length must be the peer's size).
    pub fn round_trip(&mut self, message: &[u8]) -> std::io::Result<()> {
        let buf = &mut self.buf[..message.len()];
        match &mut self.stream {
            #[cfg(unix)]
            FloorStream::Unix(s) => {
                s.write_all(message)?;
                s.read_exact(buf)
            }
            FloorStream::Tcp(s) => {
                s.write_all(message)?;
                s.read_exact(buf)
            }
        }
    }
}

impl Drop for SocketFloor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The peer's loop of the bare spinning shared-memory ring: echo until stopped or orphaned.
pub fn shm_echo() -> std::io::Result<()> {
    ferry::transport::shm::bare::echo()
}

/// The host side of the bare spinning shared-memory ring ping-pong.
#[derive(Debug)]
pub struct ShmFloor(ferry::transport::shm::bare::BareHost);

impl ShmFloor {
    /// Starts `program args...` (a peer running [`shm_echo`]) over rings of `capacity`
    /// bytes (give at least twice the message size plus 16).
    pub fn spawn(program: &str, args: &[&str], capacity: usize) -> std::io::Result<Self> {
        ferry::transport::shm::bare::BareHost::spawn(program, args, capacity).map(ShmFloor)
    }

    /// One round trip of `message`.
    pub fn round_trip(&mut self, message: &[u8]) -> std::io::Result<()> {
        self.0.round_trip(message)
    }
}

/// The host side of the shm transport *without* the engine: a child running
/// [`shm_frame_echo`] (`PROGRAM floor shm-frame-echo`) over a link wired as the engine
/// wires its workers', frames sent and received raw.
pub struct ShmFrames {
    child: Child,
    link: ferry::transport::Link,
    buf: Vec<u8>,
}

impl std::fmt::Debug for ShmFrames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmFrames")
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

impl ShmFrames {
    /// Starts `program floor shm-frame-echo` with default shm options and connects.
    pub fn spawn(program: &str) -> Result<Self, crate::BenchError> {
        use ferry::transport::{TransportKind, TransportOptions};
        let options = TransportOptions::default();
        let max = ferry::codec::DEFAULT_MAX_FRAME;
        let mut pending =
            ferry::transport::prepare(TransportKind::Shm, &options, max).map_err(link_error)?;
        let mut cmd = Command::new(program);
        cmd.args(["floor", "shm-frame-echo"]).env(
            ferry::worker::env::FERRY_HOST_PID,
            std::process::id().to_string(),
        );
        pending.configure(&mut cmd).map_err(link_error)?;
        let mut child = cmd.spawn()?;
        let link = pending
            .connect(&mut child, Instant::now() + Duration::from_secs(10))
            .map_err(link_error)?;
        Ok(ShmFrames {
            child,
            link,
            buf: Vec::new(),
        })
    }

    /// One round trip of `message`; checks the echo has its length.
    pub fn round_trip(&mut self, message: &[u8]) -> Result<(), crate::BenchError> {
        self.link.sender.send(&[message]).map_err(link_error)?;
        self.link
            .receiver
            .recv(&mut self.buf, None)
            .map_err(link_error)?;
        if self.buf.len() != message.len() {
            return Err(crate::BenchError::BadEcho(format!(
                "frame echo of {} bytes for {}",
                self.buf.len(),
                message.len()
            )));
        }
        Ok(())
    }
}

/// A link failure, as the engine's calls report it.
fn link_error(e: ferry::transport::TransportError) -> crate::BenchError {
    ferry::worker::CallError::Transport(e).into()
}

impl Drop for ShmFrames {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The peer's loop of the shm transport *without* the engine: echo every frame of the
/// link the host wired (`FERRY_SHM_FD`), no codec, no worker runtime. Isolates the
/// transport's own cost between the bare ring and the full engine.
pub fn shm_frame_echo(max_frame: usize) -> Result<(), ferry::transport::TransportError> {
    use ferry::transport::TransportError;
    let mut link = ferry::transport::shm::worker_link(max_frame)?;
    let mut buf = Vec::new();
    loop {
        match link.receiver.recv(&mut buf, None) {
            Ok(()) => link.sender.send(&[&buf])?,
            Err(TransportError::Disconnected) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}
