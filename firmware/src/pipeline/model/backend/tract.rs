//! The tract backend: pure-Rust ONNX inference on the CPU, fp32 only.
//!
//! [`TractBackend::load`] reads `image_encoder.onnx` and `temporal_head.onnx` of a verified
//! bundle, checks each model's inputs and outputs against the manifest, and optimises each
//! once for this machine (`into_optimized`, then a runnable plan). The batch dimension stays
//! symbolic, so all crops of a frame go through the encoder in one call. Each call spawns a
//! fresh run state from the shared plan, so concurrent calls from several threads are fine.
//!
//! Only the fp32 files are used: tract 0.23 gives wrong answers on the static-QDQ int8 ViT, so
//! the int8 files of the bundle are left to the runtimes that handle them.
//!
//! Threads: tract-linalg's matrix products (and large element-wise and reduction ops) run on
//! a rayon pool when tract-linalg's `multithread-mm` feature is on (this crate turns it on).
//! The pool is given to the plan through `RunOptions::executor`, so it applies to every run
//! of these plans and to nothing else in the process. One thread means no pool at all.

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;

use tract_linalg::multithread::Executor;
use tract_onnx::prelude::*;

use crate::pipeline::detect::blaze::{NUM_ANCHORS, REGRESSOR_LEN};
use crate::pipeline::error::{BundleError, InferenceError};
use crate::pipeline::model::backend::{
    check_detector_buffers, check_encoder_buffers, check_head_buffers, BackendError,
    FaceDetectorNetwork, InferenceBackend,
};
use crate::pipeline::model::bundle::{Bundle, FileEntry, ModelDims, ModelTensor};

const NAME: &str = "tract";

/// How the tract backend runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TractOptions {
    /// Threads for the matrix products; the machine's available parallelism by default.
    pub threads: NonZeroUsize,
}

impl Default for TractOptions {
    fn default() -> Self {
        let threads = std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
        TractOptions { threads }
    }
}

/// The image encoder and temporal head of a bundle, optimised by tract.
#[derive(Debug, Clone)]
pub struct TractBackend {
    dims: ModelDims,
    encoder: Arc<TypedSimplePlan>,
    /// Inputs `face_features` then `context_features` (checked at load).
    head: Arc<TypedSimplePlan>,
    /// The thread pool, for the face detector loaded later.
    run_options: RunOptions,
}

impl TractBackend {
    /// Loads and optimises the fp32 models of `bundle`. Slow (seconds for ViT-B/32): call once.
    pub fn load(bundle: &Bundle, options: &TractOptions) -> Result<TractBackend, BundleError> {
        let executor = (options.threads.get() > 1)
            .then(|| Executor::multithread_with_name(options.threads.get(), "caer-tract"));
        let run_options = RunOptions {
            executor,
            ..RunOptions::default()
        };
        let encoder = load_plan(bundle, bundle.image_encoder(), &run_options)?;
        let head = load_plan(bundle, bundle.temporal_head(), &run_options)?;
        tracing::debug!(threads = options.threads.get(), "tract backend ready");
        Ok(TractBackend {
            dims: bundle.dims(),
            encoder,
            head,
            run_options,
        })
    }
}

/// Loads one model, checks it against its manifest entry, and optimises it.
fn load_plan(
    bundle: &Bundle,
    entry: &FileEntry,
    options: &RunOptions,
) -> Result<Arc<TypedSimplePlan>, BundleError> {
    load_plan_with(bundle, entry, options, None)
}

/// [`load_plan`], with the first input's shape fixed to `input_shape` if given.
fn load_plan_with(
    bundle: &Bundle,
    entry: &FileEntry,
    options: &RunOptions,
    input_shape: Option<[usize; 4]>,
) -> Result<Arc<TypedSimplePlan>, BundleError> {
    let path = bundle.path_of(entry);
    let load_error = |e: TractError| BundleError::ModelLoad {
        path: path.clone(),
        message: format!("{e:#}"),
    };
    let mut model = tract_onnx::onnx()
        .model_for_path(&path)
        .map_err(load_error)?;
    if let Some(shape) = input_shape {
        model = model
            .with_input_fact(0, f32::fact(shape).into())
            .map_err(load_error)?;
    }
    let model = model.into_optimized().map_err(load_error)?;
    check_io(&model, entry, &path)?;
    model
        .into_runnable_with_options(options)
        .map_err(load_error)
}

/// Compares the optimised model's inputs and outputs with the manifest entry.
fn check_io(model: &TypedModel, entry: &FileEntry, path: &Path) -> Result<(), BundleError> {
    let error = |e: TractError| BundleError::ModelLoad {
        path: path.to_owned(),
        message: format!("{e:#}"),
    };
    let tensor = |outlet: OutletId, name: &str| -> Result<ModelTensor, BundleError> {
        let fact = model.outlet_fact(outlet).map_err(error)?;
        let shape = fact
            .shape
            .iter()
            .map(|d| d.to_i64().ok().map(|n| n as u64))
            .collect();
        Ok(ModelTensor {
            name: name.to_owned(),
            shape,
        })
    };
    // tract names an ONNX graph input's source node after it, and labels each graph output.
    let inputs = (model.input_outlets().map_err(error)?.iter())
        .map(|&outlet| tensor(outlet, &model.node(outlet.node).name))
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = (model.output_outlets().map_err(error)?.iter())
        .map(|&outlet| {
            let label = model.outlet_label(outlet);
            tensor(outlet, label.unwrap_or(&model.node(outlet.node).name))
        })
        .collect::<Result<Vec<_>, _>>()?;
    entry.check_model(path, &inputs, &outputs)
}

impl TractBackend {
    fn run(
        plan: &Arc<TypedSimplePlan>,
        model: &'static str,
        inputs: TVec<TValue>,
        expected_shape: [usize; 2],
        out: &mut [f32],
    ) -> Result<(), InferenceError> {
        let outputs = plan.run(inputs).map_err(runtime_error(model))?;
        copy_output(&outputs[0], model, &expected_shape, out)
    }
}

/// Turns a tract error while running `model` into an [`InferenceError`].
fn runtime_error(model: &'static str) -> impl Fn(TractError) -> InferenceError {
    move |e| InferenceError::Runtime {
        backend: NAME,
        model,
        message: format!("{e:#}"),
    }
}

/// Copies `output`, which must have the shape `expected`, into `out`.
fn copy_output(
    output: &TValue,
    model: &'static str,
    expected: &[usize],
    out: &mut [f32],
) -> Result<(), InferenceError> {
    let runtime = runtime_error(model);
    if output.shape() != expected {
        return Err(InferenceError::OutputShape {
            model,
            expected: expected.to_vec(),
            found: output.shape().to_vec(),
        });
    }
    let view = output.try_as_plain_ram().map_err(&runtime)?;
    out.copy_from_slice(view.as_slice::<f32>().map_err(runtime)?);
    Ok(())
}

impl InferenceBackend for TractBackend {
    fn name(&self) -> &'static str {
        NAME
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
        let shape = [batch, 3, d.input_size, d.input_size];
        let input = tensor_from(&shape, pixels, "image encoder")?;
        Self::run(
            &self.encoder,
            "image encoder",
            tvec![input],
            [batch, d.embed_dim],
            embeddings,
        )
    }

    fn load_face_detector(
        &self,
        bundle: &Bundle,
    ) -> Result<Arc<dyn FaceDetectorNetwork>, BackendError> {
        let entry = bundle.face_detector_file().map_err(BackendError::Tract)?;
        // One tile per call: tract ran a batch of 8 no faster per tile (on 2 cores), and a
        // fixed batch optimises better than a symbolic one.
        let size = crate::pipeline::detect::blaze::INPUT_SIZE;
        let plan = load_plan_with(bundle, entry, &self.run_options, Some([1, 3, size, size]))
            .map_err(BackendError::Tract)?;
        Ok(Arc::new(TractFaceDetector { plan }))
    }

    fn run_head(
        &self,
        face: &[f32],
        context: &[f32],
        batch: usize,
        logits: &mut [f32],
    ) -> Result<(), InferenceError> {
        let d = self.dims;
        check_head_buffers(d, face, context, batch, logits)?;
        let shape = [batch, d.frames_per_clip, d.embed_dim];
        let inputs = tvec![
            tensor_from(&shape, face, "temporal head")?,
            tensor_from(&shape, context, "temporal head")?
        ];
        Self::run(
            &self.head,
            "temporal head",
            inputs,
            [batch, d.num_classes],
            logits,
        )
    }
}

/// The bundle's face detector network, optimised by tract (outputs `regressors` then
/// `classificators`, checked at load).
#[derive(Debug)]
struct TractFaceDetector {
    plan: Arc<TypedSimplePlan>,
}

impl FaceDetectorNetwork for TractFaceDetector {
    fn name(&self) -> &'static str {
        NAME
    }

    fn max_batch(&self) -> usize {
        1
    }

    fn run(
        &self,
        images: &[f32],
        batch: usize,
        regressors: &mut [f32],
        logits: &mut [f32],
    ) -> Result<(), InferenceError> {
        const MODEL: &str = "face detector";
        check_detector_buffers(self, images, batch, regressors, logits)?;
        let size = crate::pipeline::detect::blaze::INPUT_SIZE;
        let input = tensor_from(&[batch, 3, size, size], images, MODEL)?;
        let outputs = self.plan.run(tvec![input]).map_err(runtime_error(MODEL))?;
        let shape = [batch, NUM_ANCHORS, REGRESSOR_LEN];
        copy_output(&outputs[0], MODEL, &shape, regressors)?;
        copy_output(&outputs[1], MODEL, &[batch, NUM_ANCHORS, 1], logits)
    }
}

fn tensor_from(
    shape: &[usize],
    data: &[f32],
    model: &'static str,
) -> Result<TValue, InferenceError> {
    Tensor::from_shape(shape, data)
        .map(IntoTValue::into_tvalue)
        .map_err(runtime_error(model))
}
