//! The machine a run was measured on, recorded beside every figure.

use serde::Serialize;

/// CPU, cores, kernel and load of the measuring machine.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// The CPU's model name (`/proc/cpuinfo`), or `unknown`.
    pub cpu_model: String,
    /// Logical CPUs online.
    pub cores: usize,
    /// CPUs this process may run on.
    pub cores_allowed: usize,
    /// The kernel's release (`/proc/sys/kernel/osrelease`) or the OS name elsewhere.
    pub kernel: String,
    /// The operating system and architecture.
    pub os: String,
    /// 1-, 5- and 15-minute load averages when the run started (Linux only).
    pub load_avg_start: Option<[f64; 3]>,
    /// The same when it ended.
    pub load_avg_end: Option<[f64; 3]>,
}

impl Machine {
    /// Describes this machine now (`load_avg_end` is filled by [`Machine::finish`]).
    pub fn describe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_string(), |(_, v)| v.trim().to_string());
        let online = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        let cores = if online > 0 {
            online
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        };
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| std::env::consts::OS.to_string());
        Machine {
            cpu_model,
            cores,
            cores_allowed: super::pin::allowed_cpus().len(),
            kernel,
            os: format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH),
            load_avg_start: load_avg(),
            load_avg_end: None,
        }
    }

    /// Records the load average at the end of the run.
    pub fn finish(&mut self) {
        self.load_avg_end = load_avg();
    }
}

/// The 1-, 5- and 15-minute load averages (`/proc/loadavg`).
pub fn load_avg() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = text.split_whitespace().map(str::parse::<f64>);
    Some([it.next()?.ok()?, it.next()?.ok()?, it.next()?.ok()?])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_at_least_one_core() {
        let m = Machine::describe();
        assert!(m.cores >= 1 && m.cores_allowed >= 1);
        assert!(!m.kernel.is_empty());
    }
}
