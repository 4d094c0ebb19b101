//! Choosing the inference backend at start-up, and the self-check every choice must pass.
//!
//! [`select`] builds the backend named by a [`BackendChoice`]. `auto` tries TensorRT, then
//! CUDA, then ONNX Runtime on the CPU, then tract, and takes the first that is compiled in,
//! loads, and passes the self-check; every skipped candidate is kept with its reason in
//! [`Selected::attempts`]. An explicit choice that is not compiled in, fails to load or fails
//! the self-check is an error: the daemon never silently runs something else than configured.
//!
//! **Self-check.** The manifest's `self_check` block holds the PyTorch embedding of a fixed
//! input, pixel `[0, c, y, x] = ((c * S + y) * S + x) % 251 / 250` ([`self_check_input`]).
//! The backend's image encoder must reproduce it: max abs diff <= [`FP32_MAX_ABS_DIFF`] for
//! fp32 backends, cosine similarity >= [`REDUCED_MIN_COSINE`] for reduced precision (int8 and
//! TensorRT's fp16). A bundle without the block passes with the reason saying it was not
//! verified.

use std::fmt;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::pipeline::error::{BundleError, InferenceError};
use crate::pipeline::model::backend::tensorrt::TensorRtOptions;
use crate::pipeline::model::backend::{InferenceBackend, TractBackend, TractOptions};
use crate::pipeline::model::bundle::Bundle;

#[cfg(feature = "ort")]
use crate::pipeline::model::backend::ort::{OrtBackend, OrtError, OrtMode, OrtOptions};

/// Self-check limit of fp32 backends: max abs difference from the reference embedding.
pub const FP32_MAX_ABS_DIFF: f32 = 1e-3;

/// Self-check limit of reduced-precision backends: cosine similarity with the reference.
pub const REDUCED_MIN_COSINE: f32 = 0.99;

/// Which inference backend to run (configuration key `model.backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum BackendChoice {
    /// The first of TensorRT, CUDA, ONNX Runtime CPU and tract that is compiled in, loads and
    /// passes the self-check.
    #[default]
    #[serde(rename = "auto")]
    Auto,
    /// ONNX Runtime with TensorRT (cargo feature `tensorrt`), fp16 or int8.
    #[serde(rename = "tensorrt")]
    TensorRt,
    /// ONNX Runtime with CUDA, fp32 (cargo feature `cuda`).
    #[serde(rename = "cuda")]
    Cuda,
    /// ONNX Runtime on the CPU, fp32 (cargo feature `ort`).
    #[serde(rename = "ort-cpu")]
    OrtCpu,
    /// ONNX Runtime on the CPU, dynamic-int8 image encoder (cargo feature `ort`).
    #[serde(rename = "ort-cpu-int8")]
    OrtCpuInt8,
    /// tract on the CPU, fp32 (always compiled in).
    #[serde(rename = "tract")]
    Tract,
}

/// The order `auto` tries backends in.
pub const AUTO_ORDER: [BackendChoice; 4] = [
    BackendChoice::TensorRt,
    BackendChoice::Cuda,
    BackendChoice::OrtCpu,
    BackendChoice::Tract,
];

impl BackendChoice {
    /// Every choice.
    pub const ALL: [BackendChoice; 6] = [
        BackendChoice::Auto,
        BackendChoice::TensorRt,
        BackendChoice::Cuda,
        BackendChoice::OrtCpu,
        BackendChoice::OrtCpuInt8,
        BackendChoice::Tract,
    ];

    /// The name used in configuration, logs and status payloads.
    pub const fn as_str(self) -> &'static str {
        match self {
            BackendChoice::Auto => "auto",
            BackendChoice::TensorRt => "tensorrt",
            BackendChoice::Cuda => "cuda",
            BackendChoice::OrtCpu => "ort-cpu",
            BackendChoice::OrtCpuInt8 => "ort-cpu-int8",
            BackendChoice::Tract => "tract",
        }
    }

    /// The cargo feature this backend needs, if it is not always there.
    pub const fn feature(self) -> Option<&'static str> {
        match self {
            BackendChoice::TensorRt => Some("tensorrt"),
            BackendChoice::Cuda => Some("cuda"),
            BackendChoice::OrtCpu | BackendChoice::OrtCpuInt8 => Some("ort"),
            BackendChoice::Auto | BackendChoice::Tract => None,
        }
    }

    /// Whether this binary was built with the backend.
    pub const fn is_compiled_in(self) -> bool {
        match self {
            BackendChoice::TensorRt => cfg!(feature = "tensorrt"),
            BackendChoice::Cuda => cfg!(feature = "cuda"),
            BackendChoice::OrtCpu | BackendChoice::OrtCpuInt8 => cfg!(feature = "ort"),
            BackendChoice::Auto | BackendChoice::Tract => true,
        }
    }
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown backend name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown backend {0:?}; expected one of auto, tensorrt, cuda, ort-cpu, ort-cpu-int8, tract"
)]
pub struct UnknownBackend(pub String);

impl FromStr for BackendChoice {
    type Err = UnknownBackend;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BackendChoice::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownBackend(s.to_owned()))
    }
}

/// Settings shared by the candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectOptions {
    /// Inference threads (tract's pool, ONNX Runtime's intra-op threads); every core by
    /// default.
    pub threads: NonZeroUsize,
    /// The ONNX Runtime library; none: `$ORT_DYLIB_PATH`, else `libonnxruntime.so`.
    pub ort_library: Option<PathBuf>,
    /// TensorRT's precision, shape profile and engine cache root.
    pub tensorrt: TensorRtOptions,
}

impl Default for SelectOptions {
    fn default() -> Self {
        SelectOptions {
            threads: std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN),
            ort_library: None,
            tensorrt: TensorRtOptions::default(),
        }
    }
}

/// The backend chosen, and why.
pub struct Selected {
    /// The loaded backend, checked.
    pub backend: Arc<dyn InferenceBackend>,
    /// The choice that was taken (never `auto`), e.g. `ort-cpu`.
    pub name: &'static str,
    /// Why, and what the self-check measured, e.g. `auto: ort-cpu passed the self-check (max
    /// abs diff 2.1e-6 <= 1e-3); skipped tensorrt: not compiled in (cargo feature tensorrt)`.
    pub reason: String,
    /// The candidates tried before it, each with why it was skipped (`auto` only).
    pub attempts: Vec<(BackendChoice, BackendError)>,
}

impl fmt::Debug for Selected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Selected")
            .field("backend", &self.backend.name())
            .field("name", &self.name)
            .field("reason", &self.reason)
            .field("attempts", &self.attempts)
            .finish()
    }
}

/// What the self-check measured and the limit it met.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SelfCheckMeasure {
    /// fp32: largest absolute difference from the reference (NaN if the output was not finite).
    MaxAbsDiff {
        /// Measured.
        value: f32,
        /// Largest accepted.
        limit: f32,
    },
    /// Reduced precision: cosine similarity with the reference (NaN if undefined).
    Cosine {
        /// Measured.
        value: f32,
        /// Smallest accepted.
        min: f32,
    },
}

impl SelfCheckMeasure {
    /// Whether the measure is within its limit (NaN never is).
    pub fn passes(self) -> bool {
        match self {
            SelfCheckMeasure::MaxAbsDiff { value, limit } => value <= limit,
            SelfCheckMeasure::Cosine { value, min } => value >= min,
        }
    }
}

impl fmt::Display for SelfCheckMeasure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (op, ok) = if self.passes() {
            ("<=", ">=")
        } else {
            (">", "<")
        };
        match *self {
            SelfCheckMeasure::MaxAbsDiff { value, limit } => {
                write!(f, "max abs diff {value:.2e} {op} {limit:e}")
            }
            SelfCheckMeasure::Cosine { value, min } => write!(f, "cosine {value:.5} {ok} {min}"),
        }
    }
}

/// Why one backend could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The binary was built without the backend.
    #[error("not compiled in (cargo feature {feature})")]
    NotCompiled {
        /// The cargo feature of `caer-firmware` that adds it.
        feature: &'static str,
    },
    /// tract could not load the bundle's models.
    #[error(transparent)]
    Tract(BundleError),
    /// ONNX Runtime, a provider or a model could not be loaded.
    #[cfg(feature = "ort")]
    #[error(transparent)]
    Ort(#[from] OrtError),
    /// The self-check input could not be run.
    #[error("self-check could not run: {0}")]
    SelfCheckRun(#[source] InferenceError),
    /// The manifest's reference embedding does not have `embed_dim` values.
    #[error("manifest self_check.embedding has {found} values; embed_dim is {expected}")]
    SelfCheckLength {
        /// Values in the manifest.
        found: usize,
        /// `D`.
        expected: usize,
    },
    /// The backend's embedding of the self-check input is not the reference one.
    #[error("self-check failed: {0} against the manifest's self_check.embedding")]
    SelfCheckFailed(SelfCheckMeasure),
}

/// Why no backend could be selected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SelectError {
    /// The configured backend is unusable.
    #[error("backend {choice}: {source}")]
    Failed {
        /// The configured choice.
        choice: BackendChoice,
        /// Why.
        #[source]
        source: BackendError,
    },
    /// `auto` found no usable backend.
    #[error("no usable backend: {}", attempts_text(.attempts))]
    NoneUsable {
        /// Every candidate, in order, with why it was skipped.
        attempts: Vec<(BackendChoice, BackendError)>,
    },
}

fn attempts_text(attempts: &[(BackendChoice, BackendError)]) -> String {
    let parts: Vec<String> = attempts.iter().map(|(c, e)| format!("{c}: {e}")).collect();
    parts.join("; ")
}

/// Builds and self-checks the backend `choice` names (see the module docs).
pub fn select(
    choice: BackendChoice,
    bundle: &Bundle,
    options: &SelectOptions,
) -> Result<Selected, SelectError> {
    if choice != BackendChoice::Auto {
        let (backend, check) = load_checked(choice, bundle, options)
            .map_err(|source| SelectError::Failed { choice, source })?;
        let reason = format!("configured; {check}");
        tracing::info!(backend = backend.name(), %reason, "inference backend selected");
        return Ok(Selected {
            backend,
            name: choice.as_str(),
            reason,
            attempts: Vec::new(),
        });
    }
    let mut attempts = Vec::new();
    for candidate in AUTO_ORDER {
        match load_checked(candidate, bundle, options) {
            Ok((backend, check)) => {
                let mut reason = format!("auto: {check}");
                if !attempts.is_empty() {
                    reason.push_str("; skipped ");
                    reason.push_str(&attempts_text(&attempts));
                }
                tracing::info!(backend = backend.name(), %reason, "inference backend selected");
                return Ok(Selected {
                    backend,
                    name: candidate.as_str(),
                    reason,
                    attempts,
                });
            }
            Err(error) => {
                if matches!(error, BackendError::NotCompiled { .. }) {
                    tracing::debug!(backend = %candidate, %error, "auto: backend skipped");
                } else {
                    tracing::warn!(backend = %candidate, %error, "auto: backend skipped");
                }
                attempts.push((candidate, error));
            }
        }
    }
    Err(SelectError::NoneUsable { attempts })
}

/// Loads one backend and runs the self-check; returns the check's outcome as text.
fn load_checked(
    choice: BackendChoice,
    bundle: &Bundle,
    options: &SelectOptions,
) -> Result<(Arc<dyn InferenceBackend>, String), BackendError> {
    if let Some(feature) = choice.feature().filter(|_| !choice.is_compiled_in()) {
        return Err(BackendError::NotCompiled { feature });
    }
    let backend = load(choice, bundle, options)?;
    let reduced = matches!(choice, BackendChoice::OrtCpuInt8 | BackendChoice::TensorRt);
    let check = match self_check(backend.as_ref(), bundle, reduced)? {
        Some(measure) => format!("{} passed the self-check ({measure})", backend.name()),
        None => format!(
            "{}: the manifest has no self_check, not verified",
            backend.name()
        ),
    };
    Ok((backend, check))
}

/// Loads one compiled-in backend (never `auto`).
fn load(
    choice: BackendChoice,
    bundle: &Bundle,
    options: &SelectOptions,
) -> Result<Arc<dyn InferenceBackend>, BackendError> {
    let tract = || -> Result<Arc<dyn InferenceBackend>, BackendError> {
        let tract_options = TractOptions {
            threads: options.threads,
        };
        Ok(Arc::new(
            TractBackend::load(bundle, &tract_options).map_err(BackendError::Tract)?,
        ))
    };
    #[cfg(feature = "ort")]
    let ort = |mode: OrtMode| -> Result<Arc<dyn InferenceBackend>, BackendError> {
        let ort_options = OrtOptions {
            library: options.ort_library.clone(),
            threads: options.threads,
            mode,
        };
        Ok(Arc::new(OrtBackend::load(bundle, &ort_options)?))
    };
    match choice {
        BackendChoice::Auto | BackendChoice::Tract => tract(),
        #[cfg(feature = "ort")]
        BackendChoice::OrtCpu => ort(OrtMode::Cpu),
        #[cfg(feature = "ort")]
        BackendChoice::OrtCpuInt8 => ort(OrtMode::CpuInt8),
        #[cfg(feature = "cuda")]
        BackendChoice::Cuda => ort(OrtMode::Cuda),
        #[cfg(feature = "tensorrt")]
        BackendChoice::TensorRt => ort(OrtMode::TensorRt(options.tensorrt.clone())),
        #[allow(unreachable_patterns)]
        other => Err(BackendError::NotCompiled {
            feature: other.feature().unwrap_or("ort"),
        }),
    }
}

/// The self-check input, `[1, 3, S, S]`: pixel `[0, c, y, x] = ((c * S + y) * S + x) % 251 /
/// 250`, computed in f64 and rounded to f32 as the exporter does.
pub fn self_check_input(input_size: usize) -> Vec<f32> {
    (0..3 * input_size * input_size)
        .map(|i| ((i % 251) as f64 / 250.0) as f32)
        .collect()
}

/// Runs the self-check input through `backend`'s image encoder and compares it with the
/// manifest's reference: max abs diff for fp32, cosine if `reduced` precision. `None` if the
/// manifest has no `self_check` block.
pub fn self_check(
    backend: &dyn InferenceBackend,
    bundle: &Bundle,
    reduced: bool,
) -> Result<Option<SelfCheckMeasure>, BackendError> {
    let Some(reference) = bundle.manifest().self_check.as_ref().map(|c| &c.embedding) else {
        return Ok(None);
    };
    let dims = backend.dims();
    if reference.len() != dims.embed_dim {
        return Err(BackendError::SelfCheckLength {
            found: reference.len(),
            expected: dims.embed_dim,
        });
    }
    let mut embedding = vec![0.0; dims.embed_dim];
    backend
        .encode_images(&self_check_input(dims.input_size), 1, &mut embedding)
        .map_err(BackendError::SelfCheckRun)?;
    let measure = if reduced {
        SelfCheckMeasure::Cosine {
            value: cosine(&embedding, reference),
            min: REDUCED_MIN_COSINE,
        }
    } else {
        SelfCheckMeasure::MaxAbsDiff {
            value: max_abs_diff(&embedding, reference),
            limit: FP32_MAX_ABS_DIFF,
        }
    };
    if measure.passes() {
        Ok(Some(measure))
    } else {
        Err(BackendError::SelfCheckFailed(measure))
    }
}

/// Largest absolute difference; NaN if any value is not finite.
fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    let mut max = 0.0f32;
    for (x, y) in a.iter().zip(b) {
        let d = (x - y).abs();
        if !d.is_finite() {
            return f32::NAN;
        }
        max = max.max(d);
    }
    max
}

/// Cosine similarity (NaN if either vector is zero or not finite).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        dot += x * y;
        aa += x * x;
        bb += y * y;
    }
    let value = dot / (aa.sqrt() * bb.sqrt());
    if value.is_finite() {
        value as f32
    } else {
        f32::NAN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_use_the_documented_names_everywhere() {
        for choice in BackendChoice::ALL {
            let json = serde_json::to_string(&choice).unwrap();
            assert_eq!(json, format!("\"{}\"", choice.as_str()));
            assert_eq!(
                serde_json::from_str::<BackendChoice>(&json).unwrap(),
                choice
            );
            assert_eq!(choice.as_str().parse::<BackendChoice>().unwrap(), choice);
            assert_eq!(choice.to_string(), choice.as_str());
        }
        let names: Vec<&str> = BackendChoice::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            names,
            [
                "auto",
                "tensorrt",
                "cuda",
                "ort-cpu",
                "ort-cpu-int8",
                "tract"
            ]
        );
        let err = "TensorRT".parse::<BackendChoice>().unwrap_err();
        assert!(err.to_string().contains("\"TensorRT\""), "{err}");
        assert_eq!(BackendChoice::default(), BackendChoice::Auto);
    }

    #[test]
    fn tract_is_always_compiled_in() {
        assert!(BackendChoice::Tract.is_compiled_in());
        assert!(BackendChoice::Auto.is_compiled_in());
        assert_eq!(
            BackendChoice::OrtCpu.is_compiled_in(),
            cfg!(feature = "ort")
        );
        assert_eq!(
            BackendChoice::TensorRt.is_compiled_in(),
            cfg!(feature = "tensorrt")
        );
    }

    #[test]
    fn the_self_check_input_follows_the_manifest_pattern() {
        let s = 224;
        let pixels = self_check_input(s);
        assert_eq!(pixels.len(), 3 * s * s);
        let at = |c: usize, y: usize, x: usize| pixels[(c * s + y) * s + x];
        assert_eq!(at(0, 0, 0), 0.0);
        assert_eq!(at(0, 0, 250), 1.0);
        assert_eq!(at(0, 0, 251), 0.0);
        // The exporter's own test value: pixels[0, 1, 0, 0] == (224 * 224 % 251) / 250.
        assert_eq!(at(1, 0, 0), ((224 * 224 % 251) as f64 / 250.0) as f32);
        assert_eq!(at(2, 10, 7), (((2 * s + 10) * s + 7) % 251) as f32 / 250.0);
    }

    #[test]
    fn measures_fail_on_non_finite_output() {
        assert!(max_abs_diff(&[1.0, f32::NAN], &[1.0, 0.0]).is_nan());
        assert!(!SelfCheckMeasure::MaxAbsDiff {
            value: f32::NAN,
            limit: 1e-3
        }
        .passes());
        assert!(cosine(&[0.0, 0.0], &[1.0, 0.0]).is_nan());
        assert!(!SelfCheckMeasure::Cosine {
            value: f32::NAN,
            min: 0.99
        }
        .passes());
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-6);
        assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.5, 2.0]), 0.5);
    }

    #[test]
    fn measures_print_what_was_compared() {
        let pass = SelfCheckMeasure::MaxAbsDiff {
            value: 2e-6,
            limit: 1e-3,
        };
        assert_eq!(pass.to_string(), "max abs diff 2.00e-6 <= 1e-3");
        let fail = SelfCheckMeasure::Cosine {
            value: 0.5,
            min: 0.99,
        };
        assert_eq!(fail.to_string(), "cosine 0.50000 < 0.99");
    }
}
