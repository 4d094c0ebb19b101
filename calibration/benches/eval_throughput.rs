//! Eval throughput (clips per second) of `caer-calibrate eval` with the full-size ViT-B/32
//! bundle (seeded random weights: the speed is that of the real model, the answers are not).
//!
//! ```sh
//! scripts/full-size-bundle.sh                       # once: build/vit-b-32-random/bundle
//! cargo bench -p caer-calibrate --bench eval_throughput            # 6 clips
//! cargo bench -p caer-calibrate --bench eval_throughput -- 20      # 20 clips
//! ```
//!
//! It generates a labelled dataset in the RAER layout (320x240 frames, face and body box
//! files, clips of 12 to 33 frames), runs the release `caer-calibrate eval` on it, and prints
//! the report's timing: clips/s over the clip loop (model loading, which includes tract's
//! optimisation, excluded) and the mean time per clip of each stage. `CAER_BENCH_BUNDLE`
//! points at another bundle; `--threads` is the machine's cores. Without the bundle it says
//! so and exits 0.

#[path = "../tests/util/dataset.rs"]
mod dataset;

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bundle = std::env::var_os("CAER_BENCH_BUNDLE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("build/vit-b-32-random/bundle"));
    if !bundle.join("manifest.json").is_file() {
        eprintln!(
            "eval_throughput: skipped: no bundle at {} (run scripts/full-size-bundle.sh or set CAER_BENCH_BUNDLE)",
            bundle.display()
        );
        return;
    }
    // `cargo bench` passes `--bench`; the first plain number is the clip count.
    let clips: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(6)
        .max(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dataset::generate(dir.path(), clips.div_ceil(5), 320, 240);
    let out = dir.path().join("out");
    let output = Command::new(env!("CARGO_BIN_EXE_caer-calibrate"))
        .arg("eval")
        .arg("--bundle")
        .arg(&bundle)
        .arg("--list")
        .arg(&data.list)
        .arg("--face-boxes")
        .arg(&data.face_boxes)
        .arg("--body-boxes")
        .arg(&data.body_boxes)
        .arg("--out")
        .arg(&out)
        .arg("--limit")
        .arg(clips.to_string())
        .arg("--no-progress")
        .output()
        .expect("run caer-calibrate");
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        panic!("caer-calibrate eval failed: {}", output.status);
    }
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON report");
    let t = &report["timing"];
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "eval_throughput: {:.3} clips/s ({} clips in {:.1} s, {} threads, bundle {} ({}))",
        t["clips_per_s"].as_f64().unwrap_or(0.0),
        report["counts"]["evaluated"],
        t["wall_s"].as_f64().unwrap_or(0.0),
        cores,
        report["model"]["model_id"].as_str().unwrap_or("?"),
        bundle.display(),
    );
    println!(
        "eval_throughput: mean per clip: decode {:.1} ms, detect {:.1} ms, classify (crops + encoder x32 + head) {:.1} ms",
        t["decode_ms"].as_f64().unwrap_or(0.0),
        t["detect_ms"].as_f64().unwrap_or(0.0),
        t["classify_ms"].as_f64().unwrap_or(0.0),
    );
}
