//! Error types of the firmware library, one enum per concern.
//!
//! Messages are lowercase, name the file, box or tensor at fault and say what is wrong.
//! tract reports errors as `anyhow` values; they are rendered to text (with their whole
//! chain) at the boundary so that no `anyhow` type appears in this crate's API.

use std::path::PathBuf;

/// A bundle directory that cannot be used: unreadable, inconsistent with its manifest, or
/// describing a model this firmware does not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// `model.trusted_keys` is set and the manifest's signature is missing or wrong.
    #[error(transparent)]
    Signature(#[from] crate::pipeline::model::signature::SignatureError),
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `manifest.json` is not valid JSON or does not have the manifest's structure.
    #[error("{} is not a valid bundle manifest: {source}", path.display())]
    ManifestJson {
        /// The manifest file.
        path: PathBuf,
        /// The parser's error (line and column included).
        #[source]
        source: serde_json::Error,
    },
    /// The manifest's `schema_version` is not the one this firmware reads.
    #[error("{} has schema_version {found}; this firmware reads schema_version {supported}", path.display())]
    SchemaVersion {
        /// The manifest file.
        path: PathBuf,
        /// The version in the manifest.
        found: u32,
        /// The version this firmware reads.
        supported: u32,
    },
    /// The class list is not the reference list, in the reference order.
    #[error("manifest classes are {found:?}; expected exactly {expected:?} in this order")]
    Classes {
        /// The classes in the manifest.
        found: Vec<String>,
        /// The reference classes.
        expected: Vec<String>,
    },
    /// The coarse mapping does not have one entry per class.
    #[error("manifest coarse mapping has {found} entries; expected one per class ({expected})")]
    CoarseLength {
        /// Entries in the manifest.
        found: usize,
        /// Number of classes.
        expected: usize,
    },
    /// A model dimension in the manifest is zero or out of range.
    #[error("manifest field {field} is {value}; it must be between 1 and {max}")]
    Dimension {
        /// The manifest field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The largest accepted value.
        max: u64,
    },
    /// A preprocessing setting differs from the one this firmware implements.
    #[error("manifest preprocessing.{field} is {found}; this firmware implements {expected}")]
    Preprocessing {
        /// The field under `preprocessing`.
        field: &'static str,
        /// The value in the manifest (as JSON).
        found: String,
        /// The value implemented here (as JSON).
        expected: String,
    },
    /// The face detector block is incomplete or describes a network this firmware lacks.
    #[error("manifest {field} is {found}; expected {expected}")]
    FaceDetector {
        /// The field, e.g. `face_detector.kind`.
        field: &'static str,
        /// The value in the manifest.
        found: String,
        /// What this firmware accepts.
        expected: String,
    },
    /// A face detector was asked of a bundle that has none.
    #[error(
        "the bundle in {} has no face detector (files.face_detector); export it with a \
         current caer_export, or set detect.kind = \"seeta\"",
        dir.display()
    )]
    NoFaceDetector {
        /// The bundle directory.
        dir: PathBuf,
    },
    /// A file's path escapes the bundle directory (absolute, or with `..`).
    #[error("manifest files.{key}.path {path:?} must be a plain relative path inside the bundle")]
    UnsafePath {
        /// The entry under `files`.
        key: &'static str,
        /// The path in the manifest.
        path: String,
    },
    /// A file named by the manifest does not exist.
    #[error("{} is listed in the manifest (files.{key}) but does not exist", path.display())]
    MissingFile {
        /// The entry under `files`.
        key: &'static str,
        /// The missing file.
        path: PathBuf,
    },
    /// A file's size differs from the manifest's `bytes` (truncated or replaced file).
    #[error("{} is {actual} bytes; the manifest says {expected} (truncated or replaced?)", path.display())]
    SizeMismatch {
        /// The file.
        path: PathBuf,
        /// Size in the manifest.
        expected: u64,
        /// Size on disk.
        actual: u64,
    },
    /// A file's sha256 differs from the manifest's.
    #[error("{} has sha256 {actual}; the manifest says {expected} (corrupt or replaced file)", path.display())]
    HashMismatch {
        /// The file.
        path: PathBuf,
        /// Hash in the manifest (lowercase hex).
        expected: String,
        /// Hash of the file on disk (lowercase hex).
        actual: String,
    },
    /// A file's declared precision is not the one its role needs.
    #[error("manifest files.{key}.precision is {found:?}; expected {expected:?}")]
    Precision {
        /// The entry under `files`.
        key: &'static str,
        /// The precision in the manifest.
        found: String,
        /// The precision required.
        expected: &'static str,
    },
    /// A file's declared inputs or outputs differ from the contract (`docs/bundle.md`).
    #[error("manifest files.{key}.{tensor}: expected {expected}, found {found}")]
    DeclaredTensor {
        /// The entry under `files`.
        key: &'static str,
        /// Which tensor (`inputs[0]`, `outputs`, ...).
        tensor: String,
        /// What the contract says.
        expected: String,
        /// What the manifest says.
        found: String,
    },
    /// The ONNX model's actual inputs or outputs differ from what its manifest entry declares.
    #[error("{}: model {tensor}: manifest declares {expected}, the model has {found}", path.display())]
    ModelTensor {
        /// The model file.
        path: PathBuf,
        /// Which tensor (`inputs[0]`, `outputs`, ...).
        tensor: String,
        /// What the manifest declares.
        expected: String,
        /// What the loaded model has.
        found: String,
    },
    /// An inference runtime could not load or optimise a model file.
    #[error("cannot load model {}: {message}", path.display())]
    ModelLoad {
        /// The model file.
        path: PathBuf,
        /// The runtime's error chain, rendered.
        message: String,
    },
}

/// A frame or box that the preprocessing cannot turn into a model input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PreprocessError {
    /// The frame's pixel buffer does not hold `width * height` RGB pixels.
    #[error("frame buffer holds {len} bytes; a {width}x{height} RGB frame needs {}", u64::from(*width) * u64::from(*height) * 3)]
    FrameBuffer {
        /// Frame width.
        width: u32,
        /// Frame height.
        height: u32,
        /// Bytes in the buffer.
        len: usize,
    },
    /// A box coordinate is NaN or infinite.
    #[error("{what} box {bbox:?} has a coordinate that is not finite")]
    NonFiniteBox {
        /// `face` or `body`.
        what: &'static str,
        /// The box, `[left, top, right, bottom]`.
        bbox: [f64; 4],
    },
    /// A box leaves no pixels once clamped to the frame (face), or once rounded (body).
    #[error("{what} box {bbox:?} covers no pixels of the {width}x{height} frame")]
    EmptyCrop {
        /// `face` or `body`.
        what: &'static str,
        /// The box, `[left, top, right, bottom]`.
        bbox: [f64; 4],
        /// Frame width.
        width: u32,
        /// Frame height.
        height: u32,
    },
    /// A body box whose right edge lies left of its left edge, or bottom above top (Pillow's
    /// `Image.crop` refuses it too).
    #[error(
        "body box {bbox:?} is inverted: right must not be less than left, nor bottom than top"
    )]
    InvertedBox {
        /// The box, `[left, top, right, bottom]`.
        bbox: [f64; 4],
    },
    /// A body box so large that the reference refuses it (Pillow's decompression-bomb limit).
    #[error(
        "body box {bbox:?} crops {pixels} pixels, more than the {limit} the reference accepts"
    )]
    OversizedBox {
        /// The box, `[left, top, right, bottom]`.
        bbox: [f64; 4],
        /// Pixels of the crop.
        pixels: u64,
        /// The limit.
        limit: u64,
    },
    /// A crop so thin that letterboxing scales one side to zero pixels.
    #[error("body crop {width}x{height} letterboxes to zero pixels on one side")]
    DegenerateLetterbox {
        /// Crop width.
        width: u32,
        /// Crop height.
        height: u32,
    },
    /// A caller-provided output buffer has the wrong length.
    #[error("{what} buffer holds {found} elements; expected {expected}")]
    BufferLength {
        /// Which buffer.
        what: &'static str,
        /// Length needed.
        expected: usize,
        /// Length given.
        found: usize,
    },
}

/// A failure while running a model.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InferenceError {
    /// A batch outside what the model or runtime takes.
    #[error("{what}: batch of {batch}; it takes 1 to {max}")]
    BatchSize {
        /// The model.
        what: &'static str,
        /// The batch asked for.
        batch: usize,
        /// The largest it takes.
        max: usize,
    },
    /// An input or output buffer does not match the batch and the model's dimensions.
    #[error("{what} buffer holds {found} floats; a batch of {batch} needs {expected}")]
    BufferLength {
        /// Which buffer.
        what: &'static str,
        /// The batch size.
        batch: usize,
        /// Length needed.
        expected: usize,
        /// Length given.
        found: usize,
    },
    /// The runtime returned an output of an unexpected shape.
    #[error("{model} returned an output of shape {found:?}; expected {expected:?}")]
    OutputShape {
        /// `image encoder` or `temporal head`.
        model: &'static str,
        /// Expected shape.
        expected: Vec<usize>,
        /// Shape returned.
        found: Vec<usize>,
    },
    /// The runtime failed while running a model.
    #[error("{backend} failed running the {model}: {message}")]
    Runtime {
        /// The backend's name.
        backend: &'static str,
        /// `image encoder` or `temporal head`.
        model: &'static str,
        /// The runtime's error chain, rendered.
        message: String,
    },
}

/// A failure of the clip or streaming classifier.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ClassifyError {
    /// A clip with no frames.
    #[error("clip has no frames")]
    EmptyClip,
    /// The face boxes do not match the frames one to one.
    #[error("clip has {frames} frames but {boxes} face boxes; give one (or None) per frame")]
    FaceBoxCount {
        /// Frames in the clip.
        frames: usize,
        /// Face boxes given.
        boxes: usize,
    },
    /// A frame or box could not be preprocessed (clip classifier).
    #[error("frame {frame_index}: {source}")]
    Frame {
        /// Index of the frame in the clip.
        frame_index: usize,
        /// What went wrong.
        #[source]
        source: PreprocessError,
    },
    /// A track's boxes could not be preprocessed (streaming classifier); no window changed.
    #[error("track {track_id}: {source}")]
    Track {
        /// The track.
        track_id: u64,
        /// What went wrong.
        #[source]
        source: PreprocessError,
    },
    /// The same track appears twice in one frame.
    #[error("track {0} appears twice in one frame")]
    DuplicateTrack(u64),
    /// A frame carries more tracks than the classifier keeps.
    #[error("frame has {found} tracks; the classifier keeps at most {max}")]
    TooManyTracks {
        /// Tracks in the frame.
        found: usize,
        /// The configured bound.
        max: usize,
    },
    /// The window stride is larger than the window.
    #[error("window stride {stride} exceeds frames_per_clip {frames_per_clip}")]
    Stride {
        /// The configured stride.
        stride: usize,
        /// The window length.
        frames_per_clip: usize,
    },
    /// The backend's model has a class count other than the reference five.
    #[error("model has {found} classes; expected {expected}")]
    ClassCount {
        /// Classes of the model.
        found: usize,
        /// The reference count.
        expected: usize,
    },
    /// The model failed.
    #[error(transparent)]
    Inference(#[from] InferenceError),
}
