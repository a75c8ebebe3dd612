//! The connection handshake of the stream transports (`local_socket`, `tcp`): a shared
//! token that refuses strangers, and the host's accept loop with a deadline.
//!
//! Both messages are ordinary length-prefixed frames (see `docs/protocol.md`):
//!
//! 1. worker → host, the **hello**: `FRY1` followed by the token's bytes (at most
//!    [`MAX_TOKEN`] of them);
//! 2. host → worker, the **verdict**: `FRY1` followed by one byte, `0` accepted, `1`
//!    refused. After a refusal the host closes the connection.
//!
//! Only then does the ferry protocol start (the worker's `ready` event). The host generates
//! a fresh random token for each worker it spawns and passes it in `FERRY_TOKEN`; for a
//! worker started elsewhere both sides are configured with the same token. The host compares
//! tokens in constant time, and a connection that sends no hello within
//! [`HELLO_TIMEOUT`] is dropped, so a stranger can delay the real worker but not block it.

use super::framed::{FramedReceiver, FramedSender, WireRead, WireWrite};
use super::{FrameReceiver, FrameSender, TransportError};
use std::fmt;
use std::process::Child;
use std::time::{Duration, Instant};

/// Marks ferry's handshake frames (and its version).
const MAGIC: &[u8; 4] = b"FRY1";
/// The longest token accepted, in bytes.
pub const MAX_TOKEN: usize = 1024;
/// How long the host waits for a new connection's hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a worker waits for the host's verdict.
pub const VERDICT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the accept loop checks that the child is still alive.
const CHILD_CHECK: Duration = Duration::from_millis(10);

const ACCEPTED: u8 = 0;
const REFUSED: u8 = 1;

/// A shared secret that admits a worker's connection. Its `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A token from configuration; refuses an empty one or one over 1024 bytes.
    pub fn new(text: impl Into<String>) -> Result<Self, TransportError> {
        let text = text.into();
        if text.is_empty() || text.len() > MAX_TOKEN {
            return Err(TransportError::InvalidOption {
                option: "token",
                reason: format!("a token must have 1 to {MAX_TOKEN} bytes"),
            });
        }
        Ok(Token(text))
    }

    /// A fresh random token: 128 bits from the OS, as 32 hex digits.
    pub fn random() -> Result<Self, TransportError> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|e| TransportError::Io(std::io::Error::other(e)))?;
        Ok(Token(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    /// The token's text, as passed in `FERRY_TOKEN`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Compares without an early exit, so timing does not tell how much of a guess matched.
    fn matches(&self, offered: &[u8]) -> bool {
        let mine = self.0.as_bytes();
        if mine.len() != offered.len() {
            return false;
        }
        mine.iter()
            .zip(offered)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Worker side: sends the hello and waits for the verdict.
pub(crate) fn offer<R: WireRead, W: WireWrite>(
    rx: &mut FramedReceiver<R>,
    tx: &mut FramedSender<W>,
    token: &Token,
) -> Result<(), TransportError> {
    tx.send(&[MAGIC, token.as_str().as_bytes()])?;
    let mut verdict = Vec::new();
    rx.recv(&mut verdict, Some(Instant::now() + VERDICT_TIMEOUT))
        .map_err(|e| match e {
            TransportError::Disconnected => {
                TransportError::Refused("the host closed the connection during the handshake")
            }
            other => other,
        })?;
    match verdict.strip_prefix(MAGIC) {
        Some([ACCEPTED]) => Ok(()),
        Some([REFUSED]) => Err(TransportError::Refused("the host refused the token")),
        _ => Err(TransportError::Refused("not a ferry host")),
    }
}

/// Host side: reads a hello by `deadline` and answers it. `Ok(true)`: the token matched and
/// the link is the worker's; `Ok(false)`: a stranger, told so (the caller drops it).
pub(crate) fn check<R: WireRead, W: WireWrite>(
    rx: &mut FramedReceiver<R>,
    tx: &mut FramedSender<W>,
    token: &Token,
    max_frame: usize,
    deadline: Instant,
) -> Result<bool, TransportError> {
    rx.set_max_frame(MAGIC.len() + MAX_TOKEN);
    let mut hello = Vec::new();
    let received = rx.recv(&mut hello, Some(deadline));
    rx.set_max_frame(max_frame);
    match received {
        Ok(()) => {}
        Err(TransportError::FrameTooLarge { .. } | TransportError::InvalidFrame(_)) => {
            let _ = tx.send(&[MAGIC, &[REFUSED]]);
            return Ok(false);
        }
        Err(e) => return Err(e),
    }
    let admitted = hello.strip_prefix(MAGIC).is_some_and(|t| token.matches(t));
    let verdict = if admitted { ACCEPTED } else { REFUSED };
    match tx.send(&[MAGIC, &[verdict]]) {
        Ok(()) => Ok(admitted),
        Err(_) if !admitted => Ok(false),
        Err(e) => Err(e),
    }
}

/// What the accept loop needs from a listener.
pub(crate) trait Accept {
    /// The accepted connection, ready for the handshake.
    type Conn;
    /// Accepts one pending connection without blocking (`Ok(None)`: none waiting).
    fn try_accept(&mut self) -> Result<Option<Self::Conn>, TransportError>;
    /// Waits up to `timeout` for a connection to be pending.
    fn wait(&mut self, timeout: Duration) -> Result<(), TransportError>;
}

/// Accepts connections until one passes `admit` (the handshake), by `deadline`.
///
/// Strangers (`admit` gives `Ok(None)` or fails) are dropped and the wait goes on. A
/// `child` that exits first is [`TransportError::Disconnected`]; the deadline passing is
/// [`TransportError::Timeout`]. Never blocks past the deadline.
pub(crate) fn accept_worker<L: Accept, T>(
    listener: &mut L,
    mut child: Option<&mut Child>,
    deadline: Instant,
    mut admit: impl FnMut(L::Conn, Instant) -> Result<Option<T>, TransportError>,
) -> Result<T, TransportError> {
    loop {
        while let Some(conn) = listener.try_accept()? {
            let hello_deadline = deadline.min(Instant::now() + HELLO_TIMEOUT);
            match admit(conn, hello_deadline) {
                Ok(Some(admitted)) => return Ok(admitted),
                Ok(None) => tracing::warn!("refused a connection with a wrong token"),
                Err(e) => {
                    tracing::warn!(error = %e, "dropped a connection that failed the handshake")
                }
            }
            if Instant::now() >= deadline {
                // A stream of strangers must not keep the loop past the deadline.
                return Err(TransportError::Timeout);
            }
        }
        if let Some(child) = child.as_deref_mut() {
            if child.try_wait()?.is_some() {
                return Err(TransportError::Disconnected);
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(TransportError::Timeout);
        }
        listener.wait(left.min(CHILD_CHECK))?;
    }
}

/// A variable the host must have set for the worker's transport.
pub(crate) fn required_env(name: &'static str) -> Result<String, TransportError> {
    std::env::var(name).map_err(|_| TransportError::BadEnvironment {
        var: name,
        reason: "not set (a worker of this transport must be started by a ferry host or \
                 given its variables, see docs/protocol.md)"
            .into(),
    })
}

/// The token in `FERRY_TOKEN`.
pub(crate) fn token_from_env() -> Result<Token, TransportError> {
    Token::new(required_env(crate::protocol::env::FERRY_TOKEN)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_content_and_length() {
        let t = Token::new("secret").unwrap();
        assert!(t.matches(b"secret"));
        assert!(!t.matches(b"secreT"));
        assert!(!t.matches(b"secret!"));
        assert!(!t.matches(b""));
    }

    #[test]
    fn random_tokens_differ_and_debug_hides_them() {
        let a = Token::random().unwrap();
        let b = Token::random().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32);
        assert!(!format!("{a:?}").contains(a.as_str()));
    }

    #[test]
    fn empty_and_overlong_tokens_are_refused() {
        assert!(Token::new("").is_err());
        assert!(Token::new("x".repeat(MAX_TOKEN + 1)).is_err());
    }
}
