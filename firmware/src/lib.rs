//! The caer-edge firmware library: CLIP-CAER from RGB frames with face boxes to the five class
//! probabilities, on the device's CPU.
//!
//! The pipeline, one module per step:
//!
//! 1. [`bundle`]: load and verify a model bundle (manifest, hashes, declared shapes).
//! 2. [`sampling`]: which `T` frames of a clip the model sees (bench path).
//! 3. [`preprocess`]: face and context crops exactly as the Pillow reference makes them, then
//!    `[3, S, S]` `f32` model input.
//! 4. [`backend`]: the image encoder and the temporal head behind [`backend::InferenceBackend`]
//!    (tract, fp32).
//! 5. [`window`]: each student's last `T` feature pairs (features, never pixels).
//! 6. [`classify`]: whole clips for the bench, sliding windows per track for the daemon;
//!    softmax, argmax, coarse label.
//!
//! Invariants: a loaded [`bundle::Bundle`] has been verified against its manifest; a backend
//! is immutable after loading and shared through `Arc`; per-student memory is bounded by the
//! streaming classifier's `max_tracks` and allocated once. Errors are typed per concern
//! ([`error`]); nothing here panics on bad input or files.
//!
//! ```no_run
//! use std::sync::Arc;
//! use caer::backend::{TractBackend, TractOptions};
//! use caer::bundle::Bundle;
//! use caer::classify::{StreamingClassifier, StreamingConfig, TrackInput};
//! use caer::preprocess::RgbFrame;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bundle = Bundle::load("/opt/caer/bundle")?;
//! let backend = Arc::new(TractBackend::load(&bundle, &TractOptions::default())?);
//! let config = StreamingConfig { face_margin: bundle.face_margin(), ..StreamingConfig::default() };
//! let mut classifier = StreamingClassifier::new(backend, &config)?;
//! let pixels = vec![0u8; 640 * 480 * 3];
//! let frame = RgbFrame::new(640, 480, &pixels)?;
//! let tracks = [TrackInput { track_id: 1, face_box: Some([300.0, 100.0, 360.0, 170.0]), context_box: None }];
//! for result in classifier.push_frame(frame, &tracks)? {
//!     println!("track {}: {:?}", result.track_id, result.probabilities);
//! }
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

pub mod aggregate;
pub mod backend;
pub mod board;
pub mod bundle;
pub mod calibration;
pub mod classify;
pub mod config;
pub mod crop;
pub mod cv_resize;
pub mod daemon;
pub mod decode;
pub mod detect;
pub mod error;
pub mod fleet;
pub mod frame;
pub mod outbox;
pub mod preprocess;
pub mod publish;
mod resample;
pub mod sampling;
pub mod schedule;
pub mod source;
pub mod track;
pub mod window;

pub use error::{BundleError, ClassifyError, InferenceError, PreprocessError};
