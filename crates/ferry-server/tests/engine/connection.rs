//! Multiplexing over one link: many callers, sync and async, one terminal answer each.

use crate::common;

use common::{with_watchdog, WATCHDOG};
use ferry::codec::{Codec, CodecKind, Framing};
use ferry::connection::{Connection, Incoming};
use ferry::protocol::{Envelope, ErrorCode, ReadyInfo};
use ferry::transport::memory;
use ferry::worker::{echo, serve_link, CallError, Dialect};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MAX: usize = 1 << 20;

/// A connection to an in-process echo worker over the memory transport.
fn connect() -> (Arc<Connection>, std::thread::JoinHandle<()>) {
    let (host, worker) = memory::pair(MAX);
    let codec = Codec::new(CodecKind::MsgPack, Framing::LengthPrefixed, MAX).unwrap();
    let server = std::thread::spawn(move || {
        let info = ReadyInfo::new(
            "echo",
            echo::OPERATIONS.iter().map(|s| (*s).to_owned()).collect(),
        );
        serve_link(worker, codec, info, echo::handle).unwrap();
    });
    let conn = Connection::new(host, codec, Dialect::Ferry, "test", None);
    let deadline = Instant::now() + Duration::from_secs(10);
    conn.handshake(deadline, Duration::from_secs(10)).unwrap();
    (conn, server)
}

fn call(
    conn: &Arc<Connection>,
    op: &str,
    data: serde_json::Value,
) -> Result<serde_json::Value, CallError> {
    let pending = conn.start(Envelope::request("", op, data), &[], None)?;
    pending.wait(|_| {}).map(|r| r.data)
}

#[test]
fn many_sync_callers_each_get_their_own_answer() {
    with_watchdog(WATCHDOG, || {
        let (conn, _server) = connect();
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let conn = conn.clone();
                std::thread::spawn(move || {
                    for i in 0..200 {
                        let data = json!({"t": t, "i": i});
                        assert_eq!(call(&conn, "echo", data.clone()).unwrap(), data);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(conn.in_flight(), 0);
    });
}

#[test]
fn async_callers_are_served_by_the_reader() {
    with_watchdog(WATCHDOG, || {
        let (conn, _server) = connect();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        rt.block_on(async {
            let tasks: Vec<_> = (0..100)
                .map(|i| {
                    let conn = conn.clone();
                    tokio::spawn(async move {
                        let mut p = conn
                            .start_async(Envelope::request("", "echo", json!(i)), &[], None)
                            .unwrap();
                        loop {
                            match p.next_async().await {
                                Some(Incoming::Done(r)) => return r.unwrap().data,
                                Some(_) => continue,
                                None => panic!("stream ended without an answer"),
                            }
                        }
                    })
                })
                .collect();
            for (i, t) in tasks.into_iter().enumerate() {
                assert_eq!(t.await.unwrap(), json!(i));
            }
        });
    });
}

#[test]
fn sync_and_async_callers_mix_on_one_connection() {
    with_watchdog(WATCHDOG, || {
        let (conn, _server) = connect();
        let sync_conn = conn.clone();
        let sync_side = std::thread::spawn(move || {
            for i in 0..300 {
                assert_eq!(
                    call(&sync_conn, "echo", json!({"s": i})).unwrap(),
                    json!({"s": i})
                );
            }
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            for i in 0..300 {
                let mut p = conn
                    .start_async(Envelope::request("", "echo", json!({"a": i})), &[], None)
                    .unwrap();
                match p.next_async().await {
                    Some(Incoming::Done(r)) => assert_eq!(r.unwrap().data, json!({"a": i})),
                    other => panic!("unexpected {other:?}"),
                }
            }
        });
        sync_side.join().unwrap();
    });
}

#[test]
fn progress_events_reach_an_async_caller_in_order() {
    with_watchdog(WATCHDOG, || {
        let (conn, _server) = connect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let request = Envelope::request("", "sleep", json!({"ms": 20, "steps": 4}));
            let mut p = conn.start_async(request, &[], None).unwrap();
            let mut progress = Vec::new();
            loop {
                match p.next_async().await {
                    Some(Incoming::Event(e)) => {
                        progress.push(e.data.unwrap()["progress"].as_f64().unwrap())
                    }
                    Some(Incoming::Done(r)) => {
                        r.unwrap();
                        break;
                    }
                    Some(other) => panic!("unexpected {other:?}"),
                    None => panic!("no answer"),
                }
            }
            assert_eq!(progress, vec![0.25, 0.5, 0.75, 1.0]);
        });
    });
}

#[test]
fn worker_death_fails_every_pending_request_exactly_once() {
    with_watchdog(WATCHDOG, || {
        let (host, worker) = memory::pair(MAX);
        let codec = Codec::new(CodecKind::Json, Framing::LengthPrefixed, MAX).unwrap();
        let conn = Connection::new(host, codec, Dialect::Ferry, "dying", None);
        // A "worker" that reads 20 requests and then dies without answering.
        let dying = std::thread::spawn(move || {
            let mut w = worker;
            let mut buf = Vec::new();
            for _ in 0..20 {
                w.receiver.recv(&mut buf, None).unwrap();
            }
        });
        let callers: Vec<_> = (0..20)
            .map(|i| {
                let conn = conn.clone();
                std::thread::spawn(move || call(&conn, "echo", json!(i)))
            })
            .collect();
        dying.join().unwrap();
        for c in callers {
            let err = c.join().unwrap().unwrap_err();
            assert_eq!(err.code(), ErrorCode::WorkerCrashed, "got {err}");
        }
        assert_eq!(conn.in_flight(), 0);
        assert_eq!(
            call(&conn, "echo", json!(0)).unwrap_err().code(),
            ErrorCode::WorkerCrashed
        );
    });
}

#[test]
fn a_timed_out_request_stays_in_flight_until_the_worker_answers() {
    with_watchdog(WATCHDOG, || {
        let (conn, _server) = connect();
        let request = Envelope::request("", "sleep", json!({"ms": 30_000, "steps": 3_000}));
        let pending = conn
            .start(
                request,
                &[],
                Some(Instant::now() + Duration::from_millis(100)),
            )
            .unwrap();
        let err = pending.wait(|_| {}).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Timeout);
        // The cancel reaches the handler; its `cancelled` answer then clears the slot, and
        // the next call is served (it could not be within 20 s if the sleep went on).
        let request = Envelope::request("", "echo", json!("next"));
        let pending = conn
            .start(request, &[], Some(Instant::now() + Duration::from_secs(20)))
            .unwrap();
        assert_eq!(pending.wait(|_| {}).unwrap().data, json!("next"));
        assert_eq!(conn.in_flight(), 0);
    });
}

#[test]
fn a_response_of_another_version_names_the_version_the_worker_sent() {
    with_watchdog(WATCHDOG, || {
        let (host, mut worker) = memory::pair(MAX);
        let codec = Codec::new(CodecKind::Json, Framing::LengthPrefixed, MAX).unwrap();
        let conn = Connection::new(host, codec, Dialect::Ferry, "test", None);
        let fake = std::thread::spawn(move || {
            let mut out = Vec::new();
            let ready = Envelope::ready("w-0", &ReadyInfo::new("echo", vec!["echo".into()]));
            codec.encode(&ready, &[], &mut out).unwrap();
            worker.sender.send(&[&out]).unwrap();
            let mut buf = Vec::new();
            worker.receiver.recv(&mut buf, None).unwrap();
            let request = codec.decode(&buf).unwrap().envelope;
            let mut answer = Envelope::response("w-1", &request.message_id, json!({}));
            answer.version = 2;
            out.clear();
            codec.encode(&answer, &[], &mut out).unwrap();
            worker.sender.send(&[&out]).unwrap();
            worker
        });
        conn.handshake(Instant::now() + WATCHDOG, WATCHDOG).unwrap();
        let err = call(&conn, "echo", json!({})).unwrap_err();
        assert!(err.to_string().contains("the peer sent 2"), "{err}");
        assert_eq!(err.code(), ErrorCode::VersionMismatch);
        drop(fake.join());
    });
}
