//! `eval` on a generated dataset: every figure of the report is recomputed here from the
//! report's own per-clip labels and logits.

use std::path::Path;

use serde_json::Value;

use crate::util::dataset::generate;
use crate::util::{five, golden_bundle, run};

fn argmax(v: &[f64; 5]) -> usize {
    (0..5).fold(0, |best, k| if v[k] > v[best] { k } else { best })
}

fn softmax(v: &[f64; 5]) -> [f64; 5] {
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e = v.map(|x| (x - max).exp());
    let s: f64 = e.iter().sum();
    e.map(|x| x / s)
}

fn reference_indices(num_frames: usize) -> Vec<usize> {
    if num_frames > 16 {
        let tick = num_frames as f64 / 16.0;
        (0..16)
            .map(|i| (tick / 2.0 + tick * i as f64) as usize)
            .collect()
    } else {
        (0..16).map(|i| i.min(num_frames - 1)).collect()
    }
}

fn close(a: f64, b: &Value, what: &str) {
    let b = b
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: not a number: {b}"));
    assert!((a - b).abs() < 1e-9, "{what}: computed {a}, report {b}");
}

fn eval_generated(dir: &Path, extra: &[&str]) -> (crate::util::dataset::Generated, Value) {
    let data = generate(dir, 3, 96, 72);
    let out = dir.join("out");
    let mut args = vec![
        "eval".to_owned(),
        "--bundle".to_owned(),
        golden_bundle().display().to_string(),
        "--list".to_owned(),
        data.list.display().to_string(),
        "--face-boxes".to_owned(),
        data.face_boxes.display().to_string(),
        "--body-boxes".to_owned(),
        data.body_boxes.display().to_string(),
        "--out".to_owned(),
        out.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let output = run(&args);
    output.expect_code(0);
    let report = output.json();
    let written: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("report.json")).expect("report.json"),
    )
    .expect("json");
    assert_eq!(report, written, "stdout and report.json differ");
    (data, report)
}

#[test]
fn eval_metrics_equal_an_independent_computation_from_the_per_clip_results() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, report) = eval_generated(dir.path(), &[]);
    let clips = report["clips"].as_array().expect("clips");
    assert_eq!(clips.len(), data.clips.len());
    assert_eq!(report["counts"]["skipped"], 0);
    assert_eq!(report["model"]["backend"], "tract");
    assert_eq!(report["dataset"]["face_source"], "files");

    let mut confusion = [[0u64; 5]; 5];
    let mut nll = 0.0;
    let mut bins = [(0u64, 0.0f64, 0u64); 15];
    for (clip, generated) in clips.iter().zip(&data.clips) {
        assert_eq!(clip["frame_dir"], generated.frame_dir.as_str());
        let label = clip["label"].as_u64().expect("label") as usize;
        assert_eq!(label, generated.label - 1);
        assert_eq!(clip["num_frames"], generated.num_frames);
        let sampled: Vec<usize> =
            serde_json::from_value(clip["sampled_indices"].clone()).expect("indices");
        assert_eq!(
            sampled,
            reference_indices(generated.num_frames),
            "{}",
            generated.frame_dir
        );
        // The tool's logits are f32: read them back as f32 (their JSON text is the shortest
        // that round-trips to f32), then widen, as the tool does.
        let logits = five(&clip["logits"]).map(|v| f64::from(v as f32));
        let predicted = argmax(&logits);
        assert_eq!(clip["predicted"], predicted);
        let p = softmax(&logits);
        for (k, q) in five(&clip["probabilities"]).iter().enumerate() {
            assert!(
                (q - p[k]).abs() < 1e-6,
                "probabilities of {}",
                generated.frame_dir
            );
        }
        confusion[label][predicted] += 1;
        nll -= p[label].ln();
        let top = p[predicted];
        let bin = ((top * 15.0) as usize).min(14);
        bins[bin].0 += 1;
        bins[bin].1 += top;
        bins[bin].2 += u64::from(predicted == label);
    }
    let n = clips.len() as f64;
    let m = &report["metrics"];
    let correct: u64 = (0..5).map(|k| confusion[k][k]).sum();
    close(100.0 * correct as f64 / n, &m["war"], "war");
    let mut recalls = Vec::new();
    for k in 0..5 {
        let support: u64 = confusion[k].iter().sum();
        assert_eq!(m["support"][k], support);
        assert_eq!(m["confusion"][k], serde_json::json!(confusion[k]));
        if support > 0 {
            let recall = 100.0 * confusion[k][k] as f64 / support as f64;
            close(recall, &m["per_class_recall"][k], "recall");
            recalls.push(recall);
        } else {
            assert!(m["per_class_recall"][k].is_null());
        }
    }
    close(
        recalls.iter().sum::<f64>() / recalls.len() as f64,
        &m["uar"],
        "uar",
    );
    close(nll / n, &m["nll"], "nll");
    let ece: f64 = bins
        .iter()
        .filter(|b| b.0 > 0)
        .map(|b| b.0 as f64 / n * (b.2 as f64 / b.0 as f64 - b.1 / b.0 as f64).abs())
        .sum();
    close(ece, &m["ece"], "ece");

    // Coarse: distraction (index 4) is "distracted", the rest "engaged".
    let coarse = |k: usize| usize::from(k == 4);
    let mut cm = [[0u64; 2]; 2];
    for (y, row) in confusion.iter().enumerate() {
        for (p, &count) in row.iter().enumerate() {
            cm[coarse(y)][coarse(p)] += count;
        }
    }
    assert_eq!(m["coarse"]["confusion"], serde_json::json!(cm));
    close(
        100.0 * (cm[0][0] + cm[1][1]) as f64 / n,
        &m["coarse"]["war"],
        "coarse war",
    );
    let r0 = 100.0 * cm[0][0] as f64 / (cm[0][0] + cm[0][1]) as f64;
    let r1 = 100.0 * cm[1][1] as f64 / (cm[1][0] + cm[1][1]) as f64;
    close((r0 + r1) / 2.0, &m["coarse"]["uar"], "coarse uar");

    for png in ["confusion.png", "reliability.png"] {
        let image = image::open(dir.path().join("out").join(png)).expect("a PNG");
        assert!(image.width() > 400 && image.height() > 400, "{png}");
    }
    assert!(report["timing"]["clips_per_s"].as_f64().expect("rate") > 0.0);
}

#[test]
fn eval_without_boxes_runs_the_firmware_detector_on_a_face() {
    // A clip cut from the astronaut portrait (its face near [180, 80, 272, 178]), panning.
    let dir = tempfile::tempdir().expect("tempdir");
    let portrait =
        image::open(crate::util::workspace().join("firmware/testdata/faces/astronaut.jpg"))
            .expect("astronaut")
            .to_rgb8();
    let clip = dir.path().join("clips/astronaut");
    std::fs::create_dir_all(&clip).expect("dir");
    for f in 0..18u32 {
        let frame = image::imageops::crop_imm(&portrait, 60 + 3 * f, 20 + f, 360, 300).to_image();
        frame
            .save(clip.join(format!("{:04}.jpg", f + 1)))
            .expect("frame");
    }
    let list = dir.path().join("list.txt");
    std::fs::write(&list, "clips/astronaut 18 1\n").expect("list");
    let out = dir.path().join("out");
    // BlazeFace (the default; the fixture bundle's network) and SeetaFace.
    for detector in [None, Some("seeta")] {
        let mut args: Vec<std::ffi::OsString> = vec![
            "eval".into(),
            "--bundle".into(),
            golden_bundle().into(),
            "--list".into(),
            list.clone().into(),
            "--out".into(),
            out.clone().into(),
        ];
        if let Some(name) = detector {
            args.extend(["--detector".into(), name.into()]);
        }
        let output = run(args);
        output.expect_code(0);
        let report = output.json();
        assert_eq!(report["dataset"]["face_source"], "detector");
        assert_eq!(report["dataset"]["body_source"], "detector");
        let clip = &report["clips"][0];
        assert_eq!(clip["face_boxes_used"], 16, "{detector:?}: {clip}");
        // The clip's body box holds the face in every frame (the face moves left by 3 px/frame).
        let body: Vec<f64> = serde_json::from_value(clip["body_box"].clone()).expect("a body box");
        assert!(
            body[0] <= 180.0 - 60.0 - 3.0 * 17.0 && body[2] >= 272.0 - 60.0,
            "{detector:?}: {body:?}"
        );
        assert!(output.stderr.contains("face detector"), "{}", output.stderr);
    }

    // With --detector none: whole frames, said so.
    let output = run([
        "eval".as_ref(),
        "--bundle".as_ref(),
        golden_bundle().as_os_str(),
        "--list".as_ref(),
        list.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--detector".as_ref(),
        "none".as_ref(),
    ]);
    output.expect_code(0);
    let report = output.json();
    assert_eq!(report["clips"][0]["face_boxes_used"], 0);
    assert!(report["clips"][0]["body_box"].is_null());
    assert!(output.stderr.contains("whole frames"), "{}", output.stderr);
}

#[test]
fn a_fitted_calibration_is_applied_by_eval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, report) = eval_generated(dir.path(), &[]);
    let report_path = dir.path().join("out/report.json");
    let calibration = dir.path().join("calibration.json");
    let output = run([
        "fit".as_ref(),
        "--bundle".as_ref(),
        golden_bundle().as_os_str(),
        "--fit-on".as_ref(),
        report_path.as_os_str(),
        "--held-out".as_ref(),
        report_path.as_os_str(),
        "--calibration-version".as_ref(),
        "test-1".as_ref(),
        "--out".as_ref(),
        calibration.as_os_str(),
    ]);
    output.expect_code(0);
    let fitted = output.json();
    let t = fitted["calibration"]["temperature"].as_f64().expect("T");
    let b = five(&fitted["calibration"]["class_offsets"]);

    let out2 = dir.path().join("out2");
    let output = run([
        "eval".as_ref(),
        "--bundle".as_ref(),
        golden_bundle().as_os_str(),
        "--list".as_ref(),
        data.list.as_os_str(),
        "--face-boxes".as_ref(),
        data.face_boxes.as_os_str(),
        "--body-boxes".as_ref(),
        data.body_boxes.as_os_str(),
        "--calibration".as_ref(),
        calibration.as_os_str(),
        "--out".as_ref(),
        out2.as_os_str(),
    ]);
    output.expect_code(0);
    let calibrated = output.json();
    assert_eq!(calibrated["calibration"]["version"], "test-1");
    assert!(calibrated["uncalibrated_metrics"].is_object());
    assert_eq!(calibrated["uncalibrated_metrics"], report["metrics"]);
    for (clip, raw) in calibrated["clips"]
        .as_array()
        .expect("clips")
        .iter()
        .zip(report["clips"].as_array().expect("clips"))
    {
        assert_eq!(clip["logits"], raw["logits"], "raw logits are kept");
        let z = five(&clip["logits"]);
        let c = five(&clip["calibrated_logits"]);
        for k in 0..5 {
            assert!(
                (c[k] - (z[k] / t + b[k])).abs() < 1e-4,
                "{c:?} vs {z:?} / {t} + {b:?}"
            );
        }
        assert_eq!(clip["predicted"], argmax(&c));
    }
}
