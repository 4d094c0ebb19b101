//! Parity with the Python reference, on the committed goldens in `tests/golden/`
//! (`docs/bundle.md`): the tiny fixture bundle, a generated clip, Pillow crops, ONNX Runtime
//! embeddings and PyTorch logits.
//!
//! Tolerances: crops within 1 level of 255 with a mean difference under 0.05 levels
//! (measured: identical); embeddings within 1e-4; logits within 1e-3 with the same argmax.
//! Each test prints what it measured (`cargo test -- --nocapture`).

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;

use caer::pipeline::model::backend::{InferenceBackend, TractBackend, TractOptions};
use caer::pipeline::model::bundle::{Bundle, MANIFEST_FILE};
use caer::pipeline::model::classify::{
    argmax, ClipClassifier, StreamingClassifier, StreamingConfig, TrackInput,
};
use caer::pipeline::model::sampling::sample_indices;
use caer::pipeline::preprocess::{write_chw, Preprocessor, RgbFrame};
use caer::BundleError;

use crate::golden::*;

const CROP_MAX_DIFF: u8 = 1;
const CROP_MEAN_DIFF: f64 = 0.05;
const EMBEDDING_TOLERANCE: f32 = 1e-4;
const LOGIT_TOLERANCE: f32 = 1e-3;

fn backend(threads: usize) -> Arc<TractBackend> {
    let options = TractOptions {
        threads: NonZeroUsize::new(threads).unwrap(),
    };
    Arc::new(TractBackend::load(&bundle(), &options).expect("tract loads the fixture"))
}

/// Max and mean absolute difference of two crops, in levels.
fn crop_diff(ours: &[u8], reference: &image::RgbImage) -> (u8, f64) {
    assert_eq!(ours.len(), reference.as_raw().len(), "crop sizes differ");
    let diffs = ours
        .iter()
        .zip(reference.as_raw())
        .map(|(a, b)| a.abs_diff(*b));
    let (max, sum) = diffs.fold((0u8, 0u64), |(m, s), d| (m.max(d), s + u64::from(d)));
    (max, sum as f64 / ours.len() as f64)
}

#[test]
fn sampling_indices_match_the_reference() {
    let parity = parity();
    for case in &parity.sampling {
        assert_eq!(
            sample_indices(case.num_frames, 16).unwrap(),
            case.indices,
            "F = {}",
            case.num_frames
        );
    }
    assert_eq!(
        sample_indices(parity.num_frames, 16).unwrap(),
        parity.sampled_indices
    );
}

#[test]
fn crops_match_pillow() {
    let parity = parity();
    let bundle = bundle();
    let frames = clip_frames();
    assert_eq!(frames.len(), parity.num_frames);
    let mut pre = Preprocessor::new(bundle.dims().input_size, bundle.face_margin());
    let mut crop = vec![0u8; pre.crop_len()];
    for case in &parity.crops {
        assert_eq!(parity.sampled_indices[case.position], case.frame_index);
        let frame = RgbFrame::from(&frames[case.frame_index]);

        pre.face_crop(frame, parity.face_boxes[case.frame_index], &mut crop)
            .unwrap();
        let (max, mean) = crop_diff(&crop, &png(&case.face_png));
        println!("{}: max diff {max}, mean {mean:.4}", case.face_png);
        assert!(
            max <= CROP_MAX_DIFF && mean < CROP_MEAN_DIFF,
            "{}",
            case.face_png
        );

        pre.context_crop(frame, parity.body_box, &mut crop).unwrap();
        let (max, mean) = crop_diff(&crop, &png(&case.context_png));
        println!("{}: max diff {max}, mean {mean:.4}", case.context_png);
        assert!(
            max <= CROP_MAX_DIFF && mean < CROP_MEAN_DIFF,
            "{}",
            case.context_png
        );
    }
}

#[test]
fn encoder_matches_onnx_runtime_on_the_golden_crops() {
    let parity = parity();
    let backend = backend(2);
    let dims = backend.dims();
    let n = parity.encoder.inputs.len();
    let mut pixels = vec![0.0; n * dims.image_len()];
    for (input, out) in parity
        .encoder
        .inputs
        .iter()
        .zip(pixels.chunks_exact_mut(dims.image_len()))
    {
        write_chw(png(input).as_raw(), out).unwrap();
    }
    let mut embeddings = vec![0.0; n * dims.embed_dim];
    backend.encode_images(&pixels, n, &mut embeddings).unwrap();
    let diff = max_abs_diff(&embeddings, &flatten(&parity.encoder.embeddings));
    println!("encoder, batch {n}: max abs diff {diff:e}");
    assert!(diff <= EMBEDDING_TOLERANCE, "encoder differs by {diff}");

    // One image at a time gives the same embeddings as the batch.
    let mut single = vec![0.0; dims.embed_dim];
    backend
        .encode_images(&pixels[..dims.image_len()], 1, &mut single)
        .unwrap();
    let diff = max_abs_diff(&single, &embeddings[..dims.embed_dim]);
    println!("encoder, batch 1 vs batch {n}: max abs diff {diff:e}");
    assert!(diff <= 1e-5);
}

#[test]
fn single_and_multi_threaded_encoders_agree() {
    let parity = parity();
    let (one, two) = (backend(1), backend(2));
    let dims = one.dims();
    let mut pixels = vec![0.0; 2 * dims.image_len()];
    write_chw(
        png(&parity.encoder.inputs[0]).as_raw(),
        &mut pixels[..dims.image_len()],
    )
    .unwrap();
    write_chw(
        png(&parity.encoder.inputs[1]).as_raw(),
        &mut pixels[dims.image_len()..],
    )
    .unwrap();
    let (mut a, mut b) = (vec![0.0; 2 * dims.embed_dim], vec![0.0; 2 * dims.embed_dim]);
    one.encode_images(&pixels, 2, &mut a).unwrap();
    two.encode_images(&pixels, 2, &mut b).unwrap();
    let diff = max_abs_diff(&a, &b);
    println!("encoder, 1 vs 2 threads: max abs diff {diff:e}");
    assert!(diff <= 1e-5);
}

#[test]
fn head_matches_the_reference_on_golden_features() {
    let parity = parity();
    let backend = backend(2);
    let mut logits = vec![0.0; 5];
    backend
        .run_head(
            &flatten(&parity.head.face_features),
            &flatten(&parity.head.context_features),
            1,
            &mut logits,
        )
        .unwrap();
    let diff = max_abs_diff(&logits, &parity.head.logits);
    println!("head: max abs logit diff {diff:e}");
    assert!(diff <= LOGIT_TOLERANCE, "head differs by {diff}");
}

#[test]
fn whole_clip_matches_the_reference() {
    let parity = parity();
    let bundle = bundle();
    let frames = clip_frames();
    let views: Vec<RgbFrame<'_>> = frames.iter().map(RgbFrame::from).collect();
    let mut classifier = ClipClassifier::new(
        backend(2),
        bundle.face_margin(),
        NonZeroUsize::new(8).unwrap(),
    )
    .unwrap();
    let result = classifier
        .classify(&views, &parity.face_boxes, parity.body_box)
        .unwrap();

    assert_eq!(result.sampled_indices, parity.sampled_indices);
    let face = max_abs_diff(&result.face_features, &flatten(&parity.face_features));
    let context = max_abs_diff(&result.context_features, &flatten(&parity.context_features));
    let logits = max_abs_diff(&result.logits, &parity.logits);
    let probabilities = max_abs_diff(&result.probabilities, &parity.probabilities);
    println!(
        "clip: face features {face:e}, context features {context:e}, logits {logits:e}, \
         probabilities {probabilities:e}"
    );
    assert!(face <= EMBEDDING_TOLERANCE && context <= EMBEDDING_TOLERANCE);
    assert!(logits <= LOGIT_TOLERANCE, "logits differ by {logits}");
    assert!(probabilities <= LOGIT_TOLERANCE);
    assert_eq!(result.predicted_class(), argmax(&parity.logits).unwrap());
}

/// A golden box as the tracker holds boxes (`f32`); the golden values lie far from any
/// rounding boundary, so the crops do not change.
fn narrow(b: [f64; 4]) -> [f32; 4] {
    b.map(|v| v as f32)
}

#[test]
fn streaming_the_sampled_frames_gives_the_clip_result() {
    let parity = parity();
    let bundle = bundle();
    let frames = clip_frames();
    let config = StreamingConfig {
        face_margin: bundle.face_margin(),
        ..StreamingConfig::default()
    };
    let mut classifier = StreamingClassifier::new(backend(2), &config).unwrap();
    let mut results = Vec::new();
    for &index in &parity.sampled_indices {
        let track = TrackInput {
            track_id: 42,
            face_box: parity.face_boxes[index].map(narrow),
            context_box: parity.body_box.map(narrow),
        };
        results.extend(
            classifier
                .push(RgbFrame::from(&frames[index]), track)
                .unwrap(),
        );
    }
    assert_eq!(results.len(), 1, "one full window");
    let diff = max_abs_diff(&results[0].logits, &parity.logits);
    println!("streaming: max abs logit diff {diff:e}");
    assert!(diff <= LOGIT_TOLERANCE);
    assert_eq!(classifier.window_len(42), Some(0), "the window slid by T");
}

/// A writable copy of the fixture bundle.
fn bundle_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(golden_dir().join("bundle")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    dir
}

/// Rewrites a file entry of the copy's manifest to match the file's current contents.
fn rehash(dir: &Path, key: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    use sha2::Digest;
    let manifest_path = dir.join(MANIFEST_FILE);
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    edit(&mut manifest["files"][key]);
    let file = dir.join(manifest["files"][key]["path"].as_str().unwrap());
    let bytes = std::fs::read(file).unwrap();
    manifest["files"][key]["bytes"] = bytes.len().into();
    manifest["files"][key]["sha256"] = format!("{:x}", sha2::Sha256::digest(&bytes)).into();
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
}

#[test]
fn truncated_onnx_with_a_matching_hash_fails_to_load_naming_the_file() {
    let dir = bundle_copy();
    let path = dir.path().join("image_encoder.onnx");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
    assert!(matches!(
        Bundle::load(dir.path()),
        Err(BundleError::SizeMismatch { .. })
    ));

    rehash(dir.path(), "image_encoder", |_| {});
    let bundle = Bundle::load(dir.path()).unwrap();
    let err = TractBackend::load(&bundle, &TractOptions::default()).unwrap_err();
    assert!(matches!(err, BundleError::ModelLoad { .. }), "{err}");
    assert!(err.to_string().contains("image_encoder.onnx"), "{err}");
}

#[test]
fn a_model_that_is_not_the_one_declared_is_refused() {
    // The encoder entry points at the temporal head's file, hash and size made consistent.
    let dir = bundle_copy();
    rehash(dir.path(), "image_encoder", |entry| {
        entry["path"] = "temporal_head.onnx".into()
    });
    let bundle = Bundle::load(dir.path()).unwrap();
    let err = TractBackend::load(&bundle, &TractOptions::default()).unwrap_err();
    assert!(matches!(err, BundleError::ModelTensor { .. }), "{err}");
    assert!(err.to_string().contains("temporal_head.onnx"), "{err}");
    assert!(err.to_string().contains("pixels"), "{err}");
}
