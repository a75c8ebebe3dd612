//! The iceoryx2 ping-pong peer: another project's zero-copy shared-memory IPC, measured
//! beside the shm floor so "ahead of every peer" is a figure of the same run.
//!
//! Two publish-subscribe services of byte slices, `<prefix>/ping` (host to peer) and
//! `<prefix>/pong` (peer to host), each with one publisher and one subscriber, a
//! subscriber buffer of one sample, no history, safe overflow: the setup of iceoryx2's own
//! `benchmarks/publish-subscribe`. Both sides busy-poll `receive` like that benchmark does,
//! but unlike it the payload is touched: the host copies the whole payload into a loaned
//! sample and sends it; the peer ([`echo`], a child process, `ferry floor iceoryx2-echo
//! SIZE PREFIX`) copies the whole received payload into a sample of its own and sends it
//! back; the host copies the whole echo out and checks its length (and its bytes on the
//! first call).
//!
//! The host (`Iceoryx2Peer`, with the feature) creates both services and its ports before
//! it starts the child, waits for the child's empty "ready" sample, and stops it with an
//! empty sample (payloads are never empty), so the child drops its node cleanly. The peer stops on its
//! own when the host process dies.
//!
//! Built only with the `iceoryx2` cargo feature; without it [`BUILT`] is false and
//! [`echo`] fails with [`BenchError::PeerFailed`].

use super::BenchError;

/// Whether this build has the iceoryx2 peer (the `iceoryx2` cargo feature).
pub const BUILT: bool = cfg!(feature = "iceoryx2");

/// How to get a build with the peer, for notes and errors.
pub const HOW_TO_BUILD: &str =
    "cargo build --release -p ferry-server --features iceoryx2 (or --features ferry-bench/iceoryx2); needs libclang";

/// The peer name in tables and the JSON.
pub const NAME: &str = "iceoryx2";

fn failed(reason: impl Into<String>) -> BenchError {
    BenchError::PeerFailed {
        peer: NAME,
        reason: reason.into(),
    }
}

/// The peer's loop (`ferry floor iceoryx2-echo SIZE PREFIX`): echo every `size`-byte
/// sample of `<prefix>/ping` on `<prefix>/pong` until an empty sample or the parent's
/// death.
#[cfg(not(feature = "iceoryx2"))]
pub fn echo(_size: usize, _prefix: &str) -> Result<(), BenchError> {
    Err(failed(format!("not built; build with {HOW_TO_BUILD}")))
}

#[cfg(feature = "iceoryx2")]
pub use imp::{echo, Iceoryx2Peer};

#[cfg(feature = "iceoryx2")]
mod imp {
    use super::{failed, BenchError};
    use iceoryx2::prelude::*;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    type Publisher = iceoryx2::port::publisher::Publisher<ipc::Service, [u8], ()>;
    type Subscriber = iceoryx2::port::subscriber::Subscriber<ipc::Service, [u8], ()>;
    type PubSub =
        iceoryx2::service::port_factory::publish_subscribe::PortFactory<ipc::Service, [u8], ()>;

    /// Empty polls between two checks of the other process.
    const POLLS_PER_CHECK: u32 = 4096;
    /// How long the host waits for the child's ready sample.
    const START_TIMEOUT: Duration = Duration::from_secs(30);
    /// How long the host waits for the child to leave after the stop sample.
    const STOP_TIMEOUT: Duration = Duration::from_secs(2);

    fn node() -> Result<Node<ipc::Service>, BenchError> {
        set_log_level(LogLevel::Error);
        NodeBuilder::new()
            // The bench's own Ctrl-C handling stays as it is.
            .signal_handling_mode(SignalHandlingMode::Disabled)
            .create::<ipc::Service>()
            .map_err(|e| failed(format!("cannot create an iceoryx2 node: {e:?}")))
    }

    fn service_name(prefix: &str, which: &str) -> Result<ServiceName, BenchError> {
        ServiceName::new(&format!("{prefix}/{which}"))
            .map_err(|e| failed(format!("bad service name {prefix:?}/{which}: {e:?}")))
    }

    fn open_or_create(
        node: &Node<ipc::Service>,
        prefix: &str,
        which: &str,
    ) -> Result<PubSub, BenchError> {
        node.service_builder(&service_name(prefix, which)?)
            .publish_subscribe::<[u8]>()
            .max_publishers(1)
            .max_subscribers(1)
            .history_size(0)
            .subscriber_max_buffer_size(1)
            .enable_safe_overflow(true)
            .open_or_create()
            .map_err(|e| failed(format!("cannot open the service {prefix}/{which}: {e:?}")))
    }

    fn publisher(service: &PubSub, size: usize) -> Result<Publisher, BenchError> {
        service
            .publisher_builder()
            .initial_max_slice_len(size.max(1))
            .create()
            .map_err(|e| failed(format!("cannot create a publisher: {e:?}")))
    }

    fn subscriber(service: &PubSub) -> Result<Subscriber, BenchError> {
        service
            .subscriber_builder()
            .create()
            .map_err(|e| failed(format!("cannot create a subscriber: {e:?}")))
    }

    /// Sends `bytes` as one sample (loaned, the whole slice copied in).
    fn send(publisher: &Publisher, bytes: &[u8]) -> Result<(), BenchError> {
        let sample = publisher
            .loan_slice_uninit(bytes.len())
            .map_err(|e| failed(format!("loan failed: {e:?}")))?;
        sample
            .write_from_slice(bytes)
            .send()
            .map_err(|e| failed(format!("send failed: {e:?}")))?;
        Ok(())
    }

    /// The peer's loop: see the module documentation.
    pub fn echo(size: usize, prefix: &str) -> Result<(), BenchError> {
        let parent = rustix::process::getppid();
        let node = node()?;
        let ping = open_or_create(&node, prefix, "ping")?;
        let pong = open_or_create(&node, prefix, "pong")?;
        let from_host = subscriber(&ping)?;
        let to_host = publisher(&pong, size)?;
        // Ready: the host's subscriber existed before this process started.
        send(&to_host, &[])?;
        let mut idle = 0u32;
        loop {
            let Some(sample) = from_host
                .receive()
                .map_err(|e| failed(format!("receive failed: {e:?}")))?
            else {
                idle += 1;
                if idle == POLLS_PER_CHECK {
                    idle = 0;
                    if rustix::process::getppid() != parent {
                        return Ok(());
                    }
                }
                std::hint::spin_loop();
                continue;
            };
            idle = 0;
            let message = sample.payload();
            if message.is_empty() {
                return Ok(());
            }
            // The whole payload read and written: copied from the received sample into
            // the loaned one.
            send(&to_host, message)?;
        }
    }

    /// The host side of the iceoryx2 ping-pong: a child peer running [`echo`].
    pub struct Iceoryx2Peer {
        child: Child,
        // Field order: the ports go before the node.
        to_peer: Publisher,
        from_peer: Subscriber,
        _services: (PubSub, PubSub),
        _node: Node<ipc::Service>,
        buf: Vec<u8>,
        checked: bool,
    }

    impl std::fmt::Debug for Iceoryx2Peer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Iceoryx2Peer")
                .field("child", &self.child.id())
                .field("size", &self.buf.len())
                .finish_non_exhaustive()
        }
    }

    impl Iceoryx2Peer {
        /// Creates the two services, starts `program args... PREFIX` (a peer running
        /// [`echo`] with `size`) and waits for its ready sample.
        pub fn spawn(program: &str, args: &[&str], size: usize) -> Result<Self, BenchError> {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let prefix = format!("ferry-bench/{}-{n}-{nanos}", std::process::id());
            let node = node()?;
            let ping = open_or_create(&node, &prefix, "ping")?;
            let pong = open_or_create(&node, &prefix, "pong")?;
            let to_peer = publisher(&ping, size)?;
            let from_peer = subscriber(&pong)?;
            let child = Command::new(program)
                .args(args)
                .arg(&prefix)
                .stdin(Stdio::null())
                .spawn()
                .map_err(|e| failed(format!("cannot start `{program}`: {e}")))?;
            let mut peer = Iceoryx2Peer {
                child,
                to_peer,
                from_peer,
                _services: (ping, pong),
                _node: node,
                buf: Vec::with_capacity(size),
                checked: false,
            };
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                if let Some(ready) = peer.poll()? {
                    if ready != 0 {
                        return Err(failed("the peer's first sample was not the ready sample"));
                    }
                    return Ok(peer);
                }
                if Instant::now() > deadline {
                    return Err(failed(format!(
                        "no ready sample within {} s",
                        START_TIMEOUT.as_secs()
                    )));
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        }

        /// One non-blocking receive: the echo's length (its bytes copied into `buf`), or
        /// `None`; fails when the child has exited.
        fn poll(&mut self) -> Result<Option<usize>, BenchError> {
            match self.from_peer.receive() {
                Ok(Some(sample)) => {
                    self.buf.clear();
                    self.buf.extend_from_slice(sample.payload());
                    Ok(Some(self.buf.len()))
                }
                Ok(None) => match self.child.try_wait() {
                    Ok(None) => Ok(None),
                    Ok(Some(status)) => Err(failed(format!("the peer exited: {status}"))),
                    Err(e) => Err(failed(format!("cannot check the peer: {e}"))),
                },
                Err(e) => Err(failed(format!("receive failed: {e:?}"))),
            }
        }

        /// One round trip of `message` (its length must be the peer's size): see the
        /// module documentation.
        pub fn round_trip(&mut self, message: &[u8]) -> Result<(), BenchError> {
            if message.is_empty() {
                return Err(BenchError::BadEcho("empty payloads stop the peer".into()));
            }
            send(&self.to_peer, message)?;
            let mut idle = 0u32;
            let len = loop {
                match self.from_peer.receive() {
                    Ok(Some(sample)) => {
                        self.buf.clear();
                        self.buf.extend_from_slice(sample.payload());
                        break self.buf.len();
                    }
                    Ok(None) => {
                        idle += 1;
                        if idle == POLLS_PER_CHECK {
                            idle = 0;
                            if let Some(len) = self.poll()? {
                                break len;
                            }
                        }
                        std::hint::spin_loop();
                    }
                    Err(e) => return Err(failed(format!("receive failed: {e:?}"))),
                }
            };
            if len != message.len() {
                return Err(BenchError::BadEcho(format!(
                    "iceoryx2 peer echoed {len} bytes for {}",
                    message.len()
                )));
            }
            if !self.checked {
                if self.buf != message {
                    return Err(BenchError::BadEcho(
                        "iceoryx2 peer echoed other bytes".into(),
                    ));
                }
                self.checked = true;
            }
            Ok(())
        }

        /// The last echo received.
        pub fn last_echo(&self) -> &[u8] {
            &self.buf
        }
    }

    impl Drop for Iceoryx2Peer {
        fn drop(&mut self) {
            // The empty sample stops the peer, which then drops its node cleanly.
            let _ = send(&self.to_peer, &[]);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl crate::RoundTrip for Iceoryx2Peer {
        fn round_trip(&mut self, payload: &[u8]) -> Result<(), BenchError> {
            Iceoryx2Peer::round_trip(self, payload)
        }
    }
}
