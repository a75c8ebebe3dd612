//! Other projects' IPC measured beside the floors, looked up by the transport they
//! compete with: a ferry figure's `ratio_to_peer` is its p50 over the peer's, measured in
//! the same run, so "ahead of every peer" is a figure and not a recollection.
//!
//! The one peer today is iceoryx2's publish-subscribe ping-pong
//! ([`crate::peer_iceoryx2`]), beside `shm`, built only with the `iceoryx2` cargo feature.

use super::{peer_iceoryx2, BenchError, RoundTrip};
use serde::Serialize;
use std::path::Path;

/// Another project's ping-pong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerKind {
    /// iceoryx2 publish-subscribe between two processes, busy-polling, the payload copied
    /// into a loaned sample and out of the received one on both sides
    /// (`ferry floor iceoryx2-echo SIZE PREFIX`): a peer of `shm`.
    Iceoryx2,
}

impl PeerKind {
    /// The peers of the transport named `transport` that this build has.
    ///
    /// ```
    /// use ferry_bench::PeerKind;
    /// assert!(PeerKind::for_transport("stdio").is_empty());
    /// let shm = PeerKind::for_transport("shm");
    /// assert_eq!(shm.is_empty(), !cfg!(feature = "iceoryx2"));
    /// ```
    pub fn for_transport(transport: &str) -> Vec<PeerKind> {
        match transport {
            "shm" if peer_iceoryx2::BUILT => vec![PeerKind::Iceoryx2],
            _ => Vec::new(),
        }
    }

    /// The peers of `transport` that this build lacks, each with how to build it.
    pub fn missing_for_transport(transport: &str) -> Vec<(PeerKind, &'static str)> {
        match transport {
            "shm" if !peer_iceoryx2::BUILT => {
                vec![(PeerKind::Iceoryx2, peer_iceoryx2::HOW_TO_BUILD)]
            }
            _ => Vec::new(),
        }
    }

    /// The name in tables and the JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            PeerKind::Iceoryx2 => peer_iceoryx2::NAME,
        }
    }

    /// Starts the peer (a child `ferry floor iceoryx2-echo SIZE PREFIX` of `ferry_exe`)
    /// for `size`-byte messages. Fails with [`BenchError::PeerFailed`] when this build
    /// lacks it or it does not start.
    pub fn spawn(self, ferry_exe: &Path, size: usize) -> Result<Box<dyn RoundTrip>, BenchError> {
        match self {
            PeerKind::Iceoryx2 => {
                #[cfg(feature = "iceoryx2")]
                {
                    let exe = ferry_exe.display().to_string();
                    let size_arg = size.to_string();
                    Ok(Box::new(peer_iceoryx2::Iceoryx2Peer::spawn(
                        &exe,
                        &["floor", "iceoryx2-echo", &size_arg],
                        size,
                    )?))
                }
                #[cfg(not(feature = "iceoryx2"))]
                {
                    let _ = (ferry_exe, size);
                    Err(BenchError::PeerFailed {
                        peer: peer_iceoryx2::NAME,
                        reason: format!("not built; build with {}", peer_iceoryx2::HOW_TO_BUILD),
                    })
                }
            }
        }
    }
}
