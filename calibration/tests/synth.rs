//! `synth` writes the scripted classroom in the official RAER layout that `eval` reads.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::util::{golden_bundle, run};

fn read(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("JSON")
}

#[test]
fn synth_writes_balanced_official_clips_that_eval_reads_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("synth");
    let output = run([
        "synth".as_ref(),
        "--out".as_ref(),
        data.as_os_str(),
        "--train".as_ref(),
        "5".as_ref(),
        "--val".as_ref(),
        "0".as_ref(),
        "--test".as_ref(),
        "10".as_ref(),
        "--frames".as_ref(),
        "16".as_ref(),
        "--small-only".as_ref(),
    ]);
    output.expect_code(0);
    assert_eq!(
        output.json()["per_class"],
        serde_json::json!([3, 3, 3, 3, 3])
    );
    // The list: clip i has label i % 5 + 1, 16 frames each.
    let list = std::fs::read_to_string(data.join("test.txt")).expect("test.txt");
    let lines: Vec<Vec<&str>> = list.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines.len(), 10);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line[1], "16");
        assert_eq!(line[2], (i % 5 + 1).to_string());
        let frames = std::fs::read_dir(data.join(line[0]))
            .expect("clip dir")
            .count();
        assert_eq!(frames, 16, "{}", line[0]);
    }
    // Official face boxes: {dir: {file: box}}, each inside its clip's context box, and the
    // face-only body box inside the context box too.
    let faces = read(&data.join("faces.json"));
    let bodies = read(&data.join("bodies.json"));
    let face_only = read(&data.join("bodies-face-only.json"));
    let boxed = |v: &Value| -> [f64; 4] { serde_json::from_value(v.clone()).expect("a box") };
    let inside = |a: [f64; 4], b: [f64; 4]| {
        a[0] >= b[0] - 1e-3 && a[1] >= b[1] - 1e-3 && a[2] <= b[2] + 1e-3 && a[3] <= b[3] + 1e-3
    };
    for line in &lines {
        let per_file: BTreeMap<String, Value> =
            serde_json::from_value(faces[line[0]].clone()).expect("per-file boxes");
        assert_eq!(per_file.len(), 16);
        let body = boxed(&bodies[line[0]]);
        let only = boxed(&face_only[line[0]]);
        assert!(inside(only, body), "{}: {only:?} in {body:?}", line[0]);
        for b in per_file.values() {
            assert!(inside(boxed(b), only), "{}", line[0]);
        }
    }
    // eval takes every clip (the model here is the random fixture: no accuracy expected).
    let out = dir.path().join("eval");
    let output = run([
        "eval".as_ref(),
        "--bundle".as_ref(),
        golden_bundle().as_os_str(),
        "--list".as_ref(),
        data.join("test.txt").as_os_str(),
        "--face-boxes".as_ref(),
        data.join("faces.json").as_os_str(),
        "--body-boxes".as_ref(),
        data.join("bodies.json").as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--no-progress".as_ref(),
    ]);
    output.expect_code(0);
    let report = output.json();
    assert_eq!(report["counts"]["skipped"], 0);
    assert_eq!(
        report["metrics"]["support"],
        serde_json::json!([2, 2, 2, 2, 2])
    );
    // A second run into the same folder is refused.
    let again = run([
        "synth".as_ref(),
        "--out".as_ref(),
        data.as_os_str(),
        "--small-only".as_ref(),
    ]);
    again.expect_code(2);
    assert!(again.stderr.contains("--out"), "{}", again.stderr);
}
