//! Timing the cases of one payload and pinning in turns (`ferry bench --rounds R`).
//!
//! Run one after the other, a floor and the engine case measured against it can land in
//! different states of a noisy machine: on a VM whose host moves the vCPUs, the bare shm
//! ring's 64 B round trip moves between 0.15 and 0.8 µs within a minute, and a ratio of
//! figures taken a minute apart then says more about the VM than about the engine. In
//! turns, each case of a group (its floor, the peers, every worker, at one payload and
//! pinning) times a share of its round trips in each of `R` rounds, the order rotated
//! each round, so the machine's drift falls on all of them alike.
//!
//! Each case's peer is started afresh for its turn and stopped after it: a busy-polling
//! floor or peer left running beside the next turn would take its CPU, and an idle
//! worker's adaptive wait would spin or yield beside it for a while.

use super::measure::{measure_into, Limits, Stats, Timed};
use super::plan::{Case, Step};
use super::{BenchError, RoundTrip};

/// The cases timed in turns with `cases[start]`: the run of cases from `start` on with
/// its payload and pinning, each measured one round trip at a time (floors, peers,
/// workers, the HTTP cases). Pipelined cases are never in a group; a group of one is
/// measured as without turns.
pub(super) fn group_at(cases: &[Case], start: usize) -> std::ops::Range<usize> {
    let Some(first) = cases.get(start).filter(|c| in_turns(c)) else {
        return start..start;
    };
    let len = cases[start..]
        .iter()
        .take_while(|c| in_turns(c) && c.payload == first.payload && c.pin == first.pin)
        .count();
    start..start + len
}

/// Whether `case` can take turns: it times one round trip at a time.
fn in_turns(case: &Case) -> bool {
    !matches!(case.step, Step::Pipelined(..))
}

/// Starts a case's peer for one turn.
pub(super) type SpawnTurn<'a> = dyn FnMut(&Case) -> Result<Box<dyn RoundTrip>, BenchError> + 'a;

/// What [`run_group`] needs from its caller.
pub(super) struct Turns<'a> {
    /// Rounds: each case gets one turn per round.
    pub(super) rounds: usize,
    /// The whole case's limits: each turn gets `1 / rounds` of its round trips and time.
    pub(super) limits: Limits,
    /// The payload every case echoes.
    pub(super) payload: &'a [u8],
}

/// Times `group` in turns: `turns.rounds` rounds, each giving every case (still without
/// an error) one turn, starting one case later each round. `spawn` starts a case's peer
/// for its turn (dropped after it); `tick(done, of)` follows the whole group's timed
/// round trips. A case whose peer fails to start or fails a round trip keeps that error
/// and takes no more turns; the others go on.
pub(super) fn run_group(
    group: &[Case],
    turns: &Turns<'_>,
    spawn: &mut SpawnTurn<'_>,
    tick: &mut dyn FnMut(u64, u64),
) -> Vec<Result<Stats, BenchError>> {
    let rounds = turns.rounds.max(1);
    let per_turn = turn_limits(&turns.limits, rounds);
    let of = per_turn.iterations * (rounds * group.len()) as u64;
    let mut timed: Vec<Result<Timed, BenchError>> =
        group.iter().map(|_| Ok(Timed::new())).collect();
    let mut done_before = 0;
    for round in 0..rounds {
        for k in 0..group.len() {
            let i = (round + k) % group.len();
            let Ok(t) = &mut timed[i] else { continue };
            let before = t.count();
            let turn = spawn(&group[i]).and_then(|mut peer| {
                measure_into(&mut *peer, turns.payload, &per_turn, t, &mut |done| {
                    tick(done_before + done, of)
                })
            });
            done_before += t.count() - before;
            if let Err(e) = turn {
                timed[i] = Err(e);
            }
        }
    }
    tick(done_before, of);
    timed.into_iter().map(|t| t.map(|t| t.stats())).collect()
}

/// One turn's share of a case's `limits` over `rounds` rounds: at least one round trip
/// and ten of warm-up (a fresh peer's first calls are slow).
fn turn_limits(limits: &Limits, rounds: usize) -> Limits {
    let rounds_u64 = rounds as u64;
    Limits {
        iterations: limits.iterations.div_ceil(rounds_u64).max(1),
        warmup: limits.warmup.div_ceil(rounds_u64).max(10),
        max_time: limits.max_time / rounds as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::floors::FloorKind;
    use crate::pin::Pin;
    use crate::WorkerLang;
    use ferry::transport::TransportKind;
    use std::time::Duration;

    fn case(step: Step, payload: usize, pin: Pin) -> Case {
        Case { step, payload, pin }
    }

    fn floor(payload: usize, pin: Pin) -> Case {
        case(Step::Floor(FloorKind::ShmRing), payload, pin)
    }

    fn shm(worker: WorkerLang, payload: usize, pin: Pin) -> Case {
        case(Step::Engine(TransportKind::Shm, worker), payload, pin)
    }

    /// `rounds` rounds of `iterations` round trips per case, with no time limit in reach.
    fn turns(rounds: usize, iterations: u64) -> Turns<'static> {
        Turns {
            rounds,
            limits: Limits::new(iterations, Duration::from_secs(600)),
            payload: b"x",
        }
    }

    #[test]
    fn a_group_is_the_run_of_one_payload_and_pinning() {
        let cases = vec![
            floor(64, Pin::Split),
            shm(WorkerLang::Rust, 64, Pin::Split),
            floor(4096, Pin::Split),
            shm(WorkerLang::Rust, 4096, Pin::Split),
            shm(WorkerLang::Rust, 64, Pin::Same),
            case(
                Step::Pipelined(TransportKind::Shm, WorkerLang::Rust),
                64,
                Pin::Split,
            ),
        ];
        assert_eq!(group_at(&cases, 0), 0..2);
        assert_eq!(group_at(&cases, 2), 2..4);
        assert_eq!(group_at(&cases, 4), 4..5);
        assert_eq!(group_at(&cases, 5), 5..5, "pipelined cases take no turns");
        assert_eq!(group_at(&cases, 6), 6..6);
    }

    /// Counts its round trips; fails from the `fail_at`-th on, if set.
    struct Counting {
        calls: std::rc::Rc<std::cell::Cell<u64>>,
        fail_at: Option<u64>,
    }

    impl RoundTrip for Counting {
        fn round_trip(&mut self, _payload: &[u8]) -> Result<(), BenchError> {
            self.calls.set(self.calls.get() + 1);
            match self.fail_at {
                Some(n) if self.calls.get() >= n => Err(BenchError::Harness("failed".into())),
                _ => Ok(()),
            }
        }
    }

    #[test]
    fn every_case_gets_a_turn_each_round_in_rotated_order() {
        let group = vec![
            floor(64, Pin::Split),
            shm(WorkerLang::Rust, 64, Pin::Split),
            shm(WorkerLang::Python, 64, Pin::Split),
        ];
        let turns = turns(4, 100);
        let mut order = Vec::new();
        let calls = std::rc::Rc::new(std::cell::Cell::new(0));
        let stats = run_group(
            &group,
            &turns,
            &mut |c| {
                order.push(c.label());
                Ok(Box::new(Counting {
                    calls: calls.clone(),
                    fail_at: None,
                }))
            },
            &mut |_, _| {},
        );
        let label = |i: usize| group[i].label();
        assert_eq!(
            order,
            [0, 1, 2, 1, 2, 0, 2, 0, 1, 0, 1, 2].map(label).to_vec()
        );
        for s in stats {
            let s = s.unwrap();
            assert_eq!(s.iterations, 100, "25 timed round trips in each of 4 turns");
            assert_eq!(s.warmup, 40, "10 warm-up round trips per turn at least");
        }
        assert_eq!(calls.get(), 3 * (100 + 40));
    }

    #[test]
    fn a_failing_case_keeps_its_error_and_the_others_go_on() {
        let group = vec![floor(64, Pin::Split), shm(WorkerLang::Rust, 64, Pin::Split)];
        let turns = turns(3, 30);
        let mut spawned = 0;
        let stats = run_group(
            &group,
            &turns,
            &mut |c| {
                spawned += 1;
                let engine = matches!(c.step, Step::Engine(..));
                Ok(Box::new(Counting {
                    calls: std::rc::Rc::new(std::cell::Cell::new(0)),
                    // The engine's peer fails its 15th round trip (in its first turn).
                    fail_at: engine.then_some(15),
                }))
            },
            &mut |_, _| {},
        );
        assert_eq!(stats[0].as_ref().unwrap().iterations, 30);
        assert!(matches!(stats[1], Err(BenchError::Harness(_))));
        assert_eq!(spawned, 4, "three turns of the floor, one of the engine");
    }

    #[test]
    fn a_turn_gets_its_share_of_the_limits() {
        let limits = Limits::new(20_000, Duration::from_secs(10));
        let t = turn_limits(&limits, 8);
        assert_eq!(t.iterations, 2500);
        assert_eq!(t.warmup, 125);
        assert_eq!(t.max_time, Duration::from_millis(1250));
        let t = turn_limits(&Limits::new(3, Duration::from_secs(1)), 8);
        assert_eq!((t.iterations, t.warmup), (1, 10));
    }
}
