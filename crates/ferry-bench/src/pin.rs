//! Where the host and its peer run: CPU pinning with `sched_setaffinity`.
//!
//! The peer is pinned by inheritance: the host sets its own thread's affinity to the peer's
//! CPU, spawns the child (which keeps that mask across `fork` and `exec`), then moves
//! itself to the host's CPU. No `taskset` wrapper is needed and no worker code changes.
//! Helper threads the spawn starts (log forwarders) keep the peer's CPU; they only wake
//! for the worker's log lines. The CPUs are the first two of the process's affinity mask
//! (on the project's 2-vCPU machine: host on CPU 0, peer on CPU 1, as in the C floor
//! programs in `shared/floor`).

use super::BenchError;
use std::fmt;
use std::str::FromStr;

/// Where the two processes of a round trip run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pin {
    /// The scheduler decides (the mask the bench was started with).
    #[default]
    None,
    /// Host and peer each on its own CPU.
    Split,
    /// Host and peer on one CPU.
    Same,
}

/// The environment variable [`Pin::from_env_or`] reads.
pub const PIN_VAR: &str = "FERRY_BENCH_PIN";

impl Pin {
    /// Every mode.
    pub const ALL: [Pin; 3] = [Pin::None, Pin::Split, Pin::Same];

    /// The mode named by the environment variable `FERRY_BENCH_PIN` (the knob of the
    /// crate's examples), or `default` when it is not set; an unknown name is an error.
    ///
    /// ```
    /// use ferry_bench::{Pin, PIN_VAR};
    /// if std::env::var_os(PIN_VAR).is_none() {
    ///     assert_eq!(Pin::from_env_or(Pin::Split)?, Pin::Split);
    /// }
    /// # Ok::<(), ferry_bench::BenchError>(())
    /// ```
    pub fn from_env_or(default: Pin) -> Result<Pin, BenchError> {
        match std::env::var(PIN_VAR) {
            Ok(name) => name.parse(),
            Err(_) => Ok(default),
        }
    }

    /// The name used on the command line and in the JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Pin::None => "none",
            Pin::Split => "split",
            Pin::Same => "same",
        }
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Pin {
    type Err = BenchError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pin::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| BenchError::UnknownPin(s.to_string()))
    }
}

/// The CPUs of one pinning mode, resolved against this process's affinity mask.
#[derive(Debug, Clone)]
pub struct Placement {
    pin: Pin,
    /// The mask the process started with (restored for `Pin::None`).
    original: Vec<usize>,
    host: Option<usize>,
    peer: Option<usize>,
}

impl Placement {
    /// Resolves `pin`; fails when the mask has too few CPUs for it.
    pub fn new(pin: Pin) -> Result<Self, BenchError> {
        let original = allowed_cpus();
        let (host, peer) = match pin {
            Pin::None => (None, None),
            Pin::Same => {
                let cpu = *original.first().ok_or(BenchError::NotEnoughCpus {
                    pin: "same",
                    needed: 1,
                    available: 0,
                })?;
                (Some(cpu), Some(cpu))
            }
            Pin::Split => match original.as_slice() {
                [a, b, ..] => (Some(*a), Some(*b)),
                _ => {
                    return Err(BenchError::NotEnoughCpus {
                        pin: "split",
                        needed: 2,
                        available: original.len(),
                    })
                }
            },
        };
        Ok(Placement {
            pin,
            original,
            host,
            peer,
        })
    }

    /// The mode.
    pub fn pin(&self) -> Pin {
        self.pin
    }

    /// The host's CPU and the peer's, when pinned.
    pub fn cpus(&self) -> (Option<usize>, Option<usize>) {
        (self.host, self.peer)
    }

    /// Runs `spawn` with this thread on the peer's CPU (so the child inherits it), then
    /// puts this thread on the host's CPU.
    pub fn spawn_peer<T>(&self, spawn: impl FnOnce() -> T) -> Result<T, BenchError> {
        set_affinity(self.peer.map_or(self.original.clone(), |c| vec![c]))?;
        let spawned = spawn();
        self.enter_host()?;
        Ok(spawned)
    }

    /// Puts this thread on the host's CPU (the original mask when unpinned).
    pub fn enter_host(&self) -> Result<(), BenchError> {
        set_affinity(self.host.map_or(self.original.clone(), |c| vec![c]))
    }

    /// Gives this thread its original mask back.
    pub fn leave(&self) -> Result<(), BenchError> {
        set_affinity(self.original.clone())
    }
}

/// The CPUs this thread may run on (every online CPU when the mask cannot be read).
pub fn allowed_cpus() -> Vec<usize> {
    #[cfg(target_os = "linux")]
    if let Ok(set) = rustix::thread::sched_getaffinity(None) {
        return (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&c| set.is_set(c))
            .collect();
    }
    (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
}

#[cfg(target_os = "linux")]
fn set_affinity(cpus: Vec<usize>) -> Result<(), BenchError> {
    let mut set = rustix::thread::CpuSet::new();
    for cpu in cpus {
        set.set(cpu);
    }
    rustix::thread::sched_setaffinity(None, &set).map_err(|e| BenchError::Io(e.into()))
}

#[cfg(not(target_os = "linux"))]
fn set_affinity(_cpus: Vec<usize>) -> Result<(), BenchError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for pin in Pin::ALL {
            assert_eq!(pin.as_str().parse::<Pin>().unwrap(), pin);
        }
        assert!("both".parse::<Pin>().is_err());
    }

    #[test]
    fn unpinned_placement_keeps_the_mask() {
        let p = Placement::new(Pin::None).unwrap();
        assert_eq!(p.cpus(), (None, None));
        p.spawn_peer(|| ()).unwrap();
        assert_eq!(allowed_cpus(), p.original);
    }
}
