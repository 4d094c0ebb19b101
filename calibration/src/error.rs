//! Error types, split by what the run does about them.
//!
//! - [`Error`]: fatal. The run cannot go on (bundle, list file or box file unreadable, a
//!   calibration for another model, an output that cannot be written); the binary prints
//!   the chain and exits 2.
//! - [`ClipError`], wrapped in a [`ClipIssue`] that says where (list file and line): one clip
//!   cannot be used. It is reported on stderr and in the JSON report, the clip is skipped,
//!   the run goes on, and the binary exits 1 at the end.
//!
//! Messages are lowercase and name the file, line, box entry or backend at fault.

use std::fmt;
use std::path::PathBuf;

use caer::pipeline::detect::DetectError;
use caer::pipeline::model::backend::SelectError;
use caer::pipeline::model::calibration::CalibrationError;
use caer::{BundleError, ClassifyError, InferenceError, PreprocessError};

/// A problem that stops the run (exit status 2).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The model bundle cannot be used.
    #[error("bundle: {0}")]
    Bundle(#[from] BundleError),
    /// A backend could not be loaded, or failed its self-check.
    #[error("backend {name}: {source}")]
    Backend {
        /// The backend's name as asked for.
        name: String,
        /// Why it failed (boxed: the firmware's error lists every candidate tried).
        #[source]
        source: Box<SelectError>,
    },
    /// A backend failed on its warm-up run, before any clip.
    #[error("backend {backend} failed on its warm-up run: {source}")]
    Warmup {
        /// The backend's name.
        backend: String,
        /// What went wrong.
        #[source]
        source: InferenceError,
    },
    /// A backend name that this build does not have.
    #[error("unknown backend {name:?}; this build has {known}")]
    UnknownBackend {
        /// The name asked for.
        name: String,
        /// The names available, comma-separated.
        known: String,
    },
    /// The clip classifier refuses the backend's model.
    #[error("classifier: {0}")]
    Classifier(#[from] ClassifyError),
    /// The calibration file cannot be used with this bundle.
    #[error(transparent)]
    Calibration(#[from] CalibrationError),
    /// The list file or a box file cannot be used at all.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// An eval report given to `fit` cannot be used.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// The face detector cannot be built.
    #[error("face detector: {0}")]
    Detector(#[source] DetectError),
    /// The bundle's face detector network cannot be loaded.
    #[error("face detector network: {0}")]
    DetectorNetwork(#[source] caer::pipeline::model::backend::BackendError),
    /// Calibration fitting failed.
    #[error(transparent)]
    Fit(#[from] FitError),
    /// An output file or directory could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Output {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A PNG could not be drawn or encoded.
    #[error("cannot draw {}: {message}", path.display())]
    Plot {
        /// The PNG file.
        path: PathBuf,
        /// What went wrong, rendered.
        message: String,
    },
    /// `collect` refuses a directory that already holds images: the exporter reads every
    /// image of the directory, so stale crops would be mixed in.
    #[error("{} already holds {count} image files; give an empty or new directory", path.display())]
    OutputNotEmpty {
        /// The directory.
        path: PathBuf,
        /// Images found in it.
        count: usize,
    },
    /// An option's value is out of range.
    #[error("{option} {value}: {reason}")]
    Option {
        /// The option, e.g. `--per-clip`.
        option: &'static str,
        /// Its value, rendered.
        value: String,
        /// The accepted range.
        reason: &'static str,
    },
}

/// The list file or a box file cannot be used at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatasetError {
    /// The list file cannot be read.
    #[error("cannot read list file {}: {source}", path.display())]
    ListIo {
        /// The list file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The list file has no clip lines at all.
    #[error("list file {} names no clips (only blank lines and # comments)", path.display())]
    EmptyList {
        /// The list file.
        path: PathBuf,
    },
    /// A box file cannot be read.
    #[error("cannot read box file {}: {source}", path.display())]
    BoxIo {
        /// The box file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A box file is not JSON.
    #[error("box file {} is not valid JSON: {source}", path.display())]
    BoxJson {
        /// The box file.
        path: PathBuf,
        /// The parser's error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// A box file is larger than the bench reads.
    #[error("box file {} is larger than {limit} bytes", path.display())]
    BoxTooLarge {
        /// The box file.
        path: PathBuf,
        /// The cap.
        limit: u64,
    },
    /// A box file is JSON but not an object.
    #[error(
        "box file {} must be one JSON object mapping paths to [left, top, right, bottom]; it is {found}",
        path.display()
    )]
    BoxNotObject {
        /// The box file.
        path: PathBuf,
        /// What it is instead (`an array`, `a string`, ...).
        found: &'static str,
    },
}

/// Why one clip was skipped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClipError {
    /// The list line does not have three fields.
    #[error("expected '<frame_dir> <num_frames> <label 1..5>', got {text:?}")]
    LineFields {
        /// The line.
        text: String,
    },
    /// The frame count field is not a whole number above zero.
    #[error("num_frames {value:?} is not a whole number above 0")]
    NumFrames {
        /// The field.
        value: String,
    },
    /// The label field is not 1..5.
    #[error("label {value:?} is not one of 1..5")]
    Label {
        /// The field.
        value: String,
    },
    /// The frame directory does not exist.
    #[error("frame directory {} does not exist", path.display())]
    MissingDir {
        /// The directory.
        path: PathBuf,
    },
    /// The frame directory cannot be listed.
    #[error("cannot list frame directory {}: {source}", path.display())]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The directory's frame count differs from the list's.
    #[error("{} holds {found} frames (entries not starting with '.'); the list says {listed}", path.display())]
    FrameCount {
        /// The directory.
        path: PathBuf,
        /// `num_frames` in the list.
        listed: usize,
        /// Image files found.
        found: usize,
    },
    /// A frame cannot be decoded.
    #[error("cannot decode frame {}: {source}", path.display())]
    Decode {
        /// The frame file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: caer::pipeline::decode::DecodeError,
    },
    /// A box file entry that this clip needs is malformed.
    #[error(
        "box file {}: entry {key:?} is {found}; expected [left, top, right, bottom] (finite numbers) or null",
        path.display()
    )]
    BadBox {
        /// The box file.
        path: PathBuf,
        /// The entry's key.
        key: String,
        /// What it holds, rendered.
        found: String,
    },
    /// The face detector failed on a frame.
    #[error("face detector on {}: {source}", path.display())]
    Detect {
        /// The frame file.
        path: PathBuf,
        /// The detector's error.
        #[source]
        source: DetectError,
    },
    /// The classifier refused the clip (a box that covers no pixels, ...) or the model failed.
    #[error("{source}")]
    Classify {
        /// The classifier's error.
        #[source]
        source: ClassifyError,
    },
    /// A frame and its box could not be cropped.
    #[error("frame {}: {source}", path.display())]
    Preprocess {
        /// The frame file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: PreprocessError,
    },
    /// A backend failed on this clip.
    #[error("backend {backend}: {source}")]
    Inference {
        /// The backend's name.
        backend: String,
        /// What went wrong.
        #[source]
        source: InferenceError,
    },
    /// A crop PNG could not be written.
    #[error("cannot write crop {}: {message}", path.display())]
    WriteCrop {
        /// The PNG file.
        path: PathBuf,
        /// What went wrong, rendered.
        message: String,
    },
}

/// A skipped clip: where it is listed and why it was skipped.
#[derive(Debug)]
pub struct ClipIssue {
    /// The list file.
    pub list: PathBuf,
    /// The 1-based line of the list file.
    pub line: usize,
    /// The clip's frame directory as listed, when the line could be parsed that far.
    pub frame_dir: Option<String>,
    /// Why it was skipped.
    pub error: ClipError,
}

impl fmt::Display for ClipIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.list.display(), self.line)?;
        if let Some(dir) = &self.frame_dir {
            write!(f, "clip {dir}: ")?;
        }
        write!(f, "{}", self.error)
    }
}

/// An eval report given to `fit` that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// The file cannot be read.
    #[error("cannot read eval report {}: {source}", path.display())]
    Io {
        /// The report.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not an eval report.
    #[error("{} is not an eval report (caer-calibrate eval's report.json): {source}", path.display())]
    Json {
        /// The report.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// The report's logits come from another model than the bundle.
    #[error(
        "{} holds logits of model {report_id:?} ({report_hash}); the bundle is {bundle_id:?} ({bundle_hash}): \
         run eval with this bundle first",
        path.display()
    )]
    ModelMismatch {
        /// The report.
        path: PathBuf,
        /// The report's model id.
        report_id: String,
        /// The report's model hash.
        report_hash: String,
        /// The bundle's model id.
        bundle_id: String,
        /// The bundle's hash.
        bundle_hash: String,
    },
    /// A clip of the report has a label or logits that cannot be used.
    #[error("{}: clips[{index}]: {reason}", path.display())]
    Clip {
        /// The report.
        path: PathBuf,
        /// Position of the clip in `clips`.
        index: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Fitting failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FitError {
    /// A split has no usable clips.
    #[error("the {split} split has no usable clips")]
    Empty {
        /// `fit` or `held-out`.
        split: &'static str,
    },
    /// The optimiser produced a non-finite value (logits far out of range?).
    #[error("the fit diverged (non-finite {what}); check the logits")]
    Diverged {
        /// What became non-finite.
        what: &'static str,
    },
}
