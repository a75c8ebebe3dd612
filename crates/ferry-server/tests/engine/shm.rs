//! The shm transport beyond the conformance suite: random frame sizes (larger than the
//! ring, ending exactly at the wrap point), in-place receive, and the Rust echo worker
//! over shm with every codec.

use crate::common;

use common::{ferry_bin, with_watchdog, WATCHDOG};
use ferry::codec::CodecKind;
use ferry::protocol::Envelope;
use ferry::transport::shm::{self, ShmOptions, WaitStrategy};
use ferry::transport::{FrameReceiver, FrameSender, TransportError, TransportKind};
use ferry::worker::{CallOptions, WorkerProcess, WorkerSpec};
use proptest::prelude::*;
use serde_json::json;
use std::time::{Duration, Instant};

const CAP: usize = 4096;

fn small_pair(wait: WaitStrategy) -> (shm::ShmEnds, shm::ShmEnds) {
    let mut options = ShmOptions::default();
    options.capacity = CAP;
    options.wait = wait;
    shm::pair(&options, 1 << 20).expect("segment")
}

/// Frame `i` of `len` bytes: its index and length in front, then a pattern.
fn frame(i: usize, len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|k| (k * 7 + i * 13) as u8).collect();
    let head = [(i as u32).to_le_bytes(), (len as u32).to_le_bytes()].concat();
    let n = head.len().min(len);
    f[..n].copy_from_slice(&head[..n]);
    f
}

/// Sends `sizes` from a thread and checks each frame on arrival, split into parts.
fn send_and_check(sizes: Vec<usize>, wait: WaitStrategy) {
    let (mut host, mut worker) = small_pair(wait);
    let to_send = sizes.clone();
    let sender = std::thread::spawn(move || {
        for (i, &len) in to_send.iter().enumerate() {
            let f = frame(i, len);
            // Three parts, cut at arbitrary places.
            let (a, rest) = f.split_at(len / 3);
            let (b, c) = rest.split_at(rest.len() / 2);
            host.sender.send(&[a, b, c]).unwrap();
        }
        host
    });
    let mut buf = Vec::new();
    for (i, &len) in sizes.iter().enumerate() {
        worker
            .receiver
            .recv(&mut buf, Some(Instant::now() + Duration::from_secs(30)))
            .unwrap();
        assert_eq!(buf, frame(i, len), "frame {i} ({len} bytes)");
    }
    drop(sender.join().unwrap());
}

fn sizes() -> impl Strategy<Value = Vec<usize>> {
    let whole = CAP / 2 - 8;
    prop::collection::vec(
        prop_oneof![
            1..64usize,
            1..CAP,
            // The largest single record, one byte over it (chunked), and around it.
            prop::sample::select(vec![whole - 8, whole - 1, whole, whole + 1, CAP / 2, CAP]),
            // Larger than the ring.
            CAP..4 * CAP,
        ],
        1..60,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn shm_frames_of_random_sizes_arrive_whole(sizes in sizes()) {
        with_watchdog(WATCHDOG, move || send_and_check(sizes, WaitStrategy::Adaptive));
    }

    #[test]
    fn shm_frames_of_random_sizes_arrive_whole_when_always_sleeping(sizes in sizes()) {
        with_watchdog(WATCHDOG, move || send_and_check(sizes, WaitStrategy::Block));
    }
}

#[test]
fn records_ending_exactly_at_the_wrap_point_and_just_past_it() {
    with_watchdog(WATCHDOG, || {
        // For every 8-aligned start offset, a filler brings the ring there, then a frame
        // whose record ends exactly at the end of the data area, then one a byte longer
        // (which must wrap with padding), each read back before the next.
        let (mut host, mut worker) = small_pair(WaitStrategy::Adaptive);
        let mut buf = Vec::new();
        let mut pos = 0usize;
        let mut i = 0;
        let mut send = |len: usize, pos: &mut usize| {
            let f = frame(i, len);
            i += 1;
            host.sender.send(&[&f]).unwrap();
            worker.receiver.recv(&mut buf, None).unwrap();
            assert_eq!(buf, f);
            let record = (8 + len).div_ceil(8) * 8;
            let off = *pos % CAP;
            *pos += if record > CAP - off {
                CAP - off + record
            } else {
                record
            };
        };
        // Every start offset from which a whole record (at most half the ring) can end
        // exactly at the end of the data area.
        for target in (CAP / 2..=CAP - 16).step_by(8) {
            // Bring the write offset to `target` with fillers of 16 to 64 bytes that never
            // cross the end (records are 16 bytes at least: header plus 1+ byte, padded).
            while pos % CAP != target {
                let gap = (target + CAP - pos % CAP) % CAP;
                let limit = gap.min(CAP - pos % CAP);
                let record = match limit {
                    8 => 16,
                    l if l <= 64 => l,
                    l if l - 64 == 8 => 56,
                    _ => 64,
                };
                send(record - 8, &mut pos);
            }
            send(CAP - target - 8, &mut pos); // ends exactly at the end
            assert_eq!(pos % CAP, 0);
            send(CAP / 2 - 8, &mut pos);
            // And one that must wrap: from CAP/2, a record one slot larger than what is left.
            send(CAP / 2 - 8 + 1, &mut pos);
        }
    });
}

#[test]
fn in_place_receive_borrows_the_ring_and_releases_on_drop() {
    with_watchdog(WATCHDOG, || {
        let (mut host, mut worker) = small_pair(WaitStrategy::Adaptive);
        let whole = CAP / 2 - 8;
        // Fill the ring with two whole frames; a third must wait for the first guard.
        host.sender.send(&[&frame(0, whole)]).unwrap();
        host.sender.send(&[&frame(1, 100)]).unwrap();
        {
            let f = worker.receiver.recv_in_place(None).unwrap();
            assert!(f.is_in_ring());
            assert_eq!(&*f, frame(0, whole).as_slice());
        }
        let f = worker.receiver.recv_in_place(None).unwrap();
        assert_eq!(&*f, frame(1, 100).as_slice());
        drop(f);
        // A frame larger than half the ring is assembled (one copy) but read the same way.
        let big = frame(2, 3 * CAP);
        let sender = std::thread::spawn(move || {
            host.sender.send(&[&big]).unwrap();
            host
        });
        let f = worker.receiver.recv_in_place(None).unwrap();
        assert!(!f.is_in_ring());
        assert_eq!(&*f, frame(2, 3 * CAP).as_slice());
        drop(f);
        drop(sender.join().unwrap());
    });
}

#[test]
fn chunked_frame_cut_by_a_receive_timeout_is_kept_for_the_next_call() {
    with_watchdog(WATCHDOG, || {
        let (mut host, mut worker) = small_pair(WaitStrategy::Block);
        let big = frame(0, 10 * CAP);
        let expected = big.clone();
        let sender = std::thread::spawn(move || {
            host.sender.send(&[&big]).unwrap();
            host
        });
        let mut buf = Vec::new();
        let mut timeouts = 0;
        loop {
            // Tiny deadlines: some calls end with only part of the frame read.
            match worker
                .receiver
                .recv(&mut buf, Some(Instant::now() + Duration::from_micros(50)))
            {
                Ok(()) => break,
                Err(TransportError::Timeout) => timeouts += 1,
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!(buf, expected, "after {timeouts} timeouts");
        drop(sender.join().unwrap());
    });
}

#[test]
fn send_timeout_mid_chunked_frame_is_aborted_and_the_link_goes_on() {
    with_watchdog(WATCHDOG, || {
        let mut options = ShmOptions::default();
        options.capacity = CAP;
        options.send_timeout = Some(Duration::from_millis(30));
        let (mut host, mut worker) = shm::pair(&options, 1 << 20).unwrap();
        // Nobody reads: the big frame times out after its first chunks.
        let err = host.sender.send(&[&frame(0, 4 * CAP)]).unwrap_err();
        assert!(matches!(err, TransportError::Timeout), "got {err:?}");
        // The receiver drops the partial frame; the next one arrives intact.
        let sender = std::thread::spawn(move || {
            host.sender.send(&[&frame(1, 300)]).unwrap();
            host
        });
        let mut buf = Vec::new();
        worker.receiver.recv(&mut buf, None).unwrap();
        assert_eq!(buf, frame(1, 300));
        drop(sender.join().unwrap());
    });
}

#[test]
fn spin_strategy_passes_frames_both_ways() {
    with_watchdog(WATCHDOG, || {
        let (mut host, mut worker) = small_pair(WaitStrategy::Spin);
        let echo = std::thread::spawn(move || {
            let mut buf = Vec::new();
            for _ in 0..200 {
                worker.receiver.recv(&mut buf, None).unwrap();
                worker.sender.send(&[&buf]).unwrap();
            }
        });
        let mut buf = Vec::new();
        for i in 0..200 {
            let f = frame(i, 1 + i * 37 % (3 * CAP));
            host.sender.send(&[&f]).unwrap();
            host.receiver.recv(&mut buf, None).unwrap();
            assert_eq!(buf, f);
        }
        echo.join().unwrap();
    });
}

fn shm_echo_worker(codec: CodecKind) -> WorkerProcess {
    let mut spec = WorkerSpec::new("echo", ferry_bin(), ["worker", "echo"]);
    spec.transport = TransportKind::Shm;
    spec.codec = codec;
    WorkerProcess::spawn(spec).expect("echo worker over shm")
}

#[test]
fn echo_worker_over_shm_round_trips_with_every_codec_and_large_attachments() {
    with_watchdog(WATCHDOG, || {
        for codec in CodecKind::ALL {
            let mut w = shm_echo_worker(codec);
            assert_eq!(w.ready_info().unwrap().worker_type, "echo");
            for i in 0..50 {
                let data = json!({"i": i, "text": "héllo"});
                assert_eq!(w.call("echo", data.clone(), |_| {}).unwrap().data, data);
            }
            // 5 MiB: larger than half the default 4 MiB ring, so chunked both ways.
            let image: Vec<u8> = (0..5 << 20).map(|i: u32| (i % 251) as u8).collect();
            let reply = w
                .call_with(
                    Envelope::request("", "echo", json!({"kind": "png"})),
                    &[&image, b"\n\0raw"],
                    &CallOptions::default(),
                    |_| {},
                )
                .unwrap();
            assert_eq!(reply.attachments, vec![image, b"\n\0raw".to_vec()]);
            let status = w.shutdown().unwrap();
            assert!(status.success(), "{codec}: {status:?}");
        }
    });
}

#[test]
fn progress_events_and_cancel_work_over_shm() {
    with_watchdog(WATCHDOG, || {
        let mut w = shm_echo_worker(CodecKind::MsgPack);
        let mut seen = 0;
        let reply = w
            .call("sleep", json!({"ms": 30, "steps": 3}), |_| seen += 1)
            .unwrap();
        assert_eq!(seen, 3);
        assert_eq!(reply.data["steps"], 3);
        let options = CallOptions::default().timeout(Duration::from_millis(50));
        let request = Envelope::request("", "sleep", json!({"ms": 5000, "steps": 100}));
        assert!(w.call_with(request, &[], &options, |_| {}).is_err());
        // The worker stays usable after the cancel.
        assert_eq!(w.call("echo", json!(1), |_| {}).unwrap().data, json!(1));
        w.shutdown().unwrap();
    });
}

#[test]
fn worker_killed_during_a_call_over_shm_is_worker_crashed() {
    with_watchdog(WATCHDOG, || {
        let mut w = shm_echo_worker(CodecKind::MsgPack);
        let pid = rustix::process::Pid::from_raw(w.pid() as i32).unwrap();
        // The handler works for ten minutes in 100 ms steps; at its first progress event
        // the call is surely under way, and the worker is killed from the event callback
        // while the host waits for the answer in the ring.
        let mut killed = false;
        let err = w
            .call("sleep", json!({"ms": 600_000, "steps": 6_000}), |_| {
                if !killed {
                    killed = true;
                    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
                }
            })
            .unwrap_err();
        assert!(killed, "no progress before the answer: {err}");
        assert_eq!(
            err.code(),
            ferry::protocol::ErrorCode::WorkerCrashed,
            "{err}"
        );
    });
}

#[test]
fn answers_are_seen_in_place_with_their_events_and_errors_on_shm_and_stdio() {
    with_watchdog(WATCHDOG, || {
        for transport in [TransportKind::Shm, TransportKind::Stdio] {
            let mut spec = WorkerSpec::new("echo", ferry_bin(), ["worker", "echo"]);
            spec.transport = transport;
            let mut w = WorkerProcess::spawn(spec).expect("echo worker");
            let options = CallOptions::default();
            // 64 B in one record, 5 MiB chunked on shm (over half the ring).
            for len in [64usize, 5 << 20] {
                let image: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                let request = Envelope::request("", "echo", json!({"len": len}));
                let seen = w
                    .call_in_place(
                        request,
                        &[&image, b"\n\0raw"],
                        &options,
                        |_| {},
                        |answer| {
                            assert!(!answer.copied, "the caller read its own answer");
                            assert_eq!(answer.data, &json!({"len": len}));
                            assert_eq!(answer.attachments, [&image[..], b"\n\0raw"]);
                            answer.attachments.iter().map(|a| a.len()).sum::<usize>()
                        },
                    )
                    .unwrap();
                assert_eq!(seen, len + 5, "{transport}");
            }
            let mut events = 0;
            let steps = w
                .call_in_place(
                    Envelope::request("", "sleep", json!({"ms": 30, "steps": 3})),
                    &[],
                    &options,
                    |_| events += 1,
                    |answer| answer.to_owned().data["steps"].clone(),
                )
                .unwrap();
            assert_eq!((events, steps), (3, json!(3)), "{transport}");
            let refused = w.call_in_place(
                Envelope::request("", "no_such_operation", json!(null)),
                &[],
                &options,
                |_| {},
                |_| panic!("an error answer is not a response"),
            );
            assert!(
                matches!(&refused, Err(ferry::worker::CallError::Remote(e)) if e.code == ferry::protocol::ErrorCode::UnknownOperation),
                "{transport}: {refused:?}"
            );
            // Nothing is left pending: plain calls go on.
            assert_eq!(w.call("echo", json!(7), |_| {}).unwrap().data, json!(7));
            assert!(w.shutdown().unwrap().success());
        }
    });
}
