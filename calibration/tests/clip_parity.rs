//! Whole-clip parity on real image files: the official-faithful Python pipeline and
//! `caer-calibrate eval` read the same PNG and JPEG frame directories, list and annotation
//! files (official formats), and must give the same logits.
//!
//! The clips and the reference logits come from `python -m caer_export parity-clips`
//! (`model-export/caer_export/parity_clips.py`): the official loader's rules (Pillow crop of
//! the raw body box, OpenCV's letterbox, Pillow's face resize, Pillow's JPEG decoding, the
//! official listing and sampling) run with the libraries the official code calls, and the
//! fixture's PyTorch model. The Python environment is `$CAER_PYTHON` (`scripts/test.sh` sets
//! it), by default `/opt/caer/venv/bin/python`; without it the test is skipped, unless
//! `CAER_REQUIRE_TOOLS=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::util::{five, golden_bundle, run, workspace};

/// Logits of the fp32 backends must match the reference within this (the model's logit scale
/// is 100; the encoders alone agree with PyTorch to about 1e-5).
const FP32_TOLERANCE: f64 = 1e-4;

fn python() -> Option<PathBuf> {
    let path = std::env::var_os("CAER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/caer/venv/bin/python"));
    if path.is_file() {
        return Some(path);
    }
    let required = std::env::var_os("CAER_REQUIRE_TOOLS").is_some_and(|v| v == "1");
    assert!(
        !required,
        "{} is missing and CAER_REQUIRE_TOOLS=1",
        path.display()
    );
    eprintln!(
        "clip parity: skipped, no Python environment at {} (scripts/setup.sh makes it)",
        path.display()
    );
    None
}

/// Writes the clips and the reference under `dir`; returns the reference.
fn write_clips(python: &Path, dir: &Path) -> Value {
    let output = Command::new(python)
        .args(["-m", "caer_export", "parity-clips", "--out"])
        .arg(dir)
        .current_dir(workspace().join("model-export"))
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "parity-clips failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(dir.join("reference.json")).expect("reference.json");
    serde_json::from_str(&text).expect("reference is JSON")
}

fn eval(dir: &Path, reference: &Value, backend: &str) -> Value {
    let file = |key: &str| dir.join(reference[key].as_str().expect(key));
    let output = run([
        "eval".as_ref(),
        "--bundle".as_ref(),
        golden_bundle().as_os_str(),
        "--list".as_ref(),
        file("list").as_os_str(),
        "--face-boxes".as_ref(),
        file("face_boxes").as_os_str(),
        "--body-boxes".as_ref(),
        file("body_boxes").as_os_str(),
        "--backend".as_ref(),
        backend.as_ref(),
        "--out".as_ref(),
        dir.join(format!("out-{backend}")).as_os_str(),
        "--no-progress".as_ref(),
    ]);
    output.expect_code(0);
    output.json()
}

/// The largest logit difference per clip; asserts the clips are the reference's, in order.
fn differences(report: &Value, reference: &Value) -> Vec<(String, f64, bool)> {
    let ours = report["clips"].as_array().expect("clips");
    let theirs = reference["clips"].as_array().expect("reference clips");
    assert_eq!(ours.len(), theirs.len(), "skipped: {}", report["skipped"]);
    ours.iter()
        .zip(theirs)
        .map(|(a, b)| {
            assert_eq!(a["frame_dir"], b["frame_dir"]);
            let (la, lb) = (five(&a["logits"]), five(&b["logits"]));
            let diff = (0..5).map(|k| (la[k] - lb[k]).abs()).fold(0.0, f64::max);
            let same_argmax = a["predicted"] == b["predicted"];
            (
                b["frame_dir"].as_str().unwrap().to_owned(),
                diff,
                same_argmax,
            )
        })
        .collect()
}

fn print(backend: &str, diffs: &[(String, f64, bool)]) {
    for (clip, diff, same) in diffs {
        eprintln!(
            "clip parity {backend:>13} {clip:<28} max |logit diff| {diff:.2e}, same argmax: {same}"
        );
    }
}

fn backends() -> Vec<&'static str> {
    let mut fp32 = vec!["tract"];
    if cfg!(feature = "ort") {
        fp32.push("ort-cpu");
    }
    fp32
}

#[test]
fn clips_on_disk_give_the_official_pipelines_logits() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let reference = write_clips(&python, dir.path());
    for backend in backends() {
        let diffs = differences(&eval(dir.path(), &reference, backend), &reference);
        print(backend, &diffs);
        for (clip, diff, same) in &diffs {
            assert!(
                *diff <= FP32_TOLERANCE && *same,
                "{backend} on {clip}: logits differ by {diff:.3e} (tolerance {FP32_TOLERANCE:e}), same argmax: {same}"
            );
        }
    }
    if cfg!(feature = "ort") {
        // What the CPU int8 encoder costs on these clips: reported, not a parity claim.
        let diffs = differences(&eval(dir.path(), &reference, "ort-cpu-int8"), &reference);
        print("ort-cpu-int8", &diffs);
    }
}
