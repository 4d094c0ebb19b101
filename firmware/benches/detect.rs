//! Face detection time on one 1920x1080 frame (a camera's full-HD frame).
//!
//! `cargo bench -p caer-firmware --bench detect`. The frame is the shipped group photograph
//! (`firmware/testdata/faces/solvay.jpg`, 29 faces) scaled onto a 1920x1080 canvas, so the
//! detector sees a classroom-like scene of many small faces. Runs SeetaFace with the daemon's
//! default settings and with `min_face_size` 40 (faster, for cameras close to the class).
//! Prints ms/frame (median and fastest of the timed runs) and the faces found.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use caer::detect::{FaceDetector, SeetaConfig, SeetaDetector};
use caer::frame::Frame;

const RUNS: usize = 10;
const BUDGET: Duration = Duration::from_secs(60);

fn full_hd_frame() -> Result<Frame, Box<dyn std::error::Error>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/faces/solvay.jpg");
    let photo = image::open(&path)?.to_rgb8();
    // Scale to the canvas height, keep the aspect ratio, centre on a grey canvas.
    let (w, h) = photo.dimensions();
    let scaled_w = (w as f64 * 1080.0 / h as f64).round().min(1920.0) as u32;
    let scaled = image::imageops::resize(&photo, scaled_w, 1080, image::imageops::Triangle);
    let mut canvas = image::RgbImage::from_pixel(1920, 1080, image::Rgb([110, 110, 110]));
    image::imageops::replace(&mut canvas, &scaled, i64::from((1920 - scaled_w) / 2), 0);
    Ok(Frame::new(canvas, 0))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let frame = full_hd_frame()?;
    for min_face_size in [20, 40] {
        let config = SeetaConfig {
            min_face_size,
            ..SeetaConfig::default()
        };
        let mut detector = SeetaDetector::new(config)?;
        let faces = detector.detect(&frame)?.len(); // warm-up
        let mut times = Vec::new();
        let start = Instant::now();
        while times.len() < RUNS && (times.is_empty() || start.elapsed() < BUDGET) {
            let t = Instant::now();
            std::hint::black_box(detector.detect(&frame)?);
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "seeta 1920x1080 min_face_size {min_face_size}: median {:.1} ms/frame, fastest {:.1} ms ({} runs), {faces} faces",
            times[times.len() / 2],
            times[0],
            times.len()
        );
    }
    Ok(())
}
