//! What a run produced: every figure, the machine, and the method, as JSON and as tables.

use super::claims::{claim_met, claim_us};
use super::machine::Machine;
use super::measure::Stats;
use super::pipelined::PipelinedStats;
use super::Pin;
use serde::Serialize;
use std::fmt::Write as _;

/// One measured case of the engine (or the HTTP baseline) beside its floor.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// `stdio`, `socket`, `tcp`, `shm` or `http`.
    pub transport: String,
    /// `rust` or `python`.
    pub worker: String,
    /// The codec (`http/1.1` for the HTTP baseline).
    pub codec: String,
    /// Payload bytes each way.
    pub payload_bytes: usize,
    /// Pinning of the two processes.
    pub pin: Pin,
    /// Timed round trips.
    pub iterations: u64,
    /// Warm-up round trips.
    pub warmup: u64,
    /// Median round trip.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Mean.
    pub mean_us: f64,
    /// Fastest.
    pub min_us: f64,
    /// Slowest.
    pub max_us: f64,
    /// Round trips per second, one at a time.
    pub throughput_per_s: f64,
    /// Payload megabytes (10^6) per second one way, one at a time.
    pub throughput_mb_per_s: f64,
    /// The floor mechanism (`pipe`, `unix_socket`, `tcp`), `null` when this build has none.
    pub floor: Option<String>,
    /// The floor's median at the same payload and pinning, in the same run.
    pub floor_p50_us: Option<f64>,
    /// `p50_us / floor_p50_us`.
    pub ratio_to_floor: Option<f64>,
    /// The old design's claim for this transport.
    pub claim_us: Option<f64>,
    /// Whether `p50_us` is within the claim.
    pub claim_met: Option<bool>,
}

impl CaseResult {
    /// Builds the row from its figures and its floor's median.
    pub fn new(
        transport: &str,
        worker: &str,
        codec: &str,
        payload_bytes: usize,
        pin: Pin,
        stats: &Stats,
        floor: Option<(&str, Option<f64>)>,
    ) -> Self {
        let floor_p50_us = floor.and_then(|(_, p50)| p50);
        CaseResult {
            transport: transport.to_string(),
            worker: worker.to_string(),
            codec: codec.to_string(),
            payload_bytes,
            pin,
            iterations: stats.iterations,
            warmup: stats.warmup,
            p50_us: stats.p50_us,
            p99_us: stats.p99_us,
            p999_us: stats.p999_us,
            mean_us: stats.mean_us,
            min_us: stats.min_us,
            max_us: stats.max_us,
            throughput_per_s: stats.throughput_per_s,
            throughput_mb_per_s: stats.throughput_per_s * payload_bytes as f64 / 1e6,
            floor: floor.map(|(name, _)| name.to_string()),
            floor_p50_us,
            ratio_to_floor: floor_p50_us.filter(|f| *f > 0.0).map(|f| stats.p50_us / f),
            claim_us: claim_us(transport),
            claim_met: claim_met(transport, stats.p50_us),
        }
    }
}

/// One bare floor measured in the run.
#[derive(Debug, Clone, Serialize)]
pub struct FloorResult {
    /// `pipe`, `unix_socket`, `tcp`.
    pub floor: String,
    /// Payload bytes each way.
    pub payload_bytes: usize,
    /// Pinning of the two processes.
    pub pin: Pin,
    /// Its figures.
    #[serde(flatten)]
    pub stats: Stats,
}

/// One pipelined-throughput case.
#[derive(Debug, Clone, Serialize)]
pub struct PipelinedResult {
    /// The transport.
    pub transport: String,
    /// `rust` or `python`.
    pub worker: String,
    /// Payload bytes each way.
    pub payload_bytes: usize,
    /// Pinning of the two processes.
    pub pin: Pin,
    /// Its figures.
    #[serde(flatten)]
    pub stats: PipelinedStats,
    /// Its throughput over the same case's one-at-a-time throughput.
    pub speedup_over_sequential: Option<f64>,
}

/// A case not measured, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// The transport.
    pub transport: String,
    /// The worker, when the skip is about one worker only.
    pub worker: Option<String>,
    /// Why.
    pub reason: String,
}

/// How the figures were taken, stated in the output itself.
#[derive(Debug, Clone, Serialize)]
pub struct Method {
    /// One line per point of method.
    pub notes: Vec<String>,
    /// Timed round trips asked for per case.
    pub iterations_requested: u64,
    /// The time limit of one case's timed part, in seconds.
    pub max_case_seconds: f64,
    /// Requests in flight in the pipelined cases (0: none measured).
    pub pipelined_depth: usize,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The ferry version that measured.
    pub ferry_version: String,
    /// When the run started (UTC, RFC 3339).
    pub started_at: String,
    /// The machine.
    pub machine: Machine,
    /// The method.
    pub method: Method,
    /// Engine and HTTP-baseline cases, in the order run.
    pub results: Vec<CaseResult>,
    /// Bare floors.
    pub floors: Vec<FloorResult>,
    /// Pipelined throughput.
    pub pipelined: Vec<PipelinedResult>,
    /// Cases not measured (transports absent from this build, a missing Python).
    pub skipped: Vec<Skipped>,
    /// Cases that failed, with the error.
    pub failures: Vec<Skipped>,
}

/// Microseconds with about three significant digits.
pub fn fmt_us(us: f64) -> String {
    if us < 10.0 {
        format!("{us:.2}")
    } else if us < 100.0 {
        format!("{us:.1}")
    } else {
        format!("{us:.0}")
    }
}

/// A byte count as `64 B`, `4 KiB`, `1 MiB`.
pub fn fmt_bytes(n: usize) -> String {
    if n >= 1 << 20 && n % (1 << 20) == 0 {
        format!("{} MiB", n >> 20)
    } else if n >= 1024 && n % 1024 == 0 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "n/a".to_string(), f)
}

/// Renders rows as a Markdown table with aligned columns.
fn markdown(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    out += &line(widths.iter().map(|w| "-".repeat(*w)).collect());
    for row in rows {
        out += &line(row.clone());
    }
    out
}

impl Report {
    /// The JSON document (pretty-printed).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    /// The main table: one row per case, with its floor, the ratio and the old claim.
    pub fn results_table(&self) -> String {
        let header = [
            "transport",
            "worker",
            "payload",
            "pin",
            "p50 µs",
            "p99 µs",
            "p99.9 µs",
            "mean µs",
            "calls/s",
            "MB/s",
            "floor p50 µs",
            "x floor",
            "old claim",
            "met",
        ];
        let rows: Vec<Vec<String>> = self
            .results
            .iter()
            .map(|r| {
                vec![
                    r.transport.clone(),
                    r.worker.clone(),
                    fmt_bytes(r.payload_bytes),
                    r.pin.to_string(),
                    fmt_us(r.p50_us),
                    fmt_us(r.p99_us),
                    fmt_us(r.p999_us),
                    fmt_us(r.mean_us),
                    format!("{:.0}", r.throughput_per_s),
                    format!("{:.1}", r.throughput_mb_per_s),
                    match (&r.floor, r.floor_p50_us) {
                        (Some(name), Some(p50)) => format!("{} ({name})", fmt_us(p50)),
                        _ => "n/a".into(),
                    },
                    opt(r.ratio_to_floor, |x| format!("{x:.2}x")),
                    opt(r.claim_us, |c| format!("~{c:.0} µs")),
                    match r.claim_met {
                        Some(true) => "met".into(),
                        Some(false) => "not met".into(),
                        None => "-".into(),
                    },
                ]
            })
            .collect();
        markdown(&header, &rows)
    }

    /// The floors measured.
    pub fn floors_table(&self) -> String {
        let header = [
            "floor",
            "payload",
            "pin",
            "p50 µs",
            "p99 µs",
            "p99.9 µs",
            "mean µs",
        ];
        let rows: Vec<Vec<String>> = self
            .floors
            .iter()
            .map(|f| {
                vec![
                    f.floor.clone(),
                    fmt_bytes(f.payload_bytes),
                    f.pin.to_string(),
                    fmt_us(f.stats.p50_us),
                    fmt_us(f.stats.p99_us),
                    fmt_us(f.stats.p999_us),
                    fmt_us(f.stats.mean_us),
                ]
            })
            .collect();
        markdown(&header, &rows)
    }

    /// The pipelined cases.
    pub fn pipelined_table(&self) -> String {
        let header = [
            "transport",
            "worker",
            "payload",
            "in flight",
            "calls/s",
            "x one at a time",
            "p50 µs",
            "p99 µs",
        ];
        let rows: Vec<Vec<String>> = self
            .pipelined
            .iter()
            .map(|p| {
                vec![
                    p.transport.clone(),
                    p.worker.clone(),
                    fmt_bytes(p.payload_bytes),
                    p.stats.depth.to_string(),
                    format!("{:.0}", p.stats.throughput_per_s),
                    opt(p.speedup_over_sequential, |x| format!("{x:.2}x")),
                    fmt_us(p.stats.p50_us),
                    fmt_us(p.stats.p99_us),
                ]
            })
            .collect();
        markdown(&header, &rows)
    }

    /// Everything, as printed by `ferry bench`: method, machine, tables, skips, failures.
    pub fn render(&self) -> String {
        let m = &self.machine;
        let load = |l: Option<[f64; 3]>| {
            l.map_or_else(|| "n/a".into(), |[a, b, c]| format!("{a:.2} {b:.2} {c:.2}"))
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "ferry {} bench, {}: {} ({} CPUs, {} allowed), kernel {}, load average {} at start, {} at end",
            self.ferry_version,
            self.started_at,
            m.cpu_model,
            m.cores,
            m.cores_allowed,
            m.kernel,
            load(m.load_avg_start),
            load(m.load_avg_end)
        );
        let _ = writeln!(out, "method:");
        for note in &self.method.notes {
            let _ = writeln!(out, "  - {note}");
        }
        let _ = writeln!(out, "\nround trips (one at a time):\n");
        out += &self.results_table();
        if !self.floors.is_empty() {
            let _ = writeln!(out, "\nbare floors (no engine), same run:\n");
            out += &self.floors_table();
        }
        if !self.pipelined.is_empty() {
            let _ = writeln!(
                out,
                "\npipelined throughput (many requests in flight on one connection):\n"
            );
            out += &self.pipelined_table();
        }
        for s in &self.skipped {
            let who = s
                .worker
                .as_deref()
                .map(|w| format!(" ({w} worker)"))
                .unwrap_or_default();
            let _ = writeln!(out, "\nskipped {}{who}: {}", s.transport, s.reason);
        }
        for f in &self.failures {
            let who = f
                .worker
                .as_deref()
                .map(|w| format!(" ({w} worker)"))
                .unwrap_or_default();
            let _ = writeln!(out, "\nFAILED {}{who}: {}", f.transport, f.reason);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times_read_well() {
        assert_eq!(fmt_bytes(64), "64 B");
        assert_eq!(fmt_bytes(4096), "4 KiB");
        assert_eq!(fmt_bytes(16 << 20), "16 MiB");
        assert_eq!(fmt_bytes(1000), "1000 B");
        assert_eq!(fmt_us(7.256), "7.26");
        assert_eq!(fmt_us(73.25), "73.2");
        assert_eq!(fmt_us(1234.5), "1234");
    }

    #[test]
    fn missing_floor_reads_na_and_has_no_ratio() {
        let stats = Stats {
            iterations: 1,
            warmup: 0,
            p50_us: 2.0,
            p99_us: 3.0,
            p999_us: 4.0,
            mean_us: 2.5,
            min_us: 1.0,
            max_us: 4.0,
            throughput_per_s: 400_000.0,
        };
        let row = CaseResult::new("shm", "rust", "msgpack", 64, Pin::None, &stats, None);
        assert_eq!(row.ratio_to_floor, None);
        assert_eq!(row.claim_met, Some(false));
        let row = CaseResult::new(
            "socket",
            "rust",
            "msgpack",
            64,
            Pin::None,
            &stats,
            Some(("unix_socket", Some(1.0))),
        );
        assert_eq!(row.ratio_to_floor, Some(2.0));
        assert_eq!(row.claim_met, Some(true));
    }
}
