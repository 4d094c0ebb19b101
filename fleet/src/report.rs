//! `caer-fleet report`: engagement over time for a room or a site, from the database, as
//! CSV or as an SVG plot. A suppressed interval has no figure: it is an empty cell in the
//! CSV and a gap in the plot, never filled in; so is time with no record at all.

use std::fmt::Write as _;
use std::time::SystemTime;

use crate::store::ReportRow;

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn cell<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// CSV, one row per record: interval, device, suppressed, headcount, assessed, engaged ratio.
pub fn csv(rows: &[ReportRow]) -> String {
    let mut out = String::from(
        "interval_start,interval_end,room,device,seq,suppressed,students,assessed,engaged_ratio\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{}",
            rfc3339(r.interval_start),
            rfc3339(r.interval_end),
            r.room,
            r.device,
            r.seq,
            r.suppressed,
            cell(r.students),
            cell(r.assessed),
            cell(r.engaged_ratio.map(|e| format!("{e:.4}"))),
        );
    }
    out
}

fn seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// An SVG plot of the engaged ratio (0 to 1) over time, one line per device. A line breaks
/// at every suppressed interval, at every record without a ratio, and wherever a record does
/// not start where the previous one ended (no record: nothing is drawn).
pub fn svg(rows: &[ReportRow], title: &str) -> String {
    const W: f64 = 960.0;
    const H: f64 = 360.0;
    const PAD: f64 = 48.0;
    let t0 = rows
        .iter()
        .map(|r| seconds(r.interval_start))
        .fold(f64::INFINITY, f64::min);
    let t1 = rows
        .iter()
        .map(|r| seconds(r.interval_end))
        .fold(f64::NEG_INFINITY, f64::max);
    let span = if t1 > t0 { t1 - t0 } else { 1.0 };
    let x = |t: f64| PAD + (t - t0) / span * (W - 2.0 * PAD);
    let y = |v: f64| H - PAD - v.clamp(0.0, 1.0) * (H - 2.0 * PAD);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}">"#
    );
    let _ = writeln!(out, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{PAD}" y="24" font-family="sans-serif" font-size="14">{}</text>"#,
        escape(title)
    );
    for v in [0.0, 0.5, 1.0] {
        let _ = writeln!(
            out,
            r##"<line x1="{PAD}" x2="{0}" y1="{1:.1}" y2="{1:.1}" stroke="#ccc"/><text x="8" y="{2:.1}" font-family="sans-serif" font-size="11">{v}</text>"##,
            W - PAD,
            y(v),
            y(v) + 4.0
        );
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        let _ = writeln!(
            out,
            r#"<text x="{PAD}" y="{}" font-family="sans-serif" font-size="11">{}</text><text x="{}" y="{}" font-family="sans-serif" font-size="11" text-anchor="end">{}</text>"#,
            H - 16.0,
            rfc3339(first.interval_start),
            W - PAD,
            H - 16.0,
            rfc3339(last.interval_end)
        );
    }
    let colours = [
        "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
    ];
    let mut devices: Vec<&str> = rows.iter().map(|r| r.device.as_str()).collect();
    devices.sort_unstable();
    devices.dedup();
    for (i, device) in devices.iter().enumerate() {
        let colour = colours[i % colours.len()];
        let mut segment: Vec<(f64, f64)> = Vec::new();
        let mut previous_end: Option<f64> = None;
        let mut segments: Vec<Vec<(f64, f64)>> = Vec::new();
        for r in rows.iter().filter(|r| r.device == *device) {
            let (start, end) = (seconds(r.interval_start), seconds(r.interval_end));
            let contiguous = previous_end.is_some_and(|p| (start - p).abs() < 0.5);
            if !contiguous || r.suppressed || r.engaged_ratio.is_none() {
                segments.push(std::mem::take(&mut segment));
            }
            if let (false, Some(ratio)) = (r.suppressed, r.engaged_ratio) {
                segment.push((x(start), y(ratio)));
                segment.push((x(end), y(ratio)));
            }
            previous_end = Some(end);
        }
        segments.push(segment);
        for points in segments.iter().filter(|s| !s.is_empty()) {
            let list: Vec<String> = points
                .iter()
                .map(|(a, b)| format!("{a:.1},{b:.1}"))
                .collect();
            let _ = writeln!(
                out,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
                list.join(" ")
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" font-family="sans-serif" font-size="11" fill="{colour}">{}</text>"#,
            W - PAD - 120.0,
            24.0 + 14.0 * i as f64,
            escape(device)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn row(start: u64, ratio: Option<f64>, suppressed: bool) -> ReportRow {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + start);
        ReportRow {
            device: "d".into(),
            room: "r".into(),
            interval_start: t,
            interval_end: t + Duration::from_secs(60),
            suppressed,
            students: (!suppressed).then_some(12),
            assessed: (!suppressed).then_some(10),
            engaged_ratio: ratio,
            seq: start as i64 / 60,
        }
    }

    #[test]
    fn suppressed_intervals_and_missing_records_are_gaps() {
        // Two contiguous intervals, a suppressed one, one more, then an hour with no record.
        let rows = [
            row(0, Some(0.5), false),
            row(60, Some(0.75), false),
            row(120, None, true),
            row(180, Some(0.25), false),
            row(3780, Some(1.0), false),
        ];
        let plot = svg(&rows, "room r");
        assert_eq!(plot.matches("<polyline").count(), 3, "{plot}");
        let table = csv(&rows);
        let suppressed = table.lines().nth(3).unwrap();
        assert!(suppressed.ends_with(",true,,,"), "{suppressed}");
        assert_eq!(table.lines().count(), 6);
    }
}
