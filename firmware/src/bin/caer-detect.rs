//! `caer-detect`: prints the faces a face detector finds in image files, as JSON.
//!
//! ```text
//! caer-detect [--detector blaze|seeta] [--bundle DIR] [--backend auto] [--tile-size N]...
//!             [--score-threshold X] [--min-face-size 20] [--model FILE]
//!             [--format lines|boxes] IMAGE...
//! ```
//!
//! `blaze` (default) runs the bundle's BlazeFace network on the bundle's inference backend,
//! chosen as `caerd` chooses it (the choice and its self-check are reported on stderr);
//! `seeta` runs SeetaFace with its built-in model (or `--model`) and needs no bundle.
//!
//! `--format lines` (default) prints one JSON object per image:
//! `{"image": "a.jpg", "width": 640, "height": 480, "faces": [{"bbox": [l, t, r, b], "score": 7.5}]}`.
//! `--format boxes` prints one object mapping each image's file name to its boxes, the face
//! box file that `caer::pipeline::source::frame_dir` reads (`caer-detect --format boxes clip/*.jpg >
//! clip/boxes.json`). An image that cannot be read is reported on stderr and skipped; the
//! exit status is then 1. Bad arguments or a bad model exit 2. Images are read, never
//! written.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use caer::pipeline::detect::{
    BlazeConfig, BlazeDetector, FaceDetector, SeetaConfig, SeetaDetector,
};
use caer::pipeline::frame::Frame;
use caer::pipeline::model::backend::{select, BackendChoice, SelectOptions};
use caer::pipeline::model::bundle::Bundle;
use caer::pipeline::model::default_bundle;
use clap::{Parser, ValueEnum};
use serde::Serialize;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    /// One JSON object per image, one per line.
    Lines,
    /// One object: file name -> boxes (the frame directory face box file).
    Boxes,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Detector {
    /// The bundle's BlazeFace network, tiled.
    Blaze,
    /// SeetaFace (built-in model, CPU).
    Seeta,
}

/// Prints the faces found in image files as JSON.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Which detector.
    #[arg(long, value_enum, default_value_t = Detector::Blaze)]
    detector: Detector,
    /// The model bundle holding the face detector network (blaze).
    #[arg(long, default_value_os_t = default_bundle())]
    bundle: PathBuf,
    /// The inference backend (blaze): auto, tensorrt, cuda, ort-cpu, ort-cpu-int8, tract.
    #[arg(long, default_value = "auto")]
    backend: BackendChoice,
    /// Tile side in image pixels (blaze; repeat for several; default 224, 448, 896).
    #[arg(long = "tile-size")]
    tile_sizes: Vec<u32>,
    /// Score a face needs (blaze: 0 to 1, default 0.6; seeta: above 0, default 2.0).
    #[arg(long)]
    score_threshold: Option<f64>,
    /// Smallest face to find, in pixels, at least 20 (seeta).
    #[arg(long, default_value_t = SeetaConfig::default().min_face_size)]
    min_face_size: u32,
    /// A SeetaFace detection model file instead of the built-in one (seeta).
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

fn detect(detector: &mut dyn FaceDetector, path: &Path) -> anyhow::Result<(Frame, Vec<Face>)> {
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

/// The detector the arguments ask for.
fn build_detector(args: &Args) -> anyhow::Result<Box<dyn FaceDetector>> {
    Ok(match args.detector {
        Detector::Seeta => {
            let config = SeetaConfig {
                min_face_size: args.min_face_size,
                score_threshold: args
                    .score_threshold
                    .unwrap_or(SeetaConfig::default().score_threshold),
                ..SeetaConfig::default()
            };
            Box::new(match &args.model {
                Some(path) => SeetaDetector::from_model_file(path, config)?,
                None => SeetaDetector::new(config)?,
            })
        }
        Detector::Blaze => {
            let bundle = Bundle::load(&args.bundle)?;
            let selected = select(args.backend, &bundle, &SelectOptions::default())?;
            // Which runtime runs the network, and its self-check, for the operator.
            eprintln!(
                "caer-detect: backend {}: {}",
                selected.name, selected.reason
            );
            let network = selected.backend.load_face_detector(&bundle)?;
            let defaults = BlazeConfig::default();
            let config = BlazeConfig {
                tile_sizes: if args.tile_sizes.is_empty() {
                    defaults.tile_sizes
                } else {
                    args.tile_sizes.clone()
                },
                score_threshold: args
                    .score_threshold
                    .map_or(defaults.score_threshold, |s| s as f32),
                ..defaults
            };
            Box::new(BlazeDetector::new(network, config)?)
        }
    })
}

fn run(args: &Args) -> anyhow::Result<bool> {
    let mut detector = build_detector(args).context("cannot set up the face detector")?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut all_ok = true;
    let mut boxes: BTreeMap<String, Vec<[f32; 4]>> = BTreeMap::new();
    for path in &args.images {
        let (frame, faces) = match detect(detector.as_mut(), path) {
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
    caer::pipeline::model::backend::isolate_runtime_cache();
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
