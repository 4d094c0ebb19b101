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
pub mod signature;
pub mod window;

use std::num::NonZeroUsize;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::pipeline::settings::Issues;
use backend::BackendChoice;

/// The model: the `[model]` section of `caerd`'s configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// The model bundle directory (`manifest.json` and ONNX files). Not needed by the
    /// `presence` policy, which runs no model.
    pub bundle: PathBuf,
    /// The inference backend: `auto` (the first of `tensorrt`, `cuda`, `ort-cpu`, `tract`
    /// that is compiled in, loads and passes the bundle's self-check), or one of `tensorrt`,
    /// `cuda`, `ort-cpu`, `ort-cpu-int8`, `tract` (safe mode if it fails). See
    /// [`backend::select`](mod@backend::select).
    pub backend: BackendChoice,
    /// Threads for inference, at most 256; none: every core.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<NonZeroUsize>,
    /// Optional `calibration.json` (from `caer-calibrate fit`) for this bundle: a
    /// temperature and per-class offsets applied to the logits. Its `version` is published
    /// in `status`. A file made for another bundle is refused (safe mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration: Option<PathBuf>,
    /// Ed25519 public keys (64 hex digits each) whose signature a bundle's `manifest.json`
    /// and the calibration file must carry (`<file>.sig`; several keys: rotation). Empty:
    /// no signature required. Local only: a remote change cannot touch it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trusted_keys: Vec<String>,
}

/// Default of `model.bundle`.
pub fn default_bundle() -> PathBuf {
    PathBuf::from("/opt/caer/bundle")
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            bundle: default_bundle(),
            backend: BackendChoice::default(),
            threads: None,
            calibration: None,
            trusted_keys: Vec::new(),
        }
    }
}

impl ModelConfig {
    /// Every setting out of range, keyed relative to the section (whether `bundle` is
    /// needed depends on the policy: the daemon's configuration checks it).
    pub fn issues(&self, v: &mut Issues) {
        if let Some(threads) = self.threads {
            v.at_most("threads", threads.get(), 256);
        }
        for key in &self.trusted_keys {
            if let Err(reason) = key.parse::<signature::PublicKey>() {
                v.push("trusted_keys", format!("{key:?} {reason}"));
            }
        }
    }

    /// `trusted_keys`, parsed (the ones that do not parse are refused by [`Self::issues`]).
    pub fn trusted_keys(&self) -> Vec<signature::PublicKey> {
        self.trusted_keys
            .iter()
            .filter_map(|k| k.parse().ok())
            .collect()
    }
}
