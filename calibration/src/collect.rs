//! `collect`: preprocessed crops of the user's own bench dataset, for the static int8
//! quantization of the image encoder (`python -m caer_export export --calibration DIR`).
//!
//! For each clip, at `per_clip` of its `T` sampled positions (spread evenly), the face crop
//! and the context crop are written as `S`x`S` RGB PNGs: exactly the bytes the firmware's
//! preprocessing makes (before the `/255` scaling), so the quantizer sees what the device
//! will feed the encoder. Names: `l<line>_p<position>_face.png` and `..._context.png`,
//! line of the list file and sampled position, zero-padded so that they sort.
//!
//! Bench only: this writes pictures of people to disk, on the user's machine, from the
//! user's dataset. The device never does this (the daemon keeps no frame, crop or
//! embedding).

use std::path::{Path, PathBuf};

use caer::pipeline::preprocess::Preprocessor;
use serde::{Deserialize, Serialize};

use crate::clips::LoadedClip;
use crate::error::{ClipError, ClipIssue, Error};
use crate::plan::{ResolvedBundle, ResolvedDataset};
use crate::progress::Progress;
use crate::report::{generator, SkippedClip};

/// Image files already in an output folder, counted before writing crops there.
const CROP_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Everything `collect` runs with, resolved.
pub struct CollectPlan {
    /// The verified bundle (crop size and face margin).
    pub bundle: ResolvedBundle,
    /// The clips and how to load them.
    pub dataset: ResolvedDataset,
    /// The output directory (created if missing; must hold no images).
    pub out_dir: PathBuf,
    /// Sampled positions per clip, `1..=T`.
    pub per_clip: usize,
}

/// `caer-calibrate collect`'s report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectReport {
    /// The tool that wrote it.
    pub generator: String,
    /// The output directory.
    pub out_dir: String,
    /// Crop side in pixels.
    pub input_size: usize,
    /// Sampled positions used per clip.
    pub positions: Vec<usize>,
    /// Clips whose crops were written.
    pub clips: usize,
    /// PNG files written.
    pub crops_written: usize,
    /// Skipped clips and why.
    pub skipped: Vec<SkippedClip>,
}

/// What a collection produced.
#[derive(Debug)]
pub struct CollectOutcome {
    /// The report.
    pub report: CollectReport,
    /// Clips skipped while running.
    pub issues: Vec<ClipIssue>,
}

/// `n` positions out of `t`, spread evenly: the centres of `n` equal segments.
pub fn spread_positions(n: usize, t: usize) -> Vec<usize> {
    let n = n.clamp(1, t);
    (0..n).map(|k| ((2 * k + 1) * t) / (2 * n)).collect()
}

/// Images already in `dir` (0 if it does not exist).
fn images_in(dir: &Path) -> Result<usize, Error> {
    if !dir.exists() {
        return Ok(0);
    }
    let io = |source| Error::Output {
        path: dir.to_owned(),
        source,
    };
    let mut n = 0;
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        n += usize::from(CROP_EXTENSIONS.iter().any(|k| ext.eq_ignore_ascii_case(k)));
    }
    Ok(n)
}

fn write_crops(
    preprocessor: &mut Preprocessor,
    clip: &LoadedClip,
    line: usize,
    positions: &[usize],
    out_dir: &Path,
    crop: &mut [u8],
) -> Result<usize, ClipError> {
    let size = preprocessor.input_size() as u32;
    let frame_positions = clip.positions();
    let mut written = 0;
    for &p in positions {
        let k = frame_positions[p];
        let frame = clip.frames[k].rgb();
        for stream in ["face", "context"] {
            let result = if stream == "face" {
                preprocessor.face_crop(frame, clip.face_boxes[k], crop)
            } else {
                preprocessor.context_crop(frame, clip.body_box, crop)
            };
            result.map_err(|source| ClipError::Preprocess {
                path: clip.frame_files[clip.frame_indices[k]].clone(),
                source,
            })?;
            let path = out_dir.join(format!("l{line:06}_p{p:02}_{stream}.png"));
            image::save_buffer_with_format(
                &path,
                crop,
                size,
                size,
                image::ExtendedColorType::Rgb8,
                image::ImageFormat::Png,
            )
            .map_err(|e| ClipError::WriteCrop {
                path: path.clone(),
                message: e.to_string(),
            })?;
            written += 1;
        }
    }
    Ok(written)
}

/// Writes the crops of the plan's clips.
pub fn run(plan: &mut CollectPlan, progress: &Progress) -> Result<CollectOutcome, Error> {
    let dims = plan.bundle.bundle.dims();
    if !(1..=dims.frames_per_clip).contains(&plan.per_clip) {
        return Err(Error::Option {
            option: "--per-clip",
            value: plan.per_clip.to_string(),
            reason: "it must be between 1 and the model's frames per clip",
        });
    }
    let existing = images_in(&plan.out_dir)?;
    if existing > 0 {
        return Err(Error::OutputNotEmpty {
            path: plan.out_dir.clone(),
            count: existing,
        });
    }
    std::fs::create_dir_all(&plan.out_dir).map_err(|source| Error::Output {
        path: plan.out_dir.clone(),
        source,
    })?;

    let positions = spread_positions(plan.per_clip, dims.frames_per_clip);
    let mut preprocessor = Preprocessor::new(dims.input_size, plan.bundle.bundle.face_margin());
    let mut crop = vec![0u8; preprocessor.crop_len()];
    let entries = plan.dataset.entries();
    for issue in plan.dataset.line_issues() {
        progress.warn(issue);
    }
    let mut issues = Vec::new();
    let (mut clips, mut written) = (0, 0);
    for entry in &entries {
        let result = plan
            .dataset
            .loader
            .load(&plan.dataset.list, entry)
            .and_then(|clip| {
                write_crops(
                    &mut preprocessor,
                    &clip,
                    entry.line,
                    &positions,
                    &plan.out_dir,
                    &mut crop,
                )
            });
        match result {
            Ok(n) => {
                clips += 1;
                written += n;
            }
            Err(error) => {
                let issue = plan.dataset.list.issue(entry, error);
                progress.warn(&issue);
                issues.push(issue);
            }
        }
        progress.inc();
    }
    progress.finish();
    let mut skipped: Vec<SkippedClip> = plan.dataset.line_issues().map(SkippedClip::from).collect();
    skipped.extend(issues.iter().map(SkippedClip::from));
    skipped.sort_by_key(|s| s.line);
    let report = CollectReport {
        generator: generator(),
        out_dir: plan.out_dir.display().to_string(),
        input_size: dims.input_size,
        positions,
        clips,
        crops_written: written,
        skipped,
    };
    Ok(CollectOutcome { report, issues })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_segment_centres() {
        assert_eq!(spread_positions(2, 16), [4, 12]);
        assert_eq!(spread_positions(1, 16), [8]);
        assert_eq!(spread_positions(4, 16), [2, 6, 10, 14]);
        assert_eq!(spread_positions(16, 16), (0..16).collect::<Vec<_>>());
        assert_eq!(spread_positions(40, 16).len(), 16);
    }
}
