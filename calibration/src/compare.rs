//! `compare`: two backends (or precisions) on the same clips, stage by stage.
//!
//! Each clip is decoded, its faces found (or read) and its `2T` crops made once; both
//! backends then encode exactly the same pixels, in the same batches as the clip classifier
//! uses, and run their temporal heads. Reported: top-1 agreement, the largest and mean
//! absolute logit difference, the cosine between the two backends' embeddings of each crop,
//! and per-clip latency of each stage (decode, detect, crop: shared; encode, temporal: per
//! backend). Before timing, each backend runs one warm-up batch that is not counted, so the
//! figures are of the optimised, warmed-up models.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Instant;

use caer::pipeline::model::backend::InferenceBackend;
use caer::pipeline::model::bundle::NUM_CLASSES;
use caer::pipeline::preprocess::Preprocessor;
use serde::{Deserialize, Serialize};

use crate::clips::LoadedClip;
use crate::error::{ClipError, ClipIssue, Error};
use crate::metrics::predict;
use crate::plan::{ResolvedBundle, ResolvedDataset};
use crate::progress::Progress;
use crate::report::{generator, LatencyStats, ModelInfo, SkippedClip};

/// One side of the comparison.
pub struct Side {
    /// The name of the backend that runs.
    pub name: String,
    /// Why it was chosen and its self-check's outcome.
    pub reason: String,
    /// The loaded backend.
    pub backend: Arc<dyn InferenceBackend>,
}

/// Everything `compare` runs with, resolved.
pub struct ComparePlan {
    /// The verified bundle.
    pub bundle: ResolvedBundle,
    /// Backend a, then b.
    pub sides: [Side; 2],
    /// The clips and how to load them.
    pub dataset: ResolvedDataset,
    /// Most images per encoder call.
    pub max_batch: NonZeroUsize,
}

/// Per-clip latency of each stage, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageLatency {
    /// Frame decoding (shared).
    pub decode: LatencyStats,
    /// Face detection and tracking (shared; 0 with box files).
    pub detect: LatencyStats,
    /// Face and context crops to model input (shared).
    pub crop: LatencyStats,
    /// Image encoder over the `2T` crops, backend a then b.
    pub encode: [LatencyStats; 2],
    /// Temporal head, backend a then b.
    pub temporal: [LatencyStats; 2],
}

/// One compared clip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipComparison {
    /// 1-based line of the list file.
    pub line: usize,
    /// The frame directory as listed.
    pub frame_dir: String,
    /// Logits of backend a, then b.
    pub logits: [[f32; NUM_CLASSES]; 2],
    /// Predicted class of backend a, then b.
    pub predicted: [usize; 2],
    /// Largest absolute logit difference.
    pub max_abs_logit_diff: f32,
    /// Smallest cosine between the two backends' embeddings of one crop.
    pub min_embedding_cosine: f64,
}

/// Cosine statistics over every crop of every compared clip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CosineStats {
    /// Smallest.
    pub min: f64,
    /// Mean.
    pub mean: f64,
}

/// `caer-calibrate compare`'s report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareReport {
    /// The tool that wrote it.
    pub generator: String,
    /// The model (its `backend` field: `"<a> vs <b>"`).
    pub model: ModelInfo,
    /// The backends that ran: a, then b.
    pub backends: [String; 2],
    /// The backends this build has.
    pub backends_available: Vec<String>,
    /// Clip lines considered.
    pub clips_listed: usize,
    /// Clips run through both backends.
    pub clips_compared: usize,
    /// Clips where both predicted the same class, percent (`null` without clips).
    pub top1_agreement: Option<f64>,
    /// Largest absolute logit difference over all clips.
    pub max_abs_logit_diff: f32,
    /// Mean absolute logit difference.
    pub mean_abs_logit_diff: f64,
    /// Embedding cosine over all crops (`null` without clips).
    pub embedding_cosine: Option<CosineStats>,
    /// Per-clip latency per stage.
    pub latency_ms: StageLatency,
    /// Skipped clips and why.
    pub skipped: Vec<SkippedClip>,
    /// Every compared clip.
    pub clips: Vec<ClipComparison>,
}

/// What a comparison produced.
#[derive(Debug)]
pub struct CompareOutcome {
    /// The report.
    pub report: CompareReport,
    /// Clips skipped while running (the report lists these and the list's bad lines).
    pub issues: Vec<ClipIssue>,
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 && nb == 0.0 {
        1.0
    } else if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// The `2T` model inputs of a clip, faces then contexts, as the clip classifier makes them.
fn make_inputs(
    preprocessor: &mut Preprocessor,
    clip: &LoadedClip,
    pixels: &mut [f32],
) -> Result<(), ClipError> {
    let positions = clip.positions();
    let t = positions.len();
    let len = preprocessor.crop_len();
    for (i, image) in pixels.chunks_exact_mut(len).enumerate() {
        let k = positions[i % t];
        let frame = clip.frames[k].rgb();
        let result = if i < t {
            preprocessor.face_input(frame, clip.face_boxes[k], image)
        } else {
            preprocessor.context_input(frame, clip.body_box, image)
        };
        result.map_err(|source| ClipError::Preprocess {
            path: clip.frame_files[clip.frame_indices[k]].clone(),
            source,
        })?;
    }
    Ok(())
}

/// Encodes `count` images in batches of at most `max_batch`.
fn encode(
    side: &Side,
    pixels: &[f32],
    count: usize,
    max_batch: usize,
    embeddings: &mut [f32],
) -> Result<(), ClipError> {
    let dims = side.backend.dims();
    let (image_len, d) = (dims.image_len(), dims.embed_dim);
    let mut first = 0;
    while first < count {
        let n = max_batch.min(count - first);
        side.backend
            .encode_images(
                &pixels[first * image_len..(first + n) * image_len],
                n,
                &mut embeddings[first * d..(first + n) * d],
            )
            .map_err(|source| ClipError::Inference {
                backend: side.name.clone(),
                source,
            })?;
        first += n;
    }
    Ok(())
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// Runs both backends over the plan's clips.
pub fn run(plan: &mut ComparePlan, progress: &Progress) -> Result<CompareOutcome, Error> {
    let dims = plan.bundle.bundle.dims();
    let (t, d) = (dims.frames_per_clip, dims.embed_dim);
    let images = 2 * t;
    let max_batch = plan.max_batch.get();
    let mut preprocessor = Preprocessor::new(dims.input_size, plan.bundle.bundle.face_margin());
    let mut pixels = vec![0f32; images * dims.image_len()];
    let mut embeddings = [vec![0f32; images * d], vec![0f32; images * d]];

    // Warm-up: one batch and one head call per backend, not timed.
    for side in &plan.sides {
        let n = max_batch.min(images);
        let mut out = vec![0f32; n * d];
        let mut logits = [0f32; NUM_CLASSES];
        let warm = side
            .backend
            .encode_images(&pixels[..n * dims.image_len()], n, &mut out)
            .and_then(|()| {
                side.backend.run_head(
                    &embeddings[0][..t * d],
                    &embeddings[0][t * d..],
                    1,
                    &mut logits,
                )
            });
        warm.map_err(|source| Error::Warmup {
            backend: side.name.clone(),
            source,
        })?;
    }

    let entries = plan.dataset.entries();
    for issue in plan.dataset.line_issues() {
        progress.warn(issue);
    }
    let line_issue_count = plan.dataset.line_issues().count();
    let mut issues = Vec::new();
    let mut clips = Vec::new();
    let (mut decode, mut detect, mut crop) = (Vec::new(), Vec::new(), Vec::new());
    let (mut encode_ms, mut temporal_ms) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    let mut cosines: Vec<f64> = Vec::new();
    let mut abs_diff_sum = 0f64;
    for entry in &entries {
        let result = (|| -> Result<ClipComparison, ClipError> {
            let clip = plan.dataset.loader.load(&plan.dataset.list, entry)?;
            let start = Instant::now();
            make_inputs(&mut preprocessor, &clip, &mut pixels)?;
            let crop_ms = ms(start);
            let mut logits = [[0f32; NUM_CLASSES]; 2];
            let mut times = [(0.0, 0.0); 2];
            for (s, side) in plan.sides.iter().enumerate() {
                let start = Instant::now();
                encode(side, &pixels, images, max_batch, &mut embeddings[s])?;
                let encoded = ms(start);
                let start = Instant::now();
                let (face, context) = embeddings[s].split_at(t * d);
                side.backend
                    .run_head(face, context, 1, &mut logits[s])
                    .map_err(|source| ClipError::Inference {
                        backend: side.name.clone(),
                        source,
                    })?;
                times[s] = (encoded, ms(start));
            }
            // Only clips that ran through both backends count in any figure.
            decode.push(clip.decode.as_secs_f64() * 1000.0);
            detect.push(clip.detect.as_secs_f64() * 1000.0);
            crop.push(crop_ms);
            for s in 0..2 {
                encode_ms[s].push(times[s].0);
                temporal_ms[s].push(times[s].1);
            }
            let clip_cosines: Vec<f64> = embeddings[0]
                .chunks_exact(d)
                .zip(embeddings[1].chunks_exact(d))
                .map(|(a, b)| cosine(a, b))
                .collect();
            let min_cosine = clip_cosines.iter().copied().fold(f64::INFINITY, f64::min);
            cosines.extend(clip_cosines);
            let diffs: Vec<f32> = (0..NUM_CLASSES)
                .map(|k| (logits[0][k] - logits[1][k]).abs())
                .collect();
            abs_diff_sum += diffs.iter().map(|&v| f64::from(v)).sum::<f64>();
            Ok(ClipComparison {
                line: entry.line,
                frame_dir: entry.frame_dir.clone(),
                logits,
                predicted: [predict(&logits[0]), predict(&logits[1])],
                max_abs_logit_diff: diffs.iter().copied().fold(0.0, f32::max),
                min_embedding_cosine: min_cosine,
            })
        })();
        match result {
            Ok(comparison) => clips.push(comparison),
            Err(error) => {
                let issue = plan.dataset.list.issue(entry, error);
                progress.warn(&issue);
                issues.push(issue);
            }
        }
        progress.inc();
    }
    progress.finish();

    let n = clips.len();
    let agree = clips
        .iter()
        .filter(|c| c.predicted[0] == c.predicted[1])
        .count();
    let mut skipped: Vec<SkippedClip> = plan.dataset.line_issues().map(SkippedClip::from).collect();
    skipped.extend(issues.iter().map(SkippedClip::from));
    skipped.sort_by_key(|s| s.line);
    let names = [plan.sides[0].name.clone(), plan.sides[1].name.clone()];
    let report = CompareReport {
        generator: generator(),
        model: ModelInfo {
            bundle: plan.bundle.dir.display().to_string(),
            model_id: plan.bundle.model_id().to_owned(),
            model_sha256: plan.bundle.hash.clone(),
            backend: format!("{} vs {}", names[0], names[1]),
            backend_reason: format!("a: {}; b: {}", plan.sides[0].reason, plan.sides[1].reason),
        },
        backends: names,
        backends_available: crate::backends::BACKENDS
            .iter()
            .map(|b| (*b).to_owned())
            .collect(),
        clips_listed: entries.len() + line_issue_count,
        clips_compared: n,
        top1_agreement: (n > 0).then(|| 100.0 * agree as f64 / n as f64),
        max_abs_logit_diff: clips
            .iter()
            .map(|c| c.max_abs_logit_diff)
            .fold(0.0, f32::max),
        mean_abs_logit_diff: if n == 0 {
            0.0
        } else {
            abs_diff_sum / (n * NUM_CLASSES) as f64
        },
        embedding_cosine: (!cosines.is_empty()).then(|| CosineStats {
            min: cosines.iter().copied().fold(f64::INFINITY, f64::min),
            mean: cosines.iter().sum::<f64>() / cosines.len() as f64,
        }),
        latency_ms: StageLatency {
            decode: LatencyStats::of(&decode),
            detect: LatencyStats::of(&detect),
            crop: LatencyStats::of(&crop),
            encode: [
                LatencyStats::of(&encode_ms[0]),
                LatencyStats::of(&encode_ms[1]),
            ],
            temporal: [
                LatencyStats::of(&temporal_ms[0]),
                LatencyStats::of(&temporal_ms[1]),
            ],
        },
        skipped,
        clips,
    };
    Ok(CompareOutcome { report, issues })
}

/// The latency table, for stderr: one row per stage, mean and p95 per backend.
pub fn latency_table(report: &CompareReport) -> String {
    let l = &report.latency_ms;
    let [a, b] = &report.backends;
    let mut out = format!(
        "{:<10} {:>22} {:>22}\n",
        "stage (ms)",
        format!("a: {a} mean/p95"),
        format!("b: {b} mean/p95")
    );
    let cell = |s: &LatencyStats| format!("{:.2} / {:.2}", s.mean, s.p95);
    for (stage, stats) in [
        ("decode", &l.decode),
        ("detect", &l.detect),
        ("crop", &l.crop),
    ] {
        let text = format!("{} (shared)", cell(stats));
        out.push_str(&format!("{stage:<10} {text:>22} {text:>22}\n"));
    }
    for (stage, stats) in [("encode", &l.encode), ("temporal", &l.temporal)] {
        out.push_str(&format!(
            "{stage:<10} {:>22} {:>22}\n",
            cell(&stats[0]),
            cell(&stats[1])
        ));
    }
    let total = |s: usize| {
        l.decode.mean + l.detect.mean + l.crop.mean + l.encode[s].mean + l.temporal[s].mean
    };
    out.push_str(&format!(
        "{:<10} {:>22} {:>22}\n",
        "total",
        format!("{:.2}", total(0)),
        format!("{:.2}", total(1))
    ));
    out.push_str(&format!(
        "clips {} | top-1 agreement {} | max |logit diff| {:.3e} | min embedding cosine {}\n",
        report.clips_compared,
        report
            .top1_agreement
            .map_or("n/a".to_owned(), |v| format!("{v:.2} %")),
        report.max_abs_logit_diff,
        report
            .embedding_cosine
            .as_ref()
            .map_or("n/a".to_owned(), |c| format!("{:.6}", c.min)),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_of_known_vectors() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 0.0]) - 1.0).abs() < 1e-12);
        assert!(cosine(&[1.0, 0.0], &[0.0, 2.0]).abs() < 1e-12);
        assert!((cosine(&[1.0, 1.0], &[-1.0, -1.0]) + 1.0).abs() < 1e-12);
        assert_eq!(cosine(&[0.0], &[0.0]), 1.0);
        assert_eq!(cosine(&[0.0], &[1.0]), 0.0);
    }
}
