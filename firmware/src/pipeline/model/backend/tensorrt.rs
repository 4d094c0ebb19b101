//! TensorRT settings and the layout of its engine cache (plain data, compiled in every build;
//! the backend that uses them is `super::ort` with the cargo feature `tensorrt`).
//!
//! TensorRT builds an engine for the image encoder at start-up, which takes minutes on a
//! Jetson; ONNX Runtime's TensorRT provider saves it (and TensorRT's timing cache) so that
//! later starts take seconds. An engine is only valid for the model, precision, shape profile,
//! TensorRT version and GPU it was built for, so each combination gets its own directory:
//!
//! ```text
//! <state_dir>/trt-cache/<model sha256, 16 hex>-<fp16|int8>-b<opt>-<max>-trt<version>-<gpu>-ort<build>/
//! ```
//!
//! What goes into the key, and where it comes from (`ort` itself exposes neither the TensorRT
//! version nor the GPU's name):
//!
//! - the model file's sha256, from the bundle manifest;
//! - the precision and the batch profile (`opt`, `max`; `min` is always 1);
//! - the TensorRT version, from the file name of the first `libnvinfer.so.X.Y.Z` in
//!   `LD_LIBRARY_PATH` or the usual library directories (`unknown` if none is found);
//! - the GPU's name, from `/proc/driver/nvidia/gpus/*/information` (discrete GPUs) or
//!   `/proc/device-tree/model` (Jetson boards; `unknown` if neither is readable);
//! - the first 8 hex digits of the sha256 of ONNX Runtime's build string (`ort::info()`:
//!   version and git commit), since the provider's cache files are its own format.
//!
//! Invariant: a key is a single path component of `A-Z a-z 0-9 . _ -`, at most
//! [`MAX_KEY_LEN`] bytes.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Longest cache key (directory name); longer GPU names are cut.
pub const MAX_KEY_LEN: usize = 160;

/// Default engine cache root, under the daemon's default state directory.
pub const DEFAULT_CACHE_ROOT: &str = "/var/lib/caer/trt-cache";

/// Default `opt` batch of the shape profile.
pub const DEFAULT_OPT_BATCH: NonZeroUsize = NonZeroUsize::new(8).unwrap();

/// Default `max` batch of the shape profile.
pub const DEFAULT_MAX_BATCH: NonZeroUsize = NonZeroUsize::new(32).unwrap();

/// Library directories searched for `libnvinfer.so.X.Y.Z` after `LD_LIBRARY_PATH`.
const LIBRARY_DIRS: [&str; 6] = [
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/local/cuda/lib64",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
];

/// The precision TensorRT builds the image encoder in (the temporal head stays fp32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TensorRtPrecision {
    /// fp16 from the fp32 file (`image_encoder.onnx`).
    #[default]
    Fp16,
    /// int8 from the static QDQ file (`image_encoder.int8.onnx`), fp16 where it stays float.
    Int8,
}

impl TensorRtPrecision {
    /// `fp16` or `int8`.
    pub const fn as_str(self) -> &'static str {
        match self {
            TensorRtPrecision::Fp16 => "fp16",
            TensorRtPrecision::Int8 => "int8",
        }
    }
}

/// How the TensorRT backend builds its engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRtOptions {
    /// fp16 (default) or int8.
    pub precision: TensorRtPrecision,
    /// The batch size TensorRT tunes for (the shape profile's `opt`, at most `max_batch`);
    /// [`DEFAULT_OPT_BATCH`] by default.
    pub opt_batch: NonZeroUsize,
    /// The largest batch the engine takes (the profile's `max`); [`DEFAULT_MAX_BATCH`] by
    /// default. Larger batches are run in slices of this size.
    pub max_batch: NonZeroUsize,
    /// Directory holding one cache directory per key: `<state_dir>/trt-cache`.
    pub cache_root: PathBuf,
}

impl Default for TensorRtOptions {
    fn default() -> Self {
        TensorRtOptions {
            precision: TensorRtPrecision::default(),
            opt_batch: DEFAULT_OPT_BATCH,
            max_batch: DEFAULT_MAX_BATCH,
            cache_root: PathBuf::from(DEFAULT_CACHE_ROOT),
        }
    }
}

/// Everything an engine depends on; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    /// sha256 of the model file (lowercase hex).
    pub model_sha256: String,
    /// The engine's precision.
    pub precision: TensorRtPrecision,
    /// The profile's `opt` batch.
    pub opt_batch: usize,
    /// The profile's `max` batch.
    pub max_batch: usize,
    /// `X.Y.Z`, if found.
    pub tensorrt_version: Option<String>,
    /// The GPU's or board's name, if found.
    pub gpu: Option<String>,
    /// ONNX Runtime's build string.
    pub runtime_build: String,
}

impl CacheKey {
    /// The key for this machine: reads the TensorRT version and the GPU's name from the system.
    pub fn for_this_machine(
        model_sha256: &str,
        options: &TensorRtOptions,
        runtime_build: &str,
    ) -> CacheKey {
        CacheKey {
            model_sha256: model_sha256.to_owned(),
            precision: options.precision,
            opt_batch: options.opt_batch.get(),
            max_batch: options.max_batch.get(),
            tensorrt_version: tensorrt_version(),
            gpu: gpu_name(),
            runtime_build: runtime_build.to_owned(),
        }
    }

    /// The cache directory's name.
    pub fn dir_name(&self) -> String {
        let model: String = self.model_sha256.chars().take(16).collect();
        let runtime = Sha256::digest(self.runtime_build.as_bytes());
        let runtime: String = runtime.iter().take(4).map(|b| format!("{b:02x}")).collect();
        let key = format!(
            "{model}-{}-b{}-{}-trt{}-{}-ort{runtime}",
            self.precision.as_str(),
            self.opt_batch,
            self.max_batch,
            self.tensorrt_version.as_deref().unwrap_or("unknown"),
            self.gpu.as_deref().unwrap_or("unknown"),
        );
        let mut key = sanitize(&key);
        key.truncate(MAX_KEY_LEN);
        key
    }

    /// `<cache_root>/<key>`.
    pub fn dir(&self, cache_root: &Path) -> PathBuf {
        cache_root.join(self.dir_name())
    }
}

/// Replaces every character outside `A-Z a-z 0-9 . _ -` by `-` and squeezes repeated `-`.
fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
            c
        } else {
            '-'
        };
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    let trimmed = out.trim_matches(|c| c == '-' || c == '.');
    if trimmed.is_empty() {
        "unknown".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// The TensorRT version, from the first `libnvinfer.so.X.Y.Z` on the library path.
pub fn tensorrt_version() -> Option<String> {
    let from_env = std::env::var_os("LD_LIBRARY_PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&from_env).chain(LIBRARY_DIRS.iter().map(PathBuf::from));
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut versions: Vec<String> = entries
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| nvinfer_version(&entry.file_name().to_string_lossy()))
            .collect();
        versions.sort();
        if let Some(version) = versions.pop() {
            return Some(version);
        }
    }
    None
}

/// `10.3.0` from `libnvinfer.so.10.3.0`; none for any other name.
fn nvinfer_version(file_name: &str) -> Option<String> {
    let version = file_name.strip_prefix("libnvinfer.so.")?;
    let parts: Vec<&str> = version.split('.').collect();
    let numeric = |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    (parts.len() >= 3 && parts.iter().all(numeric)).then(|| version.to_owned())
}

/// The GPU's name (discrete NVIDIA GPU) or the board's model (Jetson).
pub fn gpu_name() -> Option<String> {
    if let Ok(gpus) = std::fs::read_dir("/proc/driver/nvidia/gpus") {
        let mut dirs: Vec<PathBuf> = gpus.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        dirs.sort();
        for dir in dirs {
            if let Ok(text) = std::fs::read_to_string(dir.join("information")) {
                if let Some(model) = information_model(&text) {
                    return Some(model);
                }
            }
        }
    }
    let model = std::fs::read("/proc/device-tree/model").ok()?;
    let model = String::from_utf8_lossy(&model)
        .trim_matches(|c: char| c == '\0' || c.is_whitespace())
        .to_owned();
    (!model.is_empty()).then_some(model)
}

/// The `Model:` line of `/proc/driver/nvidia/gpus/*/information`.
fn information_model(text: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.strip_prefix("Model:"))
        .map(|model| model.trim().to_owned())
        .filter(|model| !model.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CacheKey {
        CacheKey {
            model_sha256: "0123456789abcdef0123456789abcdef".to_owned(),
            precision: TensorRtPrecision::Fp16,
            opt_batch: 8,
            max_batch: 32,
            tensorrt_version: Some("10.3.0".to_owned()),
            gpu: Some("NVIDIA Jetson Orin Nano Developer Kit".to_owned()),
            runtime_build: "ORT Build Info: git-branch=rel-1.20.0".to_owned(),
        }
    }

    #[test]
    fn the_key_names_model_precision_profile_tensorrt_and_gpu() {
        let name = key().dir_name();
        assert!(
            name.starts_with(
                "0123456789abcdef-fp16-b8-32-trt10.3.0-NVIDIA-Jetson-Orin-Nano-Developer-Kit-ort"
            ),
            "{name}"
        );
        assert_eq!(Path::new(&name).components().count(), 1);
    }

    #[test]
    fn every_part_of_the_key_changes_the_directory() {
        let base = key().dir_name();
        let mut k = key();
        k.precision = TensorRtPrecision::Int8;
        assert_ne!(k.dir_name(), base);
        let mut k = key();
        k.tensorrt_version = None;
        assert!(k.dir_name().contains("-trtunknown-"));
        let mut k = key();
        k.runtime_build.push('x');
        assert_ne!(k.dir_name(), base);
        let mut k = key();
        k.max_batch = 16;
        assert_ne!(k.dir_name(), base);
    }

    #[test]
    fn hostile_gpu_names_stay_one_short_path_component() {
        let mut k = key();
        k.gpu = Some(format!("../../etc/{}\0/x", "A".repeat(500)));
        let name = k.dir_name();
        assert!(name.len() <= MAX_KEY_LEN);
        assert!(
            !name.contains('/') && !name.contains('\0') && !name.starts_with('.'),
            "{name}"
        );
    }

    #[test]
    fn nvinfer_versions_come_from_full_library_names_only() {
        assert_eq!(
            nvinfer_version("libnvinfer.so.10.3.0").as_deref(),
            Some("10.3.0")
        );
        assert_eq!(
            nvinfer_version("libnvinfer.so.8.6.2.3").as_deref(),
            Some("8.6.2.3")
        );
        assert_eq!(nvinfer_version("libnvinfer.so.10"), None);
        assert_eq!(nvinfer_version("libnvinfer.so"), None);
        assert_eq!(nvinfer_version("libnvinfer_plugin.so.10.3.0"), None);
    }

    #[test]
    fn the_gpu_model_comes_from_the_driver_information() {
        let text = "Model: \t\t NVIDIA H100 80GB HBM3\nIRQ:   42\n";
        assert_eq!(
            information_model(text).as_deref(),
            Some("NVIDIA H100 80GB HBM3")
        );
        assert_eq!(information_model("IRQ: 1\n"), None);
    }
}
