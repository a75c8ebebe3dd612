//! Planning a run: which cases, in which order, and what is skipped before anything starts.
//!
//! At each payload of a transport the floor of its mechanism comes first (once per payload
//! and pinning, shared by every transport with that floor), then the other projects'
//! peers of that transport this build has (iceoryx2 beside shm), then each worker;
//! pipelined cases come last.

use super::engine::WorkerLang;
use super::floors::FloorKind;
use super::peers::PeerKind;
use super::pin::Pin;
use super::python;
use super::report::Skipped;
use super::suite::SuiteOptions;
use super::target::{default_payloads, Target, SAME_CORE_EXTRA};
use ferry::transport::TransportKind;
use std::path::PathBuf;

/// Payloads up to this size also get a pipelined case.
pub(super) const PIPELINED_MAX_PAYLOAD: usize = 4096;

#[derive(Debug, Clone)]
pub(super) enum Step {
    Floor(FloorKind),
    Peer(PeerKind),
    Engine(TransportKind, WorkerLang),
    Http,
    Serve,
    Pipelined(TransportKind, WorkerLang),
}

#[derive(Debug, Clone)]
pub(super) struct Case {
    pub(super) step: Step,
    pub(super) payload: usize,
    pub(super) pin: Pin,
}

impl Case {
    pub(super) fn label(&self) -> String {
        let size = super::table::fmt_bytes(self.payload);
        let what = match &self.step {
            Step::Floor(kind) => format!("floor {}", kind.as_str()),
            Step::Peer(kind) => format!("peer {}", kind.as_str()),
            Step::Engine(t, w) => format!("{t} {w} worker"),
            Step::Http => "http python worker".to_string(),
            Step::Serve => "serve rust worker (POST /api/inference/generate)".to_string(),
            Step::Pipelined(t, w) => format!("{t} {w} worker pipelined"),
        };
        format!("{what}, {size}, pin {}", self.pin)
    }
}

pub(super) struct Plan {
    pub(super) cases: Vec<Case>,
    pub(super) skipped: Vec<Skipped>,
    pub(super) python: Option<PathBuf>,
    pub(super) http_python: Option<PathBuf>,
}

pub(super) fn plan(options: &SuiteOptions) -> Plan {
    let mut cases = Vec::new();
    let mut skipped = Vec::new();
    let mut floors_planned = Vec::new();
    let mut peers_planned = Vec::new();
    let mut pipelined_cases = Vec::new();
    let wants_python = options.workers.contains(&WorkerLang::Python)
        && options
            .targets
            .iter()
            .any(|t| matches!(t, Target::Engine(_)));
    let python = if wants_python {
        match python::ferry_python() {
            Ok(p) => Some(p),
            Err(why) => {
                skipped.push(Skipped {
                    transport: "all".into(),
                    worker: Some("python".into()),
                    reason: why,
                    code: None,
                });
                None
            }
        }
    } else {
        None
    };
    if options.workers.contains(&WorkerLang::Cmd) && options.cmd.is_none() {
        skipped.push(Skipped {
            transport: "all".into(),
            worker: Some("cmd".into()),
            reason: "no command line for the cmd worker".into(),
            code: None,
        });
    }
    let mut http_python = None;
    if options.targets.contains(&Target::Http) {
        match python::any_python() {
            Ok(p) => http_python = Some(p),
            Err(why) => skipped.push(Skipped {
                transport: "http".into(),
                worker: Some("python".into()),
                reason: format!("no Python 3 for the HTTP worker: {why}"),
                code: None,
            }),
        }
    }
    for target in &options.targets {
        let name = target.name();
        let steps: Vec<Step> = match target {
            Target::Absent(name) => {
                skipped.push(Skipped {
                    transport: name.to_string(),
                    worker: None,
                    reason: "not in this build".into(),
                    code: None,
                });
                continue;
            }
            Target::Http if http_python.is_none() => continue,
            Target::Http => vec![Step::Http],
            Target::Serve => vec![Step::Serve],
            Target::Engine(kind) => options
                .workers
                .iter()
                .filter(|w| match w {
                    WorkerLang::Rust => true,
                    WorkerLang::Python => python.is_some(),
                    WorkerLang::Cmd => options.cmd.is_some(),
                })
                .map(|w| Step::Engine(*kind, *w))
                .collect(),
        };
        let payloads = options
            .payloads
            .clone()
            .unwrap_or_else(|| default_payloads(name));
        let mut runs: Vec<(usize, Pin)> = payloads.iter().map(|p| (*p, options.pin)).collect();
        if SAME_CORE_EXTRA.contains(&name) && options.pin != Pin::Same {
            runs.push((64, Pin::Same));
        }
        for (size, pin) in runs {
            if let Some(kind) = FloorKind::for_transport(name) {
                if !floors_planned.contains(&(kind, size, pin)) {
                    floors_planned.push((kind, size, pin));
                    cases.push(Case {
                        step: Step::Floor(kind),
                        payload: size,
                        pin,
                    });
                }
            }
            for kind in PeerKind::for_transport(name) {
                if !peers_planned.contains(&(kind, size, pin)) {
                    peers_planned.push((kind, size, pin));
                    cases.push(Case {
                        step: Step::Peer(kind),
                        payload: size,
                        pin,
                    });
                }
            }
            for step in &steps {
                cases.push(Case {
                    step: step.clone(),
                    payload: size,
                    pin,
                });
                if let Step::Engine(t, w) = step {
                    if options.pipelined_depth > 1
                        && size <= PIPELINED_MAX_PAYLOAD
                        && pin == options.pin
                    {
                        pipelined_cases.push(Case {
                            step: Step::Pipelined(*t, *w),
                            payload: size,
                            pin,
                        });
                    }
                }
            }
        }
    }
    cases.extend(pipelined_cases);
    Plan {
        cases,
        skipped,
        python,
        http_python,
    }
}
