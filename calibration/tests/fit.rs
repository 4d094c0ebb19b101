//! `fit` on a constructed miscalibrated case: labels drawn from `softmax(u)`, logits given
//! as `5 * (u + shift)`; the fit must find `T` near 5 and lower the held-out NLL.

use std::path::Path;

use caer::pipeline::model::bundle::Bundle;
use caer::pipeline::model::calibration::{bundle_hash, Calibration};
use serde_json::json;

use crate::util::{golden_bundle, run};

/// SplitMix64 uniform numbers in [0, 1).
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform().max(1e-300), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// Writes an eval-report-shaped file with `n` clips of the miscalibrated model; returns the
/// mean NLL of the given logits and of the true ones.
fn write_split(path: &Path, rng: &mut Rng, n: usize, model_id: &str, hash: &str) -> (f64, f64) {
    let shift = [0.8, -0.4, 0.0, 0.5, -0.9];
    let mut clips = Vec::new();
    let (mut nll_given, mut nll_true) = (0.0, 0.0);
    let nll = |z: &[f64; 5], y: usize| {
        let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln() - z[y]
    };
    for _ in 0..n {
        let u: [f64; 5] = std::array::from_fn(|_| 1.5 * rng.normal());
        let max = u.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e = u.map(|v| (v - max).exp());
        let total: f64 = e.iter().sum();
        let mut r = rng.uniform() * total;
        let label = (0..5)
            .find(|&k| {
                r -= e[k];
                r < 0.0
            })
            .unwrap_or(4);
        let given: [f64; 5] = std::array::from_fn(|k| 5.0 * (u[k] + shift[k]));
        nll_given += nll(&given, label);
        nll_true += nll(&u, label);
        clips.push(json!({"label": label, "logits": given}));
    }
    let report = json!({"model": {"model_id": model_id, "model_sha256": hash}, "clips": clips});
    std::fs::write(path, report.to_string()).expect("write split");
    (nll_given / n as f64, nll_true / n as f64)
}

#[test]
fn fit_recovers_the_temperature_of_scaled_logits_and_lowers_the_nll() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = Bundle::load(golden_bundle()).expect("bundle");
    let (id, hash) = (bundle.manifest().model_id.clone(), bundle_hash(&bundle));
    let mut rng = Rng(2024);
    let fit_on = dir.path().join("fit.json");
    let held_out = dir.path().join("held.json");
    write_split(&fit_on, &mut rng, 3000, &id, &hash);
    let (nll_given, nll_true) = write_split(&held_out, &mut rng, 2000, &id, &hash);
    let out = dir.path().join("calibration.json");
    let output = run([
        "fit".as_ref(),
        "--bundle".as_ref(),
        golden_bundle().as_os_str(),
        "--fit-on".as_ref(),
        fit_on.as_os_str(),
        "--held-out".as_ref(),
        held_out.as_os_str(),
        "--offsets".as_ref(),
        "nll".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    output.expect_code(0);
    let report = output.json();
    let calibration =
        Calibration::load(&out, &bundle).expect("the written file loads for its bundle");
    assert!(
        (calibration.temperature - 5.0).abs() < 0.35,
        "T = {}",
        calibration.temperature
    );
    assert_eq!(
        report["calibration"]["temperature"],
        json!(calibration.temperature)
    );
    let before = calibration.metrics_before.nll;
    let after = calibration.metrics_after.nll;
    assert!((before - nll_given).abs() < 1e-6, "{before} vs {nll_given}");
    assert!(
        after < before && after < nll_true + 0.05,
        "NLL {before} -> {after} (true {nll_true})"
    );
    assert!(calibration.metrics_after.ece < calibration.metrics_before.ece);
    assert_eq!(calibration.fitted_on.clips, 3000);
    assert_eq!(calibration.evaluated_on.clips, 2000);
    assert_eq!(calibration.model_sha256, hash);

    // The default (balanced offsets) keeps the fitted temperature.
    let output = run([
        "fit".as_ref(),
        "--bundle".as_ref(),
        golden_bundle().as_os_str(),
        "--fit-on".as_ref(),
        fit_on.as_os_str(),
        "--held-out".as_ref(),
        held_out.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    output.expect_code(0);
    let balanced = Calibration::load(&out, &bundle).expect("load");
    assert!((balanced.temperature - calibration.temperature).abs() < 1e-9);
    assert!(balanced.metrics_after.nll < balanced.metrics_before.nll);
}

#[test]
fn fit_refuses_logits_of_another_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let split = dir.path().join("split.json");
    write_split(
        &split,
        &mut Rng(1),
        50,
        "clip-caer-vit-b-32",
        &"ab".repeat(32),
    );
    let output = run([
        "fit".as_ref(),
        "--bundle".as_ref(),
        golden_bundle().as_os_str(),
        "--fit-on".as_ref(),
        split.as_os_str(),
        "--held-out".as_ref(),
        split.as_os_str(),
        "--out".as_ref(),
        dir.path().join("c.json").as_os_str(),
    ]);
    output.expect_code(2);
    assert!(
        output.stderr.contains("split.json") && output.stderr.contains("clip-caer-vit-b-32"),
        "{}",
        output.stderr
    );
    assert!(!dir.path().join("c.json").exists());
}
