//! The ONNX Runtime backend (cargo feature `ort`): the board's own `libonnxruntime`, loaded
//! at run time through the `ort` crate. Nothing is downloaded or linked at build time.
//!
//! What runs where, by [`OrtMode`]:
//!
//! | mode | image encoder file | encoder providers | temporal head (fp32) |
//! | --- | --- | --- | --- |
//! | `Cpu` | `image_encoder.onnx` | CPU | CPU |
//! | `CpuInt8` | `image_encoder.int8-dynamic.onnx` | CPU | CPU |
//! | `Cuda` (feature `cuda`) | `image_encoder.onnx` | CUDA | CUDA |
//! | `TensorRt` fp16 (feature `tensorrt`) | `image_encoder.onnx` | TensorRT fp16, then CUDA | CUDA |
//! | `TensorRt` int8 (feature `tensorrt`) | `image_encoder.int8.onnx` (QDQ) | TensorRT int8, then CUDA | CUDA |
//!
//! **Library.** One ONNX Runtime per process: the first backend loads it from
//! [`OrtOptions::library`], else `$ORT_DYLIB_PATH`, else `libonnxruntime.so` on the loader's
//! search path; it must be 1.17 or newer (`ort` asks for C API version 17). A later backend
//! asking for another file gets [`OrtError::LibraryConflict`].
//!
//! **Providers.** CUDA and TensorRT are registered with `ort`'s error-on-failure: a provider
//! that is missing from the library or cannot start is an [`OrtError::Provider`], never a
//! silent fall-back to the CPU. (ONNX Runtime may still place single nodes that no GPU
//! provider takes, such as shape arithmetic, on the CPU; that is its normal partitioning.)
//!
//! **TensorRT.** Explicit shape profile for `pixels`: batch 1 (min), `opt_batch`, `max_batch`;
//! calls with a larger batch are run in slices. Engine and timing caches live in
//! `<cache_root>/<key>/` ([`super::tensorrt`] documents the key).
//!
//! **Threads and concurrency.** Each session gets `threads` intra-op threads (all cores by
//! default) and runs its nodes sequentially. `ort`'s `Session::run` takes `&mut self`, so each
//! session sits behind a mutex: calls from several workers are serialised, and ONNX Runtime
//! parallelises inside each call.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

use ort::environment::Environment;
use ort::ep::ExecutionProviderDispatch;
use ort::session::{Session, SessionOutputs};
use ort::value::{TensorRef, ValueType};

use std::sync::Arc;

use crate::pipeline::detect::blaze::{INPUT_SIZE, NUM_ANCHORS, REGRESSOR_LEN};
use crate::pipeline::error::{BundleError, InferenceError};
use crate::pipeline::model::backend::{
    check_detector_buffers, check_encoder_buffers, check_head_buffers, BackendError,
    FaceDetectorNetwork, InferenceBackend,
};
use crate::pipeline::model::bundle::{Bundle, FileEntry, ModelDims, ModelTensor};

#[cfg(feature = "tensorrt")]
use crate::pipeline::model::backend::tensorrt::{CacheKey, TensorRtOptions, TensorRtPrecision};

/// The environment variable naming the ONNX Runtime library when no path is configured.
pub const LIBRARY_ENV: &str = "ORT_DYLIB_PATH";

/// The library loaded when neither a path nor [`LIBRARY_ENV`] is given.
pub const DEFAULT_LIBRARY: &str = "libonnxruntime.so";

/// Which files run on which execution providers (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OrtMode {
    /// fp32 encoder on the CPU.
    Cpu,
    /// Dynamic-int8 encoder on the CPU.
    CpuInt8,
    /// fp32 encoder and head on CUDA.
    #[cfg(feature = "cuda")]
    Cuda,
    /// Encoder on TensorRT (fp16 or QDQ int8), head on CUDA.
    #[cfg(feature = "tensorrt")]
    TensorRt(TensorRtOptions),
}

impl OrtMode {
    /// The backend's name in logs and status: `ort-cpu`, `ort-cpu-int8`, `cuda`,
    /// `tensorrt-fp16` or `tensorrt-int8`.
    pub fn name(&self) -> &'static str {
        match self {
            OrtMode::Cpu => "ort-cpu",
            OrtMode::CpuInt8 => "ort-cpu-int8",
            #[cfg(feature = "cuda")]
            OrtMode::Cuda => "cuda",
            #[cfg(feature = "tensorrt")]
            OrtMode::TensorRt(t) => match t.precision {
                TensorRtPrecision::Fp16 => "tensorrt-fp16",
                TensorRtPrecision::Int8 => "tensorrt-int8",
            },
        }
    }
}

/// How the ONNX Runtime backend runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrtOptions {
    /// The ONNX Runtime shared library; none: `$ORT_DYLIB_PATH`, else `libonnxruntime.so`.
    pub library: Option<PathBuf>,
    /// Intra-op threads of each session; the machine's available parallelism by default.
    pub threads: NonZeroUsize,
    /// Files and providers.
    pub mode: OrtMode,
}

impl OrtOptions {
    /// Default library and threads, the given mode.
    pub fn new(mode: OrtMode) -> OrtOptions {
        let threads = std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
        OrtOptions {
            library: None,
            threads,
            mode,
        }
    }

    /// The library file this configuration loads (see [`OrtOptions::library`]).
    pub fn library_path(&self) -> PathBuf {
        match (&self.library, std::env::var_os(LIBRARY_ENV)) {
            (Some(path), _) => path.clone(),
            (None, Some(path)) if !path.is_empty() => PathBuf::from(path),
            _ => PathBuf::from(DEFAULT_LIBRARY),
        }
    }
}

/// Why the ONNX Runtime backend could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OrtError {
    /// The shared library could not be loaded (missing, wrong architecture, too old).
    #[error(
        "cannot load the ONNX Runtime library {}: {message} (point {LIBRARY_ENV} or \
         model.ort_library at the board's libonnxruntime.so, version 1.17 or newer)",
        path.display()
    )]
    Library {
        /// The library file.
        path: PathBuf,
        /// The loader's error.
        message: String,
    },
    /// This process already loaded another ONNX Runtime library.
    #[error(
        "ONNX Runtime is already loaded from {}; cannot also load {} in the same process",
        loaded.display(),
        requested.display()
    )]
    LibraryConflict {
        /// The library in use.
        loaded: PathBuf,
        /// The library asked for.
        requested: PathBuf,
    },
    /// ONNX Runtime's environment could not be created.
    #[error("cannot create the ONNX Runtime environment ({}): {message}", library.display())]
    Environment {
        /// The library in use.
        library: PathBuf,
        /// ONNX Runtime's error.
        message: String,
    },
    /// An execution provider is missing from the library or failed to start.
    #[error("the {provider} execution provider failed to initialise for {}: {message}", path.display())]
    Provider {
        /// `CUDA` or `TensorRT`.
        provider: &'static str,
        /// The model the session was for.
        path: PathBuf,
        /// ONNX Runtime's error.
        message: String,
    },
    /// The bundle lacks the file this mode runs.
    #[error("the bundle has no files.{key} entry, which the {backend} backend runs")]
    MissingFile {
        /// The entry under `files`.
        key: &'static str,
        /// The backend's name.
        backend: &'static str,
    },
    /// The TensorRT profile's `opt` batch exceeds its `max`.
    #[error("TensorRT opt batch {opt} exceeds max batch {max}")]
    TensorRtBatch {
        /// The `opt` batch.
        opt: usize,
        /// The `max` batch.
        max: usize,
    },
    /// The TensorRT cache directory could not be created.
    #[error("cannot create the TensorRT cache directory {}: {source}", path.display())]
    CacheDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A model file could not be loaded, or is not the model its manifest entry declares.
    #[error(transparent)]
    Model(#[from] BundleError),
}

/// The library loaded in this process and its environment (ONNX Runtime allows one).
struct Runtime {
    library: PathBuf,
    environment: Environment,
}

static RUNTIME: Mutex<Option<Runtime>> = Mutex::new(None);

/// Loads the library (once per process) and returns the shared environment.
fn environment(library: PathBuf) -> Result<Environment, OrtError> {
    let mut runtime = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(loaded) = runtime.as_ref() {
        if loaded.library != library {
            return Err(OrtError::LibraryConflict {
                loaded: loaded.library.clone(),
                requested: library,
            });
        }
        return Ok(loaded.environment.clone());
    }
    let builder = ort::init_from(&library).map_err(|e| OrtError::Library {
        path: library.clone(),
        message: e.to_string(),
    })?;
    let environment = builder
        .with_name("caer")
        .with_telemetry(false)
        .build()
        .map_err(|e| OrtError::Environment {
            library: library.clone(),
            message: e.to_string(),
        })?;
    tracing::info!(library = %library.display(), build = ort::info(), "ONNX Runtime loaded");
    *runtime = Some(Runtime {
        library,
        environment: environment.clone(),
    });
    Ok(environment)
}

/// One model's session and where it came from.
#[derive(Debug)]
struct Model {
    session: Mutex<Session>,
    path: PathBuf,
}

impl Model {
    fn lock(&self) -> MutexGuard<'_, Session> {
        // A panic inside `run` leaves nothing half-written on our side: keep using the session.
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The image encoder and temporal head of a bundle, as ONNX Runtime sessions.
#[derive(Debug)]
pub struct OrtBackend {
    name: &'static str,
    dims: ModelDims,
    encoder: Model,
    head: Model,
    /// Largest batch per encoder call (the TensorRT profile's `max`); none: any.
    max_batch: Option<usize>,
    /// For the face detector loaded later.
    environment: Environment,
    threads: usize,
    /// Whether the encoder runs on the GPU (the face detector then runs on CUDA).
    on_gpu: bool,
}

impl OrtBackend {
    /// Loads the library if needed and builds both sessions. Slow for TensorRT on a first
    /// start (the engine build); call once.
    pub fn load(bundle: &Bundle, options: &OrtOptions) -> Result<OrtBackend, OrtError> {
        let environment = environment(options.library_path())?;
        let name = options.mode.name();
        let files = &bundle.manifest().files;
        let threads = options.threads.get();
        let (encoder_entry, encoder_providers, head_providers, max_batch) = match &options.mode {
            OrtMode::Cpu => (&files.image_encoder, Vec::new(), Vec::new(), None),
            OrtMode::CpuInt8 => {
                let entry =
                    files
                        .image_encoder_int8_dynamic
                        .as_ref()
                        .ok_or(OrtError::MissingFile {
                            key: "image_encoder_int8_dynamic",
                            backend: name,
                        })?;
                (entry, Vec::new(), Vec::new(), None)
            }
            #[cfg(feature = "cuda")]
            OrtMode::Cuda => (&files.image_encoder, vec![cuda()], vec![cuda()], None),
            #[cfg(feature = "tensorrt")]
            OrtMode::TensorRt(trt) => {
                let entry = match trt.precision {
                    TensorRtPrecision::Fp16 => &files.image_encoder,
                    TensorRtPrecision::Int8 => {
                        files
                            .image_encoder_int8
                            .as_ref()
                            .ok_or(OrtError::MissingFile {
                                key: "image_encoder_int8",
                                backend: name,
                            })?
                    }
                };
                let providers = vec![tensorrt(bundle, entry, trt)?, cuda()];
                (entry, providers, vec![cuda()], Some(trt.max_batch.get()))
            }
        };
        let encoder = load_model(
            &environment,
            bundle,
            encoder_entry,
            threads,
            encoder_providers,
        )?;
        let head = load_model(
            &environment,
            bundle,
            bundle.temporal_head(),
            threads,
            head_providers,
        )?;
        tracing::info!(backend = name, threads, encoder = %encoder.path.display(), "ONNX Runtime backend ready");
        let on_gpu = !matches!(options.mode, OrtMode::Cpu | OrtMode::CpuInt8);
        Ok(OrtBackend {
            name,
            dims: bundle.dims(),
            encoder,
            head,
            max_batch,
            environment,
            threads,
            on_gpu,
        })
    }
}

/// The CUDA provider, device 0, in full fp32. ONNX Runtime (1.31) lets CUDA use TF32 for
/// matrix products and convolutions unless told not to; on an H200 that moved the fixture
/// encoder's self-check embedding by 1.0e-3, failing the fp32 limit.
#[cfg(feature = "cuda")]
fn cuda() -> (&'static str, ExecutionProviderDispatch) {
    let provider = ort::ep::CUDA::default()
        .with_device_id(0)
        .with_tf32(false)
        .build();
    ("CUDA", provider)
}

/// The TensorRT provider for `entry`: precision, shape profile, engine and timing caches.
#[cfg(feature = "tensorrt")]
fn tensorrt(
    bundle: &Bundle,
    entry: &FileEntry,
    options: &TensorRtOptions,
) -> Result<(&'static str, ExecutionProviderDispatch), OrtError> {
    let (opt, max) = (options.opt_batch.get(), options.max_batch.get());
    if opt > max {
        return Err(OrtError::TensorRtBatch { opt, max });
    }
    let key = CacheKey::for_this_machine(&entry.sha256, options, ort::info());
    let cache = key.dir(&options.cache_root);
    std::fs::create_dir_all(&cache).map_err(|source| OrtError::CacheDir {
        path: cache.clone(),
        source,
    })?;
    tracing::info!(cache = %cache.display(), ?key, "TensorRT engine cache");
    let s = bundle.dims().input_size;
    let input = entry.inputs.first().map_or("pixels", |i| i.name.as_str());
    let profile = |batch: usize| format!("{input}:{batch}x3x{s}x{s}");
    let cache = cache.to_string_lossy().into_owned();
    let provider = ort::ep::TensorRT::default()
        .with_device_id(0)
        .with_fp16(true)
        .with_int8(options.precision == TensorRtPrecision::Int8)
        .with_engine_cache(true)
        .with_engine_cache_path(&cache)
        .with_timing_cache(true)
        .with_timing_cache_path(&cache)
        .with_profile_min_shapes(profile(1))
        .with_profile_opt_shapes(profile(opt))
        .with_profile_max_shapes(profile(max))
        .build();
    Ok(("TensorRT", provider))
}

/// Builds one session with the given providers (each must initialise) and checks its inputs
/// and outputs against the manifest entry.
fn load_model(
    environment: &Environment,
    bundle: &Bundle,
    entry: &FileEntry,
    threads: usize,
    providers: Vec<(&'static str, ExecutionProviderDispatch)>,
) -> Result<Model, OrtError> {
    let path = bundle.path_of(entry);
    let load_error = |message: String| BundleError::ModelLoad {
        path: path.clone(),
        message,
    };
    let mut builder = Session::builder(environment)
        .and_then(|b| b.with_intra_threads(threads).map_err(Into::into))
        .and_then(|b| b.with_inter_threads(1).map_err(Into::into))
        .map_err(|e| load_error(e.to_string()))?;
    for (provider, dispatch) in providers {
        builder = builder
            .with_execution_providers([dispatch.error_on_failure()])
            .map_err(|e| OrtError::Provider {
                provider,
                path: path.clone(),
                message: e.to_string(),
            })?;
    }
    let session = builder
        .commit_from_file(&path)
        .map_err(|e| load_error(e.to_string()))?;
    let inputs: Vec<ModelTensor> = session
        .inputs()
        .iter()
        .map(|o| describe(o.name(), o.dtype()))
        .collect();
    let outputs: Vec<ModelTensor> = session
        .outputs()
        .iter()
        .map(|o| describe(o.name(), o.dtype()))
        .collect();
    entry.check_model(&path, &inputs, &outputs)?;
    Ok(Model {
        session: Mutex::new(session),
        path,
    })
}

/// A session input or output as the manifest check sees it (`-1` dimensions are symbolic).
fn describe(name: &str, dtype: &ValueType) -> ModelTensor {
    let shape = match dtype {
        ValueType::Tensor { shape, .. } => shape.iter().map(|&d| u64::try_from(d).ok()).collect(),
        _ => Vec::new(),
    };
    ModelTensor {
        name: name.to_owned(),
        shape,
    }
}

/// Turns an ONNX Runtime error of `model` on `backend` into an [`InferenceError`].
fn runtime_error(
    backend: &'static str,
    model: &'static str,
) -> impl Fn(ort::Error) -> InferenceError {
    move |e| InferenceError::Runtime {
        backend,
        model,
        message: e.to_string(),
    }
}

/// Copies output `index`, which must have the shape `expected`, into `out`.
fn copy_output(
    outputs: &SessionOutputs<'_>,
    index: usize,
    backend: &'static str,
    model: &'static str,
    expected: &[usize],
    out: &mut [f32],
) -> Result<(), InferenceError> {
    let (shape, data) = outputs[index]
        .try_extract_tensor::<f32>()
        .map_err(runtime_error(backend, model))?;
    let found: Vec<usize> = shape
        .iter()
        .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
        .collect();
    if found != expected {
        return Err(InferenceError::OutputShape {
            model,
            expected: expected.to_vec(),
            found,
        });
    }
    out.copy_from_slice(data);
    Ok(())
}

impl OrtBackend {
    fn runtime_error(&self, model: &'static str) -> impl Fn(ort::Error) -> InferenceError {
        runtime_error(self.name, model)
    }

    /// Encodes one slice of at most `max_batch` images.
    fn encode_slice(
        &self,
        pixels: &[f32],
        batch: usize,
        embeddings: &mut [f32],
    ) -> Result<(), InferenceError> {
        const MODEL: &str = "image encoder";
        let d = self.dims;
        let shape = [batch, 3, d.input_size, d.input_size];
        let input =
            TensorRef::from_array_view((shape, pixels)).map_err(self.runtime_error(MODEL))?;
        let mut session = self.encoder.lock();
        let outputs = session
            .run(ort::inputs![input])
            .map_err(self.runtime_error(MODEL))?;
        copy_output(
            &outputs,
            0,
            self.name,
            MODEL,
            &[batch, d.embed_dim],
            embeddings,
        )
    }
}

impl InferenceBackend for OrtBackend {
    fn name(&self) -> &'static str {
        self.name
    }

    fn load_face_detector(
        &self,
        bundle: &Bundle,
    ) -> Result<Arc<dyn FaceDetectorNetwork>, BackendError> {
        let entry = bundle.face_detector_file().map_err(OrtError::Model)?;
        // The network is small and fixed-size: CUDA serves it without a TensorRT engine.
        #[cfg(feature = "cuda")]
        let providers = if self.on_gpu {
            vec![cuda()]
        } else {
            Vec::new()
        };
        #[cfg(not(feature = "cuda"))]
        let providers = Vec::new();
        let model = load_model(&self.environment, bundle, entry, self.threads, providers)?;
        Ok(Arc::new(OrtFaceDetector {
            name: self.name,
            model,
            full_batches: self.on_gpu,
        }))
    }

    fn dims(&self) -> ModelDims {
        self.dims
    }

    fn encode_images(
        &self,
        pixels: &[f32],
        batch: usize,
        embeddings: &mut [f32],
    ) -> Result<(), InferenceError> {
        let d = self.dims;
        check_encoder_buffers(d, pixels, batch, embeddings)?;
        let slice = self.max_batch.unwrap_or(batch).max(1);
        let pixel_slices = pixels.chunks(slice * d.image_len());
        for (p, e) in pixel_slices.zip(embeddings.chunks_mut(slice * d.embed_dim)) {
            self.encode_slice(p, p.len() / d.image_len(), e)?;
        }
        Ok(())
    }

    fn run_head(
        &self,
        face: &[f32],
        context: &[f32],
        batch: usize,
        logits: &mut [f32],
    ) -> Result<(), InferenceError> {
        const MODEL: &str = "temporal head";
        let d = self.dims;
        check_head_buffers(d, face, context, batch, logits)?;
        if batch == 0 {
            return Ok(());
        }
        let shape = [batch, d.frames_per_clip, d.embed_dim];
        let face = TensorRef::from_array_view((shape, face)).map_err(self.runtime_error(MODEL))?;
        let context =
            TensorRef::from_array_view((shape, context)).map_err(self.runtime_error(MODEL))?;
        let mut session = self.head.lock();
        let outputs = session
            .run(ort::inputs![face, context])
            .map_err(self.runtime_error(MODEL))?;
        copy_output(
            &outputs,
            0,
            self.name,
            MODEL,
            &[batch, d.num_classes],
            logits,
        )
    }
}

/// Tiles per face detector call on ONNX Runtime. The 108 tiles of a 1920x1080 frame took
/// 50 to 56 ms instead of 163 to 166 ms on CUDA (an H200), 76 to 111 ms instead of 160 to
/// 220 ms on its host's 16 cores, and 160 to 174 ms instead of 170 to 192 ms on 2 cores.
const DETECTOR_BATCH: usize = 8;

/// The bundle's face detector network as an ONNX Runtime session (outputs `regressors` then
/// `classificators`, checked at load).
#[derive(Debug)]
struct OrtFaceDetector {
    name: &'static str,
    model: Model,
    /// Run every call as a full batch of [`DETECTOR_BATCH`], padded with blank tiles. On the
    /// GPU: cuDNN (under ONNX Runtime's CUDA provider) re-tunes its convolutions whenever the
    /// input shape changes, and a short last batch per tile size made that happen on every
    /// call (3.5 s per 1920x1080 frame instead of 0.05 s on an H200). On the CPU padding
    /// would only cost time.
    full_batches: bool,
}

impl FaceDetectorNetwork for OrtFaceDetector {
    fn name(&self) -> &'static str {
        self.name
    }

    fn max_batch(&self) -> usize {
        DETECTOR_BATCH
    }

    fn run(
        &self,
        images: &[f32],
        batch: usize,
        regressors: &mut [f32],
        logits: &mut [f32],
    ) -> Result<(), InferenceError> {
        check_detector_buffers(self, images, batch, regressors, logits)?;
        if self.full_batches && batch < DETECTOR_BATCH {
            let mut padded = vec![0.0; DETECTOR_BATCH * 3 * INPUT_SIZE * INPUT_SIZE];
            padded[..images.len()].copy_from_slice(images);
            let mut all_regressors = vec![0.0; DETECTOR_BATCH * NUM_ANCHORS * REGRESSOR_LEN];
            let mut all_logits = vec![0.0; DETECTOR_BATCH * NUM_ANCHORS];
            self.run_batch(
                &padded,
                DETECTOR_BATCH,
                &mut all_regressors,
                &mut all_logits,
            )?;
            regressors.copy_from_slice(&all_regressors[..regressors.len()]);
            logits.copy_from_slice(&all_logits[..logits.len()]);
            return Ok(());
        }
        self.run_batch(images, batch, regressors, logits)
    }
}

impl OrtFaceDetector {
    /// Runs exactly `batch` tiles (buffers checked by the caller).
    fn run_batch(
        &self,
        images: &[f32],
        batch: usize,
        regressors: &mut [f32],
        logits: &mut [f32],
    ) -> Result<(), InferenceError> {
        const MODEL: &str = "face detector";
        let runtime = runtime_error(self.name, MODEL);
        let input = TensorRef::from_array_view(([batch, 3, INPUT_SIZE, INPUT_SIZE], images))
            .map_err(&runtime)?;
        let mut session = self.model.lock();
        let outputs = session.run(ort::inputs![input]).map_err(&runtime)?;
        let shape = [batch, NUM_ANCHORS, REGRESSOR_LEN];
        copy_output(&outputs, 0, self.name, MODEL, &shape, regressors)?;
        copy_output(
            &outputs,
            1,
            self.name,
            MODEL,
            &[batch, NUM_ANCHORS, 1],
            logits,
        )
    }
}
