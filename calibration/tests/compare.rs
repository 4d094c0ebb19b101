//! `compare` tract against tract: the same clips give the same answers.

use crate::util::dataset::generate;
use crate::util::{golden_bundle, run};

#[test]
fn tract_against_tract_agrees_fully_and_says_which_backends_ran() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = generate(dir.path(), 1, 80, 60);
    let args = |command: &str| {
        let mut args = vec![
            command.to_owned(),
            "--bundle".to_owned(),
            golden_bundle().display().to_string(),
            "--list".to_owned(),
            data.list.display().to_string(),
            "--face-boxes".to_owned(),
            data.face_boxes.display().to_string(),
            "--body-boxes".to_owned(),
            data.body_boxes.display().to_string(),
            "--limit".to_owned(),
            "3".to_owned(),
        ];
        if command == "eval" {
            args.extend([
                "--out".to_owned(),
                dir.path().join("out").display().to_string(),
            ]);
        } else {
            args.extend(["--a", "tract", "--b", "tract"].map(str::to_owned));
        }
        args
    };
    let output = run(args("compare"));
    output.expect_code(0);
    let report = output.json();
    assert_eq!(report["backends"], serde_json::json!(["tract", "tract"]));
    assert_eq!(report["clips_compared"], 3);
    assert_eq!(report["top1_agreement"], 100.0);
    assert_eq!(report["max_abs_logit_diff"], 0.0);
    assert!(report["embedding_cosine"]["min"].as_f64().expect("cosine") > 0.999_999);
    for stage in ["decode", "detect", "crop"] {
        assert!(
            report["latency_ms"][stage]["mean"].as_f64().is_some(),
            "{stage}"
        );
    }
    assert!(
        report["latency_ms"]["encode"][1]["mean"]
            .as_f64()
            .expect("encode")
            > 0.0
    );
    assert!(
        output.stderr.contains("a = tract (") && output.stderr.contains("b = tract ("),
        "{}",
        output.stderr
    );
    assert!(report["model"]["backend_reason"]
        .as_str()
        .expect("reason")
        .contains("tract"));
    for row in [
        "decode",
        "detect",
        "crop",
        "encode",
        "temporal",
        "top-1 agreement 100.00 %",
    ] {
        assert!(
            output.stderr.contains(row),
            "table lacks {row}:\n{}",
            output.stderr
        );
    }

    // The staged path gives eval's (the firmware clip classifier's) logits.
    let eval = run(args("eval"));
    eval.expect_code(0);
    let eval = eval.json();
    for (k, clip) in report["clips"]
        .as_array()
        .expect("clips")
        .iter()
        .enumerate()
    {
        assert_eq!(clip["logits"][0], eval["clips"][k]["logits"], "clip {k}");
    }
}
