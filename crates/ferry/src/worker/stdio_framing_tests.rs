//! Negotiating length-prefixed frames on stdio between a host connection and the worker
//! runtime, over real pipes in process: the offer is taken only when the worker accepts
//! it, a worker that does not know it stays on NDJSON, and a worker cannot impose it.

use super::runtime::serve_link;
use super::{echo, ServeError};
use crate::codec::{Codec, CodecKind, Framing};
use crate::connection::{Connection, Offer, SpawnError};
use crate::protocol::{Dialect, Envelope, FrameHeader, ProtocolError, ReadyInfo, StdioFraming};
use crate::transport::stdio;
use serde_json::json;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const MAX: usize = 1 << 20;

fn json_lines() -> Codec {
    Codec::new(CodecKind::Json, Framing::Lines, MAX).unwrap()
}

/// The worker's serve loop, run on a thread.
type Served = JoinHandle<Result<(), ServeError>>;

/// A host connection over a stdio pipe pair offering `offer` to an echo worker whose
/// `ready` says `accept` (stdio framing and codec, frame header).
fn connect(
    offer: Offer,
    accept: Option<CodecKind>,
    frame_header: Option<FrameHeader>,
) -> (Result<Arc<Connection>, SpawnError>, Served) {
    let (host, worker) = stdio::pipe_pair(MAX).unwrap();
    let mut info = ReadyInfo::new(
        "echo",
        echo::OPERATIONS.iter().map(|s| (*s).to_owned()).collect(),
    );
    if let Some(kind) = accept {
        info.stdio_framing = Some(StdioFraming::LengthPrefixed);
        info.stdio_codec = Some(kind.as_str().to_owned());
    }
    info.frame_header = frame_header;
    let served = std::thread::spawn(move || serve_link(worker, json_lines(), info, echo::Echo));
    let conn = Connection::with_offer(host, json_lines(), Dialect::Ferry, "t", None, offer);
    let wait = Duration::from_secs(30);
    let result = conn.handshake(Instant::now() + wait, wait).map(|_| conn);
    (result, served)
}

fn echo_round_trip(conn: &Arc<Connection>, size: usize) {
    let image: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    for i in 0..3 {
        let data = json!({"i": i, "text": "line\nbreak h\u{e9}llo"});
        let reply = conn
            .start(
                Envelope::request("", "echo", data.clone()),
                &[&image, b"\n"],
                None,
            )
            .unwrap()
            .wait(|_| {})
            .unwrap();
        assert_eq!(reply.data, data);
        assert_eq!(reply.attachments, vec![image.clone(), b"\n".to_vec()]);
    }
}

fn shut_down(conn: Arc<Connection>, served: Served) {
    conn.close_sender();
    drop(conn);
    served.join().unwrap().unwrap();
}

#[test]
fn an_accepted_offer_switches_stdio_to_length_prefixed_frames() {
    for kind in CodecKind::ALL {
        let offer = Offer::new(FrameHeader::Envelope, Some(kind));
        let (conn, served) = connect(offer, Some(kind), None);
        let conn = conn.unwrap();
        assert_eq!(conn.framing(), Framing::LengthPrefixed, "{kind}");
        assert_eq!(conn.frame_header(), FrameHeader::Envelope, "{kind}");
        echo_round_trip(&conn, 200_000);
        shut_down(conn, served);
    }
}

#[test]
fn compact_frames_apply_after_the_stdio_switch() {
    let offer = Offer::new(FrameHeader::Compact, Some(CodecKind::MsgPack));
    let (conn, served) = connect(offer, Some(CodecKind::MsgPack), Some(FrameHeader::Compact));
    let conn = conn.unwrap();
    assert_eq!(conn.framing(), Framing::LengthPrefixed);
    assert_eq!(conn.frame_header(), FrameHeader::Compact);
    echo_round_trip(&conn, 5000);
    shut_down(conn, served);
}

#[test]
fn a_worker_that_ignores_the_offer_stays_on_ndjson() {
    let offer = Offer::new(FrameHeader::Compact, Some(CodecKind::MsgPack));
    let (conn, served) = connect(offer, None, None);
    let conn = conn.unwrap();
    assert_eq!(conn.framing(), Framing::Lines);
    assert_eq!(conn.frame_header(), FrameHeader::Envelope);
    echo_round_trip(&conn, 5000);
    shut_down(conn, served);
}

fn assert_invalid_ready(result: Result<Arc<Connection>, SpawnError>) {
    match result {
        Err(SpawnError::Protocol(ProtocolError::InvalidReady(why))) => {
            assert!(why.contains("not offered"), "{why}")
        }
        other => panic!("expected InvalidReady, got {other:?}"),
    }
}

#[test]
fn a_worker_cannot_switch_stdio_framing_unoffered() {
    let (conn, _served) = connect(Offer::default(), Some(CodecKind::MsgPack), None);
    assert_invalid_ready(conn);
}

#[test]
fn a_worker_cannot_switch_to_another_codec_than_offered() {
    let offer = Offer::new(FrameHeader::Envelope, Some(CodecKind::MsgPack));
    let (conn, _served) = connect(offer, Some(CodecKind::Bincode), None);
    assert_invalid_ready(conn);
}

#[test]
fn compact_without_the_stdio_switch_is_refused() {
    let offer = Offer::new(FrameHeader::Compact, Some(CodecKind::MsgPack));
    let (conn, _served) = connect(offer, None, Some(FrameHeader::Compact));
    match conn {
        Err(SpawnError::Protocol(ProtocolError::InvalidReady(_))) => {}
        other => panic!("expected InvalidReady, got {other:?}"),
    }
}

/// The byte example of docs/protocol.md section 10: a request on stdio after the switch
/// to length-prefixed `msgpack` frames, as the host's codec writes it.
#[test]
fn the_documented_stdio_frame_is_what_the_codec_writes() {
    let codec = Codec::new(CodecKind::MsgPack, Framing::LengthPrefixed, MAX).unwrap();
    let mut request = Envelope::request("r-1", "echo", json!("hi"));
    request.timestamp = None;
    request.worker_type = None;
    let mut header = Vec::new();
    codec.encode(&request, &[b"abc"], &mut header).unwrap();
    let body = [header.as_slice(), b"abc"].concat();
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&body);
    let mut want = vec![0x58, 0, 0, 0, 0x51, 0, 0, 0, 0x86];
    let text = |want: &mut Vec<u8>, s: &str| {
        want.push(0xa0 | s.len() as u8);
        want.extend_from_slice(s.as_bytes());
    };
    text(&mut want, "version");
    want.push(0x01);
    for (k, v) in [
        ("message_id", "r-1"),
        ("type", "request"),
        ("operation", "echo"),
        ("data", "hi"),
    ] {
        text(&mut want, k);
        text(&mut want, v);
    }
    text(&mut want, "attachments");
    want.extend_from_slice(&[0x91, 0x81]);
    text(&mut want, "size");
    want.push(0x03);
    want.extend_from_slice(b"abc");
    assert_eq!(frame, want);
    assert_eq!(frame.len(), 4 + 0x58);
}
