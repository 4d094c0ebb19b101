//! Settings (what the command line says, checked for range only) and their resolution, once,
//! into the objects a command runs with: the verified bundle, the loaded backends, the
//! parsed list file, the box files and the face detector.
//!
//! Resolution does all the I/O that can fail for the whole run (exit 2) before the first
//! clip; from then on only per-clip problems can happen.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;

use caer::pipeline::model::backend::{InferenceBackend, TractBackend, TractOptions};
use caer::pipeline::model::bundle::Bundle;
use caer::pipeline::model::calibration::bundle_hash;
use caer::pipeline::model::classify::DEFAULT_MAX_BATCH;

use crate::backends::{load_backend, BackendOptions, LoadedBackend};
use crate::clips::{ClipLoader, DetectorChoice};
use crate::dataset::{BoxFile, ClipList, ListEntry};
use crate::error::Error;

/// The model side of a command's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSettings {
    /// The bundle directory.
    pub bundle: PathBuf,
    /// Backend and its options.
    pub backend_options: BackendOptions,
    /// Most images per encoder call.
    pub max_batch: NonZeroUsize,
}

impl ModelSettings {
    /// Settings for `bundle` with the default backend options and batch.
    pub fn new(bundle: impl Into<PathBuf>) -> ModelSettings {
        ModelSettings {
            bundle: bundle.into(),
            backend_options: BackendOptions::default(),
            max_batch: DEFAULT_MAX_BATCH,
        }
    }
}

/// A verified bundle and what identifies it.
#[derive(Debug, Clone)]
pub struct ResolvedBundle {
    /// The bundle directory as given.
    pub dir: PathBuf,
    /// The verified bundle.
    pub bundle: Bundle,
    /// Its [`bundle_hash`].
    pub hash: String,
}

impl ResolvedBundle {
    /// Loads and verifies the bundle at `dir` (hashes every file).
    pub fn load(dir: &std::path::Path) -> Result<ResolvedBundle, Error> {
        let bundle = Bundle::load(dir)?;
        let hash = bundle_hash(&bundle);
        Ok(ResolvedBundle {
            dir: dir.to_owned(),
            bundle,
            hash,
        })
    }

    /// The bundle's model id.
    pub fn model_id(&self) -> &str {
        &self.bundle.manifest().model_id
    }

    /// Loads backend `name` over this bundle (with the firmware's self-check).
    pub fn backend(&self, name: &str, options: &BackendOptions) -> Result<LoadedBackend, Error> {
        load_backend(name, &self.bundle, options)
    }
}

/// The dataset side of a command's settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DatasetSettings {
    /// The list file.
    pub list: PathBuf,
    /// The dataset root; the list file's folder if `None`.
    pub root: Option<PathBuf>,
    /// Face box files, merged in order (none: detect faces).
    pub face_boxes: Vec<PathBuf>,
    /// Body box files, merged in order (none: derive context boxes, or whole frames).
    pub body_boxes: Vec<PathBuf>,
    /// How to find faces without a face box file.
    pub detector: DetectorChoice,
    /// Only the first `limit` clips of the list.
    pub limit: Option<usize>,
}

/// A parsed list file with the loader of its clips.
#[derive(Debug)]
pub struct ResolvedDataset {
    /// The list and its unparsable lines.
    pub list: ClipList,
    /// Decodes frames and finds boxes.
    pub loader: ClipLoader,
    /// The settings it came from (for reports).
    pub settings: DatasetSettings,
}

impl DatasetSettings {
    /// Reads the list file and the box files, and builds the detector if needed: BlazeFace
    /// runs on `backend` (the one that runs the model), or on tract when none is given.
    pub fn resolve(
        &self,
        bundle: &Bundle,
        backend: Option<&Arc<dyn InferenceBackend>>,
    ) -> Result<ResolvedDataset, Error> {
        let list = ClipList::read(&self.list, self.root.as_deref())?;
        let merged = |paths: &[PathBuf]| {
            (!paths.is_empty())
                .then(|| BoxFile::read_merged(paths))
                .transpose()
        };
        let face = merged(&self.face_boxes)?;
        let body = merged(&self.body_boxes)?;
        let network = || {
            let tract;
            let backend = match backend {
                Some(backend) => backend,
                None => {
                    let loaded = TractBackend::load(bundle, &TractOptions::default())?;
                    tract = Arc::new(loaded) as Arc<dyn InferenceBackend>;
                    &tract
                }
            };
            backend
                .load_face_detector(bundle)
                .map_err(Error::DetectorNetwork)
        };
        let frames_per_clip = bundle.dims().frames_per_clip;
        let loader = ClipLoader::new(frames_per_clip, face, body, self.detector, network)?;
        Ok(ResolvedDataset {
            list,
            loader,
            settings: self.clone(),
        })
    }
}

impl ResolvedDataset {
    /// The clips to run: the list's entries, cut to the limit.
    pub fn entries(&self) -> Vec<ListEntry> {
        let limit = self.settings.limit.unwrap_or(usize::MAX);
        self.list.entries.iter().take(limit).cloned().collect()
    }

    /// The list's unparsable lines within the limit (by line order against the last kept
    /// clip), reported as skipped.
    pub fn line_issues(&self) -> impl Iterator<Item = &crate::error::ClipIssue> {
        let last_line = match self.settings.limit {
            Some(limit) if limit < self.list.entries.len() => {
                self.list.entries.get(limit).map_or(usize::MAX, |e| e.line)
            }
            _ => usize::MAX,
        };
        self.list.issues.iter().filter(move |i| i.line < last_line)
    }
}
