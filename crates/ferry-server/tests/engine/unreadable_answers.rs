//! A worker whose answer cannot be read: the request it names fails with the reason, or,
//! when no request can be told from it, every request in flight fails. Nobody waits for an
//! answer that will not come, and the link goes on serving.

use crate::common;

use common::{with_watchdog, WATCHDOG};
use ferry::codec::{Codec, CodecError, CodecKind, Framing};
use ferry::connection::{Connection, Pending};
use ferry::protocol::{Envelope, ErrorCode, MessageType, ProtocolError, ReadyInfo};
use ferry::transport::memory;
use ferry::worker::{CallError, Dialect};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MAX: usize = 1 << 20;
const CODECS: [CodecKind; 3] = [CodecKind::Json, CodecKind::MsgPack, CodecKind::Bincode];

/// What the scripted worker sends for a batch of requests.
type Script = Box<dyn FnMut(&Codec, &[Envelope]) -> Vec<Vec<u8>> + Send>;

/// A connection to a worker thread that reads `batch` requests at a time, then sends the
/// frames `script` makes of them (after the first batch, every request is echoed).
fn scripted(kind: CodecKind, batch: usize, mut script: Script) -> Arc<Connection> {
    let (host, mut worker) = memory::pair(MAX);
    let codec = Codec::new(kind, Framing::LengthPrefixed, MAX).unwrap();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let ready = Envelope::ready("w-0", &ReadyInfo::new("scripted", vec!["echo".into()]));
        codec.encode(&ready, &[], &mut out).unwrap();
        worker.sender.send(&[&out]).unwrap();
        let mut buf = Vec::new();
        let mut first = true;
        loop {
            let mut requests = Vec::new();
            while requests.len() < if first { batch } else { 1 } {
                if worker.receiver.recv(&mut buf, None).is_err() {
                    return;
                }
                let env = codec.decode(&buf).unwrap().envelope;
                if env.kind == MessageType::Request {
                    requests.push(env);
                }
            }
            let frames = if first {
                first = false;
                script(&codec, &requests)
            } else {
                vec![echo(&codec, &requests[0])]
            };
            for frame in frames {
                if worker.sender.send(&[&frame]).is_err() {
                    return;
                }
            }
        }
    });
    let conn = Connection::new(host, codec, Dialect::Ferry, "scripted", None);
    let deadline = Instant::now() + Duration::from_secs(10);
    conn.handshake(deadline, Duration::from_secs(10)).unwrap();
    conn
}

/// The echo answer to `request`.
fn echo(codec: &Codec, request: &Envelope) -> Vec<u8> {
    let data = request.data.clone().unwrap_or(Value::Null);
    let mut out = Vec::new();
    codec
        .encode(
            &Envelope::response("w-1", &request.message_id, data),
            &[],
            &mut out,
        )
        .unwrap();
    out
}

/// An answer to `request` whose header announces an 8-byte attachment and half follows.
fn truncated(codec: &Codec, request: &Envelope) -> Vec<u8> {
    let answer = Envelope::response("w-1", &request.message_id, json!("lost"));
    let mut out = Vec::new();
    codec.encode(&answer, &[b"12345678"], &mut out).unwrap();
    out.extend_from_slice(b"1234");
    out
}

fn start(conn: &Arc<Connection>, data: Value) -> Pending {
    conn.start(Envelope::request("", "echo", data), &[], None)
        .unwrap()
}

fn wait(pending: Pending) -> Result<Value, CallError> {
    pending.wait(|_| {}).map(|r| r.data)
}

#[test]
fn an_unreadable_answer_fails_only_the_request_it_names() {
    with_watchdog(WATCHDOG, || {
        for kind in CODECS {
            // Two requests in flight; the first one's answer is unreadable, the second's fine.
            let conn = scripted(
                kind,
                2,
                Box::new(|codec, reqs| vec![truncated(codec, &reqs[0]), echo(codec, &reqs[1])]),
            );
            let first = start(&conn, json!(1));
            let second = start(&conn, json!(2));
            let err = wait(first).unwrap_err();
            assert!(
                matches!(err, CallError::Codec(CodecError::Truncated(_))),
                "{kind:?}: {err:?}"
            );
            assert_eq!(err.code(), ErrorCode::Protocol);
            assert_eq!(wait(second).unwrap(), json!(2), "{kind:?}");
            assert_eq!(wait(start(&conn, json!(3))).unwrap(), json!(3), "{kind:?}");
        }
    });
}

#[test]
fn an_answer_too_deep_to_pass_on_fails_its_request_as_invalid() {
    with_watchdog(WATCHDOG, || {
        // Written by hand: ferry's encoders refuse data this deep.
        let conn = scripted(
            CodecKind::Json,
            1,
            Box::new(|_, reqs| {
                let header = format!(
                    r#"{{"version":1,"message_id":"w-1","request_id":"{}","type":"response","data":{}1{}}}"#,
                    reqs[0].message_id,
                    "[".repeat(110),
                    "]".repeat(110),
                );
                let mut frame = (header.len() as u32).to_le_bytes().to_vec();
                frame.extend_from_slice(header.as_bytes());
                vec![frame]
            }),
        );
        let err = wait(start(&conn, json!(1))).unwrap_err();
        assert!(
            matches!(err, CallError::Codec(CodecError::DataTooDeep { .. })),
            "{err:?}"
        );
        assert_eq!(err.code(), ErrorCode::InvalidRequest);
        assert_eq!(wait(start(&conn, json!(2))).unwrap(), json!(2));
    });
}

#[test]
fn an_unreadable_frame_that_names_no_request_fails_every_request_in_flight() {
    with_watchdog(WATCHDOG, || {
        for kind in CODECS {
            // A header that no codec reads, then the real answers (too late: both failed).
            let conn = scripted(
                kind,
                2,
                Box::new(|codec, reqs| {
                    vec![
                        b"\x03\0\0\0\xc1\xc1\xc1".to_vec(),
                        echo(codec, &reqs[0]),
                        echo(codec, &reqs[1]),
                    ]
                }),
            );
            let first = start(&conn, json!(1));
            let second = start(&conn, json!(2));
            for pending in [first, second] {
                let err = wait(pending).unwrap_err();
                assert!(
                    matches!(
                        err,
                        CallError::Protocol(ProtocolError::UnattributableFrame(_))
                    ),
                    "{kind:?}: {err:?}"
                );
                assert_eq!(err.code(), ErrorCode::Protocol);
            }
            // The late answers are skipped; the link serves the next request.
            assert_eq!(wait(start(&conn, json!(3))).unwrap(), json!(3), "{kind:?}");
        }
    });
}

#[test]
fn an_answer_without_request_id_fails_what_waits() {
    with_watchdog(WATCHDOG, || {
        let conn = scripted(
            CodecKind::MsgPack,
            1,
            Box::new(|codec, _| {
                let mut answer = Envelope::response("w-1", "", json!("whose?"));
                answer.request_id = None;
                let mut out = Vec::new();
                codec.encode(&answer, &[], &mut out).unwrap();
                vec![out]
            }),
        );
        let err = wait(start(&conn, json!(1))).unwrap_err();
        assert!(
            matches!(
                err,
                CallError::Protocol(ProtocolError::MissingField {
                    kind: MessageType::Response,
                    field: "request_id"
                })
            ),
            "{err:?}"
        );
        assert_eq!(wait(start(&conn, json!(2))).unwrap(), json!(2));
    });
}
