//! Context boxes: the region around a tracked face that the context stream sees.
//!
//! CLIP-CAER's context stream needs the student's surroundings (desk, phone, posture),
//! not the whole classroom. The context box is derived from the face box: `width_factor`
//! face widths wide, centred on the face, and `height_factor` face heights tall, starting
//! `above_factor` face heights above the face's top, so that most of it lies below the
//! face. It is clamped to the frame. The face crop itself is cut by
//! [`crate::pipeline::preprocess::Preprocessor`] from the face box; [`ContextBoxes::track_input`]
//! pairs both boxes for [`crate::pipeline::model::classify::StreamingClassifier`].
//!
//! Invariant: for a face box inside the frame, the context box contains it and lies
//! inside the frame.

use serde::{Deserialize, Serialize};

use crate::pipeline::model::classify::TrackInput;
use crate::pipeline::settings::{check, Issues, SettingsError};
use crate::pipeline::track::TrackedFace;

/// How a context box is derived from a face box: the `[context]` section of `caerd`'s
/// configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContextConfig {
    /// Context width in face widths, 1 to 20.
    pub width_factor: f32,
    /// Context height in face heights, 1 to 20.
    pub height_factor: f32,
    /// Face heights of context above the face's top, 0 to `height_factor - 1`.
    pub above_factor: f32,
}

impl Default for ContextConfig {
    fn default() -> Self {
        ContextConfig {
            width_factor: 3.0,
            height_factor: 4.0,
            above_factor: 0.5,
        }
    }
}

impl ContextConfig {
    /// Every setting out of range, keyed relative to the section.
    pub fn issues(&self, v: &mut Issues) {
        v.range("width_factor", self.width_factor, 1.0, 20.0);
        v.range("height_factor", self.height_factor, 1.0, 20.0);
        v.range(
            "above_factor",
            self.above_factor,
            0.0,
            (self.height_factor - 1.0).max(0.0),
        );
    }
}

/// Derives context boxes from face boxes with a checked [`ContextConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct ContextBoxes {
    config: ContextConfig,
}

impl ContextBoxes {
    /// Checks `config` ([`ContextConfig::issues`]).
    pub fn new(config: ContextConfig) -> Result<Self, SettingsError> {
        check(|v| config.issues(v))?;
        Ok(ContextBoxes { config })
    }

    /// The context box of `face` in a `width`x`height` frame, clamped to the frame.
    pub fn context_box(&self, face: [f32; 4], width: u32, height: u32) -> [f32; 4] {
        let c = &self.config;
        let (fw, fh) = (face[2] - face[0], face[3] - face[1]);
        let cx = (face[0] + face[2]) / 2.0;
        let half_w = c.width_factor * fw / 2.0;
        let top = face[1] - c.above_factor * fh;
        let (w, h) = (width as f32, height as f32);
        [
            (cx - half_w).clamp(0.0, w),
            top.clamp(0.0, h),
            (cx + half_w).clamp(0.0, w),
            (top + c.height_factor * fh).clamp(0.0, h),
        ]
    }

    /// The classifier's input for a tracked face: its id, face box and context box.
    pub fn track_input(&self, face: &TrackedFace, width: u32, height: u32) -> TrackInput {
        TrackInput {
            track_id: face.id,
            face_box: Some(face.bbox),
            context_box: Some(self.context_box(face.bbox, width, height)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxes() -> ContextBoxes {
        ContextBoxes::new(ContextConfig::default()).expect("default is valid")
    }

    #[test]
    fn context_is_wider_and_mostly_below_the_face() {
        // A 40x50 face centred at x=320, top at y=100.
        let ctx = boxes().context_box([300.0, 100.0, 340.0, 150.0], 640, 480);
        assert_eq!(ctx, [260.0, 75.0, 380.0, 275.0]);
    }

    #[test]
    fn context_is_clamped_to_the_frame_and_still_holds_the_face() {
        let face = [5.0, 10.0, 45.0, 60.0];
        let ctx = boxes().context_box(face, 100, 120);
        assert_eq!(ctx, [0.0, 0.0, 85.0, 120.0]);
        assert!(ctx[0] <= face[0] && ctx[1] <= face[1] && ctx[2] >= face[2] && ctx[3] >= face[3]);
    }

    #[test]
    fn track_input_pairs_the_face_and_its_context() {
        let face = TrackedFace {
            id: 9,
            bbox: [300.0, 100.0, 340.0, 150.0],
            score: 1.0,
            detection: 0,
        };
        let input = boxes().track_input(&face, 640, 480);
        assert_eq!(input.track_id, 9);
        assert_eq!(input.face_box, Some(face.bbox));
        assert_eq!(input.context_box, Some([260.0, 75.0, 380.0, 275.0]));
    }

    #[test]
    fn settings_that_would_cut_the_face_are_rejected() {
        let bad = |c: ContextConfig| ContextBoxes::new(c).err().map(|e| e.0[0].key.clone());
        let d = ContextConfig::default;
        assert_eq!(
            bad(ContextConfig {
                width_factor: 0.5,
                ..d()
            }),
            Some("width_factor".to_owned())
        );
        assert_eq!(
            bad(ContextConfig {
                height_factor: f32::INFINITY,
                ..d()
            }),
            Some("height_factor".to_owned())
        );
        assert_eq!(
            bad(ContextConfig {
                above_factor: 3.5,
                ..d()
            }),
            Some("above_factor".to_owned())
        );
        assert_eq!(
            bad(ContextConfig {
                above_factor: -0.1,
                ..d()
            }),
            Some("above_factor".to_owned())
        );
    }
}
