//! What a `poll` timeout costs the caller of a bare pipe ping-pong, with no engine.
//!
//! The pool's async lead waits for an answer in `poll` with a short timeout (50 µs by
//! default); `pool_overhead` showed the async call using several µs more CPU than the
//! synchronous one (whose `poll` timeout is the call's deadline, seconds away). This
//! example asks whether that is the kernel's cost rather than ferry's: the host writes 64 B
//! to `ferry floor pipe-echo 64` and reads the echo back, either with a plain blocking
//! `read` or after a `poll` with a timeout of 50 µs, 3 ms or 30 s (repeated if it expires,
//! counted), and prints wall and caller-CPU µs per round trip for each, in interleaved
//! blocks so the machine's drift falls on all alike. Run from the workspace root, after
//! `cargo build --release -p ferry-server`:
//! `cargo run --release -p ferry-bench --example poll_timeout_cost -- target/release/ferry`
//! (`FERRY_BENCH_PIN=none|same|split`, split by default: the echo on the next CPU).

use ferry_bench::{Pin, Placement};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Round trips of each kind per run.
const CALLS: u32 = 20_000;
/// Round trips of one kind in a row before the next kind's block.
const BLOCK: u32 = 500;
/// The message size.
const SIZE: usize = 64;

/// CPU seconds this thread has used.
fn thread_cpu() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// How the host waits for the echo: a blocking read, or `poll` with this timeout first.
#[derive(Clone, Copy)]
enum Wait {
    Read,
    Poll(Duration),
}

impl Wait {
    fn name(self) -> String {
        match self {
            Wait::Read => "blocking read".into(),
            Wait::Poll(t) => format!("poll {t:?} + read"),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let exe = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/release/ferry".into());
    let pin = Pin::from_env_or(Pin::Split)?;
    let placement = Placement::new(pin)?;
    let mut child = placement.spawn_peer(|| {
        Command::new(&exe)
            .args(["floor", "pipe-echo", &SIZE.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
    })??;
    let mut to = child.stdin.take().ok_or("no stdin pipe")?;
    let mut from = child.stdout.take().ok_or("no stdout pipe")?;
    let message = [b'x'; SIZE];
    let mut echo = [0u8; SIZE];
    let waits = [
        Wait::Read,
        Wait::Poll(Duration::from_micros(50)),
        Wait::Poll(Duration::from_millis(3)),
        Wait::Poll(Duration::from_secs(30)),
    ];
    for run in 0..3 {
        // (wall seconds, CPU seconds, expired timeouts) per kind.
        let mut spent = [(0.0f64, 0.0f64, 0u64); 4];
        for block in 0..CALLS / BLOCK {
            for k in 0..waits.len() {
                let kind = (k + block as usize) % waits.len();
                let (wall, cpu) = (Instant::now(), thread_cpu());
                for _ in 0..BLOCK {
                    to.write_all(&message)?;
                    if let Wait::Poll(timeout) = waits[kind] {
                        let timeout = Timespec {
                            tv_sec: timeout.as_secs() as _,
                            tv_nsec: timeout.subsec_nanos() as _,
                        };
                        loop {
                            let mut fds = [PollFd::new(&from, PollFlags::IN)];
                            match poll(&mut fds, Some(&timeout)) {
                                Ok(0) => spent[kind].2 += 1,
                                Ok(_) => break,
                                Err(rustix::io::Errno::INTR) => {}
                                Err(e) => return Err(e.into()),
                            }
                        }
                    }
                    from.read_exact(&mut echo)?;
                }
                spent[kind].0 += wall.elapsed().as_secs_f64();
                spent[kind].1 += thread_cpu() - cpu;
            }
        }
        for (wait, (wall, cpu, expired)) in waits.iter().zip(spent) {
            let n = f64::from(CALLS);
            println!(
                "pin {pin} run {run}: {:<22} {:7.2} us wall {:6.2} us cpu per round trip, {expired} timeouts expired",
                wait.name(),
                wall / n * 1e6,
                cpu / n * 1e6
            );
        }
    }
    drop(to);
    child.wait()?;
    Ok(())
}
