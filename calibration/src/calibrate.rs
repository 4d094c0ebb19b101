//! `fit`: from labelled logits to `calibration.json`.
//!
//! Each split (fit and held-out) is either an eval report (`caer-calibrate eval`'s
//! `report.json`: its per-clip raw logits are used, so a report made with a calibration
//! applied still works) or a list file, which is evaluated first with the bundle. A report
//! made with another model is refused. [`crate::fit::fit`] fits on the fit split; the file
//! records the figures of the raw and the calibrated logits on the held-out split, computed
//! with the firmware's own [`Calibration::apply`].

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use caer::pipeline::model::bundle::{CLASSES, NUM_CLASSES};
use caer::pipeline::model::calibration::{
    Calibration, CalibrationMetrics, SplitCounts, CALIBRATION_SCHEMA_VERSION,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, FitError, ReportError};
use crate::fit::{fit, OffsetMode};
use crate::metrics::{mean_nll, predict, reliability, uar_war};
use crate::plan::ResolvedBundle;
use crate::report::{generator, SkippedClip};

/// Labels and raw logits of one split.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelledLogits {
    /// Class indices.
    pub labels: Vec<usize>,
    /// Raw model logits.
    pub logits: Vec<[f32; NUM_CLASSES]>,
}

impl LabelledLogits {
    /// Clips per class.
    pub fn counts(&self) -> SplitCounts {
        let mut per_class = [0u64; NUM_CLASSES];
        for &y in &self.labels {
            per_class[y] += 1;
        }
        SplitCounts {
            clips: self.labels.len() as u64,
            per_class,
        }
    }
}

/// Whether `path` holds an eval report (JSON) rather than a list file: its first
/// non-blank character is `{`.
pub fn is_report(path: &Path) -> Result<bool, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| ReportError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(text.trim_start().starts_with('{'))
}

#[derive(Deserialize)]
struct ReportModel {
    model_id: String,
    model_sha256: String,
}

#[derive(Deserialize)]
struct ReportClip {
    label: usize,
    logits: Vec<f64>,
}

#[derive(Deserialize)]
struct ReportView {
    model: ReportModel,
    clips: Vec<ReportClip>,
}

/// Reads the labels and raw logits of an eval report made with `bundle`.
pub fn read_report(path: &Path, bundle: &ResolvedBundle) -> Result<LabelledLogits, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReportError::Io {
        path: path.to_owned(),
        source,
    })?;
    let view: ReportView = serde_json::from_str(&text).map_err(|source| ReportError::Json {
        path: path.to_owned(),
        source,
    })?;
    if view.model.model_id != bundle.model_id()
        || !view.model.model_sha256.eq_ignore_ascii_case(&bundle.hash)
    {
        return Err(ReportError::ModelMismatch {
            path: path.to_owned(),
            report_id: view.model.model_id,
            report_hash: view.model.model_sha256,
            bundle_id: bundle.model_id().to_owned(),
            bundle_hash: bundle.hash.clone(),
        });
    }
    let mut out = LabelledLogits::default();
    for (index, clip) in view.clips.iter().enumerate() {
        let bad = |reason: String| ReportError::Clip {
            path: path.to_owned(),
            index,
            reason,
        };
        if clip.label >= NUM_CLASSES {
            return Err(bad(format!(
                "label {} is not a class index 0..{NUM_CLASSES}",
                clip.label
            )));
        }
        let logits: [f64; NUM_CLASSES] = clip.logits.as_slice().try_into().map_err(|_| {
            bad(format!(
                "{} logits; expected {NUM_CLASSES}",
                clip.logits.len()
            ))
        })?;
        if logits.iter().any(|v| !v.is_finite()) {
            return Err(bad("a logit is not finite".to_owned()));
        }
        out.labels.push(clip.label);
        out.logits.push(logits.map(|v| v as f32));
    }
    Ok(out)
}

/// Figures of logits on a split: NLL, ECE, UAR, WAR.
pub fn split_metrics(labels: &[usize], logits: &[[f32; NUM_CLASSES]]) -> CalibrationMetrics {
    let logits64: Vec<[f64; NUM_CLASSES]> = logits.iter().map(|z| z.map(f64::from)).collect();
    let predicted: Vec<usize> = logits.iter().map(predict).collect();
    let (uar, war) = uar_war(labels, &predicted);
    CalibrationMetrics {
        nll: mean_nll(labels, &logits64),
        ece: reliability(labels, &logits64).1,
        uar,
        war,
    }
}

/// Before and after on one split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BeforeAfter {
    /// Clips per class of the split.
    pub counts: SplitCounts,
    /// Raw logits.
    pub before: CalibrationMetrics,
    /// Calibrated logits.
    pub after: CalibrationMetrics,
}

/// `caer-calibrate fit`'s report (stdout).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitReport {
    /// The tool that wrote it.
    pub generator: String,
    /// Where the calibration was written.
    pub output: String,
    /// How the offsets were fitted.
    pub offsets: String,
    /// The calibration written.
    pub calibration: Calibration,
    /// On the fit split (optimistic: the parameters were fitted there).
    pub fit_split: BeforeAfter,
    /// On the held-out split (the figures in the file).
    pub held_out: BeforeAfter,
    /// Classes without clips in the fit split (offset 0).
    pub absent_classes: Vec<String>,
    /// Things worth a look (also printed on stderr).
    pub warnings: Vec<String>,
    /// Clips skipped while evaluating list files.
    pub skipped: Vec<SkippedClip>,
}

/// What `fit` runs with, resolved (the splits' logits already read or evaluated).
pub struct FitPlan {
    /// The verified bundle.
    pub bundle: ResolvedBundle,
    /// The fit split.
    pub fit_on: LabelledLogits,
    /// The held-out split.
    pub held_out: LabelledLogits,
    /// How the offsets are fitted.
    pub mode: OffsetMode,
    /// The calibration's version label; the creation time if `None`.
    pub version: Option<String>,
    /// Where to write `calibration.json`.
    pub out: PathBuf,
    /// Clips skipped while evaluating list files.
    pub skipped: Vec<SkippedClip>,
}

/// Fits, writes the calibration file, and returns the report.
pub fn run(plan: &FitPlan) -> Result<FitReport, Error> {
    if plan.held_out.labels.is_empty() {
        return Err(FitError::Empty { split: "held-out" }.into());
    }
    let logits64: Vec<[f64; NUM_CLASSES]> = plan
        .fit_on
        .logits
        .iter()
        .map(|z| z.map(f64::from))
        .collect();
    let result = fit(&plan.fit_on.labels, &logits64, plan.mode)?;
    let created_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let bundle = &plan.bundle;
    let placeholder = CalibrationMetrics {
        nll: 0.0,
        ece: 0.0,
        uar: 0.0,
        war: 0.0,
    };
    let mut calibration = Calibration {
        schema_version: CALIBRATION_SCHEMA_VERSION,
        version: plan.version.clone().unwrap_or_else(|| created_at.clone()),
        model_id: bundle.model_id().to_owned(),
        model_sha256: bundle.hash.clone(),
        temperature: result.temperature,
        class_offsets: result.offsets,
        created_at,
        generator: generator(),
        fitted_on: plan.fit_on.counts(),
        evaluated_on: plan.held_out.counts(),
        metrics_before: placeholder.clone(),
        metrics_after: placeholder,
    };
    let before_after = |split: &LabelledLogits, calibration: &Calibration| {
        let calibrated: Vec<[f32; NUM_CLASSES]> =
            split.logits.iter().map(|z| calibration.apply(z)).collect();
        BeforeAfter {
            counts: split.counts(),
            before: split_metrics(&split.labels, &split.logits),
            after: split_metrics(&split.labels, &calibrated),
        }
    };
    let held_out = before_after(&plan.held_out, &calibration);
    let fit_split = before_after(&plan.fit_on, &calibration);
    calibration.metrics_before = held_out.before.clone();
    calibration.metrics_after = held_out.after.clone();
    calibration.save(&plan.out)?;

    let mut warnings = Vec::new();
    let absent_classes: Vec<String> = result
        .absent_classes
        .iter()
        .map(|&k| CLASSES[k].to_owned())
        .collect();
    if !absent_classes.is_empty() {
        warnings.push(format!(
            "the fit split has no clips of {}: their offsets stay 0",
            absent_classes.join(", ")
        ));
    }
    if result.temperature_at_bound {
        warnings.push(format!(
            "the temperature ended on a bound ({:.3}): the fit split may be too small or separable",
            result.temperature
        ));
    }
    if fit_split.after.nll < 1e-3 {
        warnings.push(format!(
            "the fit split is separable (NLL {:.2e} after calibration): T = {:.4} is not identified; \
             fit on more, or harder, clips",
            fit_split.after.nll, result.temperature
        ));
    }
    if held_out.after.nll > held_out.before.nll {
        warnings.push(format!(
            "held-out NLL rose from {:.4} to {:.4}",
            held_out.before.nll, held_out.after.nll
        ));
    }
    if held_out.after.uar < held_out.before.uar {
        warnings.push(format!(
            "held-out UAR fell from {:.2} to {:.2}",
            held_out.before.uar, held_out.after.uar
        ));
    }
    let skipped = plan.skipped.clone();
    Ok(FitReport {
        generator: generator(),
        output: plan.out.display().to_string(),
        offsets: plan.mode.as_str().to_owned(),
        calibration,
        fit_split,
        held_out,
        absent_classes,
        warnings,
        skipped,
    })
}
