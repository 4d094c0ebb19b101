//! `eval`: the model over a labelled dataset, through the firmware's own clip classifier
//! ([`caer::pipeline::model::classify::ClipClassifier`]: the reference's sampling, crops, encoder and head).
//!
//! Clips run one after the other; the backend parallelises inside each model call. A clip
//! that cannot be loaded or classified is reported and skipped; the metrics cover the
//! clips that ran. With a calibration, the metrics and the predictions use the calibrated
//! logits, and the report keeps the raw ones (and their metrics) too.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use caer::pipeline::model::backend::InferenceBackend;
use caer::pipeline::model::bundle::{CLASSES, NUM_CLASSES};
use caer::pipeline::model::calibration::Calibration;
use caer::pipeline::model::classify::{softmax, ClipClassifier};
use caer::ClassifyError;

use crate::clips::LoadedClip;
use crate::error::{ClipError, ClipIssue, Error};
use crate::metrics::{compute, predict};
use crate::plan::{ResolvedBundle, ResolvedDataset};
use crate::progress::Progress;
use crate::report::{
    generator, AppliedCalibration, ClipRecord, Counts, DatasetInfo, EvalReport, EvalTiming,
    ModelInfo, SkippedClip, REPORT_VERSION,
};

/// Everything `eval` runs with, resolved.
pub struct EvalPlan {
    /// The verified bundle.
    pub bundle: ResolvedBundle,
    /// The name of the backend that runs (for the report).
    pub backend_name: String,
    /// Why it was chosen and its self-check's outcome (for the report).
    pub backend_reason: String,
    /// The loaded backend.
    pub backend: Arc<dyn InferenceBackend>,
    /// The clips and how to load them.
    pub dataset: ResolvedDataset,
    /// A calibration to apply (already checked against the bundle), with its path.
    pub calibration: Option<(PathBuf, Calibration)>,
    /// Most images per encoder call.
    pub max_batch: NonZeroUsize,
}

/// What an eval produced: the report and the skipped clips.
#[derive(Debug)]
pub struct EvalOutcome {
    /// The report.
    pub report: EvalReport,
    /// The skipped clips (the report has them as text too).
    pub issues: Vec<ClipIssue>,
}

/// Maps a classifier error about a decoded frame to the frame's file.
fn clip_error(clip: &LoadedClip, error: ClassifyError) -> ClipError {
    match error {
        ClassifyError::Frame {
            frame_index,
            source,
        } => ClipError::Preprocess {
            path: clip.frame_files[clip.frame_indices[frame_index]].clone(),
            source,
        },
        source => ClipError::Classify { source },
    }
}

/// Runs the model over the plan's clips.
pub fn run(plan: &mut EvalPlan, progress: &Progress) -> Result<EvalOutcome, Error> {
    let bundle = &plan.bundle.bundle;
    let mut classifier =
        ClipClassifier::new(plan.backend.clone(), bundle.face_margin(), plan.max_batch)?;
    let entries = plan.dataset.entries();
    let mut issues: Vec<ClipIssue> = Vec::new();
    for issue in plan.dataset.line_issues() {
        progress.warn(issue);
    }
    let line_issue_count = plan.dataset.line_issues().count();

    let mut records = Vec::with_capacity(entries.len());
    let (mut decode, mut detect, mut classify) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let start = Instant::now();
    for entry in &entries {
        let outcome = plan
            .dataset
            .loader
            .load(&plan.dataset.list, entry)
            .and_then(|clip| {
                let t = Instant::now();
                let result =
                    classifier.classify(&clip.rgb_frames(), &clip.face_boxes, clip.body_box);
                let elapsed = t.elapsed();
                match result {
                    Ok(result) => Ok((clip, result, elapsed)),
                    Err(error) => Err(clip_error(&clip, error)),
                }
            });
        match outcome {
            Ok((clip, result, elapsed)) => {
                decode += clip.decode;
                detect += clip.detect;
                classify += elapsed;
                let logits = result.logits;
                let calibrated = plan.calibration.as_ref().map(|(_, c)| c.apply(&logits));
                let scores = calibrated.unwrap_or(logits);
                let predicted = predict(&scores);
                debug_assert_eq!(
                    result
                        .sampled_indices
                        .iter()
                        .map(|&k| clip.frame_indices[k])
                        .collect::<Vec<_>>(),
                    clip.sampled_indices
                );
                records.push(ClipRecord {
                    line: entry.line,
                    frame_dir: entry.frame_dir.clone(),
                    num_frames: clip.frame_files.len(),
                    label: entry.label,
                    label_name: CLASSES[entry.label].to_owned(),
                    sampled_indices: clip.sampled_indices.clone(),
                    face_source: clip.face_source,
                    face_boxes_used: clip.face_boxes_used(),
                    body_source: clip.body_source,
                    body_box: clip.body_box,
                    logits,
                    calibrated_logits: calibrated,
                    probabilities: softmax(&scores),
                    predicted,
                    predicted_name: CLASSES[predicted].to_owned(),
                });
            }
            Err(error) => {
                let issue = plan.dataset.list.issue(entry, error);
                progress.warn(&issue);
                issues.push(issue);
            }
        }
        progress.inc();
    }
    let wall = start.elapsed().as_secs_f64();
    progress.finish();

    let labels: Vec<usize> = records.iter().map(|r| r.label).collect();
    let raw: Vec<[f32; NUM_CLASSES]> = records.iter().map(|r| r.logits).collect();
    let scores: Vec<[f32; NUM_CLASSES]> = records
        .iter()
        .map(|r| r.calibrated_logits.unwrap_or(r.logits))
        .collect();
    let coarse = bundle.coarse();
    let metrics = compute(&labels, &scores, coarse);
    let uncalibrated_metrics = plan
        .calibration
        .as_ref()
        .and_then(|_| compute(&labels, &raw, coarse));

    let n = records.len();
    let mean_ms = |d: Duration| {
        if n == 0 {
            0.0
        } else {
            d.as_secs_f64() * 1000.0 / n as f64
        }
    };
    let mut skipped: Vec<SkippedClip> = plan.dataset.line_issues().map(SkippedClip::from).collect();
    skipped.extend(issues.iter().map(SkippedClip::from));
    skipped.sort_by_key(|s| s.line);
    let settings = &plan.dataset.settings;
    let report = EvalReport {
        report_version: REPORT_VERSION,
        generator: generator(),
        model: ModelInfo {
            bundle: plan.bundle.dir.display().to_string(),
            model_id: plan.bundle.model_id().to_owned(),
            model_sha256: plan.bundle.hash.clone(),
            backend: plan.backend_name.clone(),
            backend_reason: plan.backend_reason.clone(),
        },
        dataset: DatasetInfo {
            list: settings.list.display().to_string(),
            root: plan.dataset.list.root.display().to_string(),
            face_boxes: joined_paths(&settings.face_boxes),
            body_boxes: joined_paths(&settings.body_boxes),
            face_source: plan.dataset.loader.face_source(),
            body_source: plan.dataset.loader.body_source(),
        },
        calibration: plan
            .calibration
            .as_ref()
            .map(|(path, c)| AppliedCalibration {
                path: path.display().to_string(),
                version: c.version.clone(),
                temperature: c.temperature,
                class_offsets: c.class_offsets,
            }),
        classes: CLASSES.iter().map(|c| (*c).to_owned()).collect(),
        coarse: coarse.iter().map(|c| c.as_str().to_owned()).collect(),
        counts: Counts {
            listed: entries.len() + line_issue_count,
            evaluated: n,
            skipped: skipped.len(),
        },
        metrics,
        uncalibrated_metrics,
        timing: EvalTiming {
            wall_s: wall,
            clips_per_s: if wall > 0.0 { n as f64 / wall } else { 0.0 },
            decode_ms: mean_ms(decode),
            detect_ms: mean_ms(detect),
            classify_ms: mean_ms(classify),
        },
        skipped,
        clips: records,
    };
    Ok(EvalOutcome { report, issues })
}

/// Paths as the report shows them.
fn joined_paths(paths: &[std::path::PathBuf]) -> Vec<String> {
    paths.iter().map(|p| p.display().to_string()).collect()
}
