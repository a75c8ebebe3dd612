//! Loom models of the ring's protocol: every interleaving (and every weak-memory outcome
//! loom models) of one producer and one consumer, with the data bytes tracked so that a
//! read not ordered after its write, or a write racing a read, fails the model.
//!
//! Run: `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release --no-default-features --lib ring`

use super::liveness::Liveness;
use super::ring::{align8, Consumer, Producer, RingControl, RingData, HEADER};
use super::sync::{AtomicU32, Shared};
use super::wait::{WaitConfig, WaitStrategy, Waiter, Words};
use loom::thread;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

/// Stand-in for the segment: a control block and four spare words (the CPU hints).
struct Block {
    ctl: Box<RingControl>,
    cpu: Box<[AtomicU32; 2]>,
}

struct Model {
    owner: Arc<dyn std::any::Any + Send + Sync>,
    ctl: NonNull<RingControl>,
    cpu: NonNull<AtomicU32>,
}

impl Model {
    fn new() -> Self {
        let block = Arc::new(Block {
            ctl: Box::default(),
            cpu: Box::new([AtomicU32::new(0), AtomicU32::new(0)]),
        });
        let ctl = NonNull::from(&*block.ctl);
        let cpu = NonNull::from(&block.cpu[0]);
        Model {
            owner: block,
            ctl,
            cpu,
        }
    }

    fn shared<T>(&self, ptr: NonNull<T>) -> Shared<T> {
        // SAFETY: `ptr` points into the heap blocks `owner` keeps alive and in place.
        unsafe { Shared::new(ptr, self.owner.clone()) }
    }

    fn control(&self) -> Shared<RingControl> {
        self.shared(self.ctl)
    }

    fn word(&self, pick: fn(&RingControl) -> &AtomicU32) -> Shared<AtomicU32> {
        // SAFETY: `ctl` is valid (see `shared`); the word is a field of it.
        let ctl = unsafe { self.ctl.as_ref() };
        self.shared(NonNull::from(pick(ctl)))
    }

    /// A blocking waiter on `own` (no spinning: every wait sleeps on the modelled futex,
    /// so a lost wake-up is a deadlock loom reports).
    fn waiter(&self, own: fn(&RingControl) -> &AtomicU32) -> Waiter {
        let cfg = WaitConfig {
            strategy: WaitStrategy::Block,
            spin: Duration::ZERO,
            yield_for: Duration::ZERO,
            liveness: Duration::from_secs(3600),
        };
        let words = Words {
            own: self.word(own),
            peer: [
                self.word(|c| &c.consumer_wait.0),
                self.word(|c| &c.producer_wait.0),
            ],
            my_cpu: self.shared(self.cpu),
            // SAFETY: the block's CPU array has two elements.
            peer_cpu: self.shared(unsafe { self.cpu.add(1) }),
        };
        Waiter::new(cfg, words, Liveness::none())
    }
}

// SAFETY: the pointers target heap blocks owned by `owner` (an `Arc` of `Send + Sync`
// data), moved along with them.
unsafe impl Send for Model {}

fn send(p: &mut Producer, w: &mut Waiter, ctl: &RingControl, payload: &[u8]) {
    let size = align8(HEADER + payload.len());
    let off = loop {
        if let Some(off) = p.claim(size).unwrap() {
            break off;
        }
        w.wait(None, &mut || p.has_space(size), &|| {
            ctl.closed.consumer.load(super::sync::Ordering::Acquire) != 0
        })
        .unwrap();
    };
    p.write_header(off, payload.len() as u32, 0);
    p.write(off + HEADER, payload);
    if p.commit() {
        p.wake_consumer();
    }
}

fn recv(c: &mut Consumer, w: &mut Waiter, ctl: &RingControl) -> Vec<u8> {
    let rec = loop {
        if let Some(rec) = c.peek().unwrap() {
            break rec;
        }
        w.wait(None, &mut || Ok(c.peek()?.is_some()), &|| {
            ctl.closed.producer.load(super::sync::Ordering::Acquire) != 0
        })
        .unwrap();
    };
    let mut out = Vec::new();
    c.append_to(&rec, &mut out);
    if c.release(&rec) {
        c.wake_producer();
    }
    out
}

/// Three records through a 64-byte ring (largest record 32 bytes): the third needs the
/// space of the first back (backpressure) and wraps with padding. Both ends sleep on the
/// modelled futex whenever they must wait.
#[test]
fn loom_ring_wrap_backpressure_and_wakeups() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let model = Model::new();
        let data = RingData::model(64);
        let mut producer = Producer::new(model.control(), data.share(), 64);
        let mut consumer = Consumer::new(model.control(), data, 64);
        let mut pw = model.waiter(|c| &c.producer_wait.0);
        let mut cw = model.waiter(|c| &c.consumer_wait.0);
        let messages: [&[u8]; 3] = [&[1; 13], &[2; 20], &[3; 24]];
        let pctl = model.control();
        let t = thread::spawn(move || {
            for m in messages {
                send(&mut producer, &mut pw, &pctl, m);
            }
        });
        let cctl = model.control();
        for m in messages {
            assert_eq!(recv(&mut consumer, &mut cw, &cctl), m);
        }
        t.join().unwrap();
    });
}

/// The producer closing after its last record: the consumer gets every record, then
/// sees the close (woken from its sleep, never stuck).
#[test]
fn loom_ring_close_after_publish_is_seen_after_the_data() {
    loom::model(|| {
        let model = Model::new();
        let data = RingData::model(64);
        let mut producer = Producer::new(model.control(), data.share(), 64);
        let mut consumer = Consumer::new(model.control(), data, 64);
        let mut pw = model.waiter(|c| &c.producer_wait.0);
        let mut cw = model.waiter(|c| &c.consumer_wait.0);
        let pctl = model.control();
        let t = thread::spawn(move || {
            send(&mut producer, &mut pw, &pctl, b"last words");
            producer.close();
        });
        let ctl = model.control();
        assert_eq!(recv(&mut consumer, &mut cw, &ctl), b"last words");
        let end = cw.wait(None, &mut || Ok(consumer.peek()?.is_some()), &|| {
            ctl.closed.producer.load(super::sync::Ordering::Acquire) != 0
        });
        assert!(matches!(
            end,
            Err(crate::transport::TransportError::Disconnected)
        ));
        t.join().unwrap();
    });
}
