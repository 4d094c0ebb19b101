//! Helpers of the integration tests: run the real `caer-calibrate` binary in a temp dir,
//! the generated dataset, the committed goldens.

#![allow(dead_code)]

pub mod dataset;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("calibration/ has a parent")
        .to_owned()
}

/// The committed tiny fixture bundle.
pub fn golden_bundle() -> PathBuf {
    workspace().join("tests/golden/bundle")
}

/// `tests/golden/parity.json`.
pub fn parity() -> Value {
    let text =
        std::fs::read_to_string(workspace().join("tests/golden/parity.json")).expect("parity.json");
    serde_json::from_str(&text).expect("parity.json is JSON")
}

/// The result of one run of the binary.
#[derive(Debug)]
pub struct Output {
    /// Exit status.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// Stdout as JSON; panics with both streams if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e})\n--- stdout\n{}\n--- stderr\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Panics with both streams unless the exit status is `code`.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "exit status {} (expected {code})\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// Runs `caer-calibrate` with `args` (no progress bar) and collects its output.
pub fn run<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output = Command::new(env!("CARGO_BIN_EXE_caer-calibrate"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run caer-calibrate");
    Output {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A JSON array of 5 numbers as `[f64; 5]`.
pub fn five(value: &Value) -> [f64; 5] {
    let items = value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"));
    assert_eq!(items.len(), 5, "{value}");
    std::array::from_fn(|k| items[k].as_f64().expect("a number"))
}

/// Writes a list file and box files for the golden clip (`tests/golden/clip`, boxes from
/// parity.json) under `dir`, with the clip's frames copied to `dir/clip`; returns the list.
pub fn golden_clip_dataset(dir: &Path, label: usize) -> PathBuf {
    let parity = parity();
    let clip_dir = dir.join("clip");
    std::fs::create_dir_all(&clip_dir).expect("clip dir");
    let mut names: Vec<PathBuf> = std::fs::read_dir(workspace().join("tests/golden/clip"))
        .expect("golden clip")
        .map(|e| e.expect("entry").path())
        .collect();
    names.sort();
    for path in &names {
        std::fs::copy(path, clip_dir.join(path.file_name().expect("name"))).expect("copy frame");
    }
    let mut faces = serde_json::Map::new();
    for (path, bbox) in names
        .iter()
        .zip(parity["face_boxes"].as_array().expect("face_boxes"))
    {
        let name = path.file_name().expect("name").to_string_lossy();
        faces.insert(format!("clip/{name}"), bbox.clone());
    }
    std::fs::write(dir.join("faces.json"), Value::Object(faces).to_string()).expect("faces");
    let bodies = serde_json::json!({ "clip": parity["body_box"] });
    std::fs::write(dir.join("bodies.json"), bodies.to_string()).expect("bodies");
    let list = dir.join("list.txt");
    std::fs::write(&list, format!("clip {} {label}\n", names.len())).expect("list");
    list
}
