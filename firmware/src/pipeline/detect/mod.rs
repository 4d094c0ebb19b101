//! Face detection: from a [`Frame`] to face boxes.
//!
//! A [`FaceDetector`] is stateless across frames as far as the pipeline is concerned (the
//! tracker adds identity); it may keep scratch memory. Implementations:
//!
//! - [`AnnotatedDetector`]: returns the frame's known boxes (bench clips, the generated
//!   classroom); it finds nothing by itself.
//! - [`blaze::BlazeDetector`]: BlazeFace short-range (MediaPipe, Apache-2.0), the network
//!   that ships in the model bundle, tiled over the frame and run on the model's inference
//!   backend. The default: measured faster than SeetaFace at the same recall (README).
//! - [`seeta::SeetaDetector`]: the SeetaFace frontal face detector (funnel-structured
//!   cascade, pure Rust via the `rustface` crate, BSD-2 model built into the library).
//!
//! Boxes are `[left, top, right, bottom]` in frame pixels; scores are detector-specific
//! (annotations score 1).

use serde::{Deserialize, Serialize};

use crate::pipeline::frame::Frame;
use crate::pipeline::settings::Issues;

pub mod blaze;
pub mod evaluate;
pub mod seeta;

pub use blaze::{BlazeConfig, BlazeDetector};
pub use seeta::{SeetaConfig, SeetaDetector};

/// Closed choice of face detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    /// `annotated` where the source knows its faces' boxes (the generated classroom,
    /// annotated frame directories), `blaze` for camera and video frames.
    #[default]
    Auto,
    /// The frames' known face boxes (generated source, annotated frame directories).
    Annotated,
    /// SeetaFace frontal detector on the CPU (built-in model); see `[detect.seeta]`.
    Seeta,
    /// The bundle's BlazeFace network on the model's backend, tiled; see `[detect.blaze]`.
    Blaze,
}

/// Face detection: the `[detect]` section of `caerd`'s configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    /// Which detector to run.
    pub kind: DetectorKind,
    /// Every how many frames the detector looks at the whole frame, 1 to 100; in between it
    /// looks only around the tracked faces ([`FaceDetector::detect_near`]), so a face that
    /// walks in is found at the next full look. 1 looks at the whole frame every time.
    pub full_every: u32,
    /// Settings of the `seeta` detector.
    pub seeta: SeetaConfig,
    /// Settings of the `blaze` detector.
    pub blaze: BlazeConfig,
}

/// Most frames between two full looks ([`DetectConfig::full_every`]).
pub const MAX_FULL_EVERY: u32 = 100;

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            kind: DetectorKind::default(),
            full_every: 4,
            seeta: SeetaConfig::default(),
            blaze: BlazeConfig::default(),
        }
    }
}

impl DetectConfig {
    /// The detector that runs on a source: `auto` is `annotated` where the source knows
    /// its faces' boxes and `blaze` everywhere else.
    pub fn kind_for(&self, source_has_annotations: bool) -> DetectorKind {
        match self.kind {
            DetectorKind::Auto if source_has_annotations => DetectorKind::Annotated,
            DetectorKind::Auto => DetectorKind::Blaze,
            other => other,
        }
    }

    /// Every setting out of range, keyed relative to the section (both detectors' settings
    /// are checked, whichever runs).
    pub fn issues(&self, v: &mut Issues) {
        if !(1..=MAX_FULL_EVERY).contains(&self.full_every) {
            v.push(
                "full_every",
                format!(
                    "is {}; it must be from 1 to {MAX_FULL_EVERY}",
                    self.full_every
                ),
            );
        }
        v.section("blaze", |v| self.blaze.issues(v));
        v.section("seeta", |v| self.seeta.issues(v));
    }
}

/// Which frames the detector looks at whole ([`DetectConfig::full_every`]).
#[derive(Debug, Clone)]
pub struct LookSchedule {
    every: u32,
    since_full: u32,
}

impl LookSchedule {
    /// A full look every `every` frames (at least 1), starting with the next frame.
    pub fn new(every: u32) -> Self {
        let every = every.max(1);
        LookSchedule {
            every,
            since_full: every - 1,
        }
    }

    /// Whether the next frame gets a full look; with nothing to look near (`regions` is
    /// 0) it always does.
    pub fn full_look(&mut self, regions: usize) -> bool {
        self.since_full += 1;
        if self.since_full >= self.every || regions == 0 {
            self.since_full = 0;
            true
        } else {
            false
        }
    }

    /// The next frame gets a full look (after a pause).
    pub fn restart(&mut self) {
        self.since_full = self.every - 1;
    }
}

/// One detected face.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// `[left, top, right, bottom]` in frame pixels.
    pub bbox: [f32; 4],
    /// Confidence; higher is surer. Its scale depends on the detector.
    pub score: f32,
}

/// Finds the faces in a frame.
pub trait FaceDetector: Send {
    /// The faces in `frame`, in no particular order.
    fn detect(&mut self, frame: &Frame) -> Result<Vec<Detection>, DetectError>;

    /// The faces near `regions` (boxes where faces are expected: the tracker's
    /// predictions), the cheap look between full-frame detections ([`DetectConfig::full_every`]).
    /// A detector that cannot look at parts of a frame looks at all of it.
    fn detect_near(
        &mut self,
        frame: &Frame,
        regions: &[[f32; 4]],
    ) -> Result<Vec<Detection>, DetectError> {
        let _ = regions;
        self.detect(frame)
    }
}

/// A face detector that cannot be built or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DetectError {
    /// [`AnnotatedDetector`] got a frame without annotations (a camera frame).
    #[error("frame {sequence} has no face annotations; use a real detector for camera frames")]
    MissingAnnotations {
        /// The frame's sequence number.
        sequence: u64,
    },
    /// A model file could not be read or parsed.
    #[error("cannot load face detector model {}: {source}", path.display())]
    Model {
        /// The model file.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The detector network failed to run.
    #[error("face detector network: {0}")]
    Network(#[source] crate::pipeline::error::InferenceError),
    /// Detector settings out of range.
    #[error("face detector settings: {0}")]
    Settings(#[source] crate::pipeline::settings::SettingsError),
}

/// Returns the frame's known face boxes, each with score 1.
#[derive(Debug, Clone, Copy, Default)]
pub struct AnnotatedDetector;

impl FaceDetector for AnnotatedDetector {
    fn detect(&mut self, frame: &Frame) -> Result<Vec<Detection>, DetectError> {
        let boxes = frame
            .annotations
            .as_ref()
            .ok_or(DetectError::MissingAnnotations {
                sequence: frame.sequence,
            })?;
        Ok(boxes
            .iter()
            .map(|&bbox| Detection { bbox, score: 1.0 })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_looks_come_every_n_frames_and_whenever_nothing_is_tracked() {
        let mut s = LookSchedule::new(3);
        let looks: Vec<bool> = [5, 5, 5, 5, 5, 0, 5, 5, 5]
            .iter()
            .map(|&r| s.full_look(r))
            .collect();
        assert_eq!(
            looks,
            [true, false, false, true, false, true, false, false, true]
        );
        s.restart();
        assert!(s.full_look(5));
        let mut every = LookSchedule::new(1);
        assert!((0..5).all(|_| every.full_look(3)));
        let mut zero = LookSchedule::new(0);
        assert!(zero.full_look(3) && zero.full_look(3));
    }

    #[test]
    fn auto_uses_the_sources_boxes_when_it_has_them_and_blaze_otherwise() {
        let auto = DetectConfig::default();
        assert_eq!(auto.kind, DetectorKind::Auto);
        assert_eq!(auto.kind_for(true), DetectorKind::Annotated);
        assert_eq!(auto.kind_for(false), DetectorKind::Blaze);
        let seeta = DetectConfig {
            kind: DetectorKind::Seeta,
            ..DetectConfig::default()
        };
        assert_eq!(seeta.kind_for(true), DetectorKind::Seeta);
        assert_eq!(seeta.kind_for(false), DetectorKind::Seeta);
    }

    #[test]
    fn annotated_detector_returns_the_annotations_and_refuses_camera_frames() {
        let mut frame = Frame::new(image::RgbImage::new(10, 10), 3);
        let mut detector = AnnotatedDetector;
        assert!(matches!(
            detector.detect(&frame),
            Err(DetectError::MissingAnnotations { sequence: 3 })
        ));
        frame.annotations = Some(vec![[1.0, 2.0, 5.0, 6.0]]);
        let found = detector.detect(&frame).expect("annotated");
        assert_eq!(
            found,
            vec![Detection {
                bbox: [1.0, 2.0, 5.0, 6.0],
                score: 1.0
            }]
        );
    }
}
