//! Inference backends: the two models of a bundle behind one small trait.
//!
//! A backend is built once at start-up from a verified [`Bundle`]
//! (optimised for this machine then) and is immutable afterwards: it is `Send + Sync`, so one
//! instance is shared by every worker through an `Arc`. Each call takes and returns flat
//! row-major `f32` buffers, so callers reuse their memory and no runtime type leaks out.
//!
//! - [`tract`]: pure-Rust CPU backend, fp32 only; runs everywhere.
//! - `ort` (cargo feature `ort`; `cuda`, `tensorrt` add GPU providers): ONNX Runtime.
//! - [`select`](mod@select): the configured or `auto` choice, with a start-up self-check;
//!   [`tensorrt`]: TensorRT settings and engine cache layout.

#[cfg(feature = "ort")]
pub mod ort;
pub mod select;
pub mod tensorrt;
pub mod tract;

use std::sync::Arc;

use crate::pipeline::error::InferenceError;
use crate::pipeline::model::bundle::{Bundle, ModelDims};

pub use self::select::{select, BackendChoice, BackendError, SelectError, SelectOptions, Selected};
pub use self::tract::{TractBackend, TractOptions};

/// Where ONNX Runtime would keep its cache: a path that can never be created.
pub const NO_RUNTIME_CACHE: &str = "/dev/null/caer-no-runtime-cache";

/// Keeps ONNX Runtime from writing outside the state directory. Its Linux builds (1.32 at
/// least) persist a telemetry device id under `$XDG_CACHE_HOME/Microsoft/DeveloperTools/`
/// when the runtime starts, even with telemetry events disabled (found by the strace privacy
/// test). With the cache pointed at [`NO_RUNTIME_CACHE`] that write fails and the runtime
/// keeps an in-memory id. Call first thing in `main`, before any thread starts: it changes
/// the process environment. Does nothing without the `ort` feature.
pub fn isolate_runtime_cache() {
    if cfg!(feature = "ort") {
        std::env::set_var("XDG_CACHE_HOME", NO_RUNTIME_CACHE);
    }
}

/// Runs the image encoder and the temporal head of one bundle.
pub trait InferenceBackend: Send + Sync {
    /// A short name for logs and errors, e.g. `tract`.
    fn name(&self) -> &'static str;

    /// The model's dimensions (`S`, `T`, `D`, `C`).
    fn dims(&self) -> ModelDims;

    /// Encodes `batch` images: `pixels` is `[batch, 3, S, S]` in `[0, 1]` and `embeddings`
    /// receives `[batch, D]`.
    fn encode_images(
        &self,
        pixels: &[f32],
        batch: usize,
        embeddings: &mut [f32],
    ) -> Result<(), InferenceError>;

    /// Runs the temporal head on `batch` windows: `face` and `context` are `[batch, T, D]` and
    /// `logits` receives `[batch, C]`.
    fn run_head(
        &self,
        face: &[f32],
        context: &[f32],
        batch: usize,
        logits: &mut [f32],
    ) -> Result<(), InferenceError>;

    /// Loads the bundle's face detector network on this backend's runtime (the same
    /// threads, and the GPU where the encoder runs on one). Slow-ish: call once.
    fn load_face_detector(
        &self,
        bundle: &Bundle,
    ) -> Result<Arc<dyn FaceDetectorNetwork>, BackendError>;
}

/// Runs a bundle's face detector network ([`crate::pipeline::detect::blaze`]) on a batch of tiles.
pub trait FaceDetectorNetwork: Send + Sync + std::fmt::Debug {
    /// The backend's name, e.g. `tract`.
    fn name(&self) -> &'static str;

    /// Most tiles per [`run`](Self::run) call, and the batch this runtime runs best: tract
    /// takes one tile at a time (batching made it slower per tile), ONNX Runtime eight
    /// (about twice as fast per tile on 16 cores).
    fn max_batch(&self) -> usize;

    /// `images` is `[batch, 3, 128, 128]` in `[-1, 1]` (`batch` from 1 to
    /// [`max_batch`](Self::max_batch)); `regressors` receives `[batch, 896, 16]` and `logits`
    /// `[batch, 896]` (scores before the sigmoid).
    fn run(
        &self,
        images: &[f32],
        batch: usize,
        regressors: &mut [f32],
        logits: &mut [f32],
    ) -> Result<(), InferenceError>;
}

/// Checks the buffers of one [`FaceDetectorNetwork::run`] call of `batch` tiles.
pub(crate) fn check_detector_buffers(
    network: &dyn FaceDetectorNetwork,
    images: &[f32],
    batch: usize,
    regressors: &[f32],
    logits: &[f32],
) -> Result<(), InferenceError> {
    use crate::pipeline::detect::blaze::{INPUT_SIZE, NUM_ANCHORS, REGRESSOR_LEN};
    let max = network.max_batch();
    if !(1..=max).contains(&batch) {
        return Err(InferenceError::BatchSize {
            what: "face detector",
            batch,
            max,
        });
    }
    check_len(
        "detector image",
        images.len(),
        batch,
        3 * INPUT_SIZE * INPUT_SIZE,
    )?;
    check_len(
        "detector regressor",
        regressors.len(),
        batch,
        NUM_ANCHORS * REGRESSOR_LEN,
    )?;
    check_len("detector logit", logits.len(), batch, NUM_ANCHORS)
}

/// Checks the buffers of one [`InferenceBackend::encode_images`] call.
pub(crate) fn check_encoder_buffers(
    dims: ModelDims,
    pixels: &[f32],
    batch: usize,
    embeddings: &[f32],
) -> Result<(), InferenceError> {
    check_len("pixel", pixels.len(), batch, dims.image_len())?;
    check_len("embedding", embeddings.len(), batch, dims.embed_dim)
}

/// Checks the buffers of one [`InferenceBackend::run_head`] call.
pub(crate) fn check_head_buffers(
    dims: ModelDims,
    face: &[f32],
    context: &[f32],
    batch: usize,
    logits: &[f32],
) -> Result<(), InferenceError> {
    check_len("face feature", face.len(), batch, dims.sequence_len())?;
    check_len("context feature", context.len(), batch, dims.sequence_len())?;
    check_len("logit", logits.len(), batch, dims.num_classes)
}

/// Checks that a buffer has the length that `batch` items of `per_item` floats need.
pub(crate) fn check_len(
    what: &'static str,
    buffer: usize,
    batch: usize,
    per_item: usize,
) -> Result<(), InferenceError> {
    let expected = batch.saturating_mul(per_item);
    if buffer == expected {
        Ok(())
    } else {
        Err(InferenceError::BufferLength {
            what,
            batch,
            expected,
            found: buffer,
        })
    }
}
