//! The transport conformance suite: the contract in `src/transport/mod.rs`, checked the
//! same way for every transport. A transport is added by one `conformance_tests!` line in
//! `tests/conformance.rs` with a function returning two connected links.

use ferry::codec::Framing;
use ferry::transport::{Link, TransportError};
use std::time::{Duration, Instant};

/// The maximum frame size the suite configures.
pub const MAX: usize = 1 << 20;

/// Makes two connected links (host end, worker end) with `MAX` as maximum frame.
pub type MakePair = fn() -> (Link, Link);

/// A payload of `len` bytes, distinct per `seed`, that the link's framing can carry.
pub fn payload(framing: Framing, len: usize, seed: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            let x = (i.wrapping_mul(31).wrapping_add(seed.wrapping_mul(7))) as u8;
            match framing {
                // Lines carry text without newlines.
                Framing::Lines => b'a' + x % 26,
                _ => x,
            }
        })
        .collect()
}

fn recv(link: &mut Link) -> Result<Vec<u8>, TransportError> {
    let mut buf = Vec::new();
    link.receiver
        .recv(&mut buf, Some(Instant::now() + Duration::from_secs(20)))?;
    Ok(buf)
}

pub fn frames_arrive_whole_and_in_order(make: MakePair) {
    let (mut host, mut worker) = make();
    let framing = host.framing;
    let sizes: Vec<usize> = (0..500).map(|i| 1 + (i * 97) % 5000).collect();
    let expected: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| payload(framing, n, i))
        .collect();
    let to_send = expected.clone();
    let sender = std::thread::spawn(move || {
        for frame in &to_send {
            host.sender.send(&[frame]).unwrap();
        }
        host
    });
    for (i, want) in expected.iter().enumerate() {
        let got = recv(&mut worker).unwrap();
        assert_eq!(&got, want, "frame {i} differs");
    }
    let mut host = sender.join().unwrap();
    // And the other direction.
    for (i, want) in expected.iter().take(100).enumerate() {
        worker.sender.send(&[want]).unwrap();
        assert_eq!(&recv(&mut host).unwrap(), want, "reverse frame {i} differs");
    }
}

pub fn parts_are_sent_as_one_frame(make: MakePair) {
    let (mut host, mut worker) = make();
    let a = payload(host.framing, 10, 1);
    let b = payload(host.framing, 5000, 2);
    host.sender.send(&[&a, &b, &a]).unwrap();
    assert_eq!(recv(&mut worker).unwrap(), [a.as_slice(), &b, &a].concat());
}

pub fn frame_at_max_passes_and_over_max_is_refused_before_writing(make: MakePair) {
    let (mut host, mut worker) = make();
    let framing = host.framing;
    let at_max = payload(framing, MAX, 3);
    let over = payload(framing, MAX + 1, 4);
    let sender = std::thread::spawn(move || {
        let err = host.sender.send(&[&over]).unwrap_err();
        assert!(
            matches!(err, TransportError::FrameTooLarge { size, max } if size == MAX + 1 && max == MAX),
            "expected FrameTooLarge, got {err:?}"
        );
        host.sender.send(&[&at_max]).unwrap();
        host.sender.send(&[b"after"]).unwrap();
        host
    });
    let got = recv(&mut worker).unwrap();
    assert_eq!(
        got.len(),
        MAX,
        "the frame at the maximum arrives whole, and nothing of the refused one"
    );
    assert_eq!(recv(&mut worker).unwrap(), b"after");
    let _host = sender.join().unwrap();
}

pub fn recv_deadline_times_out_and_link_stays_usable(make: MakePair) {
    let (mut host, mut worker) = make();
    let mut buf = Vec::new();
    let err = worker
        .receiver
        .recv(&mut buf, Some(Instant::now() + Duration::from_millis(50)))
        .unwrap_err();
    assert!(
        matches!(err, TransportError::Timeout),
        "expected Timeout, got {err:?}"
    );
    // A deadline already past polls.
    let err = worker
        .receiver
        .recv(&mut buf, Some(Instant::now()))
        .unwrap_err();
    assert!(
        matches!(err, TransportError::Timeout),
        "expected Timeout, got {err:?}"
    );
    host.sender.send(&[b"late"]).unwrap();
    assert_eq!(recv(&mut worker).unwrap(), b"late");
}

pub fn past_deadline_still_returns_a_waiting_frame(make: MakePair) {
    let (mut host, mut worker) = make();
    host.sender.send(&[b"ready"]).unwrap();
    let mut buf = Vec::new();
    // The frame may need a moment to cross; poll until it does.
    for _ in 0..10_000 {
        match worker.receiver.recv(&mut buf, Some(Instant::now())) {
            Ok(()) => {
                assert_eq!(buf, b"ready");
                return;
            }
            Err(TransportError::Timeout) => std::thread::sleep(Duration::from_micros(200)),
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    panic!("frame never became readable by polling");
}

pub fn closed_peer_gives_disconnected_after_pending_frames(make: MakePair) {
    let (mut host, mut worker) = make();
    host.sender.send(&[b"one"]).unwrap();
    host.sender.send(&[b"two"]).unwrap();
    drop(host);
    assert_eq!(recv(&mut worker).unwrap(), b"one");
    assert_eq!(recv(&mut worker).unwrap(), b"two");
    let err = recv(&mut worker).unwrap_err();
    assert!(
        matches!(err, TransportError::Disconnected),
        "expected Disconnected, got {err:?}"
    );
    // And it stays that way.
    let err = recv(&mut worker).unwrap_err();
    assert!(
        matches!(err, TransportError::Disconnected),
        "expected Disconnected again, got {err:?}"
    );
}

pub fn closed_peer_gives_disconnected_on_send(make: MakePair) {
    let (host, mut worker) = make();
    drop(host);
    let frame = payload(worker.framing, 1000, 5);
    for _ in 0..10_000 {
        match worker.sender.send(&[&frame]) {
            Ok(()) => continue,
            Err(TransportError::Disconnected) => return,
            Err(e) => panic!("expected Disconnected, got {e:?}"),
        }
    }
    panic!("send kept succeeding to a closed peer");
}

pub fn blocked_receiver_wakes_with_disconnected_when_peer_closes(make: MakePair) {
    let (host, mut worker) = make();
    let waiter = std::thread::spawn(move || {
        let mut buf = Vec::new();
        worker.receiver.recv(&mut buf, None)
    });
    std::thread::sleep(Duration::from_millis(50));
    drop(host);
    let result = waiter.join().unwrap();
    assert!(
        matches!(result, Err(TransportError::Disconnected)),
        "expected Disconnected, got {result:?}"
    );
}

pub fn ping_pong_across_threads(make: MakePair) {
    let (mut host, mut worker) = make();
    let framing = host.framing;
    const N: usize = 2_000;
    let echo = std::thread::spawn(move || {
        let mut buf = Vec::new();
        for _ in 0..N {
            worker.receiver.recv(&mut buf, None).unwrap();
            worker.sender.send(&[&buf]).unwrap();
        }
    });
    for i in 0..N {
        let frame = payload(framing, 1 + i % 300, i);
        host.sender.send(&[&frame]).unwrap();
        assert_eq!(recv(&mut host).unwrap(), frame);
    }
    echo.join().unwrap();
}

pub fn large_frames_round_trip(make: MakePair) {
    let (mut host, mut worker) = make();
    let framing = host.framing;
    let big = payload(framing, MAX - 7, 9);
    let echo = std::thread::spawn(move || {
        let mut buf = Vec::new();
        for _ in 0..3 {
            worker.receiver.recv(&mut buf, None).unwrap();
            worker.sender.send(&[&buf]).unwrap();
        }
    });
    for _ in 0..3 {
        host.sender.send(&[&big]).unwrap();
        assert_eq!(recv(&mut host).unwrap(), big);
    }
    echo.join().unwrap();
}

/// Instantiates the whole suite for one transport.
macro_rules! conformance_tests {
    ($name:ident, $make:path) => {
        mod $name {
            use super::common::{with_watchdog, WATCHDOG};
            use super::suite;
            macro_rules! case {
                ($case:ident) => {
                    #[test]
                    fn $case() {
                        with_watchdog(WATCHDOG, || suite::$case($make));
                    }
                };
            }
            case!(frames_arrive_whole_and_in_order);
            case!(parts_are_sent_as_one_frame);
            case!(frame_at_max_passes_and_over_max_is_refused_before_writing);
            case!(recv_deadline_times_out_and_link_stays_usable);
            case!(past_deadline_still_returns_a_waiting_frame);
            case!(closed_peer_gives_disconnected_after_pending_frames);
            case!(closed_peer_gives_disconnected_on_send);
            case!(blocked_receiver_wakes_with_disconnected_when_peer_closes);
            case!(ping_pong_across_threads);
            case!(large_frames_round_trip);
        }
    };
}
