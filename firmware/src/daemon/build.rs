//! From a validated configuration to a pipeline's parts: opens the source, builds the
//! detector, tracker, sampler and context boxes, loads the model (the slow part). Wiring only:
//! every setting was checked by [`crate::daemon::config::DaemonConfig::validate`].

use std::sync::Arc;

use crate::daemon::config::{DetectorKind, SourceConfig, SourceKind, ValidatedConfig};
use crate::daemon::fleet::{BackendStatus, ModelInfo};
use crate::daemon::BuildError;
use crate::pipeline::aggregate::AggregatorSettings;
use crate::pipeline::crop::{ContextBoxes, ContextConfig};
use crate::pipeline::detect::{AnnotatedDetector, BlazeDetector, FaceDetector, SeetaDetector};
use crate::pipeline::model::backend::tensorrt::TensorRtOptions;
use crate::pipeline::model::backend::{select, InferenceBackend, SelectOptions};
use crate::pipeline::model::bundle::{Bundle, CoarseLabel};
use crate::pipeline::model::calibration::{bundle_hash, Calibration};
use crate::pipeline::model::classify::{StreamingClassifier, StreamingConfig};
use crate::pipeline::schedule::{SamplerConfig, TrackSampler};
use crate::pipeline::source::frame_dir::FrameDirSource;
use crate::pipeline::source::generated::{GeneratedConfig, GeneratedSource};
use crate::pipeline::source::video_file::{FfmpegTools, VideoFileSource};
use crate::pipeline::source::{FrameSource, SourceError};
use crate::pipeline::track::{Tracker, TrackerConfig};

/// Opens the configured source (again), for the capture thread.
pub(super) type SourceOpener = Box<dyn FnMut() -> Result<Box<dyn FrameSource>, SourceError> + Send>;

/// Everything a pipeline is built from, before its threads start.
pub(super) struct Parts {
    /// The source, opened at build time when no privacy controller gates it.
    pub(super) source: Option<Box<dyn FrameSource>>,
    pub(super) open_source: SourceOpener,
    pub(super) detector: Box<dyn FaceDetector>,
    pub(super) tracker: TrackerConfig,
    pub(super) sampler: SamplerConfig,
    pub(super) contexts: ContextBoxes,
    /// The model; none under `presence`.
    pub(super) model: Option<ModelParts>,
    pub(super) aggregator: AggregatorSettings,
    pub(super) model_info: Option<ModelInfo>,
    pub(super) backend: Option<BackendStatus>,
}

/// The loaded model and how the classifier runs it.
pub(super) struct ModelParts {
    pub(super) backend: Arc<dyn InferenceBackend>,
    pub(super) streaming: StreamingConfig,
    pub(super) calibration: Option<Calibration>,
}

pub(super) fn setting_error(e: impl std::fmt::Display) -> BuildError {
    BuildError::Setting(e.to_string())
}

/// Opens the V4L2 camera. A camera that is missing at start fails the build (safe mode,
/// retried like any unrunnable configuration); one lost later is reopened by the source.
#[cfg(feature = "v4l2")]
pub(super) fn open_camera(
    v: &crate::daemon::config::V4l2SourceConfig,
) -> Result<Box<dyn FrameSource>, SourceError> {
    use crate::pipeline::source::v4l2::{V4l2Config, V4l2Source};
    Ok(Box::new(V4l2Source::open(V4l2Config {
        device: v.device.clone(),
        width: v.width,
        height: v.height,
        formats: v.formats.clone(),
        frame_rate: v.frame_rate,
        buffers: v.buffers,
        stall_timeout: std::time::Duration::from_millis(v.stall_timeout_ms),
        reopen_initial: std::time::Duration::from_millis(v.reopen_min_ms),
        reopen_max: std::time::Duration::from_millis(v.reopen_max_ms),
    })?))
}

/// Without the `v4l2` feature there is no camera (validation already says so).
#[cfg(not(feature = "v4l2"))]
pub(super) fn open_camera(
    _: &crate::daemon::config::V4l2SourceConfig,
) -> Result<Box<dyn FrameSource>, SourceError> {
    Err(SourceError::Config {
        source_kind: "v4l2",
        field: "kind",
        reason: "needs caerd built with the cargo feature v4l2",
    })
}

/// Opens the configured source.
pub(super) fn open_source(s: &SourceConfig) -> Result<Box<dyn FrameSource>, SourceError> {
    Ok(match s.kind {
        SourceKind::Generated => {
            let g = &s.generated;
            Box::new(GeneratedSource::new(GeneratedConfig {
                width: g.width,
                height: g.height,
                students: g.students,
                frames: None,
                seed: g.seed,
                frame_interval: None,
            })?)
        }
        SourceKind::FrameDir => {
            // Validation requires source.frame_dir with this kind.
            let Some(fd) = &s.frame_dir else {
                return Err(SourceError::Config {
                    source_kind: "frame_dir",
                    field: "source.frame_dir",
                    reason: "is missing",
                });
            };
            let source = FrameDirSource::open(&fd.path)?;
            Box::new(match &fd.annotations {
                Some(path) => source.with_annotations(path)?,
                None => source,
            })
        }
        SourceKind::VideoFile => {
            // Validation requires source.video_file with this kind.
            let Some(vf) = &s.video_file else {
                return Err(SourceError::Config {
                    source_kind: "video_file",
                    field: "source.video_file",
                    reason: "is missing",
                });
            };
            let tools = FfmpegTools {
                ffmpeg: vf.ffmpeg.clone(),
                ffprobe: vf.ffprobe.clone(),
            };
            Box::new(VideoFileSource::open(&vf.path, &tools)?)
        }
        SourceKind::V4l2 => open_camera(&s.v4l2)?,
    })
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
    let tracker = TrackerConfig {
        iou_threshold: c.track.iou_threshold,
        min_hits: c.track.min_hits,
        max_misses: c.track.max_misses,
        max_tracks,
        ..TrackerConfig::default()
    };
    Tracker::new(tracker.clone()).map_err(setting_error)?;
    let sampler = SamplerConfig {
        rate_hz: c.sampling.rate_hz,
        max_tracks,
    };
    TrackSampler::new(&sampler).map_err(setting_error)?;
    let contexts = ContextBoxes::new(ContextConfig {
        width_factor: c.context.width_factor,
        height_factor: c.context.height_factor,
        above_factor: c.context.above_factor,
    })
    .map_err(setting_error)?;

    let profile = c.policy.profile;
    // The bundle and backend serve the classifier and the BlazeFace detector.
    let loaded = if profile.runs_model() || c.detect.kind == DetectorKind::Blaze {
        let bundle = Bundle::load(&c.model.bundle)?;
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
    let detector: Box<dyn FaceDetector> = match c.detect.kind {
        DetectorKind::Annotated => Box::new(AnnotatedDetector),
        DetectorKind::Seeta => Box::new(SeetaDetector::new(c.detect.seeta.to_detector_config())?),
        DetectorKind::Blaze => {
            let (bundle, selected) = loaded.as_ref().expect("loaded for the blaze detector");
            let network = selected.backend.load_face_detector(bundle)?;
            Box::new(BlazeDetector::new(
                network,
                c.detect.blaze.to_detector_config(),
            )?)
        }
    };
    let (model, model_info, backend, coarse) =
        if let Some((bundle, selected)) = loaded.filter(|_| profile.runs_model()) {
            let calibration = match &c.model.calibration {
                Some(path) => Some(Calibration::load(path, &bundle)?),
                None => None,
            };
            let status = BackendStatus {
                name: selected.backend.name(),
                reason: selected.reason,
            };
            let backend = selected.backend;
            let streaming = StreamingConfig {
                stride: c.sampling.window_stride,
                max_tracks,
                face_margin: bundle.face_margin(),
                ..StreamingConfig::default()
            };
            // Check the settings against the model now rather than in the thread.
            StreamingClassifier::new(backend.clone(), &streaming)?;
            let info = ModelInfo {
                id: bundle.manifest().model_id.clone(),
                sha256: bundle_hash(&bundle),
                calibration_version: calibration.as_ref().map(|c| c.version.clone()),
            };
            let model = ModelParts {
                backend,
                streaming,
                calibration,
            };
            (Some(model), Some(info), Some(status), *bundle.coarse())
        } else {
            let mut coarse = [CoarseLabel::Engaged; crate::pipeline::model::bundle::NUM_CLASSES];
            coarse[crate::pipeline::model::bundle::NUM_CLASSES - 1] = CoarseLabel::Distracted;
            (None, None, None, coarse)
        };
    let aggregator = AggregatorSettings {
        profile,
        min_group_size: c.policy.min_group_size.get(),
        coarse,
        max_tallies: 4 * max_tracks.get(),
    };
    Ok(Parts {
        source,
        open_source,
        detector,
        tracker,
        sampler,
        contexts,
        model,
        aggregator,
        model_info,
        backend,
    })
}
