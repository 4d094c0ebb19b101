//! Face detection on the photographs the project ships (`firmware/testdata/faces/`), with
//! the expected face boxes written down beside them (`expected.json`): BlazeFace from the fixture bundle (the real
//! network, on tract and, with feature `ort`, on ONNX Runtime) and SeetaFace.
//!
//! The requirement (issue 4): recall >= 90 % at <= 1 false positive per image. A face is
//! found when a detection overlaps its box by IoU >= 0.5 (0.4 for the astronaut, whose box
//! was drawn brows to chin), each detection matching one face at most.

use std::path::Path;
use std::sync::Arc;

use caer::pipeline::detect::{
    evaluate, BlazeConfig, BlazeDetector, Detection, FaceDetector, SeetaConfig, SeetaDetector,
};
use caer::pipeline::frame::Frame;
use caer::pipeline::model::backend::{
    FaceDetectorNetwork, InferenceBackend, TractBackend, TractOptions,
};
use caer::pipeline::track::iou;

use crate::golden::bundle;

mod evaluation;

/// The expected face boxes of a shipped photograph, from `testdata/faces/expected.json`
/// (where they are written down, with their sources).
pub(crate) fn expected_faces(photo: &str) -> Vec<[f32; 4]> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/faces/expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let all: serde_json::Value = serde_json::from_str(&text).expect("expected.json");
    serde_json::from_value(all[photo].clone()).unwrap_or_else(|e| panic!("{photo}: {e}"))
}

/// Fewest Solvay faces a detector must find: 27 of 29 is 93 % (>= 90 %).
const SOLVAY_MIN_HITS: usize = 27;

pub(crate) fn photo(name: &str) -> Frame {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/faces")
        .join(name);
    let image = image::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Frame::new(image.to_rgb8(), 0)
}

/// Expected faces found and detections left over (false positives), matched as the
/// evaluation matches them (`evaluate::score`).
fn score(found: &[Detection], expected: &[[f32; 4]], min_iou: f32) -> (usize, usize) {
    let image = evaluate::score(found, expected, min_iou);
    (image.hits(), image.false_faces.len())
}

/// Runs `detector` on both photographs and checks the requirement.
fn check_recall(name: &str, detector: &mut dyn FaceDetector) {
    let found = detector.detect(&photo("astronaut.jpg")).expect("detect");
    let (hits, extra) = score(&found, &expected_faces("astronaut.jpg"), 0.4);
    assert_eq!((hits, extra), (1, 0), "{name} astronaut: {found:?}");
    let found = detector.detect(&photo("solvay.jpg")).expect("detect");
    let solvay = expected_faces("solvay.jpg");
    assert_eq!(solvay.len(), 29);
    let (hits, extra) = score(&found, &solvay, 0.5);
    eprintln!("{name} solvay: {hits}/29 found, {extra} other detections");
    assert!(
        hits >= SOLVAY_MIN_HITS,
        "{name}: recall {hits}/29; {found:?}"
    );
    assert!(extra <= 1, "{name}: {extra} false positives; {found:?}");
}

pub(crate) fn tract_network() -> Arc<dyn FaceDetectorNetwork> {
    let bundle = bundle();
    let backend = TractBackend::load(&bundle, &TractOptions::default()).expect("tract");
    backend.load_face_detector(&bundle).expect("face detector")
}

#[test]
fn blaze_on_tract_finds_the_faces_of_the_shipped_photographs() {
    let mut detector = BlazeDetector::new(tract_network(), BlazeConfig::default()).unwrap();
    check_recall("blaze/tract", &mut detector);
}

#[test]
fn seeta_finds_the_faces_of_the_shipped_photographs() {
    let mut detector = SeetaDetector::new(SeetaConfig::default()).unwrap();
    check_recall("seeta", &mut detector);
}

#[test]
fn blaze_finds_nothing_in_a_blank_frame_and_handles_tiny_ones() {
    let mut detector = BlazeDetector::new(tract_network(), BlazeConfig::default()).unwrap();
    for (w, h) in [(640, 360), (20, 300), (1, 1), (0, 0)] {
        let blank = Frame::new(
            image::RgbImage::from_pixel(w, h, image::Rgb([90, 90, 90])),
            0,
        );
        assert_eq!(detector.detect(&blank).expect("detect"), [], "{w}x{h}");
    }
}

#[test]
fn blaze_settings_out_of_range_are_refused() {
    for config in [
        BlazeConfig {
            tile_sizes: vec![],
            ..BlazeConfig::default()
        },
        BlazeConfig {
            tile_sizes: vec![224, 16],
            ..BlazeConfig::default()
        },
        BlazeConfig {
            score_threshold: 1.0,
            ..BlazeConfig::default()
        },
        BlazeConfig {
            nms_iou: 0.0,
            ..BlazeConfig::default()
        },
        BlazeConfig {
            second_look_threshold: 1.0,
            ..BlazeConfig::default()
        },
        BlazeConfig {
            sure_score: 0.0,
            ..BlazeConfig::default()
        },
    ] {
        let error = BlazeDetector::new(tract_network(), config.clone()).unwrap_err();
        assert!(
            matches!(error, caer::pipeline::detect::DetectError::Settings(_)),
            "{config:?}: {error}"
        );
    }
}

#[test]
fn a_bundle_without_a_face_detector_is_an_error_naming_the_setting() {
    let (_dir, bundle) = crate::backends::bundle_with_manifest(|m| {
        m["files"].as_object_mut().unwrap().remove("face_detector");
        m.as_object_mut().unwrap().remove("face_detector");
    });
    let backend = TractBackend::load(&bundle, &TractOptions::default()).expect("tract");
    let error = backend.load_face_detector(&bundle).unwrap_err().to_string();
    assert!(
        error.contains("no face detector") && error.contains("detect.kind"),
        "{error}"
    );
}

/// ONNX Runtime runs the same network as tract: same raw outputs on a real tile, same
/// detections on the group photo.
#[cfg(feature = "ort")]
#[test]
fn blaze_on_onnx_runtime_matches_tract() {
    use caer::pipeline::detect::blaze::{INPUT_SIZE, NUM_ANCHORS, REGRESSOR_LEN};
    use caer::pipeline::model::backend::ort::{OrtBackend, OrtMode, OrtOptions};

    let bundle = bundle();
    let options = OrtOptions {
        library: Some(crate::backends::ort::library()),
        ..OrtOptions::new(OrtMode::Cpu)
    };
    let ort = OrtBackend::load(&bundle, &options).expect("ONNX Runtime");
    let ort_network = ort.load_face_detector(&bundle).expect("face detector");
    let tract = tract_network();

    // A real 128x128 tile (the top left of the group photo), in [-1, 1].
    let solvay = photo("solvay.jpg");
    let mut image = vec![0.0; 3 * INPUT_SIZE * INPUT_SIZE];
    for y in 0..INPUT_SIZE {
        for x in 0..INPUT_SIZE {
            let p = solvay.image.get_pixel(200 + x as u32, 20 + y as u32);
            for c in 0..3 {
                image[(c * INPUT_SIZE + y) * INPUT_SIZE + x] = f32::from(p[c]) / 127.5 - 1.0;
            }
        }
    }
    let run = |network: &dyn FaceDetectorNetwork, images: &[f32], batch: usize| {
        let mut regressors = vec![0.0; batch * NUM_ANCHORS * REGRESSOR_LEN];
        let mut logits = vec![0.0; batch * NUM_ANCHORS];
        network
            .run(images, batch, &mut regressors, &mut logits)
            .unwrap();
        (regressors, logits)
    };
    let (tract_reg, tract_logits) = run(tract.as_ref(), &image, 1);
    let (ort_reg, ort_logits) = run(ort_network.as_ref(), &image, 1);
    let reg_diff = crate::golden::max_abs_diff(&tract_reg, &ort_reg);
    let logit_diff = crate::golden::max_abs_diff(&tract_logits, &ort_logits);
    eprintln!("blaze tract vs ort: regressors {reg_diff:.2e}, logits {logit_diff:.2e}");
    assert!(
        reg_diff < 1e-2 && logit_diff < 1e-3,
        "{reg_diff} {logit_diff}"
    );

    // A batch on ONNX Runtime: the same tile three times (around a blank one) gives the
    // single-tile outputs in each slot; tract takes one tile per call and says so.
    assert!(ort_network.max_batch() >= 4);
    let blank = vec![0.0; image.len()];
    let images = [&image[..], &blank, &image, &image].concat();
    let (batch_reg, batch_logits) = run(ort_network.as_ref(), &images, 4);
    for slot in [0, 2, 3] {
        let reg = &batch_reg[slot * ort_reg.len()..][..ort_reg.len()];
        let logits = &batch_logits[slot * ort_logits.len()..][..ort_logits.len()];
        assert!(
            crate::golden::max_abs_diff(reg, &ort_reg) < 1e-3,
            "slot {slot}"
        );
        assert!(
            crate::golden::max_abs_diff(logits, &ort_logits) < 1e-4,
            "slot {slot}"
        );
    }
    let mut regressors = vec![0.0; 2 * NUM_ANCHORS * REGRESSOR_LEN];
    let mut logits = vec![0.0; 2 * NUM_ANCHORS];
    let refused = tract.run(&images[..2 * image.len()], 2, &mut regressors, &mut logits);
    assert!(
        matches!(refused, Err(caer::InferenceError::BatchSize { max: 1, .. })),
        "{refused:?}"
    );

    let mut on_tract = BlazeDetector::new(tract, BlazeConfig::default()).unwrap();
    let mut on_ort = BlazeDetector::new(ort_network, BlazeConfig::default()).unwrap();
    check_recall("blaze/ort", &mut on_ort);
    let a = on_tract.detect(&solvay).unwrap();
    let b = on_ort.detect(&solvay).unwrap();
    assert_eq!(a.len(), b.len(), "{a:?}\n{b:?}");
    let (hits, extra) = score(&b, &a.iter().map(|d| d.bbox).collect::<Vec<_>>(), 0.95);
    assert_eq!((hits, extra), (a.len(), 0), "{a:?}\n{b:?}");
}

/// The generated classroom with 3 portraits on the wall (drawn like the students' faces, but
/// still and never annotated), through the real BlazeFace on tract and the tracker with the
/// motion check on (`min_motion = 0.04`): BlazeFace takes the portraits for faces, the tracker
/// never confirms one, and it confirms the students (walkers passing in front of the
/// portraits, leavers and blinkers included). Once per run: the tracker, not the backend, is
/// under test (and it is left out of the aarch64 run under qemu, where it would take minutes).
#[cfg_attr(
    feature = "ort",
    ignore = "the tracker is under test: runs in the tract pass"
)]
#[test]
fn blaze_and_the_motion_check_never_confirm_the_portraits_on_the_wall() {
    use std::num::NonZeroUsize;

    use caer::pipeline::source::generated::{GeneratedConfig, GeneratedSource};
    use caer::pipeline::source::FrameSource;
    use caer::pipeline::track::{Tracker, TrackerConfig};

    // The first look only: the portraits must reach the tracker for it to be under test.
    let config = BlazeConfig {
        second_look_threshold: 0.0,
        ..BlazeConfig::default()
    };
    let mut detector = BlazeDetector::new(tract_network(), config).unwrap();
    let mut source = GeneratedSource::new(GeneratedConfig {
        width: 960,
        height: 540,
        students: NonZeroUsize::new(6).unwrap(),
        seed: 5,
        posters: 3,
        frames: Some(150),
        ..GeneratedConfig::default()
    })
    .unwrap();
    let posters = source.poster_boxes().to_vec();
    let mut tracker = Tracker::new(TrackerConfig {
        min_motion: 0.04,
        ..TrackerConfig::default()
    })
    .unwrap();
    let near = |a: &[f32; 4], boxes: &[[f32; 4]]| boxes.iter().any(|b| iou(a, b) >= 0.3);
    let (mut portraits_found, mut students_shown, mut students_confirmed) = (0, 0, 0);
    while let Some(frame) = source.next_frame().unwrap() {
        let students = frame.annotations.clone().unwrap();
        let found = detector.detect(&frame).unwrap();
        portraits_found += found
            .iter()
            .filter(|d| near(&d.bbox, &posters) && !near(&d.bbox, &students))
            .count();
        let update = tracker.update(&found);
        for face in &update.faces {
            assert!(
                !near(&face.bbox, &posters) || near(&face.bbox, &students),
                "frame {}: a portrait confirmed as face {face:?}",
                frame.sequence
            );
        }
        // From frame 20 on (confirmation takes a few frames of sway).
        if frame.sequence >= 20 {
            students_shown += students.len();
            students_confirmed += update
                .faces
                .iter()
                .filter(|f| near(&f.bbox, &students))
                .count();
        }
    }
    eprintln!(
        "portrait detections {portraits_found}; students confirmed {students_confirmed} of {students_shown} shown"
    );
    // BlazeFace found the portraits in most frames: the tracker had something to refuse.
    assert!(portraits_found >= 300, "{portraits_found}");
    assert!(
        students_confirmed * 10 >= students_shown * 6,
        "{students_confirmed} of {students_shown}"
    );
}
