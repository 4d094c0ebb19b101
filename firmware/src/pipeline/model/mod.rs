//! The model: CLIP-CAER from crops to class probabilities.
//!
//! - [`bundle`]: load and verify a model bundle (manifest, hashes, declared shapes).
//! - [`backend`]: the image encoder, the temporal head and the face detector network behind
//!   [`backend::InferenceBackend`] (tract; ONNX Runtime CPU, CUDA, TensorRT), chosen with a
//!   start-up self-check.
//! - [`sampling`]: which `T` frames of a clip the model sees (bench path).
//! - [`window`]: each student's last `T` feature pairs (features, never pixels).
//! - [`classify`]: whole clips for the bench, sliding windows per track for the daemon.
//! - [`calibration`]: temperature and class offsets fitted on the bench.

pub mod backend;
pub mod bundle;
pub mod calibration;
pub mod classify;
pub mod sampling;
pub mod window;
