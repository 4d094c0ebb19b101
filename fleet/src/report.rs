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

/// One line segment of a plot: `(time in s, engaged ratio)` points.
type Run = Vec<(f64, f64)>;

/// The lines of a plot: for each device, the runs of contiguous intervals that have a
/// figure, as `(time in s, engaged ratio)` points, one step per interval. A run ends at every
/// suppressed interval, at every record without a ratio, and wherever a record does not start
/// where the previous one ended (no record: nothing is drawn).
fn runs(rows: &[ReportRow]) -> Vec<(&str, Vec<Run>)> {
    let mut devices: Vec<&str> = rows.iter().map(|r| r.device.as_str()).collect();
    devices.sort_unstable();
    devices.dedup();
    devices
        .into_iter()
        .map(|device| {
            let mut runs: Vec<Run> = vec![Vec::new()];
            let mut previous_end: Option<f64> = None;
            for r in rows.iter().filter(|r| r.device == device) {
                let (start, end) = (seconds(r.interval_start), seconds(r.interval_end));
                let contiguous = previous_end.is_some_and(|p| (start - p).abs() < 0.5);
                if !contiguous || r.suppressed || r.engaged_ratio.is_none() {
                    runs.push(Vec::new());
                }
                if let (false, Some(ratio), Some(run)) =
                    (r.suppressed, r.engaged_ratio, runs.last_mut())
                {
                    run.push((start, ratio));
                    run.push((end, ratio));
                }
                previous_end = Some(end);
            }
            runs.retain(|run| !run.is_empty());
            (device, runs)
        })
        .collect()
}

/// The time span of the rows, in s (at least 1 s wide).
fn span(rows: &[ReportRow]) -> (f64, f64) {
    let t0 = rows
        .iter()
        .map(|r| seconds(r.interval_start))
        .fold(f64::INFINITY, f64::min);
    let t1 = rows
        .iter()
        .map(|r| seconds(r.interval_end))
        .fold(f64::NEG_INFINITY, f64::max);
    match (t0.is_finite(), t1 > t0) {
        (true, true) => (t0, t1 - t0),
        (true, false) => (t0, 1.0),
        (false, _) => (0.0, 1.0),
    }
}

const COLOURS: [(u8, u8, u8); 6] = [
    (31, 119, 180),
    (214, 39, 40),
    (44, 160, 44),
    (148, 103, 189),
    (255, 127, 14),
    (140, 86, 75),
];
const W: f64 = 960.0;
const H: f64 = 360.0;
const PAD: f64 = 48.0;

/// An SVG plot of the engaged ratio (0 to 1) over time, one line per device, with gaps
/// ([`runs`]).
pub fn svg(rows: &[ReportRow], title: &str) -> String {
    let (t0, width) = span(rows);
    let x = |t: f64| PAD + (t - t0) / width * (W - 2.0 * PAD);
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
    for (i, (device, runs)) in runs(rows).into_iter().enumerate() {
        let (r, g, b) = COLOURS[i % COLOURS.len()];
        let colour = format!("rgb({r},{g},{b})");
        for run in runs {
            let list: Vec<String> = run
                .iter()
                .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
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

/// The same plot as [`svg`], as a PNG file (shapes by plotters, text from an 8x8 bitmap
/// font: no font files).
pub fn png(rows: &[ReportRow], title: &str, path: &std::path::Path) -> Result<(), String> {
    use caer_calibrate::plot::Canvas;
    use plotters::prelude::*;
    let (t0, width) = span(rows);
    let x = |t: f64| (PAD + (t - t0) / width * (W - 2.0 * PAD)).round() as i32;
    let y = |v: f64| (H - PAD - v.clamp(0.0, 1.0) * (H - 2.0 * PAD)).round() as i32;
    let lines = runs(rows);
    let mut canvas = Canvas::new(W as u32, H as u32);
    canvas
        .shapes(path, |area| {
            for v in [0.0, 0.5, 1.0] {
                area.draw(&PathElement::new(
                    vec![(PAD as i32, y(v)), ((W - PAD) as i32, y(v))],
                    RGBColor(204, 204, 204).stroke_width(1),
                ))?;
            }
            for (i, (_, runs)) in lines.iter().enumerate() {
                let (r, g, b) = COLOURS[i % COLOURS.len()];
                for run in runs {
                    let points: Vec<(i32, i32)> = run.iter().map(|&(t, v)| (x(t), y(v))).collect();
                    area.draw(&PathElement::new(points, RGBColor(r, g, b).stroke_width(2)))?;
                }
            }
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    canvas.text(PAD as i32, 12, title, 1, BLACK);
    for v in [0.0, 0.5, 1.0] {
        canvas.text(8, y(v) - 4, &format!("{v}"), 1, BLACK);
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        let end = rfc3339(last.interval_end);
        canvas.text(
            PAD as i32,
            (H - 20.0) as i32,
            &rfc3339(first.interval_start),
            1,
            BLACK,
        );
        canvas.text(
            (W - PAD) as i32 - Canvas::text_width(&end, 1),
            (H - 20.0) as i32,
            &end,
            1,
            BLACK,
        );
    }
    for (i, (device, _)) in lines.iter().enumerate() {
        let (r, g, b) = COLOURS[i % COLOURS.len()];
        canvas.text(
            (W - PAD - 120.0) as i32,
            12 + 12 * i as i32,
            device,
            1,
            RGBColor(r, g, b),
        );
    }
    canvas.save(path).map_err(|e| e.to_string())
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
        let lines = runs(&rows);
        assert_eq!(lines[0].1.len(), 3);
        assert_eq!(lines[0].1[0].len(), 4, "two contiguous intervals, one run");
        let table = csv(&rows);
        let suppressed = table.lines().nth(3).unwrap();
        assert!(suppressed.ends_with(",true,,,"), "{suppressed}");
        assert_eq!(table.lines().count(), 6);
    }
}
