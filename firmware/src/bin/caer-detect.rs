//! `caer-detect`: prints the faces the SeetaFace detector finds in image files, as JSON.
//!
//! ```text
//! caer-detect [--min-face-size 20] [--score-threshold 2.0] [--model FILE] [--format lines|boxes] IMAGE...
//! ```
//!
//! `--format lines` (default) prints one JSON object per image:
//! `{"image": "a.jpg", "width": 640, "height": 480, "faces": [{"bbox": [l, t, r, b], "score": 7.5}]}`.
//! `--format boxes` prints one object mapping each image's file name to its boxes, the face
//! box file that `caer::source::frame_dir` reads (`caer-detect --format boxes clip/*.jpg >
//! clip/boxes.json`). An image that cannot be read is reported on stderr and skipped; the
//! exit status is then 1. Bad arguments or a bad model exit 2. Images are read, never
//! written.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use caer::detect::{FaceDetector, SeetaConfig, SeetaDetector};
use caer::frame::Frame;
use clap::{Parser, ValueEnum};
use serde::Serialize;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    /// One JSON object per image, one per line.
    Lines,
    /// One object: file name -> boxes (the frame directory face box file).
    Boxes,
}

/// Prints the faces found in image files as JSON.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Smallest face to find, in pixels (at least 20).
    #[arg(long, default_value_t = SeetaConfig::default().min_face_size)]
    min_face_size: u32,
    /// Score a face needs (above 0; higher: fewer false faces, fewer faces).
    #[arg(long, default_value_t = SeetaConfig::default().score_threshold)]
    score_threshold: f64,
    /// A SeetaFace detection model file instead of the built-in one.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Lines)]
    format: Format,
    /// Image files (JPEG or PNG).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

#[derive(Serialize)]
struct Face {
    bbox: [f32; 4],
    score: f32,
}

#[derive(Serialize)]
struct ImageFaces<'a> {
    image: &'a Path,
    width: u32,
    height: u32,
    faces: Vec<Face>,
}

fn detect(detector: &mut SeetaDetector, path: &Path) -> anyhow::Result<(Frame, Vec<Face>)> {
    let image =
        image::open(path).with_context(|| format!("cannot read image {}", path.display()))?;
    let frame = Frame::new(image.to_rgb8(), 0);
    let faces = detector
        .detect(&frame)
        .with_context(|| format!("cannot detect faces in {}", path.display()))?
        .into_iter()
        .map(|d| Face {
            bbox: d.bbox,
            score: d.score,
        })
        .collect();
    Ok((frame, faces))
}

fn run(args: &Args) -> anyhow::Result<bool> {
    let config = SeetaConfig {
        min_face_size: args.min_face_size,
        score_threshold: args.score_threshold,
        ..SeetaConfig::default()
    };
    let mut detector = match &args.model {
        Some(path) => SeetaDetector::from_model_file(path, config),
        None => SeetaDetector::new(config),
    }
    .context("cannot set up the face detector")?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut all_ok = true;
    let mut boxes: BTreeMap<String, Vec<[f32; 4]>> = BTreeMap::new();
    for path in &args.images {
        let (frame, faces) = match detect(&mut detector, path) {
            Ok(found) => found,
            Err(e) => {
                eprintln!("caer-detect: {e:#}");
                all_ok = false;
                continue;
            }
        };
        match args.format {
            Format::Lines => {
                let record = ImageFaces {
                    image: path,
                    width: frame.width(),
                    height: frame.height(),
                    faces,
                };
                serde_json::to_writer(&mut out, &record)?;
                writeln!(out)?;
            }
            Format::Boxes => {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                boxes.insert(name, faces.iter().map(|f| f.bbox).collect());
            }
        }
    }
    if let Format::Boxes = args.format {
        serde_json::to_writer_pretty(&mut out, &boxes)?;
        writeln!(out)?;
    }
    out.flush()?;
    Ok(all_ok)
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    let pipe = Some(std::io::ErrorKind::BrokenPipe);
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().map(std::io::Error::kind) == pipe
            || c.downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind)
                == pipe
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            // A closed pipe (`caer-detect ... | head`) is not an error.
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("caer-detect: {e:#}");
            ExitCode::from(2)
        }
    }
}
