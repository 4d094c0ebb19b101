//! Bad input: per-clip problems are reported with their line or file and skipped (exit 1,
//! the other clips still run); unusable list or box files are fatal (exit 2).

use crate::util::dataset::generate;
use crate::util::{golden_bundle, run};

#[test]
fn bad_lines_missing_dirs_and_bad_box_entries_skip_only_their_clips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = generate(dir.path(), 1, 64, 48);
    let c = &data.clips;
    // Line 3 has no label, line 4 a directory that does not exist, line 5 the wrong frame
    // count, line 6 a label out of range; the body box of clip 2 is malformed.
    let list =
        format!(
        "# header\n{} {} {}\n{} {}\nclips/missing 16 2\n{} {} {}\n{} {} 9\n{} {} {}\n{} {} {}\n",
        c[0].frame_dir, c[0].num_frames, c[0].label,
        c[1].frame_dir, c[1].num_frames,
        c[2].frame_dir, c[2].num_frames + 1, c[2].label,
        c[3].frame_dir, c[3].num_frames,
        c[3].frame_dir, c[3].num_frames, c[3].label,
        c[2].frame_dir, c[2].num_frames, c[2].label,
    );
    std::fs::write(&data.list, list).expect("list");
    let mut bodies: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&data.body_boxes).expect("bodies"))
            .expect("json");
    bodies[&c[2].frame_dir] = serde_json::json!([1, 2, "three", 4]);
    std::fs::write(&data.body_boxes, bodies.to_string()).expect("bodies");

    let out = dir.path().join("out");
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
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    output.expect_code(1);
    let report = output.json();
    assert_eq!(report["counts"]["evaluated"], 2, "{}", output.stderr);
    assert_eq!(report["counts"]["skipped"], 5);
    let evaluated: Vec<u64> = report["clips"]
        .as_array()
        .expect("clips")
        .iter()
        .map(|c| c["line"].as_u64().expect("line"))
        .collect();
    assert_eq!(evaluated, [2, 7]);
    let skipped: Vec<(u64, String)> = report["skipped"]
        .as_array()
        .expect("skipped")
        .iter()
        .map(|s| {
            (
                s["line"].as_u64().expect("line"),
                s["error"].as_str().expect("error").to_owned(),
            )
        })
        .collect();
    let lines: Vec<u64> = skipped.iter().map(|s| s.0).collect();
    assert_eq!(lines, [3, 4, 5, 6, 8]);
    let list_name = data.list.display().to_string();
    for (line, error) in &skipped {
        assert!(error.contains(&format!("{list_name}:{line}")), "{error}");
        assert!(
            output.stderr.contains(error.as_str()),
            "stderr lacks {error:?}:\n{}",
            output.stderr
        );
    }
    assert!(
        skipped[0]
            .1
            .contains("<frame_dir> <num_frames> <label 1..5>"),
        "{}",
        skipped[0].1
    );
    assert!(
        skipped[1].1.contains("clips/missing") && skipped[1].1.contains("does not exist"),
        "{}",
        skipped[1].1
    );
    assert!(skipped[2].1.contains("the list says"), "{}", skipped[2].1);
    assert!(skipped[3].1.contains("label \"9\""), "{}", skipped[3].1);
    assert!(
        skipped[4].1.contains("bodies.json") && skipped[4].1.contains(&c[2].frame_dir),
        "{}",
        skipped[4].1
    );
    // The figures cover the clips that ran.
    assert_eq!(report["metrics"]["clips"], 2);
}

#[test]
fn an_unparsable_box_file_is_fatal_and_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = generate(dir.path(), 1, 64, 48);
    std::fs::write(
        &data.face_boxes,
        "{\"clips/c1_00/000001.png\": [1, 2, 3, 4],",
    )
    .expect("faces");
    let out = dir.path().join("out");
    let output = run([
        "eval".as_ref(),
        "--bundle".as_ref(),
        golden_bundle().as_os_str(),
        "--list".as_ref(),
        data.list.as_os_str(),
        "--face-boxes".as_ref(),
        data.face_boxes.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    output.expect_code(2);
    assert!(output.stdout.is_empty(), "{}", output.stdout);
    assert!(
        output.stderr.contains("faces.json") && output.stderr.contains("not valid JSON"),
        "{}",
        output.stderr
    );

    std::fs::write(&data.face_boxes, "[]").expect("faces");
    let output = run([
        "collect".as_ref(),
        "--bundle".as_ref(),
        golden_bundle().as_os_str(),
        "--list".as_ref(),
        data.list.as_os_str(),
        "--face-boxes".as_ref(),
        data.face_boxes.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    output.expect_code(2);
    assert!(
        output.stderr.contains("faces.json") && output.stderr.contains("an array"),
        "{}",
        output.stderr
    );
}

#[test]
fn fatal_setup_errors_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let list = dir.path().join("list.txt");
    std::fs::write(&list, "# no clips\n").expect("list");
    let out = dir.path().join("out");
    let eval = |bundle: &std::path::Path, list: &std::path::Path| {
        run([
            "eval".as_ref(),
            "--bundle".as_ref(),
            bundle.as_os_str(),
            "--list".as_ref(),
            list.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
        ])
    };
    let output = eval(&golden_bundle(), &list);
    output.expect_code(2);
    assert!(
        output.stderr.contains("names no clips"),
        "{}",
        output.stderr
    );
    let output = eval(&golden_bundle(), &dir.path().join("missing.txt"));
    output.expect_code(2);
    assert!(output.stderr.contains("missing.txt"), "{}", output.stderr);
    let output = eval(&dir.path().join("no-bundle"), &list);
    output.expect_code(2);
    assert!(output.stderr.contains("no-bundle"), "{}", output.stderr);
    // A usage error is exit 2 too (clap), naming the backends.
    let output = run(["compare", "--bundle", "x", "--list", "y", "--a", "onnx"]);
    output.expect_code(2);
    assert!(output.stderr.contains("tract"), "{}", output.stderr);
}
