//! The caer-edge firmware: a classroom camera's frames in, anonymous classroom-level
//! engagement figures out.
//!
//! Two worlds, one folder each:
//!
//! - [`pipeline`], the library: frames to class probabilities to classroom aggregates, in
//!   flow order `source -> detect -> track -> schedule -> crop + preprocess -> model (encode,
//!   window, classify) -> aggregate`. Pure computation over bounded memory; it reads only the
//!   files it is pointed at (a bundle, a frame directory) and writes none. The bench tool
//!   (`caer-calibrate`) uses it directly.
//! - [`daemon`], `caerd` around it: the validated configuration, the wiring of the stages, the
//!   capture and inference threads, the supervisor (safe mode, remote control, stats), fleet
//!   payloads, the on-disk outbox, the MQTT and stdout sinks, and the board glue (privacy LED
//!   and switch, thermal guard).
//!
//! Invariants: a loaded [`pipeline::model::bundle::Bundle`] has been verified against its
//! manifest; a backend is immutable after loading and shared through `Arc`; per-student memory
//! is bounded by the tracker's and the streaming classifier's `max_tracks` and allocated once;
//! only [`pipeline::aggregate`] output leaves the inference thread. Errors are typed per
//! concern; nothing panics on bad input or files.
//!
//! ```no_run
//! use std::sync::Arc;
//! use caer::pipeline::model::backend::{TractBackend, TractOptions};
//! use caer::pipeline::model::bundle::Bundle;
//! use caer::pipeline::model::classify::{StreamingClassifier, StreamingConfig, TrackInput};
//! use caer::pipeline::preprocess::RgbFrame;
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

pub mod daemon;
pub mod pipeline;

pub use pipeline::error::{BundleError, ClassifyError, InferenceError, PreprocessError};
