//! The detector evaluation set (issue 15): every shipped photograph with its faces written
//! down (`testdata/faces/expected.json`), and two 1920x1080 frames made from them with the
//! faces of a classroom seen from the front (20-64 px): the face-api photographs at a
//! fifth of their size side by side (turned, lowered and tilted faces of 32-63 px), and the
//! group photograph at half its size (faces of 22-31 px). Scaling moves the expected boxes
//! exactly, so the small faces' truth is the hand-checked truth of the originals.
//!
//! Each detector's table (per image, per face size) is printed; the default detector for
//! real frames must find >= 95 % of the faces with <= 0.2 false faces per image.

use image::imageops::{self, FilterType};
use image::{Rgb, RgbImage};

use caer::pipeline::detect::evaluate::{self, ImageScore, Totals};
use caer::pipeline::detect::FaceDetector;
use caer::pipeline::frame::Frame;

use super::{expected_faces, photo};

/// One image of the set and the faces known to be in it.
pub(crate) struct Case {
    pub name: String,
    pub frame: Frame,
    pub faces: Vec<[f32; 4]>,
}

const FACE_API: [&str; 6] = [
    "faceapi-sample1.jpg",
    "faceapi-sample2.jpg",
    "faceapi-sample3.jpg",
    "faceapi-sample4.jpg",
    "faceapi-sample5.jpg",
    "faceapi-sample6.jpg",
];

/// Pastes `name` scaled by `scale` at (`left`, `top`) of `canvas`; returns its faces there.
fn paste(canvas: &mut RgbImage, name: &str, scale: f32, left: u32, top: u32) -> Vec<[f32; 4]> {
    let image = photo(name).image;
    let (w, h) = (
        (image.width() as f32 * scale).round() as u32,
        (image.height() as f32 * scale).round() as u32,
    );
    let small = imageops::resize(&image, w, h, FilterType::Triangle);
    imageops::replace(canvas, &small, i64::from(left), i64::from(top));
    let (sx, sy) = (
        w as f32 / image.width() as f32,
        h as f32 / image.height() as f32,
    );
    expected_faces(name)
        .iter()
        .map(|b| {
            [
                left as f32 + b[0] * sx,
                top as f32 + b[1] * sy,
                left as f32 + b[2] * sx,
                top as f32 + b[3] * sy,
            ]
        })
        .collect()
}

fn canvas() -> RgbImage {
    RgbImage::from_pixel(1920, 1080, Rgb([118, 112, 104]))
}

/// The evaluation set: 8 photographs as shipped and 2 classroom-sized frames.
pub(crate) fn evaluation_set() -> Vec<Case> {
    let mut cases: Vec<Case> = ["astronaut.jpg", "solvay.jpg"]
        .iter()
        .chain(FACE_API.iter())
        .map(|name| Case {
            name: name.to_string(),
            frame: photo(name),
            faces: expected_faces(name),
        })
        .collect();
    // The six face-api photographs at 1/5 (384 px wide), three per row.
    let mut small = canvas();
    let mut faces = Vec::new();
    for (i, name) in FACE_API.iter().enumerate() {
        let (col, row) = (i as u32 % 3, i as u32 / 3);
        faces.extend(paste(
            &mut small,
            name,
            0.2,
            160 + col * 560,
            100 + row * 480,
        ));
    }
    cases.push(Case {
        name: "faceapi-1-6-fifth-1080p".into(),
        frame: Frame::new(small, 0),
        faces,
    });
    let mut crowd = canvas();
    let faces = paste(&mut crowd, "solvay.jpg", 0.5, 543, 360);
    cases.push(Case {
        name: "solvay-half-1080p".into(),
        frame: Frame::new(crowd, 0),
        faces,
    });
    cases
}

/// Runs `detector` over the set; prints its per-image and per-size tables.
pub(crate) fn evaluate_detector(label: &str, detector: &mut dyn FaceDetector) -> Totals {
    let mut totals = Totals::default();
    let mut table = format!(
        "\n{label}\n| image | faces | found | false faces (scores) |\n| --- | ---: | ---: | --- |\n"
    );
    for case in evaluation_set() {
        let found = detector.detect(&case.frame).expect("detect");
        let image: ImageScore = evaluate::score(&found, &case.faces, evaluate::DEFAULT_MIN_IOU);
        let scores: Vec<String> = image
            .false_faces
            .iter()
            .map(|d| format!("{:.2}", d.score))
            .collect();
        table += &format!(
            "| {} | {} | {} | {} {:?} |\n",
            case.name,
            case.faces.len(),
            image.hits(),
            image.false_faces.len(),
            scores
        );
        totals.add(&image);
    }
    table += &format!(
        "| all {} | {} | {} | {} |\nrecall {:.1} %, {:.2} false faces per image; by size:",
        totals.images,
        totals.faces,
        totals.hits,
        totals.false_faces,
        100.0 * totals.recall(),
        totals.false_faces_per_image()
    );
    for (name, (hits, faces)) in evaluate::SIZE_NAMES.iter().zip(totals.by_size) {
        table += &format!(" {name} {hits}/{faces};");
    }
    eprintln!("{table}");
    totals
}

#[test]
fn the_evaluation_set_is_what_its_notes_say() {
    let cases = evaluation_set();
    let faces: Vec<usize> = cases.iter().map(|c| c.faces.len()).collect();
    assert_eq!(faces, [1, 29, 3, 3, 3, 4, 5, 4, 22, 29]);
    // The classroom-sized frames hold faces of 20-64 px, inside the frame.
    for case in &cases[8..] {
        assert_eq!((case.frame.width(), case.frame.height()), (1920, 1080));
        for b in &case.faces {
            let side = (b[2] - b[0]).max(b[3] - b[1]);
            assert!((20.0..=64.0).contains(&side), "{}: {b:?}", case.name);
            assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= 1920.0 && b[3] <= 1080.0);
        }
    }
}

fn blaze(config: caer::pipeline::detect::BlazeConfig) -> caer::pipeline::detect::BlazeDetector {
    caer::pipeline::detect::BlazeDetector::new(super::tract_network(), config).unwrap()
}

/// Faces of at least 32 px, where the default tiles work: (found, faces).
fn from_32_px(t: &Totals) -> (usize, usize) {
    t.by_size[1..]
        .iter()
        .fold((0, 0), |(h, f), (hits, faces)| (h + hits, f + faces))
}

/// BlazeFace on tract as it was the default before issue 15 (tiles 224, 448, 896, no second
/// look), as it is the default now (a 112 tile added, the second look at 0.52), and
/// SeetaFace, over the set. The bounds are the measured figures less a margin for another
/// CPU's rounding (README, "Face detection", has the tables):
/// - the old default finds no face under 32 px and takes 19 things for faces;
/// - the default finds most of them and keeps at most 0.2 false faces per image;
/// - SeetaFace finds half of the small faces, with no false face.
#[cfg_attr(
    feature = "ort",
    ignore = "detector quality is the network's: runs in the tract pass"
)]
#[test]
fn the_default_detector_finds_small_faces_and_few_false_ones() {
    use caer::pipeline::detect::{BlazeConfig, SeetaConfig, SeetaDetector};

    let before = evaluate_detector(
        "blaze, tiles 224/448/896, first look only (the default before)",
        &mut blaze(BlazeConfig {
            tile_sizes: vec![224, 448, 896],
            second_look_threshold: 0.0,
            ..BlazeConfig::default()
        }),
    );
    let default = evaluate_detector("blaze, default", &mut blaze(BlazeConfig::default()));
    let seeta = evaluate_detector(
        "seeta",
        &mut SeetaDetector::new(SeetaConfig::default()).unwrap(),
    );
    assert_eq!(default.faces, 103);
    // Measured: before 71 found, 19 false faces, 0 of 29 under 32 px.
    assert!(before.false_faces >= 12, "{before:?}");
    assert!(before.by_size[0].0 <= 2, "{before:?}");
    // Measured: default 98 found (95.1 %), 2 false faces, 24 of 29 under 32 px (0.55: 97).
    assert!(default.false_faces <= 2, "{default:?}");
    assert!(default.hits >= 95, "{default:?}");
    assert!(default.by_size[0].0 >= 20, "{default:?}");
    let (hits, faces) = from_32_px(&default);
    assert!(hits * 100 >= faces * 95, "{hits} of {faces}");
    // Faces under 32 px: measured 15 of 29 (SeetaFace).
    assert!(
        seeta.false_faces <= 1 && seeta.by_size[0].0 >= 12,
        "{seeta:?}"
    );
}
