//! The transport conformance suite: the contract of [the transport module](super),
//! checked the same way for every transport, ferry's own and a third party's (cargo
//! feature `conformance`).
//!
//! A transport is checked through a factory: a function or closure that takes the maximum
//! frame size and returns two connected [`Link`]s in this process (host end, worker end),
//! each made with that maximum (type [`MakePair`]). Two ways to run the suite:
//!
//! - [`conformance_tests!`](crate::conformance_tests) generates one `#[test]` per check in
//!   a module of the given name (so a failure names its check, and the checks run in
//!   parallel), plus one test that fails if a check of this suite was left out;
//! - [`run_all`] runs every check in turn and panics listing those that failed.
//!
//! Each check runs on its own thread under a watchdog ([`WATCHDOG`]): a transport that
//! hangs fails the check instead of the test run. The suite configures [`MAX_FRAME`]
//! (1 MiB) and sends frames up to that size.
//!
//! ```toml
//! [dev-dependencies]
//! ferry = { version = "0.1", features = ["conformance"] }
//! ```
//!
//! ```
//! // tests/conformance.rs of a crate with its own transport (here ferry's `memory`):
//! fn my_pair(max_frame: usize) -> (ferry::transport::Link, ferry::transport::Link) {
//!     ferry::transport::memory::pair(max_frame)
//! }
//!
//! ferry::conformance_tests!(my_transport, my_pair);
//! # fn main() {}
//! ```
//!
//! # Clauses and their checks
//!
//! The clauses are numbered as in [the module](super) and `docs/transports.md`; each check
//! says which it covers.
//!
//! | clause | checks |
//! |---|---|
//! | 1. whole frames, in order, once | [`frames_arrive_whole_and_in_order`], [`parts_are_sent_as_one_frame`], [`ping_pong_across_threads`], [`large_frames_round_trip`], [`frames_carry_any_bytes_their_framing_allows`] |
//! | 2. bounded size | [`frame_at_max_passes_and_over_max_is_refused_before_writing`] |
//! | 3. peer death is an error, never a hang | [`closed_peer_gives_disconnected_after_pending_frames`], [`closed_peer_gives_disconnected_on_send`], [`blocked_receiver_wakes_with_disconnected_when_peer_closes`] |
//! | 4. deadlines | [`recv_deadline_times_out_and_link_stays_usable`], [`past_deadline_still_returns_a_waiting_frame`], [`partial_frame_survives_short_deadlines`] |
//! | 5. text-only links refuse `\n` | [`line_links_refuse_a_newline`] |
//!
//! What links alone cannot show is left to a transport's own tests: a peer *announcing*
//! an oversized frame (clause 2; needs raw bytes on the wire) and a peer *process* dying
//! (clause 3; the suite closes the peer's link, in this process). ferry's own are in
//! `crates/ferry/src/transport/` (unit tests) and `crates/ferry-server/tests/`.

use super::{Framing, Link, TransportError};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// The maximum frame size the suite asks the factory for.
pub const MAX_FRAME: usize = 1 << 20;

/// How long one check may run before it counts as hung. Far above any expected run time;
/// it exists so a transport that hangs fails a check instead of stalling the test run.
pub const WATCHDOG: Duration = Duration::from_secs(60);

/// A factory of connected links: given the maximum frame size, two links in this process
/// (host end, worker end) where what one sends the other receives.
pub type MakePair = dyn Fn(usize) -> (Link, Link) + Send + Sync;

/// One check of the suite.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    /// Its name: the function's, and the test's in
    /// [`conformance_tests!`](crate::conformance_tests).
    pub name: &'static str,
    /// The clauses of the contract it checks (numbered as in [the module](super)).
    pub clauses: &'static [u8],
    /// The check; panics on a violation.
    pub run: fn(&MakePair),
}

macro_rules! checks {
    ($($name:ident: $($clause:literal),+;)*) => {
        /// Every check of the suite, in the order [`run_all`] runs them.
        pub const CHECKS: &[Check] = &[
            $(Check { name: stringify!($name), clauses: &[$($clause),+], run: $name },)*
        ];
    };
}

checks! {
    frames_arrive_whole_and_in_order: 1;
    parts_are_sent_as_one_frame: 1;
    frames_carry_any_bytes_their_framing_allows: 1, 5;
    frame_at_max_passes_and_over_max_is_refused_before_writing: 2;
    recv_deadline_times_out_and_link_stays_usable: 4;
    past_deadline_still_returns_a_waiting_frame: 4;
    partial_frame_survives_short_deadlines: 4;
    closed_peer_gives_disconnected_after_pending_frames: 3;
    closed_peer_gives_disconnected_on_send: 3;
    blocked_receiver_wakes_with_disconnected_when_peer_closes: 3;
    line_links_refuse_a_newline: 5;
    ping_pong_across_threads: 1;
    large_frames_round_trip: 1, 2;
}

/// Runs every check on links from `make`, each under the [`WATCHDOG`], and panics listing
/// the checks that failed (each failure's message is printed as it happens).
///
/// ```
/// use ferry::transport::{conformance, memory};
/// conformance::run_all(memory::pair);
/// ```
pub fn run_all<F>(make: F)
where
    F: Fn(usize) -> (Link, Link) + Send + Sync + 'static,
{
    let make: Arc<MakePair> = Arc::new(make);
    let failed: Vec<&str> = CHECKS
        .iter()
        .filter(|check| {
            let make = make.clone();
            let run = check.run;
            // The factory is only shared with the check's own thread, which has ended.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                with_watchdog(move || run(&*make))
            }));
            if outcome.is_err() {
                eprintln!("conformance check `{}` failed", check.name);
            }
            outcome.is_err()
        })
        .map(|check| check.name)
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} conformance checks failed: {}",
        failed.len(),
        CHECKS.len(),
        failed.join(", ")
    );
}

/// Runs the check named `name` on links from `make` under the [`WATCHDOG`]; panics if it
/// fails, or if there is no such check.
///
/// ```
/// use ferry::transport::{conformance, memory};
/// conformance::run_check("partial_frame_survives_short_deadlines", memory::pair);
/// ```
pub fn run_check<F>(name: &str, make: F)
where
    F: Fn(usize) -> (Link, Link) + Send + Sync + 'static,
{
    let Some(check) = CHECKS.iter().find(|c| c.name == name) else {
        panic!("no conformance check named `{name}`");
    };
    let run = check.run;
    with_watchdog(move || run(&make));
}

/// Fails unless `names` are exactly the suite's checks (used by
/// [`conformance_tests!`](crate::conformance_tests), so a check added to the suite cannot
/// be silently skipped by the macro).
#[doc(hidden)]
pub fn assert_every_check(names: &[&str]) {
    let missing: Vec<&str> = CHECKS
        .iter()
        .map(|c| c.name)
        .filter(|n| !names.contains(n))
        .collect();
    let unknown: Vec<&&str> = names
        .iter()
        .filter(|n| !CHECKS.iter().any(|c| c.name == **n))
        .collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "conformance_tests! is out of step with CHECKS: missing {missing:?}, unknown {unknown:?}"
    );
}

/// Generates the conformance suite as tests: one `#[test]` per check of
/// [`CHECKS`](crate::transport::conformance::CHECKS), in a module named `$name`, on
/// links made by `$make` (a function or closure `Fn(usize) -> (Link, Link)`, named as from
/// the module where the macro is invoked). Needs the cargo feature `conformance`.
///
/// ```
/// use ferry::transport::memory;
///
/// ferry::conformance_tests!(memory_transport, memory::pair);
/// ferry::conformance_tests!(memory_with_a_closure, |max| memory::pair(max));
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($name:ident, $make:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $crate::conformance_tests!(@checks $make;
                frames_arrive_whole_and_in_order,
                parts_are_sent_as_one_frame,
                frames_carry_any_bytes_their_framing_allows,
                frame_at_max_passes_and_over_max_is_refused_before_writing,
                recv_deadline_times_out_and_link_stays_usable,
                past_deadline_still_returns_a_waiting_frame,
                partial_frame_survives_short_deadlines,
                closed_peer_gives_disconnected_after_pending_frames,
                closed_peer_gives_disconnected_on_send,
                blocked_receiver_wakes_with_disconnected_when_peer_closes,
                line_links_refuse_a_newline,
                ping_pong_across_threads,
                large_frames_round_trip,
            );
        }
    };
    (@checks $make:expr; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                $crate::transport::conformance::run_check(stringify!($check), $make);
            }
        )*

        #[test]
        fn every_check_is_instantiated() {
            $crate::transport::conformance::assert_every_check(&[$(stringify!($check)),*]);
        }
    };
}

/// Runs `f` on a thread and panics if it has not finished within [`WATCHDOG`]; a panic
/// in `f` is passed on.
fn with_watchdog(f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(WATCHDOG) {
        Ok(()) => {
            let _ = handle.join();
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("watchdog: conformance check still running after {WATCHDOG:?}, probably hung")
        }
    }
}

/// A payload of `len` bytes, distinct per `seed`, that the link's framing can carry
/// (text without newlines on [`Framing::Lines`], every byte value otherwise).
pub fn payload(framing: Framing, len: usize, seed: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            let x = (i.wrapping_mul(31).wrapping_add(seed.wrapping_mul(7))) as u8;
            match framing {
                // Lines carry text without newlines.
                Framing::Lines => b'a' + x % 26,
                Framing::LengthPrefixed => x,
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

/// **Clause 1** (whole frames, in order, once): 500 frames of 1 to 5000 bytes sent from
/// another thread arrive whole and in order, then 100 the other way.
pub fn frames_arrive_whole_and_in_order(make: &MakePair) {
    let (mut host, mut worker) = make(MAX_FRAME);
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

/// **Clause 1**: a frame given as several parts arrives as one frame, their concatenation.
pub fn parts_are_sent_as_one_frame(make: &MakePair) {
    let (mut host, mut worker) = make(MAX_FRAME);
    let a = payload(host.framing, 10, 1);
    let b = payload(host.framing, 5000, 2);
    host.sender.send(&[&a, &b, &a]).unwrap();
    assert_eq!(recv(&mut worker).unwrap(), [a.as_slice(), &b, &a].concat());
}

/// **Clauses 1 and 5**: a length-prefixed link carries every byte value, newlines and
/// zeros included, verbatim; a line link carries text (its refusal of newlines is
/// [`line_links_refuse_a_newline`]).
pub fn frames_carry_any_bytes_their_framing_allows(make: &MakePair) {
    let (mut host, mut worker) = make(MAX_FRAME);
    let frames: Vec<Vec<u8>> = match host.framing {
        Framing::LengthPrefixed => vec![
            (0..=255u8).collect(),
            b"\n".to_vec(),
            vec![0],
            b"\r\n\n{\"a\":1}\n".to_vec(),
        ],
        Framing::Lines => vec![
            b"{\"text\": \"with spaces, tabs\\t and unicode \xc3\xa9\"}".to_vec(),
            b" ".to_vec(),
        ],
    };
    for frame in &frames {
        host.sender.send(&[frame]).unwrap();
        assert_eq!(&recv(&mut worker).unwrap(), frame);
    }
}

/// **Clause 2** (bounded size): a frame of exactly `max_frame` bytes passes; one byte more
/// is refused with `FrameTooLarge { size, max }` before anything is written (nothing of it
/// reaches the peer), and the link stays usable.
pub fn frame_at_max_passes_and_over_max_is_refused_before_writing(make: &MakePair) {
    let (mut host, mut worker) = make(MAX_FRAME);
    let framing = host.framing;
    let at_max = payload(framing, MAX_FRAME, 3);
    let over = payload(framing, MAX_FRAME + 1, 4);
    let sender = std::thread::spawn(move || {
        let err = host.sender.send(&[&over]).unwrap_err();
        assert!(
            matches!(err, TransportError::FrameTooLarge { size, max } if size == MAX_FRAME + 1 && max == MAX_FRAME),
            "expected FrameTooLarge, got {err:?}"
        );
        host.sender.send(&[&at_max]).unwrap();
        host.sender.send(&[b"after"]).unwrap();
        host
    });
    let got = recv(&mut worker).unwrap();
    assert_eq!(
        got.len(),
        MAX_FRAME,
        "the frame at the maximum arrives whole, and nothing of the refused one"
    );
    assert_eq!(recv(&mut worker).unwrap(), b"after");
    let _host = sender.join().unwrap();
}

/// **Clause 4** (deadlines): with nothing sent, a receive deadline gives `Timeout`, and
/// so does a deadline already past (a poll); a frame sent afterwards is received.
pub fn recv_deadline_times_out_and_link_stays_usable(make: &MakePair) {
    let (mut host, mut worker) = make(MAX_FRAME);
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

/// **Clause 4**: a deadline already past still returns a frame that is waiting (polling
/// does not only time out).
pub fn past_deadline_still_returns_a_waiting_frame(make: &MakePair) {
    let (mut host, mut worker) = make(MAX_FRAME);
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

/// **Clause 4**: a receiver polling with deadlines that pass while a large frame is still
/// crossing (on streams, mid-frame) gets `Timeout`s and then the whole frame: the part
/// read before a timeout is kept for the next call. Then the next frame follows intact.
pub fn partial_frame_survives_short_deadlines(make: &MakePair) {
    let (mut host, mut worker) = make(MAX_FRAME);
    let framing = host.framing;
    let big = payload(framing, MAX_FRAME, 11);
    let small = payload(framing, 100, 12);
    let (big_sent, small_sent) = (big.clone(), small.clone());
    let sender = std::thread::spawn(move || {
        host.sender
            .send(&[&big_sent[..1000], &big_sent[1000..]])
            .unwrap();
        host.sender.send(&[&small_sent]).unwrap();
        host
    });
    let mut buf = Vec::new();
    let started = Instant::now();
    for want in [&big, &small] {
        loop {
            match worker
                .receiver
                .recv(&mut buf, Some(Instant::now() + Duration::from_micros(100)))
            {
                Ok(()) => break,
                Err(TransportError::Timeout) => {
                    assert!(
                        started.elapsed() < Duration::from_secs(20),
                        "the frames never arrived"
                    );
                }
                Err(e) => panic!("expected a frame or Timeout, got {e:?}"),
            }
        }
        assert!(
            buf == *want,
            "a frame of {} bytes arrived as {} bytes or altered after timeouts",
            want.len(),
            buf.len()
        );
    }
    let _host = sender.join().unwrap();
}

/// **Clause 3** (peer death): the frames sent before the peer closed are received, then
/// `Disconnected`, and again `Disconnected` on every later call.
pub fn closed_peer_gives_disconnected_after_pending_frames(make: &MakePair) {
    let (mut host, mut worker) = make(MAX_FRAME);
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

/// **Clause 3**: sending to a closed peer gives `Disconnected` (after at most what the
/// link buffers), never success forever, never a hang.
pub fn closed_peer_gives_disconnected_on_send(make: &MakePair) {
    let (host, mut worker) = make(MAX_FRAME);
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

/// **Clause 3**: a receiver blocked with no deadline wakes with `Disconnected` when the
/// peer closes.
pub fn blocked_receiver_wakes_with_disconnected_when_peer_closes(make: &MakePair) {
    let (host, mut worker) = make(MAX_FRAME);
    let waiter = std::thread::spawn(move || {
        let mut buf = Vec::new();
        worker.receiver.recv(&mut buf, None)
    });
    // Not a time window the result depends on: a peer closed before the receive starts
    // gives `Disconnected` too (clause 3). The pause only makes the blocked case, the one
    // this check is about, the likely one on a portable suite that cannot see the thread.
    std::thread::sleep(Duration::from_millis(50));
    drop(host);
    let result = waiter.join().unwrap();
    assert!(
        matches!(result, Err(TransportError::Disconnected)),
        "expected Disconnected, got {result:?}"
    );
}

/// **Clause 5** (text-only links): a line link refuses a frame containing `\n` with
/// `InvalidFrame`, writes nothing of it, and stays usable. (Vacuous on length-prefixed
/// links, which carry newlines: see [`frames_carry_any_bytes_their_framing_allows`].)
pub fn line_links_refuse_a_newline(make: &MakePair) {
    let (mut host, mut worker) = make(MAX_FRAME);
    if host.framing != Framing::Lines {
        return;
    }
    let err = host.sender.send(&[b"a\nb"]).unwrap_err();
    assert!(
        matches!(err, TransportError::InvalidFrame(_)),
        "expected InvalidFrame, got {err:?}"
    );
    let err = host.sender.send(&[b"a", b"\n", b"b"]).unwrap_err();
    assert!(
        matches!(err, TransportError::InvalidFrame(_)),
        "expected InvalidFrame for a newline in a later part, got {err:?}"
    );
    host.sender.send(&[b"ok"]).unwrap();
    assert_eq!(recv(&mut worker).unwrap(), b"ok");
}

/// **Clause 1**: 2000 round trips of small frames between two threads, each answered
/// before the next is sent (the request/response pattern of a worker).
pub fn ping_pong_across_threads(make: &MakePair) {
    let (mut host, mut worker) = make(MAX_FRAME);
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

/// **Clauses 1 and 2**: frames close to `max_frame` make three round trips whole, both
/// directions (larger than any kernel or ring buffer the transport may have).
pub fn large_frames_round_trip(make: &MakePair) {
    let (mut host, mut worker) = make(MAX_FRAME);
    let framing = host.framing;
    let big = payload(framing, MAX_FRAME - 7, 9);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::memory;

    #[test]
    fn run_all_passes_on_the_reference_transport() {
        run_all(memory::pair);
    }

    #[test]
    fn run_all_fails_on_a_transport_that_breaks_the_contract() {
        // A "transport" whose receiver never delivers: every check that waits for a frame
        // must fail (and none may hang).
        struct Deaf;
        impl crate::transport::FrameReceiver for Deaf {
            fn recv(
                &mut self,
                _buf: &mut Vec<u8>,
                _deadline: Option<Instant>,
            ) -> Result<(), TransportError> {
                Err(TransportError::Timeout)
            }
        }
        let deaf = |max| {
            let (mut a, mut b) = memory::pair(max);
            a.receiver = Box::new(Deaf);
            b.receiver = Box::new(Deaf);
            (a, b)
        };
        let result = std::panic::catch_unwind(|| run_check("parts_are_sent_as_one_frame", deaf));
        assert!(result.is_err());
    }

    #[test]
    fn unknown_check_names_are_refused() {
        assert!(std::panic::catch_unwind(|| run_check("no_such_check", memory::pair)).is_err());
        assert!(std::panic::catch_unwind(|| assert_every_check(&["no_such_check"])).is_err());
    }

    #[test]
    fn every_clause_has_a_check() {
        for clause in 1..=5u8 {
            assert!(
                CHECKS.iter().any(|c| c.clauses.contains(&clause)),
                "clause {clause} has no check"
            );
        }
    }
}
