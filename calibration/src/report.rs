//! The JSON reports: what `eval` writes (and `fit` reads back), and the pieces that the
//! other commands share.
//!
//! An eval report holds, per clip, the listed path and label, the sampled frame indices,
//! the raw logits, the probabilities and the prediction, so that another implementation
//! (the Python reference, another backend) can be compared clip by clip; plus the metrics,
//! the skipped clips with their reasons, and the timing.

use caer::pipeline::model::bundle::NUM_CLASSES;
use serde::{Deserialize, Serialize};

use crate::clips::BoxSource;
use crate::error::ClipIssue;
use crate::metrics::Metrics;

/// Version of the report layout below.
pub const REPORT_VERSION: u32 = 1;

/// `caer-calibrate <version>`.
pub fn generator() -> String {
    format!("caer-calibrate {}", env!("CARGO_PKG_VERSION"))
}

/// The model a report was made with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The bundle directory.
    pub bundle: String,
    /// The manifest's model id.
    pub model_id: String,
    /// [`caer::pipeline::model::calibration::bundle_hash`] of the bundle.
    pub model_sha256: String,
    /// The backend that ran it.
    pub backend: String,
    /// Why that backend, and its start-up self-check's outcome (from the firmware).
    pub backend_reason: String,
}

/// The dataset a report was made on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// The list file.
    pub list: String,
    /// The root the frame directories are relative to.
    pub root: String,
    /// The face box files, in merge order (none: faces were detected).
    pub face_boxes: Vec<String>,
    /// The body box files, in merge order.
    pub body_boxes: Vec<String>,
    /// Where face boxes came from.
    pub face_source: BoxSource,
    /// Where body boxes came from.
    pub body_source: BoxSource,
}

/// A skipped clip, as reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedClip {
    /// 1-based line of the list file.
    pub line: usize,
    /// The frame directory, when the line could be parsed that far.
    pub frame_dir: Option<String>,
    /// Why, as printed on stderr.
    pub error: String,
}

impl From<&ClipIssue> for SkippedClip {
    fn from(issue: &ClipIssue) -> Self {
        SkippedClip {
            line: issue.line,
            frame_dir: issue.frame_dir.clone(),
            error: issue.to_string(),
        }
    }
}

/// A calibration applied during eval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppliedCalibration {
    /// The file.
    pub path: String,
    /// Its version label.
    pub version: String,
    /// Its temperature.
    pub temperature: f64,
    /// Its offsets.
    pub class_offsets: [f64; NUM_CLASSES],
}

/// Clip counts of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Clip lines considered (within `--limit`).
    pub listed: usize,
    /// Clips evaluated.
    pub evaluated: usize,
    /// Clips skipped.
    pub skipped: usize,
}

/// One evaluated clip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipRecord {
    /// 1-based line of the list file.
    pub line: usize,
    /// The frame directory as listed.
    pub frame_dir: String,
    /// Frames in the directory.
    pub num_frames: usize,
    /// True class index, 0..5 (the list's label minus one).
    pub label: usize,
    /// True class name.
    pub label_name: String,
    /// The `T` frame indices the model saw (into the sorted frames).
    pub sampled_indices: Vec<usize>,
    /// Where the face boxes came from.
    pub face_source: BoxSource,
    /// Sampled frames that had a face box (the others used the whole frame).
    pub face_boxes_used: usize,
    /// Where the body box came from.
    pub body_source: BoxSource,
    /// The body box used (`null`: whole frame).
    pub body_box: Option<[f64; 4]>,
    /// The model's raw logits.
    pub logits: [f32; NUM_CLASSES],
    /// The calibrated logits, when a calibration was applied.
    pub calibrated_logits: Option<[f32; NUM_CLASSES]>,
    /// Softmax of the calibrated logits if any, else of the raw ones.
    pub probabilities: [f32; NUM_CLASSES],
    /// Argmax of the same logits.
    pub predicted: usize,
    /// Its class name.
    pub predicted_name: String,
}

/// Mean time per clip of each stage, in milliseconds, and the overall rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalTiming {
    /// Wall time of the clip loop, seconds (model loading excluded).
    pub wall_s: f64,
    /// Evaluated clips per second of wall time.
    pub clips_per_s: f64,
    /// Mean frame decoding time per clip.
    pub decode_ms: f64,
    /// Mean face detection and tracking time per clip (0 with box files).
    pub detect_ms: f64,
    /// Mean classification time per clip (crops, encoder, temporal head).
    pub classify_ms: f64,
}

/// `caer-calibrate eval`'s report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// [`REPORT_VERSION`].
    pub report_version: u32,
    /// The tool that wrote it.
    pub generator: String,
    /// The model.
    pub model: ModelInfo,
    /// The dataset.
    pub dataset: DatasetInfo,
    /// The calibration applied, if any.
    pub calibration: Option<AppliedCalibration>,
    /// Class names in logit order.
    pub classes: Vec<String>,
    /// Coarse label of each class.
    pub coarse: Vec<String>,
    /// Clip counts.
    pub counts: Counts,
    /// Figures of the evaluated clips (calibrated if a calibration was applied); `null` if
    /// no clip could be evaluated.
    pub metrics: Option<Metrics>,
    /// Figures of the raw logits, when a calibration was applied.
    pub uncalibrated_metrics: Option<Metrics>,
    /// Throughput.
    pub timing: EvalTiming,
    /// Skipped clips and why.
    pub skipped: Vec<SkippedClip>,
    /// Every evaluated clip.
    pub clips: Vec<ClipRecord>,
}

/// Per-clip latency statistics of one stage, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile (nearest rank).
    pub p95: f64,
    /// Largest.
    pub max: f64,
}

impl LatencyStats {
    /// Statistics of `samples` (milliseconds); zeros if empty.
    pub fn of(samples: &[f64]) -> LatencyStats {
        if samples.is_empty() {
            return LatencyStats {
                mean: 0.0,
                p50: 0.0,
                p95: 0.0,
                max: 0.0,
            };
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank =
            |q: f64| sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
        LatencyStats {
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
            p50: rank(0.5),
            p95: rank(0.95),
            max: sorted[sorted.len() - 1],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles_use_nearest_rank() {
        let samples: Vec<f64> = (1..=20).map(f64::from).collect();
        let stats = LatencyStats::of(&samples);
        assert_eq!(
            (stats.mean, stats.p50, stats.p95, stats.max),
            (10.5, 10.0, 19.0, 20.0)
        );
        assert_eq!(LatencyStats::of(&[]).max, 0.0);
        assert_eq!(LatencyStats::of(&[3.0]).p95, 3.0);
    }
}
