//! Negotiating the frame header between a host connection and the worker runtime, in
//! process: the offer is taken only when the worker accepts it, a worker that does not
//! know it keeps envelope frames, and a worker cannot impose it.

use super::runtime::serve_link;
use super::{echo, Context, Reply, Request};
use crate::codec::{Codec, CodecKind, Framing};
use crate::connection::{Connection, SpawnError};
use crate::protocol::{
    Dialect, Envelope, ErrorCode, FrameHeader, MessageType, ProtocolError, ReadyInfo,
};
use crate::transport::memory;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MAX: usize = 1 << 20;

fn codec(kind: CodecKind) -> Codec {
    Codec::new(kind, Framing::LengthPrefixed, MAX).unwrap()
}

/// A host connection offering `offered` to an echo worker whose `ready` says
/// `accepted`; returns the connection after the handshake (or its error).
fn connect(
    kind: CodecKind,
    offered: FrameHeader,
    accepted: Option<FrameHeader>,
) -> Result<Arc<Connection>, SpawnError> {
    let (host, worker) = memory::pair(MAX);
    let mut info = ReadyInfo::new(
        "echo",
        echo::OPERATIONS.iter().map(|s| (*s).to_owned()).collect(),
    );
    info.frame_header = accepted;
    std::thread::spawn(move || serve_link(worker, codec(kind), info, echo::Echo));
    let conn = Connection::with_frame_header(host, codec(kind), Dialect::Ferry, "t", None, offered);
    let wait = Duration::from_secs(30);
    conn.handshake(Instant::now() + wait, wait)?;
    Ok(conn)
}

fn echo_round_trip(conn: &Arc<Connection>) {
    let image: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    for i in 0..3 {
        let data = json!({"i": i, "text": "h\u{e9}llo"});
        let reply = conn
            .start(
                Envelope::request("", "echo", data.clone()),
                &[&image, b"x"],
                None,
            )
            .unwrap()
            .wait(|_| {})
            .unwrap();
        assert_eq!(reply.data, data);
        assert_eq!(reply.attachments, vec![image.clone(), b"x".to_vec()]);
    }
    // A built-in travels by name.
    let health = conn
        .start(Envelope::request("", "health", Value::Null), &[], None)
        .unwrap()
        .wait(|_| {})
        .unwrap();
    assert_eq!(health.data["status"], "ok");
    // Events are envelope frames inside a compact link.
    let mut events = 0;
    conn.start(
        Envelope::request("", "sleep", json!({"ms": 3, "steps": 3})),
        &[],
        None,
    )
    .unwrap()
    .wait(|e| {
        assert_eq!(e.kind, MessageType::Event);
        events += 1;
    })
    .unwrap();
    assert_eq!(events, 3);
}

#[test]
fn an_accepted_offer_switches_the_link_to_compact_frames() {
    for kind in CodecKind::ALL {
        let conn = connect(kind, FrameHeader::Compact, Some(FrameHeader::Compact)).unwrap();
        assert_eq!(conn.frame_header(), FrameHeader::Compact, "{kind}");
        echo_round_trip(&conn);
    }
}

#[test]
fn a_worker_that_ignores_the_offer_keeps_envelope_frames() {
    for kind in CodecKind::ALL {
        let conn = connect(kind, FrameHeader::Compact, None).unwrap();
        assert_eq!(conn.frame_header(), FrameHeader::Envelope, "{kind}");
        echo_round_trip(&conn);
    }
}

#[test]
fn a_worker_cannot_choose_compact_frames_unoffered() {
    let err = connect(
        CodecKind::MsgPack,
        FrameHeader::Envelope,
        Some(FrameHeader::Compact),
    )
    .unwrap_err();
    assert!(
        matches!(err, SpawnError::Protocol(ProtocolError::InvalidReady(_))),
        "{err:?}"
    );
}

/// A compact request whose operation index is past the worker's table is answered with
/// a `protocol` error for that request, not dropped.
#[test]
fn a_request_with_an_unknown_operation_index_is_answered_with_an_error() {
    let (mut host, worker) = memory::pair(MAX);
    let mut info = ReadyInfo::new("t", vec!["only".into()]);
    info.frame_header = Some(FrameHeader::Compact);
    let served = std::thread::spawn(move || {
        serve_link(
            worker,
            codec(CodecKind::MsgPack),
            info,
            |_: &Request<'_>, _: &mut Context<'_>| Ok(Reply::data(json!("ran"))),
        )
    });
    let mut buf = Vec::new();
    host.receiver.recv(&mut buf, None).unwrap();
    assert!(codec(CodecKind::MsgPack)
        .decode(&buf)
        .unwrap()
        .envelope
        .is_ready_event());
    let mut frame = vec![1, 0, 0, 0];
    frame.extend_from_slice(&5u32.to_le_bytes());
    frame.extend_from_slice(&9u64.to_le_bytes());
    frame.extend_from_slice(&[0; 8]);
    host.sender.send(&[&frame]).unwrap();
    host.receiver.recv(&mut buf, None).unwrap();
    // Errors are envelope frames behind byte 0.
    assert_eq!(buf[0], 0);
    let answer = codec(CodecKind::MsgPack)
        .decode(&buf[1..])
        .unwrap()
        .envelope;
    assert_eq!(answer.kind, MessageType::Error);
    assert_eq!(answer.request_id.as_deref(), Some("r-9"));
    assert_eq!(answer.error.unwrap().code, ErrorCode::Protocol);
    drop(host);
    served.join().unwrap().unwrap();
}
