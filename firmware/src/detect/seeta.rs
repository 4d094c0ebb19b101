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

use super::{DetectError, Detection, FaceDetector};
use crate::frame::Frame;

/// The built-in SeetaFace frontal model.
static BUILTIN_MODEL: &[u8] = include_bytes!("../../models/seeta_fd_frontal_v1.0.bin");

/// The smallest face (and window) `rustface` handles.
pub const MIN_FACE_SIZE: u32 = 20;

/// Settings of the SeetaFace detector.
#[derive(Debug, Clone, PartialEq)]
pub struct SeetaConfig {
    /// Smallest face to find, in pixels (at least 20). Larger is faster.
    pub min_face_size: u32,
    /// Score a face needs (above 0). The `rustface` example uses 2.0; SeetaFace's default
    /// is 3.85 (fewer false positives, fewer faces).
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
    fn validate(&self) -> Result<(), DetectError> {
        let err = |field, value: String, reason| {
            Err(DetectError::Config {
                field,
                value,
                reason,
            })
        };
        if self.min_face_size < MIN_FACE_SIZE {
            return err(
                "min_face_size",
                self.min_face_size.to_string(),
                "it must be at least 20",
            );
        }
        if !(self.score_threshold > 0.0 && self.score_threshold.is_finite()) {
            return err(
                "score_threshold",
                self.score_threshold.to_string(),
                "it must be above 0",
            );
        }
        if !(0.5..=0.95).contains(&self.pyramid_scale_factor) {
            return err(
                "pyramid_scale_factor",
                self.pyramid_scale_factor.to_string(),
                "it must be between 0.5 and 0.95",
            );
        }
        if !(1..=16).contains(&self.window_step) {
            return err(
                "window_step",
                self.window_step.to_string(),
                "it must be between 1 and 16",
            );
        }
        Ok(())
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
        config.validate()?;
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
        config.validate()?;
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
    use crate::track::iou;

    fn load(name: &str) -> Frame {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/faces")
            .join(name);
        let image = image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Frame::new(image.to_rgb8(), 0)
    }

    /// Expected faces found (IoU >= `min_iou` with some detection) and unmatched detections.
    fn score(found: &[Detection], expected: &[[f32; 4]], min_iou: f32) -> (usize, usize) {
        let mut used = vec![false; found.len()];
        let mut hits = 0;
        for e in expected {
            let best = found
                .iter()
                .enumerate()
                .filter(|(i, _)| !used[*i])
                .map(|(i, d)| (i, iou(&d.bbox, e)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((i, _)) = best.filter(|(_, v)| *v >= min_iou) {
                used[i] = true;
                hits += 1;
            }
        }
        (hits, used.iter().filter(|u| !**u).count())
    }

    /// NASA portrait of Eileen Collins (public domain; scikit-image's `astronaut`), face
    /// annotated by hand from brows to chin, cheek to cheek.
    #[test]
    fn finds_the_astronaut() {
        let frame = load("astronaut.jpg");
        let mut detector = SeetaDetector::new(SeetaConfig::default()).expect("detector");
        let found = detector.detect(&frame).expect("detect");
        let (hits, extra) = score(&found, &[[180.0, 80.0, 272.0, 178.0]], 0.4);
        assert_eq!((hits, extra), (1, 0), "detections: {found:?}");
    }

    /// The 1927 Solvay conference (public domain; the `rustface` crate's sample image with
    /// its boxes removed): 29 frontal faces of 45 to 65 pixels. Expected boxes: every face
    /// of the photograph, checked by eye, with the extent the crate's published run drew.
    const SOLVAY_FACES: [[f32; 4]; 29] = [
        [238.0, 40.0, 294.0, 96.0],
        [1373.0, 41.0, 1422.0, 90.0],
        [376.0, 84.0, 423.0, 131.0],
        [613.0, 97.0, 665.0, 149.0],
        [902.0, 96.0, 947.0, 141.0],
        [1015.0, 107.0, 1066.0, 158.0],
        [1135.0, 95.0, 1188.0, 148.0],
        [1283.0, 98.0, 1327.0, 142.0],
        [1434.0, 92.0, 1493.0, 151.0],
        [463.0, 125.0, 516.0, 178.0],
        [761.0, 120.0, 818.0, 177.0],
        [46.0, 194.0, 104.0, 252.0],
        [210.0, 210.0, 265.0, 265.0],
        [379.0, 194.0, 437.0, 252.0],
        [566.0, 198.0, 624.0, 256.0],
        [766.0, 190.0, 823.0, 247.0],
        [921.0, 189.0, 975.0, 243.0],
        [1082.0, 200.0, 1136.0, 254.0],
        [1042.0, 249.0, 1105.0, 312.0],
        [1259.0, 207.0, 1321.0, 269.0],
        [1436.0, 219.0, 1480.0, 263.0],
        [107.0, 253.0, 162.0, 308.0],
        [283.0, 258.0, 345.0, 320.0],
        [463.0, 259.0, 518.0, 314.0],
        [662.0, 267.0, 717.0, 322.0],
        [865.0, 250.0, 927.0, 312.0],
        [1164.0, 252.0, 1221.0, 309.0],
        [1359.0, 260.0, 1412.0, 313.0],
        [1489.0, 280.0, 1542.0, 333.0],
    ];

    #[test]
    fn finds_the_faces_of_a_group_photo() {
        let frame = load("solvay.jpg");
        let mut detector = SeetaDetector::new(SeetaConfig::default()).expect("detector");
        let found = detector.detect(&frame).expect("detect");
        let (hits, extra) = score(&found, &SOLVAY_FACES, 0.5);
        eprintln!("solvay: {hits}/29 found, {extra} other detections");
        assert!(hits >= 27, "recall {hits}/29; detections: {found:?}");
        assert!(extra <= 1, "{extra} false positives; detections: {found:?}");
    }

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
                Err(DetectError::Config { .. })
            ));
        }
        let missing = Path::new("/nonexistent/model.bin");
        assert!(matches!(
            SeetaDetector::from_model_file(missing, SeetaConfig::default()),
            Err(DetectError::Model { .. })
        ));
    }
}
