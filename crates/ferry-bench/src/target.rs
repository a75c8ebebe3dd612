//! What `--transport` names: an engine transport, the HTTP baseline, or a transport the
//! project has planned that this build lacks (reported as skipped, never an error).

use super::BenchError;
use ferry::transport::TransportKind;
use std::fmt;

/// Transports the project plans that a build may not have yet. Named on the command line,
/// they are reported as skipped; once a build has one, it is an engine transport like the
/// others.
pub const PLANNED: [&str; 0] = [];

/// Transports whose same-core case (`--pin same`) is also measured at 64 B in every run
/// when they exist: a spinning transport is the one that can collapse there.
pub const SAME_CORE_EXTRA: [&str; 1] = ["shm"];

/// One transport to measure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An engine transport of this build.
    Engine(TransportKind),
    /// The old design's HTTP/1.1 bridge to a Python worker.
    Http,
    /// ferry's own HTTP path: `POST /api/inference/generate` to `ferry serve` over the
    /// Rust echo worker.
    Serve,
    /// A planned transport this build does not have.
    Absent(&'static str),
}

impl Target {
    /// The name on the command line and in the JSON.
    pub fn name(&self) -> &'static str {
        match self {
            Target::Engine(kind) => kind.as_str(),
            Target::Http => "http",
            Target::Serve => "serve",
            Target::Absent(name) => name,
        }
    }

    /// Every engine transport of this build, the planned ones it lacks, `http` and
    /// `serve`.
    pub fn all() -> Vec<Target> {
        let mut all: Vec<Target> = TransportKind::ALL.into_iter().map(Target::Engine).collect();
        for name in PLANNED {
            if !all.iter().any(|t| t.name() == name) {
                all.push(Target::Absent(name));
            }
        }
        all.push(Target::Http);
        all.push(Target::Serve);
        all
    }

    /// Parses one name (`local_socket` is accepted for `socket`).
    ///
    /// ```
    /// use ferry_bench::Target;
    /// assert_eq!(Target::parse("http").unwrap(), Target::Http);
    /// assert!(Target::parse("carrier-pigeon").is_err());
    /// ```
    pub fn parse(name: &str) -> Result<Target, BenchError> {
        if name == "local_socket" {
            return Ok(Target::Engine(TransportKind::LocalSocket));
        }
        let all = Target::all();
        all.iter()
            .find(|t| t.name() == name)
            .cloned()
            .ok_or_else(|| BenchError::UnknownTransport {
                name: name.to_string(),
                known: all.iter().map(Target::name).collect::<Vec<_>>().join(", "),
            })
    }

    /// Parses a comma-separated list, keeping the first of any repeated name.
    pub fn parse_list(list: &str) -> Result<Vec<Target>, BenchError> {
        let mut targets: Vec<Target> = Vec::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let target = Target::parse(name)?;
            if !targets.contains(&target) {
                targets.push(target);
            }
        }
        Ok(targets)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The payload sizes measured on `transport` by default: 64 B, 4 KiB, 1 MiB, and 16 MiB
/// on the transports made for large messages (socket, shm).
pub fn default_payloads(transport: &str) -> Vec<usize> {
    let mut sizes = vec![64, 4096, 1 << 20];
    if matches!(transport, "socket" | "shm") {
        sizes.push(16 << 20);
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_build_knows_the_planned_and_http_names() {
        let names: Vec<&str> = Target::all().iter().map(Target::name).collect();
        for name in ["stdio", "socket", "tcp", "shm", "http", "serve"] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
    }

    #[test]
    fn lists_parse_in_order_without_repeats() {
        let list = Target::parse_list("tcp, stdio,tcp,local_socket").unwrap();
        let names: Vec<&str> = list.iter().map(Target::name).collect();
        assert_eq!(names, ["tcp", "stdio", "socket"]);
    }

    #[test]
    fn unknown_name_lists_the_known_ones() {
        let e = Target::parse("udp").unwrap_err().to_string();
        assert!(
            e.contains("udp") && e.contains("stdio") && e.contains("http"),
            "{e}"
        );
    }
}
