//! From a validated configuration to a pipeline's parts: opens the source, builds the
//! detector, tracker, sampler and context boxes, loads the model (the slow part). Wiring only:
//! every setting was checked by [`crate::daemon::config::DaemonConfig::validate`].

use crate::daemon::config::ValidatedConfig;
use crate::daemon::fleet::{BackendStatus, ModelInfo};
use crate::daemon::BuildError;
use crate::pipeline::aggregate::{Aggregator, AggregatorSettings};
use crate::pipeline::crop::ContextBoxes;
use crate::pipeline::detect::{
    AnnotatedDetector, BlazeDetector, DetectorKind, FaceDetector, SeetaDetector,
};
use crate::pipeline::model::backend::tensorrt::TensorRtOptions;
use crate::pipeline::model::backend::{select, SelectOptions};
use crate::pipeline::model::bundle::{Bundle, CoarseLabel, NUM_CLASSES};
use crate::pipeline::model::calibration::{bundle_hash, Calibration};
use crate::pipeline::model::classify::{StreamingClassifier, StreamingConfig};
use crate::pipeline::schedule::TrackSampler;
use crate::pipeline::source::frame_dir::FrameDirSource;
use crate::pipeline::source::generated::GeneratedSource;
use crate::pipeline::source::video_file::{FfmpegTools, VideoFileSource};
use crate::pipeline::source::{FrameSource, SourceConfig, SourceError, SourceKind, V4l2Config};
use crate::pipeline::track::Tracker;

/// Opens the configured source (again), for the capture thread.
pub(super) type SourceOpener = Box<dyn FnMut() -> Result<Box<dyn FrameSource>, SourceError> + Send>;

/// Everything a pipeline is built from, before its threads start: each stage constructed
/// once, from its own checked settings.
pub(super) struct Parts {
    /// The source, opened at build time when no privacy controller gates it.
    pub(super) source: Option<Box<dyn FrameSource>>,
    pub(super) open_source: SourceOpener,
    pub(super) detector: Box<dyn FaceDetector>,
    /// Every how many frames the detector looks at the whole frame.
    pub(super) full_every: u32,
    pub(super) tracker: Tracker,
    pub(super) sampler: TrackSampler,
    pub(super) contexts: ContextBoxes,
    /// The model; none under `presence`.
    pub(super) model: Option<ModelParts>,
    pub(super) aggregator: Aggregator,
    pub(super) model_info: Option<ModelInfo>,
    pub(super) backend: Option<BackendStatus>,
}

/// The loaded model: the streaming classifier and the calibration applied to its logits.
pub(super) struct ModelParts {
    pub(super) classifier: StreamingClassifier,
    pub(super) calibration: Option<Calibration>,
}

/// Opens the V4L2 camera. A camera that is missing at start fails the build (safe mode,
/// retried like any unrunnable configuration); one lost later is reopened by the source.
#[cfg(feature = "v4l2")]
fn open_camera(v: &V4l2Config) -> Result<Box<dyn FrameSource>, SourceError> {
    Ok(Box::new(crate::pipeline::source::v4l2::V4l2Source::open(
        v.clone(),
    )?))
}

/// Without the `v4l2` feature there is no camera (validation already says so).
#[cfg(not(feature = "v4l2"))]
fn open_camera(_: &V4l2Config) -> Result<Box<dyn FrameSource>, SourceError> {
    Err(SourceError::Config {
        source_kind: "v4l2",
        field: "kind",
        reason: "needs caerd built with the cargo feature v4l2",
    })
}

/// Opens the configured source.
fn open_source(s: &SourceConfig) -> Result<Box<dyn FrameSource>, SourceError> {
    let missing = |source_kind, field| SourceError::Config {
        source_kind,
        field,
        reason: "is missing",
    };
    Ok(match s.kind {
        SourceKind::Generated => Box::new(GeneratedSource::new(s.generated.clone())?),
        SourceKind::FrameDir => {
            // Validation requires source.frame_dir with this kind.
            let fd = s
                .frame_dir
                .as_ref()
                .ok_or_else(|| missing("frame_dir", "source.frame_dir"))?;
            let source = FrameDirSource::open(&fd.path)?;
            Box::new(match &fd.annotations {
                Some(path) => source.with_annotations(path)?,
                None => source,
            })
        }
        SourceKind::VideoFile => {
            // Validation requires source.video_file with this kind.
            let vf = s
                .video_file
                .as_ref()
                .ok_or_else(|| missing("video_file", "source.video_file"))?;
            let tools = FfmpegTools {
                ffmpeg: vf.ffmpeg.clone(),
                ffprobe: vf.ffprobe.clone(),
            };
            Box::new(VideoFileSource::open(&vf.path, &tools)?)
        }
        SourceKind::V4l2 => open_camera(&s.v4l2)?,
    })
}

/// The classes' coarse labels when no model is loaded (`presence`).
fn default_coarse() -> [CoarseLabel; NUM_CLASSES] {
    let mut coarse = [CoarseLabel::Engaged; NUM_CLASSES];
    coarse[NUM_CLASSES - 1] = CoarseLabel::Distracted;
    coarse
}

/// Builds the pipeline's parts: opens the source, loads the model (the slow part).
pub(super) fn build_parts(config: &ValidatedConfig) -> Result<Parts, BuildError> {
    let c = config.config();
    let source_config = c.source.clone();
    let mut open_source: SourceOpener = Box::new(move || open_source(&source_config));
    // A gated source is opened by the capture thread once the privacy LED is lit.
    let source = match c.privacy {
        None => Some(open_source()?),
        Some(_) => None,
    };
    let max_tracks = c.track.max_tracks;
    let mut track = c.track.clone();
    let detector_kind = c.detect.kind_for(c.source.has_annotations());
    if detector_kind == DetectorKind::Annotated {
        // Known boxes are the truth: nothing to prove by motion.
        track.min_motion = 0.0;
    }
    let tracker = Tracker::new(track)?;
    let sampler = TrackSampler::new(&c.sampling, max_tracks)?;
    let contexts = ContextBoxes::new(c.context.clone())?;

    let profile = c.policy.profile;
    // The bundle and backend serve the classifier and the BlazeFace detector.
    let loaded = if profile.runs_model() || detector_kind == DetectorKind::Blaze {
        let trusted = c.model.trusted_keys();
        let bundle = Bundle::load_verified(&c.model.bundle, &trusted)?;
        let defaults = SelectOptions::default();
        let options = SelectOptions {
            threads: c.model.threads.unwrap_or(defaults.threads),
            tensorrt: TensorRtOptions {
                cache_root: c.state_dir.join("trt-cache"),
                ..defaults.tensorrt
            },
            ..defaults
        };
        let selected = select(c.model.backend, &bundle, &options)?;
        Some((bundle, selected))
    } else {
        None
    };
    let detector: Box<dyn FaceDetector> = match detector_kind {
        // Resolved above.
        DetectorKind::Auto | DetectorKind::Annotated => Box::new(AnnotatedDetector),
        DetectorKind::Seeta => Box::new(SeetaDetector::new(c.detect.seeta.clone())?),
        DetectorKind::Blaze => {
            let (bundle, selected) = loaded.as_ref().expect("loaded for the blaze detector");
            let network = selected.backend.load_face_detector(bundle)?;
            Box::new(BlazeDetector::new(network, c.detect.blaze.clone())?)
        }
    };
    let (model, model_info, backend, coarse) =
        if let Some((bundle, selected)) = loaded.filter(|_| profile.runs_model()) {
            let calibration = match &c.model.calibration {
                Some(path) => Some(Calibration::load_verified(
                    path,
                    &bundle,
                    &c.model.trusted_keys(),
                )?),
                None => None,
            };
            let status = BackendStatus {
                name: selected.backend.name(),
                reason: selected.reason,
            };
            let streaming = StreamingConfig {
                stride: c.sampling.window_stride,
                max_tracks,
                face_margin: bundle.face_margin(),
                ..StreamingConfig::default()
            };
            let classifier = StreamingClassifier::new(selected.backend, &streaming)?;
            let info = ModelInfo {
                id: bundle.manifest().model_id.clone(),
                sha256: bundle_hash(&bundle),
                calibration_version: calibration.as_ref().map(|c| c.version.clone()),
            };
            let model = ModelParts {
                classifier,
                calibration,
            };
            (Some(model), Some(info), Some(status), *bundle.coarse())
        } else {
            (None, None, None, default_coarse())
        };
    let aggregator = Aggregator::new(AggregatorSettings {
        profile,
        min_group_size: c.policy.min_group_size.get(),
        coarse,
        max_tallies: 4 * max_tracks.get(),
    });
    Ok(Parts {
        source,
        open_source,
        detector,
        // Only BlazeFace can look near the tracks; known boxes cost nothing anyway.
        full_every: if detector_kind == DetectorKind::Blaze {
            c.detect.full_every
        } else {
            1
        },
        tracker,
        sampler,
        contexts,
        model,
        aggregator,
        model_info,
        backend,
    })
}
