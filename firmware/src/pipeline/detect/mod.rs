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
    /// The frames' known face boxes (generated source, annotated frame directories).
    #[default]
    Annotated,
    /// SeetaFace frontal detector on the CPU (built-in model); see `[detect.seeta]`.
    Seeta,
    /// The bundle's BlazeFace network on the model's backend, tiled; see `[detect.blaze]`.
    Blaze,
}

/// Face detection: the `[detect]` section of `caerd`'s configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    /// Which detector to run.
    pub kind: DetectorKind,
    /// Settings of the `seeta` detector.
    pub seeta: SeetaConfig,
    /// Settings of the `blaze` detector.
    pub blaze: BlazeConfig,
}

impl DetectConfig {
    /// Every setting out of range, keyed relative to the section (both detectors' settings
    /// are checked, whichever runs).
    pub fn issues(&self, v: &mut Issues) {
        v.section("blaze", |v| self.blaze.issues(v));
        v.section("seeta", |v| self.seeta.issues(v));
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
