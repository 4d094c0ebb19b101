//! `collect` writes the firmware's crops, byte for byte.

use caer::pipeline::preprocess::Preprocessor;

use crate::util::{golden_bundle, golden_clip_dataset, parity, run, workspace};

#[test]
fn collect_writes_the_firmware_crops_of_every_sampled_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let list = golden_clip_dataset(dir.path(), 1);
    let out = dir.path().join("crops");
    let output = run([
        "collect".as_ref(),
        "--bundle".as_ref(),
        golden_bundle().as_os_str(),
        "--list".as_ref(),
        list.as_os_str(),
        "--face-boxes".as_ref(),
        dir.path().join("faces.json").as_os_str(),
        "--body-boxes".as_ref(),
        dir.path().join("bodies.json").as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--per-clip".as_ref(),
        "16".as_ref(),
    ]);
    output.expect_code(0);
    let report = output.json();
    assert_eq!(report["crops_written"], 32);
    assert!(output.stderr.contains("bench only"), "{}", output.stderr);

    let golden = parity();
    let sampled: Vec<usize> =
        serde_json::from_value(golden["sampled_indices"].clone()).expect("indices");
    let face_boxes: Vec<Option<[f64; 4]>> =
        serde_json::from_value(golden["face_boxes"].clone()).expect("faces");
    let body_box: Option<[f64; 4]> =
        serde_json::from_value(golden["body_box"].clone()).expect("body");
    let mut preprocessor = Preprocessor::new(224, 20);
    let mut expected = vec![0u8; preprocessor.crop_len()];
    for (p, &frame_index) in sampled.iter().enumerate() {
        let frame = image::open(dir.path().join(format!("clip/{:06}.png", frame_index + 1)))
            .expect("frame")
            .to_rgb8();
        for stream in ["face", "context"] {
            if stream == "face" {
                preprocessor
                    .face_crop((&frame).into(), face_boxes[frame_index], &mut expected)
                    .expect("crop");
            } else {
                preprocessor
                    .context_crop((&frame).into(), body_box, &mut expected)
                    .expect("crop");
            }
            let path = out.join(format!("l000001_p{p:02}_{stream}.png"));
            let written = image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(written.color(), image::ColorType::Rgb8);
            assert_eq!((written.width(), written.height()), (224, 224));
            assert!(
                written.to_rgb8().as_raw() == &expected,
                "{} differs from the firmware crop",
                path.display()
            );
        }
    }

    // The reference's (Pillow) crops of a few positions: the same pictures.
    for crop in golden["crops"].as_array().expect("crops") {
        let p = crop["position"].as_u64().expect("position");
        for (stream, key) in [("face", "face_png"), ("context", "context_png")] {
            let reference = image::open(
                workspace()
                    .join("tests/golden")
                    .join(crop[key].as_str().expect("png")),
            )
            .expect("golden crop")
            .to_rgb8();
            let written = image::open(out.join(format!("l000001_p{p:02}_{stream}.png")))
                .expect("crop")
                .to_rgb8();
            let max_diff = reference
                .as_raw()
                .iter()
                .zip(written.as_raw())
                .map(|(a, b)| a.abs_diff(*b))
                .max();
            assert!(
                max_diff <= Some(1),
                "position {p} {stream}: max difference {max_diff:?} from the reference"
            );
        }
    }

    // A directory that already holds images is refused.
    let again = run([
        "collect".as_ref(),
        "--bundle".as_ref(),
        golden_bundle().as_os_str(),
        "--list".as_ref(),
        list.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    again.expect_code(2);
    assert!(
        again.stderr.contains("already holds 32 image files"),
        "{}",
        again.stderr
    );
}
