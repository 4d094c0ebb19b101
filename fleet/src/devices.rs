//! `caer-fleet devices`: the fleet at a glance, one row per device, from the retained
//! `status` and the latest `stats`.

use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;

use crate::view::DeviceView;

/// One row of the table (and one object of `--json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceRow {
    /// Device id.
    pub device: String,
    /// Site.
    pub site: String,
    /// Room.
    pub room: String,
    /// `running`, `paused`, `safe_mode`, `offline` (the last will), ...; `unknown` when only
    /// stats were seen.
    pub state: String,
    /// Why, for `safe_mode` and `offline` after an error.
    pub reason: Option<String>,
    /// Inference backend.
    pub backend: Option<String>,
    /// Model id.
    pub model_id: Option<String>,
    /// Model weights hash.
    pub model_sha256: Option<String>,
    /// Privacy profile.
    pub profile: Option<String>,
    /// Calibration version.
    pub calibration_version: Option<String>,
    /// Outbox depth (records not yet acknowledged by the broker).
    pub outbox_depth: Option<u64>,
    /// Frames dropped since the device started.
    pub frames_dropped: Option<u64>,
    /// Hottest thermal zone, °C.
    pub temperature_c: Option<f64>,
    /// Seconds since anything of the device was received (retained messages count as now).
    pub last_seen_s: Option<u64>,
    /// When the device started (from `status`).
    pub started_at: Option<String>,
    /// The last model update job's state (`model/status`): queued, in_progress,
    /// succeeded, failed or rejected.
    pub model_job_state: Option<String>,
    /// That job's id.
    pub model_job: Option<String>,
    /// Why, for a failed or rejected job.
    pub model_job_reason: Option<String>,
}

fn text(v: Option<&Value>, path: &[&str]) -> Option<String> {
    let mut v = v?;
    for key in path {
        v = v.get(key)?;
    }
    v.as_str().map(str::to_string)
}

impl DeviceRow {
    /// The row of one device.
    pub fn of(view: &DeviceView, now: SystemTime) -> DeviceRow {
        let status = view.status.as_ref();
        let stats = view.stats.as_ref();
        DeviceRow {
            device: view.device.clone(),
            site: view.site.clone(),
            room: view.room().to_string(),
            state: view.state().to_string(),
            reason: text(status, &["reason"]),
            backend: text(status, &["backend"]),
            model_id: text(status, &["model", "id"]),
            model_sha256: text(status, &["model", "sha256"]),
            profile: text(status, &["profile"]),
            calibration_version: text(status, &["calibration_version"]),
            outbox_depth: stats.and_then(|s| s["outbox"]["depth"].as_u64()),
            frames_dropped: stats.and_then(|s| s["frames_dropped_total"].as_u64()),
            temperature_c: stats.and_then(|s| s["temperature_c"].as_f64()),
            last_seen_s: view
                .last_seen
                .and_then(|t| now.duration_since(t).ok())
                .map(|d| d.as_secs()),
            started_at: text(status, &["started_at"]),
            model_job_state: text(view.model_status.as_ref(), &["state"]),
            model_job: text(view.model_status.as_ref(), &["job"]),
            model_job_reason: text(view.model_status.as_ref(), &["reason"]),
        }
    }
}

/// `text` with every control character (a terminal escape from a hostile device, a
/// newline that would forge a row) shown as `?`.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The readable table; device-supplied text goes through [`printable`].
pub fn table(rows: &[DeviceRow]) -> String {
    let opt = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let num = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
    let header = [
        "DEVICE", "SITE", "ROOM", "STATE", "BACKEND", "MODEL", "SHA256", "PROFILE", "CALIB",
        "OUTBOX", "DROPPED", "TEMP_C", "SEEN_S", "UPDATE",
    ];
    let mut cells: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for r in rows {
        cells.push(vec![
            r.device.clone(),
            r.site.clone(),
            r.room.clone(),
            match &r.reason {
                Some(reason) if r.state != "running" => format!("{} ({reason})", r.state),
                _ => r.state.clone(),
            },
            opt(&r.backend),
            opt(&r.model_id),
            r.model_sha256
                .as_ref()
                .map(|s| s.chars().take(12).collect())
                .unwrap_or_else(|| "-".into()),
            opt(&r.profile),
            opt(&r.calibration_version),
            num(r.outbox_depth),
            num(r.frames_dropped),
            r.temperature_c
                .map(|t| format!("{t:.1}"))
                .unwrap_or_else(|| "-".into()),
            num(r.last_seen_s),
            match (&r.model_job_state, &r.model_job_reason) {
                (Some(state), Some(reason)) if state == "failed" || state == "rejected" => {
                    format!("{state} ({reason})")
                }
                (Some(state), _) => state.clone(),
                (None, _) => "-".into(),
            },
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            cells
                .iter()
                .map(|row| row[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let cells: Vec<Vec<String>> = cells
        .into_iter()
        .map(|row| row.iter().map(|c| printable(c)).collect())
        .collect();
    for row in cells {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_cannot_put_escapes_or_rows_into_the_table() {
        let view = DeviceView {
            site: "s".into(),
            device: "d".into(),
            status: Some(serde_json::json!({"state": "safe_mode", "room": "r",
                "reason": "\u{1b}[2J\nd2  s  r  running"})),
            stats: None,
            model_status: None,
            last_seen: None,
        };
        let text = table(&[DeviceRow::of(&view, SystemTime::now())]);
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(!text.contains('\u{1b}'));
        assert!(text.contains("safe_mode (?[2J?d2"), "{text}");
    }
}
