//! The report as text: Markdown tables with aligned columns, as `ferry bench` prints them.

use super::report::Report;
use std::fmt::Write as _;

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

/// A difference in µs with its sign, to the precision [`fmt_us`] gives its size:
/// `+0.74`, `-15.0`.
pub fn fmt_signed_us(us: f64) -> String {
    let sign = if us < 0.0 { '-' } else { '+' };
    format!("{sign}{}", fmt_us(us.abs()))
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
    /// The main table: one row per case, with its floor, the ratio and the old claim (and
    /// its peer and the ratio to it, when a row has one).
    pub fn results_table(&self) -> String {
        let with_peers = self.results.iter().any(|r| r.peer.is_some());
        let mut header = vec![
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
            "+floor µs",
            "old claim",
            "met",
        ];
        if with_peers {
            header.extend(["peer p50 µs", "x peer"]);
        }
        let rows: Vec<Vec<String>> = self
            .results
            .iter()
            .map(|r| {
                let mut row = vec![
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
                    opt(r.over_floor_us, fmt_signed_us),
                    opt(r.claim_us, |c| format!("~{c:.0} µs")),
                    match r.claim_met {
                        Some(true) => "met".into(),
                        Some(false) => "not met".into(),
                        None => "-".into(),
                    },
                ];
                if with_peers {
                    row.push(match (&r.peer, r.peer_p50_us) {
                        (Some(name), Some(p50)) => format!("{} ({name})", fmt_us(p50)),
                        (Some(name), None) => format!("n/a ({name})"),
                        _ => "-".into(),
                    });
                    row.push(opt(r.ratio_to_peer, |x| format!("{x:.2}x")));
                }
                row
            })
            .collect();
        markdown(&header, &rows)
    }

    /// The other projects' peers measured.
    pub fn peers_table(&self) -> String {
        let header = [
            "peer",
            "payload",
            "pin",
            "p50 µs",
            "p99 µs",
            "p99.9 µs",
            "mean µs",
        ];
        let rows: Vec<Vec<String>> = self
            .peers
            .iter()
            .map(|p| {
                vec![
                    p.peer.clone(),
                    fmt_bytes(p.payload_bytes),
                    p.pin.to_string(),
                    fmt_us(p.stats.p50_us),
                    fmt_us(p.stats.p99_us),
                    fmt_us(p.stats.p999_us),
                    fmt_us(p.stats.mean_us),
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

    /// The `serve` rows beside the `http` baseline of the same payload and pinning.
    pub fn http_path_table(&self) -> String {
        let header = [
            "payload",
            "pin",
            "serve p50 µs",
            "http p50 µs",
            "x http",
            "x tcp",
        ];
        let rows: Vec<Vec<String>> = self
            .results
            .iter()
            .filter(|r| r.transport == "serve")
            .map(|r| {
                let http = self.results.iter().find(|h| {
                    h.transport == "http" && h.payload_bytes == r.payload_bytes && h.pin == r.pin
                });
                vec![
                    fmt_bytes(r.payload_bytes),
                    r.pin.to_string(),
                    fmt_us(r.p50_us),
                    opt(http.map(|h| h.p50_us), fmt_us),
                    opt(r.ratio_to_http_baseline, |x| format!("{x:.2}x")),
                    opt(r.ratio_to_floor, |x| format!("{x:.2}x")),
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
        if self.results.iter().any(|r| r.transport == "serve") {
            let _ = writeln!(
                out,
                "\nHTTP path: ferry serve (POST /api/inference/generate, Rust echo worker) beside the Python http.server echo, same run:\n"
            );
            out += &self.http_path_table();
        }
        if !self.floors.is_empty() {
            let _ = writeln!(out, "\nbare floors (no engine), same run:\n");
            out += &self.floors_table();
        }
        if !self.peers.is_empty() {
            let _ = writeln!(out, "\nother projects' peers, same run:\n");
            out += &self.peers_table();
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
        assert_eq!(fmt_signed_us(0.744), "+0.74");
        assert_eq!(fmt_signed_us(-15.0), "-15.0");
        assert_eq!(fmt_signed_us(0.0), "+0.00");
    }
}
