//! The model bundle: a directory holding `manifest.json` and the ONNX files it lists.
//!
//! [`Bundle::load`] checks everything that can be checked without an inference runtime, and
//! returns a value that the backends consume: the schema version, the class list (exactly the
//! reference five in the reference order), the coarse mapping, the model dimensions, the
//! preprocessing settings (only the one this firmware implements is accepted), every listed
//! file's presence, size and sha256, and each file's declared inputs and outputs against the
//! contract in `docs/bundle.md` (`S` = `input_size`, `T` = `frames_per_clip`,
//! `D` = `embed_dim`, `C` = 5). A backend then checks the loaded model against its entry with
//! [`FileEntry::check_model`]. Every error names the file or field at fault.
//!
//! Invariant: a `Bundle` value has passed all of these checks; its files may still change on
//! disk afterwards (a backend reads them once, right after loading).

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::pipeline::error::BundleError;

/// The manifest schema version this firmware reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Number of classes of the reference model.
pub const NUM_CLASSES: usize = 5;

/// The reference classes, in the order of the model's logits.
pub const CLASSES: [&str; NUM_CLASSES] = [
    "neutrality",
    "enjoyment",
    "confusion",
    "fatigue",
    "distraction",
];

/// The manifest file's name inside a bundle directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Largest manifest read (a real one is a few KiB).
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// Largest accepted `input_size`, `frames_per_clip` and `embed_dim` (a sanity bound that keeps
/// buffer sizes far from overflow).
const MAX_DIMENSION: u64 = 1 << 16;

/// The coarse engagement label of a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CoarseLabel {
    /// Neutrality, enjoyment, confusion or fatigue in the reference mapping.
    Engaged,
    /// Distraction in the reference mapping.
    Distracted,
}

impl CoarseLabel {
    /// The label as written in the manifest and in published results.
    pub const fn as_str(self) -> &'static str {
        match self {
            CoarseLabel::Engaged => "engaged",
            CoarseLabel::Distracted => "distracted",
        }
    }
}

impl fmt::Display for CoarseLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The model's dimensions, as the manifest declares them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelDims {
    /// `S`: crops are `S`x`S` pixels.
    pub input_size: usize,
    /// `T`: frames per clip (the temporal head's window).
    pub frames_per_clip: usize,
    /// `D`: length of an image embedding.
    pub embed_dim: usize,
    /// `C`: number of classes.
    pub num_classes: usize,
}

impl ModelDims {
    /// Floats in one `[3, S, S]` image.
    pub const fn image_len(&self) -> usize {
        3 * self.input_size * self.input_size
    }

    /// Floats in one `[T, D]` feature sequence.
    pub const fn sequence_len(&self) -> usize {
        self.frames_per_clip * self.embed_dim
    }
}

/// `manifest.json`, schema version 1 (see `docs/bundle.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Must be [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Which model this is, e.g. `clip-caer-vit-b-32`.
    pub model_id: String,
    /// Class names in logit order; must equal [`CLASSES`].
    pub classes: Vec<String>,
    /// Coarse label of each class.
    pub coarse: Vec<CoarseLabel>,
    /// `T`.
    pub frames_per_clip: u64,
    /// `D`.
    pub embed_dim: u64,
    /// `S`.
    pub input_size: u64,
    /// The fixed logit scale baked into the temporal head (informational).
    pub logit_scale: f64,
    /// How pixels become model inputs.
    pub preprocessing: PreprocessingSpec,
    /// The model files.
    pub files: Files,
    /// Checks the exporter ran (informational, e.g. fp32 vs reference logit difference and
    /// int8 cosine similarity; any structure is accepted).
    #[serde(default)]
    pub checks: Option<serde_json::Value>,
    /// A known input and the reference embedding it must give: the start-up self-check of a
    /// backend (`pattern`: pixel `[0, c, y, x] = ((c * S + y) * S + x) % 251 / 250`).
    #[serde(default)]
    pub self_check: Option<SelfCheck>,
    /// Provenance (informational; any structure is accepted).
    pub source: serde_json::Value,
    /// What the `files.face_detector` network is, its licence and provenance; present
    /// exactly when that file is.
    #[serde(default)]
    pub face_detector: Option<FaceDetectorSpec>,
}

/// The kind of face detector network this firmware runs (see [`crate::pipeline::detect::blaze`]).
pub const FACE_DETECTOR_KIND: &str = "blazeface-short-range";

/// The manifest's `face_detector` block (see `docs/bundle.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaceDetectorSpec {
    /// Must be [`FACE_DETECTOR_KIND`].
    pub kind: String,
    /// Side of the square input, 128.
    pub input_size: u64,
    /// Pixel values 0 and 255 map to these, `[-1, 1]`.
    pub input_range: [f64; 2],
    /// The network's licence, shipped beside it.
    pub licence: LicenceFile,
    /// Where the network comes from (informational; any structure is accepted).
    pub provenance: serde_json::Value,
}

/// A licence file of the bundle.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenceFile {
    /// Path relative to the bundle directory.
    pub path: String,
    /// Lowercase hex sha256 of the file.
    pub sha256: String,
    /// SPDX identifier, e.g. `Apache-2.0`.
    pub spdx: String,
}

/// The manifest's `self_check` block (see `docs/bundle.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelfCheck {
    /// The formula of the input, as text (informational; the firmware implements it).
    pub pattern: String,
    /// The PyTorch reference embedding of that input, `D` values.
    pub embedding: Vec<f32>,
}

/// The manifest's `preprocessing` block.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessingSpec {
    /// Channel order, `RGB`.
    pub color: String,
    /// Tensor layout, `NCHW`.
    pub layout: String,
    /// Pixel scale, 1/255.
    pub scale: f64,
    /// Per-channel mean; none for CLIP-CAER.
    pub mean: Option<Vec<f64>>,
    /// Per-channel std; none for CLIP-CAER.
    pub std: Option<Vec<f64>>,
    /// Margin grown around the face box on every side, in pixels.
    pub face_margin_px: u32,
    /// `bilinear-stretch`.
    pub face_resize: String,
    /// `pillow-crop-unclamped`: the body box is cropped as Pillow's `Image.crop` does (rounded
    /// half to even, not clamped, black outside the frame).
    pub context_crop: String,
    /// `opencv-linear-letterbox-black`: OpenCV's `INTER_LINEAR` resize, black border.
    pub context_resize: String,
    /// `pillow-bilinear`.
    pub resampler: String,
}

/// The manifest's `files` block.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Files {
    /// The fp32 image tower.
    pub image_encoder: FileEntry,
    /// Static QDQ int8 image tower (for TensorRT; not run by tract).
    pub image_encoder_int8: Option<FileEntry>,
    /// Dynamic int8 image tower (for CPU runtimes that support it).
    pub image_encoder_int8_dynamic: Option<FileEntry>,
    /// Both temporal encoders, fusion and the text matrix.
    pub temporal_head: FileEntry,
    /// The face detector network (see the manifest's `face_detector` block).
    pub face_detector: Option<FileEntry>,
}

/// One model file of the bundle.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Path relative to the bundle directory.
    pub path: String,
    /// Lowercase hex sha256 of the file.
    pub sha256: String,
    /// File size in bytes.
    pub bytes: u64,
    /// ONNX opset.
    pub opset: u32,
    /// `fp32`, `int8-qdq-static` or `int8-dynamic`.
    pub precision: String,
    /// Declared inputs, in order.
    pub inputs: Vec<TensorSpec>,
    /// Declared outputs, in order.
    pub outputs: Vec<TensorSpec>,
    /// How the file was produced (informational).
    pub source: String,
}

/// A declared input or output of a model file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    /// Tensor name in the ONNX graph.
    pub name: String,
    /// Shape; symbolic dimensions are strings.
    pub shape: Vec<Dim>,
    /// Element type, `float32`.
    pub dtype: String,
}

/// One dimension of a declared shape.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    /// A fixed size.
    Fixed(u64),
    /// A symbolic size (e.g. `batch`), chosen at run time.
    Symbolic(String),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbolic(s) => write!(f, "{s:?}"),
        }
    }
}

/// What an inference runtime reports about a loaded model's input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelTensor {
    /// Tensor name in the graph.
    pub name: String,
    /// Shape; `None` for a symbolic dimension.
    pub shape: Vec<Option<u64>>,
}

/// One file a manifest lists (a model file or the detector's licence), as a delivery needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedFile {
    /// The manifest key (`image_encoder`, `face_detector.licence`, ...).
    pub key: &'static str,
    /// Path relative to the bundle directory.
    pub path: String,
    /// Lowercase hex sha256.
    pub sha256: String,
    /// Size in bytes, where the manifest declares one (licences have none).
    pub bytes: Option<u64>,
}

impl Manifest {
    /// Parses and checks `manifest.json`'s bytes (everything that does not need the files);
    /// `path` names it in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Manifest, BundleError> {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|source| BundleError::ManifestJson {
                path: path.to_owned(),
                source,
            })?;
        check_manifest(&manifest, path)?;
        Ok(manifest)
    }

    /// Every file the bundle holds besides `manifest.json`.
    pub fn listed_files(&self) -> Vec<ListedFile> {
        let mut files: Vec<ListedFile> = self
            .files
            .entries()
            .map(|(key, e)| ListedFile {
                key,
                path: e.path.clone(),
                sha256: e.sha256.clone(),
                bytes: Some(e.bytes),
            })
            .collect();
        if let Some(licence) = self.face_detector.as_ref().map(|d| &d.licence) {
            files.push(ListedFile {
                key: "face_detector.licence",
                path: licence.path.clone(),
                sha256: licence.sha256.clone(),
                bytes: None,
            });
        }
        files
    }
}

/// A verified bundle directory.
#[derive(Debug, Clone)]
pub struct Bundle {
    dir: PathBuf,
    manifest: Manifest,
    dims: ModelDims,
    coarse: [CoarseLabel; NUM_CLASSES],
}

impl Bundle {
    /// Reads `dir/manifest.json` and checks it and every file it lists (see the module docs).
    ///
    /// Hashes every listed file, which takes a moment for the full-size model (a few hundred
    /// MB); do it once at start-up.
    pub fn load(dir: impl Into<PathBuf>) -> Result<Bundle, BundleError> {
        Bundle::load_verified(dir, &[])
    }

    /// [`Bundle::load`], and with `trusted` keys (`model.trusted_keys`) not empty, only if
    /// `manifest.json` carries a valid signature by one of them
    /// ([`signature`](super::signature)): the manifest holds every file's sha256, so the
    /// signature covers the whole bundle.
    pub fn load_verified(
        dir: impl Into<PathBuf>,
        trusted: &[super::signature::PublicKey],
    ) -> Result<Bundle, BundleError> {
        let dir = dir.into();
        let manifest_path = dir.join(MANIFEST_FILE);
        let bytes = crate::pipeline::files::read_capped(&manifest_path, MAX_MANIFEST_BYTES)
            .map_err(|source| BundleError::Io {
                path: manifest_path.clone(),
                source,
            })?;
        if !trusted.is_empty() {
            super::signature::verify(&manifest_path, &bytes, trusted)?;
        }
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|source| BundleError::ManifestJson {
                path: manifest_path.clone(),
                source,
            })?;
        let (dims, coarse) = check_manifest(&manifest, &manifest_path)?;
        for (key, entry) in manifest.files.entries() {
            let path = resolve(&dir, key, &entry.path)?;
            check_file(key, &path, Some(entry.bytes), &entry.sha256)?;
        }
        if let Some(licence) = manifest.face_detector.as_ref().map(|d| &d.licence) {
            const KEY: &str = "face_detector.licence";
            let path = resolve(&dir, KEY, &licence.path)?;
            check_file(KEY, &path, None, &licence.sha256)?;
        }
        Ok(Bundle {
            dir,
            manifest,
            dims,
            coarse,
        })
    }

    /// The bundle directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The parsed manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The model's dimensions.
    pub fn dims(&self) -> ModelDims {
        self.dims
    }

    /// Margin grown around face boxes, in pixels.
    pub fn face_margin(&self) -> u32 {
        self.manifest.preprocessing.face_margin_px
    }

    /// Coarse label of each class, in logit order.
    pub fn coarse(&self) -> &[CoarseLabel; NUM_CLASSES] {
        &self.coarse
    }

    /// The fp32 image encoder's manifest entry.
    pub fn image_encoder(&self) -> &FileEntry {
        &self.manifest.files.image_encoder
    }

    /// The temporal head's manifest entry.
    pub fn temporal_head(&self) -> &FileEntry {
        &self.manifest.files.temporal_head
    }

    /// The face detector network's manifest entry and description, if the bundle has one.
    pub fn face_detector(&self) -> Option<(&FileEntry, &FaceDetectorSpec)> {
        let m = &self.manifest;
        m.files.face_detector.as_ref().zip(m.face_detector.as_ref())
    }

    /// The face detector network's manifest entry, for a backend to load; an error naming
    /// the bundle if it has none.
    pub fn face_detector_file(&self) -> Result<&FileEntry, BundleError> {
        self.face_detector()
            .map(|(entry, _)| entry)
            .ok_or_else(|| BundleError::NoFaceDetector {
                dir: self.dir.clone(),
            })
    }

    /// Absolute path of a file entry of this bundle.
    pub fn path_of(&self, entry: &FileEntry) -> PathBuf {
        self.dir.join(&entry.path)
    }
}

impl Files {
    /// Every present entry with its key under `files`.
    pub fn entries(&self) -> impl Iterator<Item = (&'static str, &FileEntry)> {
        [
            ("image_encoder", Some(&self.image_encoder)),
            ("image_encoder_int8", self.image_encoder_int8.as_ref()),
            (
                "image_encoder_int8_dynamic",
                self.image_encoder_int8_dynamic.as_ref(),
            ),
            ("temporal_head", Some(&self.temporal_head)),
            ("face_detector", self.face_detector.as_ref()),
        ]
        .into_iter()
        .filter_map(|(key, entry)| entry.map(|entry| (key, entry)))
    }
}

impl FileEntry {
    /// Checks a loaded model's inputs and outputs against this entry: the same names in the
    /// same order, the same ranks, and the same sizes wherever both sides are fixed.
    ///
    /// `path` is the model file, for the error message.
    pub fn check_model(
        &self,
        path: &Path,
        inputs: &[ModelTensor],
        outputs: &[ModelTensor],
    ) -> Result<(), BundleError> {
        check_model_side(path, "inputs", &self.inputs, inputs)?;
        check_model_side(path, "outputs", &self.outputs, outputs)
    }
}

fn check_model_side(
    path: &Path,
    side: &str,
    declared: &[TensorSpec],
    actual: &[ModelTensor],
) -> Result<(), BundleError> {
    let mismatch = |tensor: String, expected: String, found: String| BundleError::ModelTensor {
        path: path.to_owned(),
        tensor,
        expected,
        found,
    };
    if declared.len() != actual.len() {
        let declared: Vec<&str> = declared.iter().map(|t| t.name.as_str()).collect();
        let actual: Vec<&str> = actual.iter().map(|t| t.name.as_str()).collect();
        return Err(mismatch(
            side.to_owned(),
            format!("{declared:?}"),
            format!("{actual:?}"),
        ));
    }
    for (i, (spec, model)) in declared.iter().zip(actual).enumerate() {
        let tensor = format!("{side}[{i}]");
        if spec.name != model.name {
            return Err(mismatch(
                tensor,
                format!("name {:?}", spec.name),
                format!("name {:?}", model.name),
            ));
        }
        let sizes_agree = spec.shape.len() == model.shape.len()
            && spec
                .shape
                .iter()
                .zip(&model.shape)
                .all(|(d, m)| match (d, m) {
                    (Dim::Fixed(a), Some(b)) => a == b,
                    _ => true,
                });
        if !sizes_agree {
            return Err(mismatch(
                format!("{tensor} {:?}", spec.name),
                format!("shape {}", shape_text(&spec.shape)),
                format!("shape {}", model_shape_text(&model.shape)),
            ));
        }
    }
    Ok(())
}

/// The contract's expected declaration of each file, given the model's dimensions.
fn expected_io(key: &str, dims: &ModelDims) -> (Vec<TensorSpec>, Vec<TensorSpec>) {
    let fixed = |n: usize| Dim::Fixed(n as u64);
    let spec = |name: &str, shape: Vec<Dim>| TensorSpec {
        name: name.to_owned(),
        shape,
        dtype: "float32".to_owned(),
    };
    let batch = || Dim::Symbolic("batch".to_owned());
    if key == "face_detector" {
        use crate::pipeline::detect::blaze::{INPUT_SIZE, NUM_ANCHORS, REGRESSOR_LEN};
        let s = fixed(INPUT_SIZE);
        return (
            vec![spec("input", vec![batch(), fixed(3), s.clone(), s])],
            vec![
                spec(
                    "regressors",
                    vec![batch(), fixed(NUM_ANCHORS), fixed(REGRESSOR_LEN)],
                ),
                spec(
                    "classificators",
                    vec![batch(), fixed(NUM_ANCHORS), fixed(1)],
                ),
            ],
        );
    }
    if key == "temporal_head" {
        let seq = || vec![batch(), fixed(dims.frames_per_clip), fixed(dims.embed_dim)];
        (
            vec![
                spec("face_features", seq()),
                spec("context_features", seq()),
            ],
            vec![spec("logits", vec![batch(), fixed(dims.num_classes)])],
        )
    } else {
        let s = fixed(dims.input_size);
        (
            vec![spec("pixels", vec![batch(), fixed(3), s.clone(), s])],
            vec![spec("embedding", vec![batch(), fixed(dims.embed_dim)])],
        )
    }
}

/// Checks the declared tensors of one entry. A symbolic dimension matches any symbol name:
/// what matters is that the batch is not fixed.
fn check_declared(
    key: &'static str,
    side: &str,
    expected: &[TensorSpec],
    found: &[TensorSpec],
) -> Result<(), BundleError> {
    let names = |specs: &[TensorSpec]| specs.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    if names(expected) != names(found) {
        return Err(BundleError::DeclaredTensor {
            key,
            tensor: side.to_owned(),
            expected: format!("names {:?}", names(expected)),
            found: format!("names {:?}", names(found)),
        });
    }
    for (i, (e, f)) in expected.iter().zip(found).enumerate() {
        let same_shape = e.shape.len() == f.shape.len()
            && e.shape.iter().zip(&f.shape).all(|(a, b)| match (a, b) {
                (Dim::Fixed(a), Dim::Fixed(b)) => a == b,
                (Dim::Symbolic(_), Dim::Symbolic(_)) => true,
                _ => false,
            });
        let tensor = format!("{side}[{i}] {:?}", e.name);
        if !same_shape {
            return Err(BundleError::DeclaredTensor {
                key,
                tensor,
                expected: format!("shape {}", shape_text(&e.shape)),
                found: format!("shape {}", shape_text(&f.shape)),
            });
        }
        if e.dtype != f.dtype {
            return Err(BundleError::DeclaredTensor {
                key,
                tensor,
                expected: format!("dtype {:?}", e.dtype),
                found: format!("dtype {:?}", f.dtype),
            });
        }
    }
    Ok(())
}

fn shape_text(shape: &[Dim]) -> String {
    let dims: Vec<String> = shape.iter().map(Dim::to_string).collect();
    format!("[{}]", dims.join(", "))
}

fn model_shape_text(shape: &[Option<u64>]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|d| d.map_or_else(|| "?".to_owned(), |n| n.to_string()))
        .collect();
    format!("[{}]", dims.join(", "))
}

fn check_dimension(field: &'static str, value: u64) -> Result<usize, BundleError> {
    if value == 0 || value > MAX_DIMENSION {
        return Err(BundleError::Dimension {
            field,
            value,
            max: MAX_DIMENSION,
        });
    }
    // MAX_DIMENSION fits any usize this crate is built for (16 bits and up).
    Ok(value as usize)
}

/// Checks everything in the manifest that does not need the files.
fn check_manifest(
    manifest: &Manifest,
    manifest_path: &Path,
) -> Result<(ModelDims, [CoarseLabel; NUM_CLASSES]), BundleError> {
    if manifest.schema_version != SCHEMA_VERSION {
        return Err(BundleError::SchemaVersion {
            path: manifest_path.to_owned(),
            found: manifest.schema_version,
            supported: SCHEMA_VERSION,
        });
    }
    if manifest.classes.iter().map(String::as_str).ne(CLASSES) {
        return Err(BundleError::Classes {
            found: manifest.classes.clone(),
            expected: CLASSES.iter().map(|c| (*c).to_owned()).collect(),
        });
    }
    let coarse: [CoarseLabel; NUM_CLASSES] =
        manifest
            .coarse
            .as_slice()
            .try_into()
            .map_err(|_| BundleError::CoarseLength {
                found: manifest.coarse.len(),
                expected: NUM_CLASSES,
            })?;
    let dims = ModelDims {
        input_size: check_dimension("input_size", manifest.input_size)?,
        frames_per_clip: check_dimension("frames_per_clip", manifest.frames_per_clip)?,
        embed_dim: check_dimension("embed_dim", manifest.embed_dim)?,
        num_classes: NUM_CLASSES,
    };
    check_preprocessing(&manifest.preprocessing)?;
    check_face_detector(manifest)?;

    for (key, entry) in manifest.files.entries() {
        let expected_precision = match key {
            "image_encoder" | "temporal_head" | "face_detector" => "fp32",
            "image_encoder_int8" => "int8-qdq-static",
            _ => "int8-dynamic",
        };
        if entry.precision != expected_precision {
            return Err(BundleError::Precision {
                key,
                found: entry.precision.clone(),
                expected: expected_precision,
            });
        }
        let (inputs, outputs) = expected_io(key, &dims);
        check_declared(key, "inputs", &inputs, &entry.inputs)?;
        check_declared(key, "outputs", &outputs, &entry.outputs)?;
    }
    Ok((dims, coarse))
}

/// Accepts a face detector only as a pair of file and description, of the one kind
/// [`crate::pipeline::detect::blaze`] implements.
fn check_face_detector(manifest: &Manifest) -> Result<(), BundleError> {
    let spec = match (&manifest.files.face_detector, &manifest.face_detector) {
        (None, None) => return Ok(()),
        (Some(_), Some(spec)) => spec,
        (file, _) => {
            let (present, missing) = if file.is_some() {
                ("files.face_detector", "face_detector")
            } else {
                ("face_detector", "files.face_detector")
            };
            return Err(BundleError::FaceDetector {
                field: missing,
                found: "missing".to_owned(),
                expected: format!("present, since {present} is"),
            });
        }
    };
    let mismatch = |field, found: String, expected: String| {
        Err(BundleError::FaceDetector {
            field,
            found,
            expected,
        })
    };
    if spec.kind != FACE_DETECTOR_KIND {
        return mismatch(
            "face_detector.kind",
            format!("{:?}", spec.kind),
            format!("{FACE_DETECTOR_KIND:?}"),
        );
    }
    if spec.input_size != crate::pipeline::detect::blaze::INPUT_SIZE as u64 {
        return mismatch(
            "face_detector.input_size",
            spec.input_size.to_string(),
            crate::pipeline::detect::blaze::INPUT_SIZE.to_string(),
        );
    }
    if spec.input_range != [-1.0, 1.0] {
        return mismatch(
            "face_detector.input_range",
            format!("{:?}", spec.input_range),
            "[-1.0, 1.0]".to_owned(),
        );
    }
    Ok(())
}

/// Accepts only the preprocessing implemented in [`crate::pipeline::preprocess`].
fn check_preprocessing(p: &PreprocessingSpec) -> Result<(), BundleError> {
    fn text(field: &'static str, found: &str, expected: &str) -> Result<(), BundleError> {
        if found == expected {
            Ok(())
        } else {
            Err(BundleError::Preprocessing {
                field,
                found: format!("{found:?}"),
                expected: format!("{expected:?}"),
            })
        }
    }
    text("color", &p.color, "RGB")?;
    text("layout", &p.layout, "NCHW")?;
    text("face_resize", &p.face_resize, "bilinear-stretch")?;
    text("context_crop", &p.context_crop, "pillow-crop-unclamped")?;
    text(
        "context_resize",
        &p.context_resize,
        "opencv-linear-letterbox-black",
    )?;
    text("resampler", &p.resampler, "pillow-bilinear")?;
    // The scale is written as a decimal; accept it to within f32 precision of 1/255.
    if ((p.scale * 255.0) - 1.0).abs() > 1e-6 {
        return Err(BundleError::Preprocessing {
            field: "scale",
            found: p.scale.to_string(),
            expected: (1.0 / 255.0).to_string(),
        });
    }
    for (field, value) in [("mean", &p.mean), ("std", &p.std)] {
        if let Some(v) = value {
            return Err(BundleError::Preprocessing {
                field,
                found: format!("{v:?}"),
                expected: "null".to_owned(),
            });
        }
    }
    Ok(())
}

/// Joins a manifest path onto the bundle directory, refusing paths that leave it.
fn resolve(dir: &Path, key: &'static str, path: &str) -> Result<PathBuf, BundleError> {
    let relative = Path::new(path);
    let plain = !path.is_empty()
        && relative
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !plain {
        return Err(BundleError::UnsafePath {
            key,
            path: path.to_owned(),
        });
    }
    Ok(dir.join(relative))
}

/// Checks that a file exists, has the declared size (if one is declared) and hashes to the
/// declared sha256.
fn check_file(
    key: &'static str,
    path: &Path,
    bytes: Option<u64>,
    sha256: &str,
) -> Result<(), BundleError> {
    let io = |source| BundleError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BundleError::MissingFile {
                key,
                path: path.to_owned(),
            });
        }
        Err(e) => return Err(io(e)),
    };
    let actual_bytes = file.metadata().map_err(io)?.len();
    if let Some(expected) = bytes.filter(|&b| b != actual_bytes) {
        return Err(BundleError::SizeMismatch {
            path: path.to_owned(),
            expected,
            actual: actual_bytes,
        });
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let actual = format!("{:x}", hasher.finalize());
    if !actual.eq_ignore_ascii_case(sha256) {
        return Err(BundleError::HashMismatch {
            path: path.to_owned(),
            expected: sha256.to_owned(),
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// Writes a bundle whose model files are placeholder bytes (this module never parses
    /// ONNX) and returns its directory and manifest.
    fn write_bundle(dir: &Path, edit: impl FnOnce(&mut Value)) -> Value {
        let spec =
            |name: &str, shape: Value| json!({"name": name, "shape": shape, "dtype": "float32"});
        let mut files = serde_json::Map::new();
        let entries = [
            ("image_encoder", "image_encoder.onnx", "fp32"),
            (
                "image_encoder_int8",
                "image_encoder.int8.onnx",
                "int8-qdq-static",
            ),
            (
                "image_encoder_int8_dynamic",
                "image_encoder.int8-dynamic.onnx",
                "int8-dynamic",
            ),
            ("temporal_head", "temporal_head.onnx", "fp32"),
        ];
        for (key, path, precision) in entries {
            let content = format!("placeholder for {key}");
            std::fs::write(dir.join(path), &content).unwrap();
            let (inputs, outputs) = if key == "temporal_head" {
                (
                    json!([
                        spec("face_features", json!(["batch", 4, 8])),
                        spec("context_features", json!(["batch", 4, 8]))
                    ]),
                    json!([spec("logits", json!(["batch", 5]))]),
                )
            } else {
                (
                    json!([spec("pixels", json!(["batch", 3, 32, 32]))]),
                    json!([spec("embedding", json!(["batch", 8]))]),
                )
            };
            files.insert(
                key.to_owned(),
                json!({
                    "path": path,
                    "sha256": format!("{:x}", Sha256::digest(content.as_bytes())),
                    "bytes": content.len(),
                    "opset": 17,
                    "precision": precision,
                    "inputs": inputs,
                    "outputs": outputs,
                    "source": "test",
                }),
            );
        }
        let mut manifest = json!({
            "schema_version": 1,
            "model_id": "test",
            "classes": CLASSES,
            "coarse": ["engaged", "engaged", "engaged", "engaged", "distracted"],
            "frames_per_clip": 4,
            "embed_dim": 8,
            "input_size": 32,
            "logit_scale": 100.0,
            "preprocessing": {
                "color": "RGB", "layout": "NCHW", "scale": 0.00392156862745098,
                "mean": null, "std": null,
                "face_margin_px": 20, "face_resize": "bilinear-stretch",
                "context_crop": "pillow-crop-unclamped",
                "context_resize": "opencv-linear-letterbox-black", "resampler": "pillow-bilinear"
            },
            "files": files,
            "source": {"exporter": "test", "extra": 1},
        });
        edit(&mut manifest);
        std::fs::write(dir.join(MANIFEST_FILE), manifest.to_string()).unwrap();
        manifest
    }

    fn load_with(edit: impl FnOnce(&mut Value)) -> Result<Bundle, BundleError> {
        let dir = tempfile::tempdir().unwrap();
        write_bundle(dir.path(), edit);
        Bundle::load(dir.path())
    }

    /// Adds a face detector (placeholder network and licence files) to a test bundle.
    fn add_face_detector(dir: &Path, manifest: &mut Value) {
        let spec =
            |name: &str, shape: Value| json!({"name": name, "shape": shape, "dtype": "float32"});
        let (network, licence) = ("placeholder network", "placeholder licence");
        std::fs::write(dir.join("face_detector.onnx"), network).unwrap();
        std::fs::write(dir.join("face_detector.LICENSE"), licence).unwrap();
        manifest["files"]["face_detector"] = json!({
            "path": "face_detector.onnx",
            "sha256": format!("{:x}", Sha256::digest(network.as_bytes())),
            "bytes": network.len(),
            "opset": 11,
            "precision": "fp32",
            "inputs": [spec("input", json!(["batch", 3, 128, 128]))],
            "outputs": [
                spec("regressors", json!(["batch", 896, 16])),
                spec("classificators", json!(["batch", 896, 1]))
            ],
            "source": "test",
        });
        manifest["face_detector"] = json!({
            "kind": "blazeface-short-range",
            "input_size": 128,
            "input_range": [-1.0, 1.0],
            "licence": {
                "path": "face_detector.LICENSE",
                "sha256": format!("{:x}", Sha256::digest(licence.as_bytes())),
                "spdx": "Apache-2.0"
            },
            "provenance": {"package": "test"},
        });
    }

    fn load_with_face_detector(
        edit: impl FnOnce(&Path, &mut Value),
    ) -> Result<Bundle, BundleError> {
        let dir = tempfile::tempdir().unwrap();
        let mut manifest = write_bundle(dir.path(), |_| {});
        add_face_detector(dir.path(), &mut manifest);
        edit(dir.path(), &mut manifest);
        std::fs::write(dir.path().join(MANIFEST_FILE), manifest.to_string()).unwrap();
        Bundle::load(dir.path())
    }

    #[test]
    fn a_face_detector_loads_with_its_licence() {
        let bundle = load_with_face_detector(|_, _| {}).expect("loads");
        let (entry, spec) = bundle.face_detector().expect("has a face detector");
        assert_eq!(entry.path, "face_detector.onnx");
        assert_eq!(spec.licence.spdx, "Apache-2.0");
        let without = load_with(|_| {}).expect("loads");
        assert!(without.face_detector().is_none());
    }

    #[test]
    fn a_face_detector_needs_both_its_file_and_its_block() {
        let err = load_with_face_detector(|_, m| {
            m.as_object_mut().unwrap().remove("face_detector");
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("manifest face_detector is missing"),
            "{err}"
        );
        let err = load_with_face_detector(|_, m| {
            m["files"].as_object_mut().unwrap().remove("face_detector");
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("files.face_detector is missing"),
            "{err}"
        );
    }

    #[test]
    fn another_detector_kind_or_input_is_refused() {
        for (field, value) in [
            ("kind", json!("yolo-face")),
            ("input_size", json!(192)),
            ("input_range", json!([0.0, 1.0])),
        ] {
            let err =
                load_with_face_detector(|_, m| m["face_detector"][field] = value).unwrap_err();
            assert!(
                err.to_string().contains(&format!("face_detector.{field}")),
                "{field}: {err}"
            );
        }
        let err = load_with_face_detector(|_, m| {
            m["files"]["face_detector"]["outputs"][1]["shape"] = json!(["batch", 2304, 1]);
        })
        .unwrap_err();
        assert!(err.to_string().contains("files.face_detector"), "{err}");
    }

    #[test]
    fn a_changed_or_missing_licence_is_refused() {
        let err = load_with_face_detector(|dir, _| {
            std::fs::write(dir.join("face_detector.LICENSE"), "another licence").unwrap();
        })
        .unwrap_err();
        assert!(matches!(err, BundleError::HashMismatch { .. }), "{err}");
        assert!(err.to_string().contains("face_detector.LICENSE"), "{err}");
        let err = load_with_face_detector(|dir, _| {
            std::fs::remove_file(dir.join("face_detector.LICENSE")).unwrap();
        })
        .unwrap_err();
        assert!(matches!(err, BundleError::MissingFile { .. }), "{err}");
    }

    #[test]
    fn a_consistent_bundle_loads() {
        let bundle = load_with(|_| {}).unwrap();
        assert_eq!(
            bundle.dims(),
            ModelDims {
                input_size: 32,
                frames_per_clip: 4,
                embed_dim: 8,
                num_classes: 5
            }
        );
        assert_eq!(bundle.coarse()[4], CoarseLabel::Distracted);
        assert_eq!(bundle.face_margin(), 20);
    }

    #[test]
    fn bad_json_names_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        write_bundle(dir.path(), |_| {});
        std::fs::write(dir.path().join(MANIFEST_FILE), "{\"schema_version\": 1,").unwrap();
        let err = Bundle::load(dir.path()).unwrap_err();
        assert!(matches!(err, BundleError::ManifestJson { .. }), "{err}");
        assert!(err.to_string().contains("manifest.json"), "{err}");
    }

    #[test]
    fn missing_manifest_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Bundle::load(dir.path()).unwrap_err();
        assert!(matches!(err, BundleError::Io { .. }), "{err}");
    }

    #[test]
    fn unknown_manifest_field_is_rejected() {
        let err = load_with(|m| m["frame_rate"] = json!(30)).unwrap_err();
        assert!(err.to_string().contains("frame_rate"), "{err}");
    }

    #[test]
    fn other_schema_version_is_rejected() {
        let err = load_with(|m| m["schema_version"] = json!(2)).unwrap_err();
        assert!(
            matches!(err, BundleError::SchemaVersion { found: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn wrong_class_count_is_rejected() {
        let err = load_with(|m| {
            m["classes"].as_array_mut().unwrap().pop();
        })
        .unwrap_err();
        assert!(matches!(err, BundleError::Classes { .. }), "{err}");
    }

    #[test]
    fn classes_out_of_order_are_rejected() {
        let err = load_with(|m| m["classes"].as_array_mut().unwrap().swap(0, 1)).unwrap_err();
        assert!(matches!(err, BundleError::Classes { .. }), "{err}");
    }

    #[test]
    fn short_coarse_mapping_is_rejected() {
        let err = load_with(|m| {
            m["coarse"].as_array_mut().unwrap().pop();
        })
        .unwrap_err();
        assert!(
            matches!(
                err,
                BundleError::CoarseLength {
                    found: 4,
                    expected: 5
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn unknown_coarse_label_is_rejected() {
        let err = load_with(|m| m["coarse"][0] = json!("bored")).unwrap_err();
        assert!(matches!(err, BundleError::ManifestJson { .. }), "{err}");
    }

    #[test]
    fn mean_std_normalisation_is_rejected() {
        let err =
            load_with(|m| m["preprocessing"]["mean"] = json!([0.48, 0.46, 0.41])).unwrap_err();
        assert!(
            matches!(err, BundleError::Preprocessing { field: "mean", .. }),
            "{err}"
        );
    }

    #[test]
    fn missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        write_bundle(dir.path(), |_| {});
        std::fs::remove_file(dir.path().join("temporal_head.onnx")).unwrap();
        let err = Bundle::load(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                BundleError::MissingFile {
                    key: "temporal_head",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("temporal_head.onnx"), "{err}");
    }

    #[test]
    fn truncated_file_is_a_size_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        write_bundle(dir.path(), |_| {});
        let path = dir.path().join("image_encoder.onnx");
        let content = std::fs::read(&path).unwrap();
        std::fs::write(&path, &content[..content.len() / 2]).unwrap();
        let err = Bundle::load(dir.path()).unwrap_err();
        assert!(matches!(err, BundleError::SizeMismatch { .. }), "{err}");
        assert!(err.to_string().contains("image_encoder.onnx"), "{err}");
    }

    #[test]
    fn wrong_hash_is_rejected() {
        let err =
            load_with(|m| m["files"]["image_encoder_int8"]["sha256"] = json!("00".repeat(32)))
                .unwrap_err();
        assert!(matches!(err, BundleError::HashMismatch { .. }), "{err}");
        assert!(err.to_string().contains("image_encoder.int8.onnx"), "{err}");
    }

    #[test]
    fn path_escaping_the_bundle_is_rejected() {
        let err =
            load_with(|m| m["files"]["temporal_head"]["path"] = json!("../head.onnx")).unwrap_err();
        assert!(
            matches!(
                err,
                BundleError::UnsafePath {
                    key: "temporal_head",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn declared_shape_must_use_the_manifest_dimensions() {
        let err = load_with(|m| {
            m["files"]["temporal_head"]["inputs"][1]["shape"] = json!(["batch", 16, 8]);
        })
        .unwrap_err();
        assert!(
            matches!(
                err,
                BundleError::DeclaredTensor {
                    key: "temporal_head",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("context_features"), "{err}");
    }

    #[test]
    fn fixed_batch_is_rejected() {
        let err = load_with(|m| m["files"]["image_encoder"]["inputs"][0]["shape"][0] = json!(1))
            .unwrap_err();
        assert!(
            matches!(
                err,
                BundleError::DeclaredTensor {
                    key: "image_encoder",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn renamed_output_is_rejected() {
        let err =
            load_with(|m| m["files"]["image_encoder"]["outputs"][0]["name"] = json!("features"))
                .unwrap_err();
        assert!(matches!(err, BundleError::DeclaredTensor { .. }), "{err}");
    }

    #[test]
    fn int8_encoder_must_be_declared_int8() {
        let err = load_with(|m| m["files"]["image_encoder_int8"]["precision"] = json!("fp32"))
            .unwrap_err();
        assert!(
            matches!(
                err,
                BundleError::Precision {
                    key: "image_encoder_int8",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn model_check_compares_names_ranks_and_fixed_sizes() {
        let bundle = load_with(|_| {}).unwrap();
        let entry = bundle.image_encoder();
        let path = bundle.path_of(entry);
        let t = |name: &str, shape: Vec<Option<u64>>| ModelTensor {
            name: name.to_owned(),
            shape,
        };
        let good_in = [t("pixels", vec![None, Some(3), Some(32), Some(32)])];
        let good_out = [t("embedding", vec![None, Some(8)])];
        entry.check_model(&path, &good_in, &good_out).unwrap();

        let renamed = [t("input", vec![None, Some(3), Some(32), Some(32)])];
        let err = entry.check_model(&path, &renamed, &good_out).unwrap_err();
        assert!(err.to_string().contains("image_encoder.onnx"), "{err}");

        let rank3 = [t("embedding", vec![None, Some(1), Some(8)])];
        assert!(entry.check_model(&path, &good_in, &rank3).is_err());
        let wrong_size = [t("embedding", vec![None, Some(9)])];
        assert!(entry.check_model(&path, &good_in, &wrong_size).is_err());
        assert!(entry.check_model(&path, &good_in, &[]).is_err());
    }
}
