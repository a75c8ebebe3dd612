//! What a run produced: every figure, the machine, and the method; serialized as the JSON
//! of `ferry bench --json` (the tables are in `table.rs`).

use super::claims::{claim_met, claim_us};
use super::machine::Machine;
use super::measure::Stats;
use super::pipelined::PipelinedStats;
use super::Pin;
use serde::Serialize;

/// One measured case of the engine (or the HTTP baseline) beside its floor.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// `stdio`, `socket`, `tcp`, `shm` or `http`.
    pub transport: String,
    /// `rust`, `python`, or `cmd` (the `--cmd` worker).
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
    /// `p50_us - floor_p50_us`: what the engine adds to the floor's round trip, in µs
    /// (negative where it beats the floor). Steadier than the ratio when the floor itself
    /// moves: a VM whose two CPUs pass a cache line in 0.15 µs one minute and 0.7 µs the
    /// next changes the shm ratio at 64 B from 6x to 2.3x, while the engine's own cost stays
    /// within 0.7-1.0 µs.
    pub over_floor_us: Option<f64>,
    /// `serve` rows: `p50_us` over the p50 of the `http` row (the Python http.server
    /// echo) at the same payload and pinning in the same run; `null` otherwise.
    pub ratio_to_http_baseline: Option<f64>,
    /// The old design's claim for this transport.
    pub claim_us: Option<f64>,
    /// Whether `p50_us` is within the claim.
    pub claim_met: Option<bool>,
    /// The other project's ping-pong beside this transport (`iceoryx2` on shm), `null`
    /// when this build has none (see [`PeerKind`](crate::PeerKind)).
    pub peer: Option<String>,
    /// The peer's median at the same payload and pinning, in the same run.
    pub peer_p50_us: Option<f64>,
    /// `p50_us / peer_p50_us`: below 1 is ahead of the peer.
    pub ratio_to_peer: Option<f64>,
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
            over_floor_us: floor_p50_us.map(|f| stats.p50_us - f),
            ratio_to_http_baseline: None,
            claim_us: claim_us(transport),
            claim_met: claim_met(transport, stats.p50_us),
            peer: None,
            peer_p50_us: None,
            ratio_to_peer: None,
        }
    }

    /// Leaves out the ratios and the difference to a floor and a peer that busy-poll, on a
    /// pinning where that makes their figures the scheduler's (both ends on one CPU, see
    /// [`FloorKind::busy_polls`](crate::floors::FloorKind::busy_polls)); their medians stay.
    pub fn without_busy_polling_comparisons(mut self) -> Self {
        self.ratio_to_floor = None;
        self.over_floor_us = None;
        self.ratio_to_peer = None;
        self
    }

    /// Sets the peer of this row and its median (`None`: it failed), and the ratio.
    pub fn with_peer(mut self, peer: Option<(&str, Option<f64>)>) -> Self {
        let peer_p50_us = peer.and_then(|(_, p50)| p50);
        self.peer = peer.map(|(name, _)| name.to_string());
        self.peer_p50_us = peer_p50_us;
        self.ratio_to_peer = peer_p50_us.filter(|p| *p > 0.0).map(|p| self.p50_us / p);
        self
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

/// Another project's ping-pong measured in the run (see [`PeerKind`](crate::PeerKind)).
#[derive(Debug, Clone, Serialize)]
pub struct PeerResult {
    /// `iceoryx2`.
    pub peer: String,
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
    /// `rust`, `python`, or `cmd` (the `--cmd` worker).
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
    /// A failure's stable error code ([`BenchError::code`](crate::BenchError::code));
    /// absent for a skip.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
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
    /// Other projects' ping-pongs (empty when this build has none).
    pub peers: Vec<PeerResult>,
    /// Pipelined throughput.
    pub pipelined: Vec<PipelinedResult>,
    /// Cases not measured (transports absent from this build, a missing Python).
    pub skipped: Vec<Skipped>,
    /// Cases that failed, with the error.
    pub failures: Vec<Skipped>,
}

impl Report {
    /// Sets every `serve` row's
    /// [`ratio_to_http_baseline`](CaseResult::ratio_to_http_baseline) from the `http` row
    /// of the same payload and pinning, when the run has one.
    pub fn link_http_baseline(&mut self) {
        let baselines: Vec<(usize, Pin, f64)> = self
            .results
            .iter()
            .filter(|r| r.transport == "http" && r.p50_us > 0.0)
            .map(|r| (r.payload_bytes, r.pin, r.p50_us))
            .collect();
        for r in self.results.iter_mut().filter(|r| r.transport == "serve") {
            r.ratio_to_http_baseline = baselines
                .iter()
                .find(|(size, pin, _)| *size == r.payload_bytes && *pin == r.pin)
                .map(|(_, _, p50)| r.p50_us / p50);
        }
    }

    /// The JSON document (pretty-printed).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(row.over_floor_us, None);
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
        assert_eq!(row.over_floor_us, Some(1.0));
        assert_eq!(row.claim_met, Some(true));
        assert_eq!(row.peer, None);
        assert_eq!(row.ratio_to_peer, None);
        let row = row.with_peer(Some(("iceoryx2", Some(4.0))));
        assert_eq!(row.peer.as_deref(), Some("iceoryx2"));
        assert_eq!(row.ratio_to_peer, Some(0.5));
        let row = row.with_peer(Some(("iceoryx2", None)));
        assert_eq!(row.peer.as_deref(), Some("iceoryx2"));
        assert_eq!((row.peer_p50_us, row.ratio_to_peer), (None, None));
        // On one CPU a busy-polling floor's and peer's medians stay, their ratios go.
        let spinning = Some(("shm_ring", Some(8000.0)));
        let row = CaseResult::new("shm", "rust", "msgpack", 64, Pin::Same, &stats, spinning)
            .with_peer(Some(("iceoryx2", Some(9000.0))))
            .without_busy_polling_comparisons();
        assert_eq!(
            (row.floor_p50_us, row.peer_p50_us),
            (Some(8000.0), Some(9000.0))
        );
        assert_eq!(row.ratio_to_floor, None);
        assert_eq!(row.over_floor_us, None);
        assert_eq!(row.ratio_to_peer, None);
    }

    #[test]
    fn an_engine_faster_than_its_floor_is_below_it() {
        let stats = Stats {
            iterations: 1,
            warmup: 0,
            p50_us: 60.0,
            p99_us: 80.0,
            p999_us: 90.0,
            mean_us: 61.0,
            min_us: 55.0,
            max_us: 90.0,
            throughput_per_s: 16_000.0,
        };
        let floor = Some(("shm_ring", Some(75.0)));
        let row = CaseResult::new("shm", "rust", "msgpack", 1 << 20, Pin::Split, &stats, floor);
        assert_eq!(row.over_floor_us, Some(-15.0));
        assert_eq!(row.ratio_to_floor, Some(0.8));
    }
}
