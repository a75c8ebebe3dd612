//! Waiting for a ring: spin while it pays, then yield, then sleep on a futex.
//!
//! Spinning only pays while the peer is *running on another CPU*: then the answer comes in
//! well under a microsecond. If the peer is asleep, nothing will come until something
//! wakes it; if it shares our CPU, our spinning is exactly what keeps it from running (two
//! spinners on one core progress once per scheduler timeslice, milliseconds). So
//! [`WaitStrategy::Adaptive`] looks at what the peer keeps in the segment before spinning:
//!
//! 1. **Spin** (at most `spin`) while the peer's futex words say it is awake and the CPU
//!    it last reported is not ours. When answers keep coming just after the spin (a large
//!    frame takes the peer 100-1000 µs to copy), the spin grows to a quarter more than the
//!    last such wait, up to 20 times `spin`; a longer wait halves it again.
//! 2. **Yield** (at most `yield_for` more) while the peer is awake: on a shared CPU this
//!    hands the CPU to the peer straight away, so a same-core round trip costs two context
//!    switches, not two timeslices. A yield that keeps us off the CPU for 200 µs without
//!    an answer (or that got one only after that long) handed it to a third, CPU-bound
//!    process instead (it then runs a whole timeslice): the end stops yielding for the next
//!    4,096 waits and sleeps on the futex at once, whose wake-up preempts such a process.
//!    Each further slow yield doubles that count (up to about a million waits); a yield
//!    answered quickly brings it back to 4,096.
//! 3. **Sleep** on this end's futex word: announce [`SLEEPING`], fence, re-check, then
//!    `FUTEX_WAIT` in slices of at most `liveness` so a dead peer is noticed. The other
//!    end pays a `FUTEX_WAKE` only when it sees the word set; otherwise publishing costs
//!    no system call.
//!
//! Every wait also returns when the peer closes its end or its process is gone, and at the
//! deadline.

use super::liveness::Liveness;
use super::ring::{AWAKE, SLEEPING};
use super::sync::{
    fence, futex_wait, futex_wake, spin_hint, yield_now, AtomicU32, Ordering, Shared,
};
use crate::transport::TransportError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// How an end of the shm transport waits for the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WaitStrategy {
    /// Busy-poll only, never sleep: the lowest latency when each process has a core of its
    /// own, a full core burnt per waiting end, and timeslice-long waits (milliseconds) when
    /// the two share a core.
    Spin,
    /// Spin while the peer runs on another core, yield while it runs on ours, then sleep on
    /// a futex. The default.
    #[default]
    Adaptive,
    /// Sleep on the futex at once: no CPU spent waiting, a wake-up (microseconds) per message.
    Block,
}

impl WaitStrategy {
    /// The name used in options and `FERRY_SHM_WAIT`.
    pub const fn as_str(self) -> &'static str {
        match self {
            WaitStrategy::Spin => "spin",
            WaitStrategy::Adaptive => "adaptive",
            WaitStrategy::Block => "block",
        }
    }
}

impl fmt::Display for WaitStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WaitStrategy {
    type Err = TransportError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            WaitStrategy::Spin,
            WaitStrategy::Adaptive,
            WaitStrategy::Block,
        ]
        .into_iter()
        .find(|w| w.as_str() == s)
        .ok_or_else(|| TransportError::UnknownName {
            what: "shm wait strategy",
            name: s.to_owned(),
            expected: "spin, adaptive or block".into(),
        })
    }
}

/// The tunables of waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WaitConfig {
    pub(crate) strategy: WaitStrategy,
    /// Longest spin of one wait (adaptive).
    pub(crate) spin: Duration,
    /// Longest yielding after the spin (adaptive).
    pub(crate) yield_for: Duration,
    /// Longest single futex sleep; the peer's liveness is checked between two.
    pub(crate) liveness: Duration,
}

/// Spins between two looks at the clock and the peer's flags.
const SPIN_BATCH: u32 = 64;
/// Waits between two refreshes of this thread's CPU number while it never sleeps.
const CPU_REFRESH: u32 = 1024;
/// A yield that kept us off the CPU this long without the peer answering gave the CPU to
/// a third process (a peer on our CPU answers a short request in microseconds): a
/// timeslice, which sleeping on the futex would not have cost (a futex wake preempts the
/// CPU-bound process; a yield only goes to the back of the line).
const SLOW_YIELD: Duration = Duration::from_micros(200);
/// Waits that skip the yield phase after a slow yield, before yielding is tried again;
/// doubled after each further slow yield up to [`MAX_WAITS_WITHOUT_YIELD`], back to this
/// after a yield that was answered quickly. Each retry while a CPU-bound process still
/// shares our CPU costs one timeslice: backing off makes that rarer than one wait in a
/// million once the situation has lasted a few seconds, and a retry still finds out
/// within seconds that the process has gone.
const WAITS_WITHOUT_YIELD: u32 = 4096;
/// The longest an adaptive spin may grow to, in multiples of the configured `spin` (50 µs
/// by default: 1 ms), see [`Waiter::learn_spin`].
const MAX_SPIN_FACTOR: u32 = 20;
/// The longest back-off between two yield retries (a few seconds of round trips).
const MAX_WAITS_WITHOUT_YIELD: u32 = 1 << 20;

/// The words a waiting end reads and writes, in the segment.
pub(crate) struct Words {
    /// This end's futex word in its ring (`consumer_wait` or `producer_wait`).
    pub(crate) own: Shared<AtomicU32>,
    /// The peer's futex words (both rings): it is asleep when one holds [`SLEEPING`].
    pub(crate) peer: [Shared<AtomicU32>; 2],
    /// Where this side reports its CPU (+1; 0 = unknown).
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) my_cpu: Shared<AtomicU32>,
    /// Where the peer reports its CPU.
    pub(crate) peer_cpu: Shared<AtomicU32>,
}

/// One end's waiting state.
pub(crate) struct Waiter {
    cfg: WaitConfig,
    words: Words,
    liveness: Liveness,
    /// This thread's CPU + 1 as last seen (0 = not yet).
    cpu: u32,
    since_cpu: u32,
    /// Waits left that go from the spin straight to the futex (after a slow yield).
    waits_without_yield: u32,
    /// What `waits_without_yield` is set to at the next slow yield (see
    /// [`WAITS_WITHOUT_YIELD`]).
    yield_backoff: u32,
    /// How long the adaptive spin lasts now: the configured `spin`, or longer while the
    /// peer's answers keep coming just after it (see [`Waiter::learn_spin`]).
    spin_budget: Duration,
}

/// How one phase of a wait ended.
enum Phase {
    /// The condition holds.
    Ready,
    /// The wait is over without it: deadline or peer gone.
    Stop(TransportError),
    /// This phase gave up; go on to the next.
    Next,
}

type Ready<'a> = &'a mut dyn FnMut() -> Result<bool, TransportError>;

/// Wakes the end sleeping on `word`; called after a load of it saw [`SLEEPING`].
pub(crate) fn wake(word: &AtomicU32) {
    // SYNC POINT: storing AWAKE before `FUTEX_WAKE` makes a sleeper that has not reached
    // `FUTEX_WAIT(word, SLEEPING)` yet return from it at once, so the wake cannot be lost;
    // pairs with the sleeper's SLEEPING store in `Waiter::sleep` (the SeqCst fences before
    // the caller's load order them). A plain store, not a swap: at worst it cuts a later
    // sleep short (the sleeper re-checks and sleeps again), and loom models it exactly
    // (loom 0.7 lets a load after an RMW and a SeqCst fence read a value the fence rules
    // forbid, which made a swap here fail the model spuriously).
    word.store(AWAKE, Ordering::Relaxed);
    futex_wake(word);
}

impl Waiter {
    pub(crate) fn new(cfg: WaitConfig, words: Words, liveness: Liveness) -> Self {
        Waiter {
            cfg,
            words,
            liveness,
            cpu: 0,
            since_cpu: 0,
            waits_without_yield: 0,
            yield_backoff: WAITS_WITHOUT_YIELD,
            spin_budget: cfg.spin,
        }
    }

    /// Whether the peer process lives (rate-limited look, see [`Liveness::alive`]).
    pub(crate) fn peer_alive(&mut self, now: Instant) -> bool {
        self.liveness.alive(now)
    }

    fn peer_awake(&self) -> bool {
        self.words
            .peer
            .iter()
            .all(|w| w.load(Ordering::Relaxed) != SLEEPING)
    }

    fn peer_elsewhere(&self) -> bool {
        let peer = self.words.peer_cpu.load(Ordering::Relaxed);
        peer == 0 || self.cpu == 0 || peer != self.cpu
    }

    fn refresh_cpu(&mut self) {
        self.since_cpu = 0;
        #[cfg(all(target_os = "linux", not(loom)))]
        {
            self.cpu = rustix::thread::sched_getcpu() as u32 + 1;
            // Heuristic only: no ordering needed.
            self.words.my_cpu.store(self.cpu, Ordering::Relaxed);
        }
    }

    /// Waits until `ready()` is true, the peer is gone (`closed()` or its process), or
    /// `deadline`. `ready` is called often; it must be cheap and idempotent.
    pub(crate) fn wait(
        &mut self,
        deadline: Option<Instant>,
        ready: Ready<'_>,
        closed: &dyn Fn() -> bool,
    ) -> Result<(), TransportError> {
        if ready()? {
            return Ok(());
        }
        self.since_cpu += 1;
        if self.cpu == 0 || self.since_cpu >= CPU_REFRESH {
            self.refresh_cpu();
        }
        let start = Instant::now();
        let mut phase = self.check(start, deadline, ready, closed)?;
        if matches!(phase, Phase::Next) {
            phase = match self.cfg.strategy {
                WaitStrategy::Spin => self.spin(start, None, deadline, ready, closed)?.0,
                WaitStrategy::Adaptive => {
                    match self.spin(start, Some(self.spin_budget), deadline, ready, closed)? {
                        (Phase::Next, spun) => {
                            // `start` is still the time while nothing has waited yet (the
                            // peer is on our CPU or asleep, and yielding is backed off): the
                            // sleep uses it rather than read the clock again.
                            let (phase, now) = if self.waits_without_yield > 0 {
                                self.waits_without_yield -= 1;
                                (Phase::Next, (!spun).then_some(start))
                            } else {
                                (self.yield_phase(start, deadline, ready, closed)?, None)
                            };
                            let phase = match phase {
                                Phase::Next => match self.sleep(now, deadline, ready, closed) {
                                    Ok(()) => Phase::Ready,
                                    Err(e) => Phase::Stop(e),
                                },
                                done => done,
                            };
                            // Only a wait that spun teaches the spin anything: the next
                            // one skips spinning too while the peer stays on our CPU.
                            if spun && matches!(phase, Phase::Ready) {
                                self.learn_spin(start.elapsed());
                            }
                            return match phase {
                                Phase::Stop(e) => Err(e),
                                _ => Ok(()),
                            };
                        }
                        (done, _) => done,
                    }
                }
                WaitStrategy::Block => {
                    return self.sleep(Some(start), deadline, ready, closed);
                }
            };
        }
        match phase {
            Phase::Ready => Ok(()),
            Phase::Stop(e) => Err(e),
            Phase::Next => self.sleep(None, deadline, ready, closed),
        }
    }

    /// Learns from a wait that outlasted the spin: if the answer came within what spinning
    /// may cost ([`MAX_SPIN_FACTOR`] times the configured spin), the next waits spin a
    /// quarter longer than this one took, so a peer whose answers take a steady 100-1000
    /// µs (a large frame copied) is met spinning instead of through a futex wake-up (tens
    /// of µs on a VM); a longer wait halves the budget back towards the configured spin,
    /// so a slow or idle peer costs no more than that.
    fn learn_spin(&mut self, waited: Duration) {
        let most = self.cfg.spin * MAX_SPIN_FACTOR;
        self.spin_budget = if waited <= most {
            (waited + waited / 4).clamp(self.cfg.spin, most)
        } else {
            (self.spin_budget / 2).max(self.cfg.spin)
        };
    }

    /// Looks at the peer and the clock: stop (with the condition re-checked when the peer
    /// is gone, so what it published before closing is still delivered) or go on.
    fn check(
        &mut self,
        now: Instant,
        deadline: Option<Instant>,
        ready: Ready<'_>,
        closed: &dyn Fn() -> bool,
    ) -> Result<Phase, TransportError> {
        if closed() || !self.liveness.alive(now) {
            return Ok(if ready()? {
                Phase::Ready
            } else {
                Phase::Stop(TransportError::Disconnected)
            });
        }
        if deadline.is_some_and(|d| d <= now) {
            return Ok(Phase::Stop(TransportError::Timeout));
        }
        Ok(Phase::Next)
    }

    /// Busy-polls. With `budget` (adaptive), only while the peer runs elsewhere and for at
    /// most `budget`. Also says whether it spun at all.
    fn spin(
        &mut self,
        start: Instant,
        budget: Option<Duration>,
        deadline: Option<Instant>,
        ready: Ready<'_>,
        closed: &dyn Fn() -> bool,
    ) -> Result<(Phase, bool), TransportError> {
        let mut spun = false;
        loop {
            if budget.is_some() && !(self.peer_awake() && self.peer_elsewhere()) {
                return Ok((Phase::Next, spun));
            }
            spun = true;
            for _ in 0..SPIN_BATCH {
                if ready()? {
                    return Ok((Phase::Ready, spun));
                }
                spin_hint();
            }
            let now = Instant::now();
            match self.check(now, deadline, ready, closed)? {
                Phase::Next => {}
                done => return Ok((done, spun)),
            }
            if budget.is_some_and(|b| now - start >= b) {
                return Ok((Phase::Next, spun));
            }
        }
    }

    /// Yields the CPU while the peer is awake, until `spin + yield_for` after `start`.
    fn yield_phase(
        &mut self,
        start: Instant,
        deadline: Option<Instant>,
        ready: Ready<'_>,
        closed: &dyn Fn() -> bool,
    ) -> Result<Phase, TransportError> {
        let until = start + self.spin_budget + self.cfg.yield_for;
        let mut yielded = false;
        let mut phase = Phase::Next;
        let mut before = Instant::now();
        while self.peer_awake() {
            yield_now();
            yielded = true;
            let now = Instant::now();
            let slow = now - before >= SLOW_YIELD;
            let answered = ready()?;
            self.after_yield(slow, answered);
            if answered {
                phase = Phase::Ready;
                break;
            }
            if slow {
                break;
            }
            before = now;
            match self.check(now, deadline, ready, closed)? {
                Phase::Next => {}
                done => {
                    phase = done;
                    break;
                }
            }
            if now >= until {
                break;
            }
        }
        if yielded {
            // We may have been moved to another CPU meanwhile.
            self.refresh_cpu();
        }
        Ok(phase)
    }

    /// Learns from one yield: a `slow` one (off the CPU for [`SLOW_YIELD`]) gave the CPU to
    /// someone else, even when the answer is here now, so the next waits sleep instead, for
    /// longer each time it happens again; a quick one that was `answered` shows yielding
    /// works, so after a future slow one it is retried soon.
    fn after_yield(&mut self, slow: bool, answered: bool) {
        if slow {
            self.waits_without_yield = self.yield_backoff;
            self.yield_backoff = (self.yield_backoff * 2).min(MAX_WAITS_WITHOUT_YIELD);
        } else if answered {
            self.yield_backoff = WAITS_WITHOUT_YIELD;
        }
    }

    /// Sleeps on this end's futex word until the condition holds, the peer is gone or the
    /// deadline passes.
    ///
    /// Before the first sleep the peer process is looked at only if the last look is a
    /// liveness interval old (a look is a system call or two, `poll` on the pidfd and
    /// `getppid`, as many as the futex wait itself on a round trip that sleeps every time);
    /// after each slice slept through it is looked at again. A peer that dies unseen is
    /// therefore noticed within two intervals at most. `now`, when given, is a reading of
    /// the clock taken just before (the first look at the deadline uses it).
    fn sleep(
        &mut self,
        mut now: Option<Instant>,
        deadline: Option<Instant>,
        ready: Ready<'_>,
        closed: &dyn Fn() -> bool,
    ) -> Result<(), TransportError> {
        let mut slept = false;
        let result = loop {
            self.words.own.store(SLEEPING, Ordering::Relaxed);
            // SYNC POINT: SeqCst fence pairs with the fence after the peer's publishing
            // store (`Producer::commit`, `Consumer::release`, the `close`s): either we see
            // its store in `ready()`/`closed()` below, or it sees SLEEPING and wakes us.
            fence(Ordering::SeqCst);
            if ready()? {
                break Ok(());
            }
            let now = now.take().unwrap_or_else(Instant::now);
            if closed()
                || !(if slept {
                    self.liveness.alive_now()
                } else {
                    self.liveness.alive(now)
                })
            {
                break if ready()? {
                    Ok(())
                } else {
                    Err(TransportError::Disconnected)
                };
            }
            let mut slice = self.cfg.liveness;
            if let Some(d) = deadline {
                if d <= now {
                    break Err(TransportError::Timeout);
                }
                slice = slice.min(d - now);
            }
            futex_wait(&self.words.own, SLEEPING, Some(slice));
            slept = true;
            self.words.own.store(AWAKE, Ordering::Relaxed);
        };
        self.words.own.store(AWAKE, Ordering::Relaxed);
        self.refresh_cpu();
        result
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::transport::shm::ring::RingControl;
    use crate::transport::shm::segment::{Segment, Side};

    fn waiter(seg: &std::sync::Arc<Segment>) -> Waiter {
        let (tx, rx) = (Side::Host.tx_ring(), Side::Host.rx_ring());
        let consumer_wait = std::mem::offset_of!(RingControl, consumer_wait);
        let producer_wait = std::mem::offset_of!(RingControl, producer_wait);
        let cfg = WaitConfig {
            strategy: WaitStrategy::Adaptive,
            spin: Duration::from_micros(50),
            yield_for: Duration::from_micros(50),
            liveness: Duration::from_millis(20),
        };
        let words = Words {
            own: seg.word(rx, consumer_wait),
            peer: [seg.word(tx, consumer_wait), seg.word(rx, producer_wait)],
            my_cpu: seg.cpu_word(Side::Host),
            peer_cpu: seg.cpu_word(Side::Worker),
        };
        Waiter::new(cfg, words, Liveness::none())
    }

    #[test]
    fn the_spin_grows_to_meet_answers_that_come_just_after_it_and_shrinks_for_slow_ones() {
        let (seg, _fd) = Segment::create(4096).expect("segment");
        let mut w = waiter(&seg);
        let base = Duration::from_micros(50);
        assert_eq!(w.spin_budget, base);
        // Answers after 200 µs (a large frame copied): spin a quarter longer next time.
        w.learn_spin(Duration::from_micros(200));
        assert_eq!(w.spin_budget, Duration::from_micros(250));
        // Never past 20 times the configured spin, however close the answers come to it.
        w.learn_spin(Duration::from_micros(990));
        assert_eq!(w.spin_budget, base * MAX_SPIN_FACTOR);
        // A slow answer (the peer works for longer than spinning may cost) halves it...
        w.learn_spin(Duration::from_secs(2));
        assert_eq!(w.spin_budget, base * MAX_SPIN_FACTOR / 2);
        for _ in 0..10 {
            w.learn_spin(Duration::from_secs(2));
        }
        // ...down to the configured spin, never below.
        assert_eq!(w.spin_budget, base);
        w.learn_spin(Duration::from_micros(10));
        assert_eq!(w.spin_budget, base);
    }

    #[test]
    fn slow_yields_back_off_yielding_longer_each_time_and_a_quick_answer_resets_it() {
        let (seg, _fd) = Segment::create(4096).expect("segment");
        let mut w = waiter(&seg);
        // A slow yield counts even when the answer came with it (a timeslice was lost).
        w.after_yield(true, true);
        assert_eq!(w.waits_without_yield, WAITS_WITHOUT_YIELD);
        w.after_yield(true, false);
        assert_eq!(w.waits_without_yield, 2 * WAITS_WITHOUT_YIELD);
        for _ in 0..32 {
            w.after_yield(true, true);
        }
        assert_eq!(w.waits_without_yield, MAX_WAITS_WITHOUT_YIELD);
        // A quick yield that was not answered says nothing about who had the CPU.
        w.after_yield(false, false);
        w.after_yield(true, false);
        assert_eq!(w.waits_without_yield, MAX_WAITS_WITHOUT_YIELD);
        // A quick answer shows yielding works: the next slow one skips the base count only.
        w.after_yield(false, true);
        w.after_yield(true, true);
        assert_eq!(w.waits_without_yield, WAITS_WITHOUT_YIELD);
    }
}
