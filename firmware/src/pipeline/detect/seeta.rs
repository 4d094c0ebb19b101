//! The SeetaFace frontal face detector (funnel-structured cascade), through `rustface`.
//!
//! Pure Rust, CPU only. The model (`models/seeta_fd_frontal_v1.0.bin`, 1.2 MB, BSD-2,
//! shipped in the `rustface` crate; licence beside it) is built into the library, so a
//! fresh device needs no model file; [`SeetaDetector::from_model_file`] loads another one.
//!
//! Frames are converted to 8-bit luma (BT.601 weights, as OpenCV's `BGR2GRAY` that the
//! original SeetaFace used) in a reused buffer. `rustface`'s detector is not `Send` (it is
//! handed out as a `Box<dyn Detector>`), so a detector is built from the parsed model for
//! each frame: a copy of 1.2 MB of weights, far below the cost of one detection.
//!
//! Settings are checked once in [`SeetaDetector::new`]; `rustface` panics on values out of
//! its ranges, so nothing out of range ever reaches it, and frames smaller than the
//! minimum face size return no faces rather than reaching it.

use std::path::Path;

use rustface::{ImageData, Model};
use serde::{Deserialize, Serialize};

use super::{DetectError, Detection, FaceDetector};
use crate::pipeline::frame::Frame;
use crate::pipeline::settings::{check, Issues};

/// The built-in SeetaFace frontal model.
static BUILTIN_MODEL: &[u8] = include_bytes!("../../../models/seeta_fd_frontal_v1.0.bin");

/// The smallest face (and window) `rustface` handles.
pub const MIN_FACE_SIZE: u32 = 20;

/// Settings of the SeetaFace detector: `[detect.seeta]` of `caerd`'s configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeetaConfig {
    /// Smallest face to find, in pixels, at least 20 (larger is faster).
    pub min_face_size: u32,
    /// Score a face needs, above 0. The `rustface` example uses 2.0; SeetaFace's default is
    /// 3.85 (fewer false positives, fewer faces).
    pub score_threshold: f64,
    /// Ratio between image pyramid levels, 0.5 to 0.95 (higher: slower, finds more sizes).
    pub pyramid_scale_factor: f32,
    /// Sliding window step in pixels, 1 to 16 (lower: slower, finds more).
    pub window_step: u32,
}

impl Default for SeetaConfig {
    fn default() -> Self {
        SeetaConfig {
            min_face_size: 20,
            score_threshold: 2.0,
            pyramid_scale_factor: 0.8,
            window_step: 4,
        }
    }
}

impl SeetaConfig {
    /// Every setting out of range, keyed relative to the section.
    pub fn issues(&self, v: &mut Issues) {
        v.range("min_face_size", self.min_face_size, MIN_FACE_SIZE, 4096);
        if !(self.score_threshold > 0.0 && self.score_threshold.is_finite()) {
            v.push(
                "score_threshold",
                format!("is {}; it must be above 0", self.score_threshold),
            );
        }
        v.range("pyramid_scale_factor", self.pyramid_scale_factor, 0.5, 0.95);
        v.range("window_step", self.window_step, 1, 16);
    }
}

/// SeetaFace frontal face detection on the CPU.
pub struct SeetaDetector {
    model: Model,
    config: SeetaConfig,
    /// Luma of the last frame, reused.
    gray: Vec<u8>,
}

impl std::fmt::Debug for SeetaDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeetaDetector")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SeetaDetector {
    /// The detector with the built-in model.
    pub fn new(config: SeetaConfig) -> Result<Self, DetectError> {
        check(|v| config.issues(v)).map_err(DetectError::Settings)?;
        let model = rustface::read_model(BUILTIN_MODEL).map_err(|source| DetectError::Model {
            path: "<built-in seeta_fd_frontal_v1.0.bin>".into(),
            source,
        })?;
        Ok(SeetaDetector {
            model,
            config,
            gray: Vec::new(),
        })
    }

    /// The detector with a SeetaFace detection model read from `path`.
    pub fn from_model_file(path: &Path, config: SeetaConfig) -> Result<Self, DetectError> {
        check(|v| config.issues(v)).map_err(DetectError::Settings)?;
        let model_err = |source| DetectError::Model {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(model_err)?;
        let model = rustface::read_model(std::io::BufReader::new(file)).map_err(model_err)?;
        Ok(SeetaDetector {
            model,
            config,
            gray: Vec::new(),
        })
    }
}

/// BT.601 luma of an RGB8 buffer into `out` (resized to one byte per pixel).
fn luma(rgb: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend(rgb.chunks_exact(3).map(|p| {
        ((77 * u32::from(p[0]) + 150 * u32::from(p[1]) + 29 * u32::from(p[2]) + 128) >> 8) as u8
    }));
}

impl FaceDetector for SeetaDetector {
    fn detect(&mut self, frame: &Frame) -> Result<Vec<Detection>, DetectError> {
        let (width, height) = (frame.width(), frame.height());
        if width.min(height) < self.config.min_face_size {
            return Ok(Vec::new());
        }
        luma(frame.image.as_raw(), &mut self.gray);
        let mut detector = rustface::create_detector_with_model(self.model.clone());
        detector.set_min_face_size(self.config.min_face_size);
        detector.set_score_thresh(self.config.score_threshold);
        detector.set_pyramid_scale_factor(self.config.pyramid_scale_factor);
        detector.set_slide_window_step(self.config.window_step, self.config.window_step);
        let faces = detector.detect(&ImageData::new(&self.gray, width, height));
        let (w, h) = (width as f32, height as f32);
        Ok(faces
            .iter()
            .map(|face| {
                let b = face.bbox();
                let (x, y) = (b.x() as f32, b.y() as f32);
                Detection {
                    bbox: [
                        x.clamp(0.0, w),
                        y.clamp(0.0, h),
                        (x + b.width() as f32).clamp(0.0, w),
                        (y + b.height() as f32).clamp(0.0, h),
                    ],
                    score: face.score() as f32,
                }
            })
            .filter(|d| d.bbox[2] > d.bbox[0] && d.bbox[3] > d.bbox[1])
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nothing_in_a_blank_or_tiny_frame() {
        let mut detector = SeetaDetector::new(SeetaConfig::default()).expect("detector");
        let blank = Frame::new(
            image::RgbImage::from_pixel(200, 150, image::Rgb([90, 90, 90])),
            0,
        );
        assert!(detector.detect(&blank).expect("detect").is_empty());
        let tiny = Frame::new(image::RgbImage::new(19, 300), 0);
        assert!(detector.detect(&tiny).expect("detect").is_empty());
        let empty = Frame::new(image::RgbImage::new(0, 0), 0);
        assert!(detector.detect(&empty).expect("detect").is_empty());
    }

    #[test]
    fn settings_out_of_range_are_refused_before_reaching_rustface() {
        for config in [
            SeetaConfig {
                min_face_size: 19,
                ..SeetaConfig::default()
            },
            SeetaConfig {
                score_threshold: 0.0,
                ..SeetaConfig::default()
            },
            SeetaConfig {
                pyramid_scale_factor: 0.99,
                ..SeetaConfig::default()
            },
            SeetaConfig {
                window_step: 0,
                ..SeetaConfig::default()
            },
        ] {
            assert!(matches!(
                SeetaDetector::new(config),
                Err(DetectError::Settings(_))
            ));
        }
        let missing = Path::new("/nonexistent/model.bin");
        assert!(matches!(
            SeetaDetector::from_model_file(missing, SeetaConfig::default()),
            Err(DetectError::Model { .. })
        ));
    }
}
