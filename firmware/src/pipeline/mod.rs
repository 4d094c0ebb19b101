//! The pipeline library: frames to class probabilities to classroom aggregates.
//!
//! One module per stage, in flow order:
//!
//! 1. [`source`]: frames behind [`source::FrameSource`] (generated classroom, frame directory,
//!    video file, V4L2 camera); [`decode`] turns image files and MJPEG into RGB.
//! 2. [`detect`]: face boxes behind [`detect::FaceDetector`] (BlazeFace on the model's
//!    backend, SeetaFace, known boxes).
//! 3. [`track`]: anonymous track ids across frames (SORT-style, bounded).
//! 4. [`schedule`]: which tracks are sampled in which frame, and the drop-oldest frame queue.
//! 5. [`crop`]: each sampled face's context box; [`preprocess`]: face and context crops
//!    exactly as the official loader makes them, then model input.
//! 6. [`model`]: the bundle, the inference backends, per-track feature windows, the
//!    classifiers and the calibration.
//! 7. [`aggregate`]: classroom figures of one report interval, with k-suppression.
//!
//! [`frame`] is the frame type every stage sees; [`error`] holds the errors of the model
//! stages. Each stage owns its settings (a serde section with defaults and an `issues()`
//! check that the daemon's configuration reuses) and states each range once.

pub mod aggregate;
pub mod crop;
pub mod decode;
pub mod detect;
pub mod error;
pub mod files;
pub mod frame;
pub mod model;
pub mod preprocess;
pub mod schedule;
pub mod settings;
pub mod source;
pub mod track;
