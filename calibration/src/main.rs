//! `caer-calibrate`: the command line over the `caer_calibrate` library.
//!
//! Exit status: 0 when every clip ran; 1 when some clips were reported and skipped (the run
//! went on); 2 on a fatal error (and on a usage error). JSON goes to stdout; diagnostics, the
//! progress bar and tables to stderr.

use std::io::Write;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use caer::pipeline::model::bundle::CLASSES;
use caer::pipeline::model::calibration::Calibration;
use caer::pipeline::model::classify::DEFAULT_MAX_BATCH;
use caer_calibrate::backends::{BackendOptions, LoadedBackend, BACKENDS};
use caer_calibrate::calibrate::{self, FitPlan, LabelledLogits};
use caer_calibrate::clips::{BoxSource, DetectorChoice};
use caer_calibrate::collect::{self, CollectPlan};
use caer_calibrate::compare::{self, ComparePlan, Side};
use caer_calibrate::eval::{self, EvalPlan};
use caer_calibrate::fit::OffsetMode;
use caer_calibrate::plan::{DatasetSettings, ResolvedBundle, ResolvedDataset};
use caer_calibrate::plot;
use caer_calibrate::progress::Progress;
use caer_calibrate::report::{EvalReport, SkippedClip};
use clap::builder::PossibleValuesParser;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Evaluate, calibrate and compare CLIP-CAER on your own labelled clips (bench tool).
///
/// Datasets use the RAER layout (docs/dataset.md): a list file with one clip a line,
/// `<frame_dir> <num_frames> <label 1..5>` (labels: 1 neutrality, 2 enjoyment, 3 confusion,
/// 4 fatigue, 5 distraction), frame directories of PNG/JPEG files, optional face and body
/// box JSON files. Exit status: 0 all clips ran, 1 some clips were skipped (reported on
/// stderr and in the JSON), 2 fatal error. JSON on stdout; diagnostics on stderr.
#[derive(Debug, Parser)]
#[command(name = "caer-calibrate", version, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the model on a labelled dataset: UAR, WAR, per-class recall, confusion matrix,
    /// coarse engaged/distracted figures, NLL, ECE, per-clip logits; writes OUT/report.json,
    /// OUT/confusion.png and OUT/reliability.png and prints the report.
    Eval(EvalArgs),
    /// Fit temperature scaling and per-class logit offsets on one split, measure them on a
    /// held-out split, and write calibration.json (for this bundle only) for the daemon.
    Fit(FitArgs),
    /// Run two backends (or precisions) on the same clips: top-1 agreement, logit
    /// differences, embedding cosine, per-stage latency (table on stderr, JSON on stdout).
    Compare(CompareArgs),
    /// Write preprocessed crops of YOUR OWN bench dataset for the exporter's static int8
    /// calibration (`python -m caer_export export --calibration DIR`).
    ///
    /// Bench only: this writes face and context crops (pictures of people) to disk, on this
    /// machine, from a dataset you are entitled to use. The device never does this: the
    /// daemon keeps no frame, crop or embedding. Crops are S x S RGB PNGs (uint8, before the
    /// /255 scaling), exactly what the firmware's preprocessing makes, at --per-clip evenly
    /// spread sampled positions of each clip. DIR must not already hold images.
    Collect(CollectArgs),
    /// Write a labelled dataset of the synthetic classroom (scripted states, the frames
    /// `caerd --demo` sees) in the RAER layout: train/val/test lists, official face and body
    /// box files, and a face-only body box file. Prints a summary as JSON.
    Synth(SynthArgs),
}

#[derive(Debug, Args)]
struct SynthArgs {
    /// Dataset root (created; must be new or empty).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Clips of the training split.
    #[arg(long, value_name = "N", default_value_t = 500)]
    train: usize,
    /// Clips of the validation split.
    #[arg(long, value_name = "N", default_value_t = 100)]
    val: usize,
    /// Clips of the held-out test split.
    #[arg(long, value_name = "N", default_value_t = 150)]
    test: usize,
    /// Frames per clip (at least 16).
    #[arg(long, value_name = "N", default_value_t = 20)]
    frames: usize,
    /// Seed of the dataset.
    #[arg(long, value_name = "N", default_value_t = 0)]
    seed: u64,
    /// Only 640x360 rooms (quick datasets).
    #[arg(long)]
    small_only: bool,
}

#[derive(Debug, Args)]
struct ModelArgs {
    /// Model bundle directory (manifest.json and the ONNX files it lists).
    #[arg(long, value_name = "DIR")]
    bundle: PathBuf,
    /// Threads for the model's matrix products [default: all cores].
    #[arg(long, value_name = "N")]
    threads: Option<NonZeroUsize>,
    /// Most crops per image-encoder call.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_BATCH)]
    max_batch: NonZeroUsize,
    /// The ONNX Runtime library for the ort backends [default: $ORT_DYLIB_PATH, else
    /// libonnxruntime.so].
    #[arg(long, value_name = "FILE")]
    ort_library: Option<PathBuf>,
}

impl ModelArgs {
    fn backend_options(&self) -> BackendOptions {
        let defaults = BackendOptions::default();
        BackendOptions {
            threads: self.threads.unwrap_or(defaults.threads),
            ort_library: self.ort_library.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DetectorArg {
    /// The bundle's BlazeFace network (on the model's backend) and the firmware's tracker
    /// (bodies: context boxes around the faces).
    Blaze,
    /// The firmware's SeetaFace detector and tracker (bodies: context boxes around the faces).
    Seeta,
    /// No detection: whole frames, as the reference does without boxes.
    None,
}

#[derive(Debug, Args)]
struct DataArgs {
    /// Dataset root that the list's frame directories are relative to [default: the list
    /// file's folder].
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Face boxes: a JSON object in the official format {"<frame_dir>": {"<file>": [left,
    /// top, right, bottom]}} or the flat one {"<frame_dir>/<file>": [...]}; null means the
    /// whole frame. Repeat to merge several files (a later file's entry wins).
    #[arg(long, value_name = "FILE")]
    face_boxes: Vec<PathBuf>,
    /// Body boxes: a JSON object mapping "<frame_dir>" to [left, top, right, bottom] or null
    /// (whole frame). Repeat to merge several files.
    #[arg(long, value_name = "FILE")]
    body_boxes: Vec<PathBuf>,
    /// How to find faces when no --face-boxes file is given.
    #[arg(long, value_enum, default_value_t = DetectorArg::Blaze)]
    detector: DetectorArg,
    /// Only the first N clips of the list.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

impl DataArgs {
    fn settings(&self, list: &Path) -> DatasetSettings {
        DatasetSettings {
            list: list.to_owned(),
            root: self.root.clone(),
            face_boxes: self.face_boxes.clone(),
            body_boxes: self.body_boxes.clone(),
            detector: match self.detector {
                DetectorArg::Blaze => DetectorChoice::Blaze,
                DetectorArg::Seeta => DetectorChoice::Seeta,
                DetectorArg::None => DetectorChoice::None,
            },
            limit: self.limit,
        }
    }
}

#[derive(Debug, Args)]
struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Inference backend.
    #[arg(long, default_value = "tract", value_parser = PossibleValuesParser::new(BACKENDS))]
    backend: String,
    /// List file of the labelled clips.
    #[arg(long, value_name = "FILE")]
    list: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Apply this calibration.json (fitted for this bundle) before the metrics.
    #[arg(long, value_name = "FILE")]
    calibration: Option<PathBuf>,
    /// Directory for report.json, confusion.png and reliability.png (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OffsetsArg {
    /// Temperature only.
    None,
    /// Offsets fitted with the temperature on the plain NLL (bias correction).
    Nll,
    /// Offsets refitted on the class-balanced NLL: raises UAR on imbalanced classes.
    Balanced,
}

#[derive(Debug, Args)]
struct FitArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Inference backend (used only for list files).
    #[arg(long, default_value = "tract", value_parser = PossibleValuesParser::new(BACKENDS))]
    backend: String,
    /// The split to fit on: an eval report.json (its raw per-clip logits) or a list file
    /// (evaluated first).
    #[arg(long, value_name = "REPORT_OR_LIST")]
    fit_on: PathBuf,
    /// The held-out split the before/after figures are measured on (report or list).
    #[arg(long, value_name = "REPORT_OR_LIST")]
    held_out: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// How to fit the per-class offsets.
    #[arg(long, value_enum, default_value_t = OffsetsArg::Balanced)]
    offsets: OffsetsArg,
    /// Version label written into the file [default: its creation time].
    #[arg(long, value_name = "LABEL")]
    calibration_version: Option<String>,
    /// Where to write the calibration.
    #[arg(long, value_name = "FILE", default_value = "calibration.json")]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct CompareArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Backend a.
    #[arg(long, default_value = "tract", value_parser = PossibleValuesParser::new(BACKENDS))]
    a: String,
    /// Backend b (may be the same as a: a determinism check).
    #[arg(long, default_value = "tract", value_parser = PossibleValuesParser::new(BACKENDS))]
    b: String,
    /// List file of the clips.
    #[arg(long, value_name = "FILE")]
    list: PathBuf,
    #[command(flatten)]
    data: DataArgs,
}

#[derive(Debug, Args)]
struct CollectArgs {
    /// Model bundle directory (for the crop size and face margin; no model is run).
    #[arg(long, value_name = "DIR")]
    bundle: PathBuf,
    /// List file of the clips.
    #[arg(long, value_name = "FILE")]
    list: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Directory for the crops (created if missing; must not hold images already).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Sampled positions per clip, spread evenly (each gives a face and a context crop).
    #[arg(long, value_name = "N", default_value_t = 2)]
    per_clip: usize,
}

fn main() -> ExitCode {
    caer::pipeline::model::backend::isolate_runtime_cache();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            let broken_pipe = err.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            eprintln!("caer-calibrate: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Eval(args) => run_eval(args),
        Command::Fit(args) => run_fit(args),
        Command::Compare(args) => run_compare(args),
        Command::Collect(args) => run_collect(args),
        Command::Synth(args) => {
            let plan = caer_calibrate::synth::SynthPlan {
                out_dir: args.out,
                clips: [args.train, args.val, args.test],
                frames: args.frames,
                seed: args.seed,
                small_only: args.small_only,
            };
            print_json(&caer_calibrate::synth::run(&plan)?)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Pretty JSON on stdout.
fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value).context("writing JSON to stdout")?;
    writeln!(out).context("writing JSON to stdout")?;
    out.flush().context("writing JSON to stdout")
}

fn exit_for(skipped: usize) -> ExitCode {
    if skipped > 0 {
        eprintln!("caer-calibrate: {skipped} clip(s) skipped (see above and \"skipped\" in the JSON); exit status 1");
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn load_bundle(dir: &Path) -> anyhow::Result<ResolvedBundle> {
    ResolvedBundle::load(dir).with_context(|| format!("loading bundle {}", dir.display()))
}

fn describe_boxes(progress: &Progress, dataset: &ResolvedDataset) {
    let loader = &dataset.loader;
    let face = match loader.face_source() {
        BoxSource::Files => "face boxes from the box file".to_owned(),
        BoxSource::Detector => {
            "face boxes from the firmware's face detector and tracker".to_owned()
        }
        BoxSource::WholeFrame => {
            "no face boxes: whole frames, as the reference does without boxes".to_owned()
        }
    };
    let body = match loader.body_source() {
        BoxSource::Files => "body boxes from the box file",
        BoxSource::Detector => "body boxes: union of the context boxes around the detected faces",
        BoxSource::WholeFrame => "no body boxes: whole frames, as the reference does without boxes",
    };
    progress.note(format!("{face}; {body}"));
}

/// Reads the dataset; a detector network runs on `backend` (tract if none).
fn resolve_dataset(
    list: &Path,
    data: &DataArgs,
    bundle: &ResolvedBundle,
    backend: Option<&LoadedBackend>,
) -> anyhow::Result<ResolvedDataset> {
    data.settings(list)
        .resolve(&bundle.bundle, backend.map(|b| &b.backend))
        .with_context(|| format!("reading dataset {}", list.display()))
}

/// Evaluates `list` (no calibration) and returns the report.
fn evaluate(
    bundle: &ResolvedBundle,
    backend: &LoadedBackend,
    list: &Path,
    data: &DataArgs,
    max_batch: NonZeroUsize,
    calibration: Option<(PathBuf, Calibration)>,
) -> anyhow::Result<EvalReport> {
    let dataset = resolve_dataset(list, data, bundle, Some(backend))?;
    let progress = Progress::new(dataset.entries().len() as u64, !data.no_progress, "eval");
    progress.note(format!(
        "model {} ({}), list {}; backend {}",
        bundle.model_id(),
        bundle.dir.display(),
        list.display(),
        backend.reason
    ));
    describe_boxes(&progress, &dataset);
    let mut plan = EvalPlan {
        bundle: bundle.clone(),
        backend_name: backend.name.to_owned(),
        backend_reason: backend.reason.clone(),
        backend: backend.backend.clone(),
        dataset,
        calibration,
        max_batch,
    };
    let outcome = eval::run(&mut plan, &progress)?;
    Ok(outcome.report)
}

fn run_eval(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let bundle = load_bundle(&args.model.bundle)?;
    let calibration = match &args.calibration {
        Some(path) => Some((path.clone(), Calibration::load(path, &bundle.bundle)?)),
        None => None,
    };
    let backend = bundle.backend(&args.backend, &args.model.backend_options())?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let report = evaluate(
        &bundle,
        &backend,
        &args.list,
        &args.data,
        args.model.max_batch,
        calibration,
    )?;

    let report_path = args.out.join("report.json");
    let text = serde_json::to_string_pretty(&report).context("serialising the report")? + "\n";
    std::fs::write(&report_path, text)
        .with_context(|| format!("writing {}", report_path.display()))?;
    if let Some(m) = &report.metrics {
        let summary = format!(
            "{} clips, UAR {:.2} %, WAR {:.2} %, NLL {:.4}, ECE {:.4}{}",
            m.clips,
            m.uar,
            m.war,
            m.nll,
            m.ece,
            if report.calibration.is_some() {
                " (calibrated)"
            } else {
                ""
            }
        );
        plot::confusion_png(
            &args.out.join("confusion.png"),
            &m.confusion,
            &CLASSES,
            &summary,
        )?;
        plot::reliability_png(&args.out.join("reliability.png"), &m.reliability, &summary)?;
        eprintln!(
            "caer-calibrate: {summary}; {:.3} clips/s; wrote {}",
            report.timing.clips_per_s,
            args.out.display()
        );
    } else {
        eprintln!(
            "caer-calibrate: no clip could be evaluated: no metrics or figures; wrote {}",
            report_path.display()
        );
    }
    print_json(&report)?;
    Ok(exit_for(report.counts.skipped))
}

fn run_fit(args: FitArgs) -> anyhow::Result<ExitCode> {
    let bundle = load_bundle(&args.model.bundle)?;
    let mut backend = None;
    let mut skipped: Vec<SkippedClip> = Vec::new();
    let mut split = |path: &Path| -> anyhow::Result<LabelledLogits> {
        if calibrate::is_report(path)? {
            return Ok(calibrate::read_report(path, &bundle)?);
        }
        let backend = match &backend {
            Some(b) => b,
            None => backend.insert(bundle.backend(&args.backend, &args.model.backend_options())?),
        };
        let report = evaluate(
            &bundle,
            backend,
            path,
            &args.data,
            args.model.max_batch,
            None,
        )?;
        skipped.extend(report.skipped.iter().cloned());
        Ok(LabelledLogits {
            labels: report.clips.iter().map(|c| c.label).collect(),
            logits: report.clips.iter().map(|c| c.logits).collect(),
        })
    };
    let fit_on =
        split(&args.fit_on).with_context(|| format!("fit split {}", args.fit_on.display()))?;
    let held_out = split(&args.held_out)
        .with_context(|| format!("held-out split {}", args.held_out.display()))?;
    let plan = FitPlan {
        bundle,
        fit_on,
        held_out,
        mode: match args.offsets {
            OffsetsArg::None => OffsetMode::None,
            OffsetsArg::Nll => OffsetMode::Nll,
            OffsetsArg::Balanced => OffsetMode::Balanced,
        },
        version: args.calibration_version,
        out: args.out,
        skipped,
    };
    let report = calibrate::run(&plan)?;
    for warning in &report.warnings {
        eprintln!("caer-calibrate: warning: {warning}");
    }
    let h = &report.held_out;
    eprintln!(
        "caer-calibrate: T = {:.4}; held-out NLL {:.4} -> {:.4}, ECE {:.4} -> {:.4}, UAR {:.2} -> {:.2}, WAR {:.2} -> {:.2}; wrote {}",
        report.calibration.temperature,
        h.before.nll,
        h.after.nll,
        h.before.ece,
        h.after.ece,
        h.before.uar,
        h.after.uar,
        h.before.war,
        h.after.war,
        report.output
    );
    print_json(&report)?;
    Ok(exit_for(report.skipped.len()))
}

fn run_compare(args: CompareArgs) -> anyhow::Result<ExitCode> {
    let bundle = load_bundle(&args.model.bundle)?;
    let options = args.model.backend_options();
    // Two instances even for the same name: b must not share a's state.
    let side = |name: &str| -> anyhow::Result<Side> {
        let loaded = bundle.backend(name, &options)?;
        Ok(Side {
            name: loaded.name.to_owned(),
            reason: loaded.reason,
            backend: loaded.backend,
        })
    };
    let sides = [side(&args.a)?, side(&args.b)?];
    // Both sides get the same boxes: a detector network runs once, on tract.
    let dataset = resolve_dataset(&args.list, &args.data, &bundle, None)?;
    let progress = Progress::new(
        dataset.entries().len() as u64,
        !args.data.no_progress,
        "compare",
    );
    progress.note(format!(
        "backends: a = {} ({}), b = {} ({}); names: {}",
        sides[0].name,
        sides[0].reason,
        sides[1].name,
        sides[1].reason,
        BACKENDS.join(", ")
    ));
    describe_boxes(&progress, &dataset);
    let mut plan = ComparePlan {
        bundle,
        sides,
        dataset,
        max_batch: args.model.max_batch,
    };
    let outcome = compare::run(&mut plan, &progress)?;
    eprint!("{}", compare::latency_table(&outcome.report));
    print_json(&outcome.report)?;
    Ok(exit_for(outcome.report.skipped.len()))
}

fn run_collect(args: CollectArgs) -> anyhow::Result<ExitCode> {
    let bundle = load_bundle(&args.bundle)?;
    let dataset = resolve_dataset(&args.list, &args.data, &bundle, None)?;
    let progress = Progress::new(
        dataset.entries().len() as u64,
        !args.data.no_progress,
        "collect",
    );
    describe_boxes(&progress, &dataset);
    let mut plan = CollectPlan {
        bundle,
        dataset,
        out_dir: args.out,
        per_clip: args.per_clip,
    };
    let outcome = collect::run(&mut plan, &progress)?;
    eprintln!(
        "caer-calibrate: wrote {} crops of {} clips to {} (bench only: delete them when the export is done)",
        outcome.report.crops_written, outcome.report.clips, outcome.report.out_dir
    );
    print_json(&outcome.report)?;
    Ok(exit_for(outcome.report.skipped.len()))
}
