//! `caer-detect`: prints the faces a face detector finds in image files, as JSON.
//!
//! ```text
//! caer-detect [--detector blaze|seeta] [--bundle DIR] [--backend auto] [--tile-size N]...
//!             [--score-threshold X] [--min-face-size 20] [--model FILE]
//!             [--format lines|boxes] [--expected FILE [--min-iou 0.4]] IMAGE...
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
//!
//! `--expected FILE` (the `--format boxes` form: file name -> the faces known to be there)
//! (keys starting with `_` are notes) prints instead how well the detector did: a Markdown table of faces found, missed and
//! false faces per image, the totals, and recall by face size (`caer::pipeline::detect::evaluate`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use caer::pipeline::detect::{
    evaluate, BlazeConfig, BlazeDetector, FaceDetector, SeetaConfig, SeetaDetector,
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
    /// Tile side in image pixels (blaze; repeat for several; default 112, 224, 448, 896).
    #[arg(long = "tile-size")]
    tile_sizes: Vec<u32>,
    /// Score a face needs (blaze: 0 to 1, default 0.6; seeta: above 0, default 2.0).
    #[arg(long)]
    score_threshold: Option<f64>,
    /// Score a face needs in BlazeFace's second look, 0 (off) to below 1 (blaze).
    #[arg(long)]
    second_look: Option<f32>,
    /// First-look score that needs no second look (blaze).
    #[arg(long)]
    sure_score: Option<f32>,
    /// Smallest face to find, in pixels, at least 20 (seeta).
    #[arg(long, default_value_t = SeetaConfig::default().min_face_size)]
    min_face_size: u32,
    /// A SeetaFace detection model file instead of the built-in one (seeta).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Lines)]
    format: Format,
    /// Faces known to be in the images (file name -> boxes): print the evaluation instead.
    #[arg(long)]
    expected: Option<PathBuf>,
    /// IoU a detection needs with an expected face to find it (--expected).
    #[arg(long, default_value_t = evaluate::DEFAULT_MIN_IOU)]
    min_iou: f32,
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
                second_look_threshold: args.second_look.unwrap_or(defaults.second_look_threshold),
                sure_score: args.sure_score.unwrap_or(defaults.sure_score),
                ..defaults
            };
            Box::new(BlazeDetector::new(network, config)?)
        }
    })
}

/// Largest expected-faces file read (a box file of thousands of images fits).
const MAX_EXPECTED_BYTES: u64 = 16 << 20;

/// The expected faces file: image file name -> boxes.
fn read_expected(path: &Path) -> anyhow::Result<BTreeMap<String, Vec<[f32; 4]>>> {
    let bytes = caer::pipeline::files::read_capped(path, MAX_EXPECTED_BYTES)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let shape = || {
        format!(
            "{}: expected an object of file name -> [[left, top, right, bottom], ...]",
            path.display()
        )
    };
    let all: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&bytes).with_context(shape)?;
    // Keys starting with "_" are notes (where the boxes come from).
    all.into_iter()
        .filter(|(name, _)| !name.starts_with('_'))
        .map(|(name, boxes)| {
            let boxes =
                serde_json::from_value(boxes).with_context(|| format!("{}: {name}", shape()))?;
            Ok((name, boxes))
        })
        .collect()
}

/// `--expected`: the detector against the known faces, as Markdown tables.
fn evaluate_images(args: &Args, expected_path: &Path) -> anyhow::Result<bool> {
    let expected = read_expected(expected_path)?;
    anyhow::ensure!(
        args.min_iou > 0.0 && args.min_iou <= 1.0,
        "--min-iou is {}; it must be above 0 and at most 1",
        args.min_iou
    );
    let mut detector = build_detector(args).context("cannot set up the face detector")?;
    let mut out = std::io::stdout().lock();
    let mut totals = evaluate::Totals::default();
    let mut all_ok = true;
    writeln!(out, "| image | faces | found | missed | false faces |")?;
    writeln!(out, "| --- | ---: | ---: | ---: | ---: |")?;
    for path in &args.images {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(known) = expected.get(&name) else {
            eprintln!("caer-detect: {name} is not in {}", expected_path.display());
            all_ok = false;
            continue;
        };
        let faces = match detect(detector.as_mut(), path) {
            Ok((_, faces)) => faces,
            Err(e) => {
                eprintln!("caer-detect: {e:#}");
                all_ok = false;
                continue;
            }
        };
        let found: Vec<_> = faces
            .iter()
            .map(|f| caer::pipeline::detect::Detection {
                bbox: f.bbox,
                score: f.score,
            })
            .collect();
        let image = evaluate::score(&found, known, args.min_iou);
        writeln!(
            out,
            "| {name} | {} | {} | {} | {} |",
            known.len(),
            image.hits(),
            known.len() - image.hits(),
            image.false_faces.len()
        )?;
        totals.add(&image);
    }
    writeln!(
        out,
        "| all {} images | {} | {} | {} | {} |",
        totals.images,
        totals.faces,
        totals.hits,
        totals.faces - totals.hits,
        totals.false_faces
    )?;
    writeln!(
        out,
        "\nrecall {:.1} %, {:.2} false faces per image\n",
        100.0 * totals.recall(),
        totals.false_faces_per_image()
    )?;
    writeln!(out, "| face size | faces | found |")?;
    writeln!(out, "| --- | ---: | ---: |")?;
    for (name, (hits, faces)) in evaluate::SIZE_NAMES.iter().zip(totals.by_size) {
        writeln!(out, "| {name} | {faces} | {hits} |")?;
    }
    out.flush()?;
    Ok(all_ok)
}

fn run(args: &Args) -> anyhow::Result<bool> {
    if let Some(expected) = &args.expected {
        return evaluate_images(args, expected);
    }
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
