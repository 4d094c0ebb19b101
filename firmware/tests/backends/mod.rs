//! Backend selection and the ONNX Runtime backend (feature `ort`) on the committed goldens
//! in `tests/golden/` (`docs/bundle.md`).
//!
//! The ONNX Runtime tests load the library named by `ORT_DYLIB_PATH` and fail, naming the
//! variable, when it is unset or unloadable: with the feature on they never skip silently.
//! Each test prints what it measured (`cargo test -- --nocapture`).

#![cfg_attr(not(feature = "ort"), allow(dead_code))]

#[cfg(feature = "ort")]
pub(crate) mod ort;
mod select;

use caer::pipeline::model::bundle::{Bundle, MANIFEST_FILE};

use crate::golden::*;

/// The golden crops as one `[n, 3, S, S]` batch.
fn golden_crop_pixels(parity: &Parity, image_len: usize) -> Vec<f32> {
    let mut pixels = vec![0.0; parity.encoder.inputs.len() * image_len];
    for (input, out) in parity
        .encoder
        .inputs
        .iter()
        .zip(pixels.chunks_exact_mut(image_len))
    {
        caer::pipeline::preprocess::write_chw(png(input).as_raw(), out).unwrap();
    }
    pixels
}

/// A copy of the fixture bundle whose manifest `edit` changed (model files untouched).
pub(crate) fn bundle_with_manifest(
    edit: impl FnOnce(&mut serde_json::Value),
) -> (tempfile::TempDir, Bundle) {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(golden_dir().join("bundle")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let manifest_path = dir.path().join(MANIFEST_FILE);
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    edit(&mut manifest);
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let bundle = Bundle::load(dir.path()).expect("the edited bundle loads");
    (dir, bundle)
}
