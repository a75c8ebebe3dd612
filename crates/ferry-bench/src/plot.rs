//! An SVG line chart of p50 by transport and payload, written by hand (no plotting crate
//! to compile): one colour per transport, a solid line for the Rust worker, a dotted one
//! for the Python worker, a dash-dotted one for the `--cmd` worker, a dashed one for the
//! transport's bare floor; a logarithmic latency axis.

use super::report::Report;
use super::table::fmt_bytes;
use super::FloorKind;
use super::Pin;
use std::collections::BTreeSet;
use std::fmt::Write as _;

const W: f64 = 900.0;
const H: f64 = 520.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 230.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#2ca02c", "#9467bd", "#d62728", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f",
];

struct Series {
    label: String,
    /// The transport whose colour it takes (a floor takes its transport's).
    transport: String,
    /// SVG `stroke-dasharray`, empty for a solid line.
    dash: &'static str,
    points: Vec<(usize, f64)>,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The chart of `report`'s p50s at pinning `pin`, as an SVG document.
pub fn p50_chart(report: &Report, pin: Pin) -> String {
    let mut series: Vec<Series> = Vec::new();
    let mut add = |label: String, transport: &str, dash, payload: usize, p50: f64| match series
        .iter_mut()
        .find(|s| s.label == label)
    {
        Some(s) => s.points.push((payload, p50)),
        None => series.push(Series {
            label,
            transport: transport.to_string(),
            dash,
            points: vec![(payload, p50)],
        }),
    };
    for r in report.results.iter().filter(|r| r.pin == pin) {
        let dash = match r.worker.as_str() {
            "rust" => "",
            "cmd" => "8 3 2 3",
            _ => "2 3",
        };
        add(
            format!("{} ({} worker)", r.transport, r.worker),
            &r.transport,
            dash,
            r.payload_bytes,
            r.p50_us,
        );
    }
    for f in report.floors.iter().filter(|f| f.pin == pin) {
        // A floor is drawn in the colour of the first transport it is the floor of.
        let transport = report
            .results
            .iter()
            .find(|r| FloorKind::for_transport(&r.transport).is_some_and(|k| k.as_str() == f.floor))
            .map_or(f.floor.as_str(), |r| r.transport.as_str());
        add(
            format!("bare {} (floor)", f.floor),
            transport,
            "7 4",
            f.payload_bytes,
            f.stats.p50_us,
        );
    }
    let mut transports: Vec<String> = Vec::new();
    for s in &series {
        if !transports.contains(&s.transport) {
            transports.push(s.transport.clone());
        }
    }
    let color_of = |t: &str| {
        transports
            .iter()
            .position(|n| n == t)
            .map_or("#000", |i| COLORS[i % COLORS.len()])
    };
    let payloads: Vec<usize> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let values = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo_dec, hi_dec) = if lo <= hi && lo > 0.0 {
        (
            lo.log10().floor() as i32,
            (hi.log10().ceil() as i32).max(lo.log10().floor() as i32 + 1),
        )
    } else {
        (0, 3)
    };
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let x = |payload: usize| {
        let i = payloads.iter().position(|p| *p == payload).unwrap_or(0) as f64;
        let n = payloads.len().max(2) as f64 - 1.0;
        LEFT + 30.0 + i * (plot_w - 60.0) / n
    };
    let y = |us: f64| {
        let t = (us.log10() - f64::from(lo_dec)) / f64::from(hi_dec - lo_dec);
        TOP + plot_h * (1.0 - t)
    };
    let m = &report.machine;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="22" font-size="15">ferry round trip, p50 by transport and payload (pin {pin})</text>"#
    );
    let _ = writeln!(
        svg,
        r##"<text x="{LEFT}" y="40" fill="#555">{} · {} CPUs · kernel {} · {}</text>"##,
        escape(&m.cpu_model),
        m.cores,
        escape(&m.kernel),
        escape(&report.started_at)
    );
    for d in lo_dec..=hi_dec {
        let v = 10f64.powi(d);
        let yy = y(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 8.0,
            yy + 4.0,
            if v >= 1000.0 {
                format!("{:.0} ms", v / 1000.0)
            } else if v >= 1.0 {
                format!("{v:.0} µs")
            } else {
                format!("{v} µs")
            }
        );
    }
    for p in &payloads {
        let xx = x(*p);
        let _ = writeln!(
            svg,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{TOP}" y2="{}" stroke="#eee"/><text x="{xx:.1}" y="{}" text-anchor="middle">{}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 20.0,
            fmt_bytes(*p)
        );
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#444"/><text x="{}" y="{}" text-anchor="middle">payload each way</text>"##,
        LEFT + plot_w / 2.0,
        H - 15.0
    );
    for (i, s) in series.iter_mut().enumerate() {
        s.points.sort_by_key(|p| p.0);
        let color = color_of(&s.transport);
        let dash = if s.dash.is_empty() {
            String::new()
        } else {
            format!(r#" stroke-dasharray="{}""#, s.dash)
        };
        let path: Vec<String> = s
            .points
            .iter()
            .map(|(p, v)| format!("{:.1},{:.1}", x(*p), y(*v)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#,
            path.join(" ")
        );
        for (p, v) in &s.points {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{color}"><title>{}: {} µs at {}</title></circle>"#,
                x(*p),
                y(*v),
                escape(&s.label),
                super::table::fmt_us(*v),
                fmt_bytes(*p)
            );
        }
        let ly = TOP + 10.0 + i as f64 * 20.0;
        let lx = LEFT + plot_w + 15.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            lx + 24.0,
            lx + 30.0,
            ly + 4.0,
            escape(&s.label)
        );
    }
    svg.push_str("</svg>\n");
    svg
}
