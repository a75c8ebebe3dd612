//! The `ready` handshake: frames a worker sends first, fed to the host's real
//! `Connection::handshake` over an in-memory link, then the link closes.
//!
//! Input: the first byte picks the codec (JSON lines, JSON framed, MessagePack, bincode);
//! for JSON lines the rest is split into lines (one frame each, as stdio delivers them),
//! for the framed codecs the rest is one frame (`u32 LE header length | header | ...`).
//!
//! Checks: the handshake's verdict equals an independent reading of the same frames (skip
//! undecodable lines as noise on a line link, refuse a codec error on a framed one, then
//! the first message must be the `ready` event whose data is a `ReadyInfo` of this
//! protocol version listing the link's codec); the number of skipped frames agrees; an
//! accepted `ReadyInfo` survives a JSON round trip and serves the built-in operations.
#![no_main]

use ferry::codec::{CodecError, Framing};
use ferry::connection::Connection;
use ferry::protocol::{ProtocolError, ReadyInfo, OP_HEALTH, OP_SHUTDOWN, PROTOCOL_VERSION};
use ferry::transport::memory;
use ferry::worker::{Dialect, SpawnError};
use ferry_fuzz::{all_codecs, reads_a_file};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::time::{Duration, Instant};

const MAX_FRAME: usize = 1 << 20;

/// What the handshake must answer.
#[derive(Debug)]
enum Expected {
    Ready(ReadyInfo),
    Codec,
    Exited,
    NotReady,
    InvalidReady,
    Version(u32),
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let codecs = all_codecs();
    let codec = ferry::codec::Codec::new(
        codecs[usize::from(pick) % codecs.len()].kind(),
        codecs[usize::from(pick) % codecs.len()].framing(),
        MAX_FRAME,
    )
    .unwrap();
    let frames: Vec<&[u8]> = match codec.framing() {
        Framing::Lines => rest
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect(),
        _ => vec![rest].into_iter().filter(|f| !f.is_empty()).collect(),
    };
    if frames.iter().any(|f| f.len() > MAX_FRAME)
        || (codec.framing() == Framing::Lines && frames.iter().any(|f| reads_a_file(f)))
    {
        return;
    }

    // The independent reading.
    let mut skipped = 0u64;
    let mut expected = Expected::Exited;
    for f in &frames {
        match codec.decode(f) {
            Ok(d) => {
                let env = d.envelope;
                expected = if !env.is_ready_event() {
                    Expected::NotReady
                } else {
                    match serde_json::from_value::<ReadyInfo>(env.data.unwrap_or(Value::Null)) {
                        Err(_) => Expected::InvalidReady,
                        Ok(info) if info.protocol_version != PROTOCOL_VERSION => {
                            Expected::Version(info.protocol_version)
                        }
                        Ok(info) if !info.codecs.iter().any(|c| c == codec.kind().as_str()) => {
                            Expected::InvalidReady
                        }
                        Ok(info) => Expected::Ready(info),
                    }
                };
                break;
            }
            Err(CodecError::NotUtf8 | CodecError::Header { .. })
                if codec.framing() == Framing::Lines =>
            {
                skipped += 1;
            }
            Err(_) => {
                expected = Expected::Codec;
                break;
            }
        }
    }

    let (host, mut worker) = memory::pair(MAX_FRAME);
    for f in &frames {
        worker.sender.send(&[f]).expect("memory send");
    }
    drop(worker);
    let conn = Connection::new(host, codec, Dialect::Ferry, "fuzz", None);
    let got = conn.handshake(
        Instant::now() + Duration::from_secs(10),
        Duration::from_secs(10),
    );
    match (&expected, &got) {
        (Expected::Ready(want), Ok(info)) => {
            assert_eq!(want, info);
            let back: ReadyInfo =
                serde_json::from_value(serde_json::to_value(info).unwrap()).unwrap();
            assert_eq!(&back, info, "ReadyInfo JSON round trip");
            assert!(info.serves(OP_HEALTH) && info.serves(OP_SHUTDOWN));
            for op in &info.operations {
                assert!(info.serves(op));
            }
        }
        (Expected::Codec, Err(SpawnError::Codec(_)))
        | (Expected::Exited, Err(SpawnError::ExitedBeforeReady { .. }))
        | (Expected::NotReady, Err(SpawnError::Protocol(ProtocolError::NotReady(_))))
        | (Expected::InvalidReady, Err(SpawnError::Protocol(ProtocolError::InvalidReady(_)))) => {}
        (
            Expected::Version(v),
            Err(SpawnError::Protocol(ProtocolError::VersionMismatch { got, .. })),
        ) => {
            assert_eq!(v, got)
        }
        _ => panic!("handshake answered {got:?}, expected {expected:?}"),
    }
    if let Err(e) = &got {
        let _ = (e.code(), e.to_string());
    }
    assert_eq!(conn.skipped_frames(), skipped, "skipped frames");
});
