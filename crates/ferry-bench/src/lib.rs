//! ferry's benchmark suite: one ping-pong harness shared by the criterion benches
//! (`benches/`) and `ferry bench`, and the bare [`floor`] peers every figure is a ratio to.
//!
//! Everything timed is a [`RoundTrip`]: a bare floor peer ([`FloorKind`]), another
//! project's ping-pong ([`PeerKind`]: iceoryx2, with the `iceoryx2` feature), the engine
//! ([`EnginePeer`]: an echo worker, Rust or Python, behind [`WorkerProcess`]), or the old
//! design's HTTP bridge ([`HttpPeer`]). [`measure`] warms a peer up and times round trips
//! into an HDR histogram; [`run`] plans a whole suite (every transport × payload ×
//! worker, each beside the floor of its mechanism measured in the same run, plus
//! pipelined throughput) and returns a [`Report`] that prints as tables and serializes to
//! the JSON `ferry bench --json` writes; [`p50_chart`] draws it as SVG.
//!
//! The method (processes, payload written and read, pinning, blocking waits) is stated in
//! every report; `docs/benchmarks.md` has the figures.
//!
//! ```no_run
//! use ferry_bench::{measure, payload, EnginePeer, Limits, WorkerLang};
//! use ferry::transport::TransportKind;
//! use std::time::Duration;
//!
//! let spec = ferry_bench::echo_spec(WorkerLang::Rust, "target/release/ferry".as_ref())
//!     .expect("the Rust worker needs no interpreter");
//! let mut peer = EnginePeer::spawn(spec, TransportKind::LocalSocket)?;
//! let limits = Limits::new(10_000, Duration::from_secs(5));
//! let stats = measure(&mut peer, &payload(64), &limits, &mut |_, _| {})?;
//! println!("p50 {} µs", stats.p50_us);
//! # Ok::<(), ferry_bench::BenchError>(())
//! ```
//!
//! [`WorkerProcess`]: ferry::worker::WorkerProcess

#![deny(missing_docs)]

mod claims;
mod engine;
mod error;
pub mod floor;
mod floors;
mod http;
mod interleave;
mod machine;
mod measure;
mod peer;
pub mod peer_iceoryx2;
mod peers;
mod pin;
mod pipelined;
mod plan;
mod plot;
pub mod python;
mod report;
mod serve;
mod suite;
mod table;
mod target;

pub use claims::{claim_met, claim_us};
pub use engine::{
    codec_for, codec_for_framing, echo_spec, Answer, EnginePeer, PythonEcho, WorkerLang,
};
pub use error::BenchError;
pub use floors::{shm_ring_capacity, FloorKind};
pub use http::{HttpPeer, SERVER_SOURCE};
pub use machine::{load_avg, Machine};
pub use measure::{measure, measure_into, Limits, Stats, Timed};
pub use peer::{payload, RoundTrip};
pub use peers::PeerKind;
pub use pin::{allowed_cpus, Pin, Placement, PIN_VAR};
pub use pipelined::{pipelined, PipelinedStats};
pub use plot::p50_chart;
pub use report::{CaseResult, FloorResult, Method, PeerResult, PipelinedResult, Report, Skipped};
pub use serve::ServePeer;
pub use suite::{run, Progress, SuiteOptions};
pub use table::{fmt_bytes, fmt_signed_us, fmt_us};
pub use target::{default_payloads, Target, PLANNED, SAME_CORE_EXTRA};
