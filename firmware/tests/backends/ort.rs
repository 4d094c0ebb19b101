//! The ONNX Runtime backend against the goldens. fp32 uses the tract parity tolerances
//! (embeddings 1e-4, logits 1e-3, same argmax); the dynamic-int8 encoder must keep a cosine
//! of at least 0.99 with the golden embeddings.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;

use caer::pipeline::model::backend::ort::{OrtBackend, OrtError, OrtMode, OrtOptions};
use caer::pipeline::model::backend::select::cosine;
use caer::pipeline::model::backend::InferenceBackend;
use caer::pipeline::model::classify::{argmax, ClipClassifier, ClipResult};
use caer::pipeline::preprocess::RgbFrame;
use caer::InferenceError;

use super::{
    bundle, bundle_with_manifest, clip_frames, flatten, golden_crop_pixels, max_abs_diff, parity,
};

const EMBEDDING_TOLERANCE: f32 = 1e-4;
const LOGIT_TOLERANCE: f32 = 1e-3;
const INT8_MIN_COSINE: f32 = 0.99;

/// The library under test: `$ORT_DYLIB_PATH`, which must exist when the feature is on.
pub(crate) fn library() -> PathBuf {
    const HINT: &str = "the caer-firmware `ort` feature is on, so its tests need ONNX Runtime: \
        export ORT_DYLIB_PATH=<libonnxruntime.so, 1.17 or newer> (scripts/setup.sh installs the \
        onnxruntime wheel: <venv>/lib/python3.11/site-packages/onnxruntime/capi/\
        libonnxruntime.so.1.32.0), or run the tests without --features ort";
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(path) if !path.is_empty() => {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "ORT_DYLIB_PATH={} is not a file; {HINT}",
                path.display()
            );
            path
        }
        _ => panic!("ORT_DYLIB_PATH is not set; {HINT}"),
    }
}

fn load(mode: OrtMode, threads: usize) -> Arc<OrtBackend> {
    let options = OrtOptions {
        library: Some(library()),
        threads: NonZeroUsize::new(threads).unwrap(),
        mode,
    };
    Arc::new(OrtBackend::load(&bundle(), &options).unwrap_or_else(|e| panic!("{e}")))
}

fn encode_golden_crops(backend: &OrtBackend) -> Vec<f32> {
    let parity = parity();
    let dims = backend.dims();
    let n = parity.encoder.inputs.len();
    let pixels = golden_crop_pixels(&parity, dims.image_len());
    let mut embeddings = vec![0.0; n * dims.embed_dim];
    backend.encode_images(&pixels, n, &mut embeddings).unwrap();
    embeddings
}

fn classify_golden_clip(backend: Arc<OrtBackend>) -> ClipResult {
    let parity = parity();
    let frames = clip_frames();
    let views: Vec<RgbFrame<'_>> = frames.iter().map(RgbFrame::from).collect();
    let mut classifier = ClipClassifier::new(
        backend,
        bundle().face_margin(),
        NonZeroUsize::new(8).unwrap(),
    )
    .unwrap();
    classifier
        .classify(&views, &parity.face_boxes, parity.body_box)
        .unwrap()
}

#[test]
fn fp32_encoder_matches_the_golden_embeddings() {
    let parity = parity();
    let backend = load(OrtMode::Cpu, 2);
    assert_eq!(backend.name(), "ort-cpu");
    let embeddings = encode_golden_crops(&backend);
    let diff = max_abs_diff(&embeddings, &flatten(&parity.encoder.embeddings));
    println!(
        "ort fp32 encoder, batch {}: max abs diff {diff:e}",
        parity.encoder.inputs.len()
    );
    assert!(diff <= EMBEDDING_TOLERANCE, "encoder differs by {diff}");

    // One image at a time gives the same embeddings as the batch.
    let dims = backend.dims();
    let pixels = golden_crop_pixels(&parity, dims.image_len());
    let mut single = vec![0.0; dims.embed_dim];
    backend
        .encode_images(&pixels[..dims.image_len()], 1, &mut single)
        .unwrap();
    let diff = max_abs_diff(&single, &embeddings[..dims.embed_dim]);
    println!("ort fp32 encoder, batch 1 vs batch: max abs diff {diff:e}");
    assert!(diff <= 1e-5);
}

#[test]
fn single_and_multi_threaded_sessions_agree() {
    let one = encode_golden_crops(&load(OrtMode::Cpu, 1));
    let two = encode_golden_crops(&load(OrtMode::Cpu, 2));
    let diff = max_abs_diff(&one, &two);
    println!("ort fp32 encoder, 1 vs 2 threads: max abs diff {diff:e}");
    assert!(diff <= 1e-5);
}

#[test]
fn fp32_head_matches_the_reference_on_golden_features() {
    let parity = parity();
    for mode in [OrtMode::Cpu, OrtMode::CpuInt8] {
        // The head is fp32 in both modes.
        let backend = load(mode, 2);
        let mut logits = vec![0.0; 5];
        let (face, context) = (
            flatten(&parity.head.face_features),
            flatten(&parity.head.context_features),
        );
        backend.run_head(&face, &context, 1, &mut logits).unwrap();
        let diff = max_abs_diff(&logits, &parity.head.logits);
        println!("{} head: max abs logit diff {diff:e}", backend.name());
        assert!(diff <= LOGIT_TOLERANCE, "head differs by {diff}");
    }
}

#[test]
fn fp32_whole_clip_matches_the_reference() {
    let parity = parity();
    let result = classify_golden_clip(load(OrtMode::Cpu, 2));
    let face = max_abs_diff(&result.face_features, &flatten(&parity.face_features));
    let context = max_abs_diff(&result.context_features, &flatten(&parity.context_features));
    let logits = max_abs_diff(&result.logits, &parity.logits);
    println!(
        "ort fp32 clip: face features {face:e}, context features {context:e}, logits {logits:e}"
    );
    assert!(face <= EMBEDDING_TOLERANCE && context <= EMBEDDING_TOLERANCE);
    assert!(logits <= LOGIT_TOLERANCE, "logits differ by {logits}");
    assert_eq!(result.predicted_class(), argmax(&parity.logits).unwrap());
}

#[test]
fn int8_dynamic_encoder_stays_close_to_the_golden_embeddings() {
    let parity = parity();
    let backend = load(OrtMode::CpuInt8, 2);
    assert_eq!(backend.name(), "ort-cpu-int8");
    let d = backend.dims().embed_dim;
    let embeddings = encode_golden_crops(&backend);
    for (i, (ours, golden)) in embeddings
        .chunks(d)
        .zip(&parity.encoder.embeddings)
        .enumerate()
    {
        let cos = cosine(ours, golden);
        println!(
            "ort int8-dynamic encoder, {}: cosine {cos:.5}, max abs diff {:e}",
            parity.encoder.inputs[i],
            max_abs_diff(ours, golden)
        );
        assert!(
            cos >= INT8_MIN_COSINE,
            "{}: cosine {cos}",
            parity.encoder.inputs[i]
        );
    }
}

#[test]
fn int8_dynamic_whole_clip_keeps_the_reference_class() {
    let parity = parity();
    let result = classify_golden_clip(load(OrtMode::CpuInt8, 2));
    let d = bundle().dims().embed_dim;
    let min_cosine = |ours: &[f32], golden: &[Vec<f32>]| {
        ours.chunks(d)
            .zip(golden)
            .map(|(a, b)| cosine(a, b))
            .fold(1.0, f32::min)
    };
    let face = min_cosine(&result.face_features, &parity.face_features);
    let context = min_cosine(&result.context_features, &parity.context_features);
    let logits = max_abs_diff(&result.logits, &parity.logits);
    println!(
        "ort int8-dynamic clip: min cosine face {face:.5}, context {context:.5}; logits {:?} vs \
         reference {:?} (max abs diff {logits:e}); argmax {} vs {}",
        result.logits,
        parity.logits,
        result.predicted_class(),
        argmax(&parity.logits).unwrap()
    );
    assert!(face >= INT8_MIN_COSINE && context >= INT8_MIN_COSINE);
    assert_eq!(result.predicted_class(), argmax(&parity.logits).unwrap());
}

#[test]
fn batches_of_the_wrong_size_are_refused() {
    let backend = load(OrtMode::Cpu, 1);
    let dims = backend.dims();
    let mut out = vec![0.0; 2 * dims.embed_dim];
    let err = backend
        .encode_images(&vec![0.0; dims.image_len()], 2, &mut out)
        .unwrap_err();
    assert!(
        matches!(err, InferenceError::BufferLength { what: "pixel", .. }),
        "{err}"
    );
    // An empty batch is a no-op.
    backend.encode_images(&[], 0, &mut []).unwrap();
    backend.run_head(&[], &[], 0, &mut []).unwrap();
}

#[test]
fn a_missing_library_is_an_error_naming_it() {
    let options = OrtOptions {
        library: Some(PathBuf::from("/nonexistent/libonnxruntime.so.1.99.0")),
        ..OrtOptions::new(OrtMode::Cpu)
    };
    let err = OrtBackend::load(&bundle(), &options).unwrap_err();
    // Whether the real library is already loaded in this process or not, the error names the
    // file asked for.
    assert!(
        matches!(
            err,
            OrtError::Library { .. } | OrtError::LibraryConflict { .. }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("/nonexistent/libonnxruntime.so.1.99.0"),
        "{err}"
    );
}

#[test]
fn int8_mode_needs_the_dynamic_int8_file() {
    let (_dir, bundle) = bundle_with_manifest(|m| {
        m["files"]
            .as_object_mut()
            .unwrap()
            .remove("image_encoder_int8_dynamic");
    });
    let options = OrtOptions {
        library: Some(library()),
        ..OrtOptions::new(OrtMode::CpuInt8)
    };
    let err = OrtBackend::load(&bundle, &options).unwrap_err();
    assert!(
        matches!(
            err,
            OrtError::MissingFile {
                key: "image_encoder_int8_dynamic",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_model_that_is_not_the_one_declared_is_refused() {
    // The encoder entry points at the temporal head's file, hash and size made consistent.
    let (_dir, bundle) = bundle_with_manifest(|m| {
        let head = m["files"]["temporal_head"].clone();
        for key in ["path", "sha256", "bytes"] {
            m["files"]["image_encoder"][key] = head[key].clone();
        }
    });
    let options = OrtOptions {
        library: Some(library()),
        ..OrtOptions::new(OrtMode::Cpu)
    };
    let err = OrtBackend::load(&bundle, &options).unwrap_err();
    assert!(err.to_string().contains("temporal_head.onnx"), "{err}");
    assert!(err.to_string().contains("pixels"), "{err}");
}
