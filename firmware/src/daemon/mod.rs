//! The run loop of `caerd`: frames in, classroom aggregates out.
//!
//! Data flow, one thread per stage group, joined by bounded queues:
//!
//! ```text
//! capture thread   [privacy gate] source ──(pace)──▶ FrameQueue (drop-oldest)
//! inference thread   ──▶ detect ──▶ track ──▶ sample ──▶ crop ──▶ encode ──▶ window ──▶ classify
//!                    ──▶ aggregate ──(every report interval)──▶ outbox (on disk)
//! sink thread        outbox ──▶ MQTT broker  (or stdout)          ◀── config/set, cmd
//! main thread        supervisor: status, stats, control requests, safe mode, shutdown
//! ```
//!
//! Only [`crate::pipeline::aggregate`] output reaches the outbox; frames, crops, features and
//! per-student results stay in the inference thread's memory.
//!
//! **Privacy LED and switch** (`[privacy]`, feature `gpio`): the capture thread asks the
//! controller once per iteration whether the camera may be open. The source is then opened
//! only after the controller has lit the LED, and dropped (closed) as soon as the controller
//! denies it (switch engaged, paused, pin error); the LED goes off only at the next step,
//! after the close. Releasing the switch opens the source again (a new one: a frame
//! directory or the generated classroom start over). Without `[privacy]` the source is
//! opened once, when the pipeline is built.
//!
//! **Thermal guard** (`[thermal]`): the supervisor polls it every [`THERMAL_POLL`]; while
//! the board is hot, the per-track sampling rate is multiplied by its factor.
//!
//! **Supervisor** ([`run`]): builds the pipeline from the [`ValidatedConfig`]; if the
//! configuration is valid but cannot run (bundle or frame directory missing, model
//! unusable), the daemon enters **safe mode**: no pipeline, but the sink stays up so that
//! status (with the reason) and control keep working; a valid remote change or a retry every
//! [`SAFE_MODE_RETRY`] may bring it back. Remote changes are applied atomically: the new
//! pipeline is built first, the state file written, and only then is the old pipeline
//! replaced; on any failure the old configuration stays and the ack carries the error.
//!
//! Threads are supervised: a panicking stage thread makes [`run`] return an error (the
//! binary exits non-zero and systemd restarts it); a stage error puts the daemon into safe
//! mode. Every wait has a timeout well under the systemd watchdog interval.

pub mod board;
pub mod config;
pub mod fleet;
pub mod outbox;
pub mod publish;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::daemon::board::{lock_privacy, SharedPrivacy, Thermal};
use crate::daemon::config::{
    ConfigIssue, DaemonConfig, DetectorKind, SourceConfig, SourceKind, ValidatedConfig,
};
use crate::daemon::fleet::{
    BackendStatus, CmdAck, Command, ConfigAck, ControlRequest, LatencyFigures, ModelInfo,
    OutboxFigures, PersistentState, RunState, StatsPayload, StatusPayload,
};
use crate::daemon::outbox::Outbox;
use crate::daemon::publish::mqtt::{MqttSettings, MqttSink};
use crate::daemon::publish::stdout::StdoutSink;
use crate::daemon::publish::{
    lock_outbox, ReplyTopic, SharedOutbox, SinkError, SinkMessage, SINK_CHANNEL_CAPACITY,
};
use crate::pipeline::aggregate::{
    Aggregate, Aggregator, AggregatorSettings, EngagementRecord, RecordContext,
};
use crate::pipeline::crop::{ContextBoxes, ContextConfig};
use crate::pipeline::detect::{AnnotatedDetector, BlazeDetector, FaceDetector, SeetaDetector};
use crate::pipeline::error::ClassifyError;
use crate::pipeline::model::backend::tensorrt::TensorRtOptions;
use crate::pipeline::model::backend::{select, InferenceBackend, SelectError, SelectOptions};
use crate::pipeline::model::bundle::{Bundle, CoarseLabel};
use crate::pipeline::model::calibration::{bundle_hash, Calibration, CalibrationError};
use crate::pipeline::model::classify::{softmax, StreamingClassifier, StreamingConfig};
use crate::pipeline::schedule::{FrameQueue, Popped, SamplerConfig, TrackSampler};
use crate::pipeline::source::frame_dir::FrameDirSource;
use crate::pipeline::source::generated::{GeneratedConfig, GeneratedSource};
use crate::pipeline::source::video_file::{FfmpegTools, VideoFileSource};
use crate::pipeline::source::{FrameSource, SourceError};
use crate::pipeline::track::{Tracker, TrackerConfig};

/// How often safe mode tries to build the pipeline again.
pub const SAFE_MODE_RETRY: Duration = Duration::from_secs(30);
/// Longest wait of the supervisor loop (the systemd watchdog is pinged between waits).
const TICK: Duration = Duration::from_millis(200);
/// How often the supervisor polls the thermal guard.
pub const THERMAL_POLL: Duration = Duration::from_secs(5);
/// The capture thread's wait between privacy steps while the camera is denied.
const PRIVACY_POLL: Duration = Duration::from_millis(50);
/// Control requests waiting for the supervisor; more are answered "busy".
const CONTROL_CAPACITY: usize = 8;
/// Latency samples kept per stage for the percentiles.
const LATENCY_WINDOW: usize = 512;
/// Name of the outbox directory under the state directory.
pub const OUTBOX_DIR: &str = "outbox";

/// Options of one run that do not belong in the configuration file.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    /// Stop after this long (flushing the current interval first).
    pub duration: Option<Duration>,
    /// Longest wait for the sink to deliver outstanding records at shutdown.
    pub drain: Duration,
    /// Path of the configuration file, for log and error messages.
    pub config_path: Option<PathBuf>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            duration: None,
            drain: Duration::from_secs(10),
            config_path: None,
        }
    }
}

/// Why [`run`] returned normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM or SIGINT.
    Signal,
    /// `--duration` elapsed.
    Duration,
    /// The source ended (`source.max_frames`, or the last file of a frame directory).
    SourceEnded,
    /// stdout was closed by its reader.
    StdoutClosed,
}

/// A failure that stops the daemon (the binary exits non-zero).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The state directory cannot be created.
    #[error("cannot create state directory {}: {source}", path.display())]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The outbox cannot be opened.
    #[error(transparent)]
    Outbox(#[from] crate::daemon::outbox::OutboxError),
    /// The MQTT settings cannot be resolved (password or TLS files).
    #[error(transparent)]
    MqttSetup(#[from] crate::daemon::publish::mqtt::MqttSetupError),
    /// A thread could not be spawned.
    #[error("cannot start the {name} thread: {source}")]
    Spawn {
        /// The thread.
        name: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A thread panicked.
    #[error("the {0} thread panicked")]
    Panicked(&'static str),
    /// The privacy LED or switch line cannot be opened (`[privacy]`).
    #[error("privacy pins: {0}")]
    PrivacyPins(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The sink stopped.
    #[error("the {kind} sink stopped: {source}")]
    Sink {
        /// `mqtt` or `stdout`.
        kind: &'static str,
        /// Why.
        #[source]
        source: SinkError,
    },
}

/// Why a valid configuration cannot run (the reason shown in safe mode).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The frame source cannot be opened.
    #[error("source: {0}")]
    Source(#[from] SourceError),
    /// The model bundle cannot be loaded.
    #[error("model: {0}")]
    Bundle(#[from] crate::pipeline::error::BundleError),
    /// No configured (or, under `auto`, no) inference backend loads and passes the self-check.
    #[error("model.backend: {0}")]
    Backend(#[from] SelectError),
    /// The calibration file cannot be used with this bundle.
    #[error("model.calibration: {0}")]
    Calibration(#[from] CalibrationError),
    /// The classifier rejects the model or the settings.
    #[error("classifier: {0}")]
    Classifier(#[from] ClassifyError),
    /// The face detector cannot be built.
    #[error("detector: {0}")]
    Detector(#[from] crate::pipeline::detect::DetectError),
    /// The backend cannot load the bundle's face detector network.
    #[error("detect.kind = \"blaze\": {0}")]
    DetectorNetwork(#[from] crate::pipeline::model::backend::BackendError),
    /// A tracker, sampler or context setting is out of range.
    #[error("{0}")]
    Setting(String),
}

/// A failure inside the running pipeline (puts the daemon into safe mode).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The source failed for good.
    #[error("source: {0}")]
    Source(#[from] SourceError),
    /// The model failed.
    #[error("inference: {0}")]
    Inference(#[from] crate::pipeline::error::InferenceError),
}

/// Percentile buffer of one stage.
#[derive(Debug)]
struct LatencyRing {
    samples: Vec<f32>,
    next: usize,
}

impl LatencyRing {
    fn new() -> Self {
        LatencyRing {
            samples: Vec::with_capacity(LATENCY_WINDOW),
            next: 0,
        }
    }

    fn push(&mut self, d: Duration) {
        let ms = d.as_secs_f32() * 1000.0;
        if self.samples.len() < LATENCY_WINDOW {
            self.samples.push(ms);
        } else {
            self.samples[self.next] = ms;
            self.next = (self.next + 1) % LATENCY_WINDOW;
        }
    }

    fn figures(&self) -> Option<LatencyFigures> {
        if self.samples.is_empty() {
            return None;
        }
        let mut sorted = self.samples.clone();
        sorted.sort_by(f32::total_cmp);
        let at = |p: f64| {
            let i = ((p * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1);
            (f64::from(sorted[i]) * 1000.0).round() / 1000.0
        };
        Some(LatencyFigures {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            samples: sorted.len(),
        })
    }
}

/// Stage names in `stats.latency_ms`.
const STAGES: [&str; 5] = ["queue", "detect", "track", "classify", "frame"];

/// Counters and latencies shared by the pipeline threads and the supervisor.
#[derive(Debug)]
pub struct Metrics {
    frames_captured: AtomicU64,
    frames_processed: AtomicU64,
    frame_errors: AtomicU64,
    results: AtomicU64,
    frames_dropped_before: AtomicU64,
    tracks_active: AtomicUsize,
    latency: Mutex<[LatencyRing; 5]>,
}

impl Metrics {
    fn new() -> Self {
        Metrics {
            frames_captured: AtomicU64::new(0),
            frames_processed: AtomicU64::new(0),
            frame_errors: AtomicU64::new(0),
            results: AtomicU64::new(0),
            frames_dropped_before: AtomicU64::new(0),
            tracks_active: AtomicUsize::new(0),
            latency: Mutex::new([(); 5].map(|()| LatencyRing::new())),
        }
    }

    fn record_latencies(&self, values: [Duration; 5]) {
        let mut rings = self.latency.lock().unwrap_or_else(PoisonError::into_inner);
        for (ring, value) in rings.iter_mut().zip(values) {
            ring.push(value);
        }
    }
}

/// Opens the configured source (again), for the capture thread.
type SourceOpener = Box<dyn FnMut() -> Result<Box<dyn FrameSource>, SourceError> + Send>;

/// Everything a pipeline is built from, before its threads start.
struct Parts {
    /// The source, opened at build time when no privacy controller gates it.
    source: Option<Box<dyn FrameSource>>,
    open_source: SourceOpener,
    detector: Box<dyn FaceDetector>,
    tracker: TrackerConfig,
    sampler: SamplerConfig,
    contexts: ContextBoxes,
    /// The model; none under `presence`.
    model: Option<ModelParts>,
    aggregator: AggregatorSettings,
    model_info: Option<ModelInfo>,
    backend: Option<BackendStatus>,
}

/// The loaded model and how the classifier runs it.
struct ModelParts {
    backend: Arc<dyn InferenceBackend>,
    streaming: StreamingConfig,
    calibration: Option<Calibration>,
}

fn setting_error(e: impl std::fmt::Display) -> BuildError {
    BuildError::Setting(e.to_string())
}

/// Opens the V4L2 camera. A camera that is missing at start fails the build (safe mode,
/// retried like any unrunnable configuration); one lost later is reopened by the source.
#[cfg(feature = "v4l2")]
fn open_camera(
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
        stall_timeout: Duration::from_millis(v.stall_timeout_ms),
        reopen_initial: Duration::from_millis(v.reopen_min_ms),
        reopen_max: Duration::from_millis(v.reopen_max_ms),
    })?))
}

/// Without the `v4l2` feature there is no camera (validation already says so).
#[cfg(not(feature = "v4l2"))]
fn open_camera(
    _: &crate::daemon::config::V4l2SourceConfig,
) -> Result<Box<dyn FrameSource>, SourceError> {
    Err(SourceError::Config {
        source_kind: "v4l2",
        field: "kind",
        reason: "needs caerd built with the cargo feature v4l2",
    })
}

/// Opens the configured source.
fn open_source(s: &SourceConfig) -> Result<Box<dyn FrameSource>, SourceError> {
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
fn build_parts(config: &ValidatedConfig) -> Result<Parts, BuildError> {
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

/// How the capture thread ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CaptureEnd {
    Stopped,
    SourceEnded,
}

/// Shared flags of one pipeline.
#[derive(Debug, Clone)]
struct Flags {
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    /// The thermal sampling-rate factor, as `f32` bits (set by the supervisor).
    sampling_factor: Arc<AtomicU32>,
}

impl Flags {
    fn new(paused: bool) -> Self {
        Flags {
            stop: Arc::new(AtomicBool::new(false)),
            paused: Arc::new(AtomicBool::new(paused)),
            sampling_factor: Arc::new(AtomicU32::new(1.0f32.to_bits())),
        }
    }

    fn sampling_factor(&self) -> f32 {
        f32::from_bits(self.sampling_factor.load(Ordering::Relaxed))
    }
}

/// The capture thread's source and what gates it.
struct Capture {
    /// The open source, if any.
    source: Option<Box<dyn FrameSource>>,
    open_source: SourceOpener,
    /// The privacy controller; none: the source may always be open.
    privacy: Option<SharedPrivacy>,
    fps: f64,
    max_frames: Option<u64>,
}

impl Capture {
    /// One privacy step (a switch sample, the LED driven); always true without a controller.
    fn allowed(&self, wanted: bool) -> bool {
        match &self.privacy {
            None => true,
            Some(p) => lock_privacy(p).allow(wanted, self.source.is_some()),
        }
    }
}

/// Pulls frames from the source, paced to `fps`, into the queue; closes the queue at the end.
/// With a privacy controller, the source is open only while the controller allows it (see
/// the module docs); a paused pipeline then closes it too.
fn capture_loop(
    mut capture: Capture,
    queue: &FrameQueue,
    flags: &Flags,
    metrics: &Metrics,
) -> Result<CaptureEnd, SourceError> {
    let period = Duration::from_secs_f64(1.0 / capture.fps);
    let mut next_at = Instant::now();
    let mut delivered = 0u64;
    let mut transient_errors = 0u64;
    tracing::info!(
        fps = capture.fps,
        privacy = capture.privacy.is_some(),
        "capture started"
    );
    let end = loop {
        if flags.stop.load(Ordering::Relaxed) {
            break Ok(CaptureEnd::Stopped);
        }
        if capture.max_frames.is_some_and(|m| delivered >= m) {
            break Ok(CaptureEnd::SourceEnded);
        }
        let paused = flags.paused.load(Ordering::Relaxed);
        if !capture.allowed(!paused) {
            if capture.source.take().is_some() {
                tracing::info!("camera closed (privacy switch, pause or pin error)");
                // No wait: the next step sees the camera closed and turns the LED off.
                continue;
            }
            std::thread::sleep(PRIVACY_POLL);
            continue;
        }
        if capture.source.is_none() {
            // The controller allowed it, so the LED is lit: open the camera.
            match (capture.open_source)() {
                Ok(source) => {
                    tracing::info!(source = %source.describe(), "source opened");
                    capture.source = Some(source);
                }
                Err(e) if e.is_transient() => {
                    transient_errors += 1;
                    if transient_errors.is_power_of_two() {
                        tracing::warn!(error = %e, count = transient_errors, "cannot open the source; retrying");
                    }
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
                Err(e) => break Err(e),
            }
        }
        if paused {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let now = Instant::now();
        if now < next_at {
            std::thread::sleep((next_at - now).min(Duration::from_millis(100)));
            continue;
        }
        // Keep the cadence, but never try to catch up a backlog.
        next_at = (next_at + period).max(now);
        let Some(source) = capture.source.as_mut() else {
            continue;
        };
        match source.next_frame() {
            Ok(Some(mut frame)) => {
                // The switch may have been engaged while the source blocked: a frame leaves
                // only if the camera is still allowed (the next step closes it otherwise).
                if !capture.allowed(!flags.paused.load(Ordering::Relaxed)) {
                    continue;
                }
                frame.captured_at = Instant::now();
                delivered += 1;
                metrics.frames_captured.fetch_add(1, Ordering::Relaxed);
                if !queue.push(frame) {
                    break Ok(CaptureEnd::Stopped);
                }
            }
            Ok(None) => break Ok(CaptureEnd::SourceEnded),
            Err(e) if e.is_transient() => {
                transient_errors += 1;
                if transient_errors.is_power_of_two() {
                    tracing::warn!(error = %e, count = transient_errors, "source error; retrying");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => break Err(e),
        }
    };
    // Close the source first; the last privacy step then turns the LED off.
    capture.source = None;
    if let Some(p) = &capture.privacy {
        lock_privacy(p).allow(false, false);
    }
    queue.close();
    end
}

/// The inference thread's stages.
struct Stages {
    detector: Box<dyn FaceDetector>,
    tracker_config: TrackerConfig,
    tracker: Tracker,
    sampler_config: SamplerConfig,
    sampler: TrackSampler,
    contexts: ContextBoxes,
    model: Option<ModelParts>,
    classifier: Option<StreamingClassifier>,
    aggregator: Aggregator,
    /// The thermal factor applied to the sampler's rate.
    rate_factor: f32,
}

/// A pipeline's source: opened at build time, or not yet (privacy), and how to open it.
type SourceParts = (Option<Box<dyn FrameSource>>, SourceOpener);

impl Stages {
    fn new(parts: Parts) -> Result<(Stages, SourceParts), BuildError> {
        let tracker = Tracker::new(parts.tracker.clone()).map_err(setting_error)?;
        let sampler = TrackSampler::new(&parts.sampler).map_err(setting_error)?;
        let classifier = match &parts.model {
            Some(m) => Some(StreamingClassifier::new(m.backend.clone(), &m.streaming)?),
            None => None,
        };
        let stages = Stages {
            detector: parts.detector,
            tracker_config: parts.tracker,
            tracker,
            sampler_config: parts.sampler,
            sampler,
            contexts: parts.contexts,
            model: parts.model,
            classifier,
            aggregator: Aggregator::new(parts.aggregator),
            rate_factor: 1.0,
        };
        Ok((stages, (parts.source, parts.open_source)))
    }

    /// Applies the thermal sampling-rate factor.
    fn set_rate_factor(&mut self, factor: f32) {
        if factor != self.rate_factor {
            tracing::info!(factor, "per-track sampling rate factor");
            self.rate_factor = factor;
            self.sampler.set_rate_factor(f64::from(factor));
        }
    }

    /// Forgets every track (after a pause: no features from before it may be mixed in).
    fn reset_tracks(&mut self) -> Result<(), PipelineError> {
        // These settings were accepted by the same constructors when the pipeline was built.
        if let Ok(tracker) = Tracker::new(self.tracker_config.clone()) {
            self.tracker = tracker;
        }
        if let Ok(sampler) = TrackSampler::new(&self.sampler_config) {
            self.sampler = sampler;
            self.sampler.set_rate_factor(f64::from(self.rate_factor));
        }
        if let Some(m) = &self.model {
            match StreamingClassifier::new(m.backend.clone(), &m.streaming) {
                Ok(c) => self.classifier = Some(c),
                Err(ClassifyError::Inference(e)) => return Err(e.into()),
                Err(e) => tracing::error!(error = %e, "cannot reset the classifier"),
            }
        }
        Ok(())
    }

    /// Runs one frame through detect, track, sample, crop and classify.
    fn process(
        &mut self,
        frame: &crate::pipeline::frame::Frame,
        metrics: &Metrics,
    ) -> Result<(), PipelineError> {
        let start = Instant::now();
        let queued = start.saturating_duration_since(frame.captured_at);
        let detections = match self.detector.detect(frame) {
            Ok(d) => d,
            Err(e) => {
                let n = metrics.frame_errors.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(error = %e, count = n, "face detection failed; frame skipped");
                }
                return Ok(());
            }
        };
        let detected = Instant::now();
        let update = self.tracker.update(&detections);
        for id in &update.ended {
            self.sampler.forget(*id);
            if let Some(classifier) = self.classifier.as_mut() {
                classifier.forget(*id);
            }
        }
        for face in &update.faces {
            self.aggregator.observe_seen(face.id);
        }
        metrics
            .tracks_active
            .store(update.faces.len(), Ordering::Relaxed);
        let due = self.sampler.select(frame.captured_at, &update.faces);
        for face in &due {
            self.aggregator.observe_sample(face.id);
        }
        let tracked = Instant::now();
        if let Some(classifier) = self.classifier.as_mut() {
            let inputs: Vec<_> = due
                .iter()
                .map(|f| self.contexts.track_input(f, frame.width(), frame.height()))
                .collect();
            match classifier.push_frame(frame.rgb(), &inputs) {
                Ok(results) => {
                    metrics
                        .results
                        .fetch_add(results.len() as u64, Ordering::Relaxed);
                    let calibration = self.model.as_ref().and_then(|m| m.calibration.as_ref());
                    for r in &results {
                        let probabilities = match calibration {
                            Some(c) => softmax(&c.apply(&r.logits)),
                            None => r.probabilities,
                        };
                        self.aggregator.observe_result(r.track_id, &probabilities);
                    }
                }
                Err(ClassifyError::Inference(e)) => return Err(e.into()),
                Err(e) => {
                    let n = metrics.frame_errors.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_power_of_two() {
                        tracing::warn!(error = %e, count = n, "frame not classified");
                    }
                }
            }
        }
        let done = Instant::now();
        metrics.frames_processed.fetch_add(1, Ordering::Relaxed);
        metrics.record_latencies([
            queued,
            detected - start,
            tracked - detected,
            done - tracked,
            done - start,
        ]);
        tracing::trace!(
            sequence = frame.sequence,
            faces = update.faces.len(),
            sampled = due.len(),
            "frame"
        );
        Ok(())
    }
}

/// Identity and policy stamped on each record by the inference thread.
#[derive(Debug, Clone)]
struct RecordStamp {
    site: String,
    room: String,
    device: String,
    model_id: Option<String>,
    report_interval: Duration,
}

/// Writes one interval's record to the outbox and wakes the sink.
fn publish_interval(
    aggregator: &mut Aggregator,
    stamp: &RecordStamp,
    start: SystemTime,
    outbox: &SharedOutbox,
    sink: &SyncSender<SinkMessage>,
) {
    let aggregate = aggregator.finish();
    let settings = aggregator.settings();
    let context = RecordContext {
        site: &stamp.site,
        room: &stamp.room,
        device: &stamp.device,
        profile: settings.profile,
        min_group_size: settings.min_group_size,
        model_id: stamp.model_id.as_deref(),
    };
    let (suppressed, students) = match &aggregate {
        Aggregate::Published(f) => (false, f.students),
        Aggregate::Suppressed(_) => (true, 0),
    };
    let end = SystemTime::now();
    let appended = lock_outbox(outbox).append(|seq| {
        let record = EngagementRecord::new(&context, seq, start, end, aggregate);
        serde_json::to_vec(&record).expect("an engagement record always serialises")
    });
    match appended {
        Ok(seq) => {
            tracing::info!(seq, suppressed, students, "interval recorded");
            let _ = sink.try_send(SinkMessage::OutboxReady);
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot write an engagement record to the outbox; interval lost")
        }
    }
}

/// The inference thread: frames from the queue through the stages; one record per interval.
fn inference_loop(
    mut stages: Stages,
    queue: &FrameQueue,
    flags: &Flags,
    stamp: &RecordStamp,
    outbox: &SharedOutbox,
    sink: &SyncSender<SinkMessage>,
    metrics: &Metrics,
) -> Result<(), PipelineError> {
    let mut interval_start = (Instant::now(), SystemTime::now());
    let mut was_paused = false;
    loop {
        stages.set_rate_factor(flags.sampling_factor());
        let paused = flags.paused.load(Ordering::Relaxed);
        if paused && !was_paused {
            publish_interval(
                &mut stages.aggregator,
                stamp,
                interval_start.1,
                outbox,
                sink,
            );
            stages.reset_tracks()?;
            tracing::info!("paused: no frame is captured or analysed");
        } else if !paused && was_paused {
            interval_start = (Instant::now(), SystemTime::now());
            tracing::info!("resumed");
        }
        was_paused = paused;
        let next_report = interval_start.0 + stamp.report_interval;
        let wait = next_report
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        match queue.pop(wait) {
            Popped::Frame(frame) if !paused => stages.process(&frame, metrics)?,
            Popped::Frame(_) | Popped::Empty => {}
            Popped::Closed => {
                if !paused {
                    publish_interval(
                        &mut stages.aggregator,
                        stamp,
                        interval_start.1,
                        outbox,
                        sink,
                    );
                }
                return Ok(());
            }
        }
        if !paused && Instant::now() >= next_report {
            publish_interval(
                &mut stages.aggregator,
                stamp,
                interval_start.1,
                outbox,
                sink,
            );
            interval_start = (next_report, SystemTime::now());
        }
    }
}

/// A running pipeline: its threads and flags.
struct Pipeline {
    flags: Flags,
    queue: Arc<FrameQueue>,
    capture: JoinHandle<Result<CaptureEnd, SourceError>>,
    inference: JoinHandle<Result<(), PipelineError>>,
    model_info: Option<ModelInfo>,
    backend: Option<BackendStatus>,
}

/// How a pipeline ended.
enum PipelineEnd {
    SourceEnded,
    Stopped,
    Failed(String),
}

impl Pipeline {
    #[allow(clippy::too_many_arguments)]
    fn spawn(
        parts: Parts,
        config: &ValidatedConfig,
        paused: bool,
        privacy: Option<SharedPrivacy>,
        outbox: &SharedOutbox,
        sink: &SyncSender<SinkMessage>,
        metrics: &Arc<Metrics>,
    ) -> Result<Pipeline, DaemonError> {
        let c = config.config();
        let model_info = parts.model_info.clone();
        let backend = parts.backend.clone();
        let stamp = RecordStamp {
            site: c.device.site.clone(),
            room: c.device.room.clone(),
            device: c.device.id.clone(),
            model_id: model_info.as_ref().map(|m| m.id.clone()),
            report_interval: config.report_interval(),
        };
        let (stages, (source, open_source)) = match Stages::new(parts) {
            Ok(s) => s,
            // The same constructors succeeded in build_parts: unreachable in practice.
            Err(e) => {
                return Err(DaemonError::Spawn {
                    name: "inference",
                    source: std::io::Error::other(e.to_string()),
                })
            }
        };
        let queue = Arc::new(FrameQueue::new(c.sampling.queue_frames));
        let flags = Flags::new(paused);
        // Frames dropped by earlier pipelines' queues stay counted.
        let capture = {
            let (queue, flags, metrics) = (queue.clone(), flags.clone(), metrics.clone());
            let capture = Capture {
                source,
                open_source,
                privacy,
                fps: c.source.fps,
                max_frames: c.source.max_frames.map(|m| m.get()),
            };
            std::thread::Builder::new()
                .name("caer-capture".into())
                .spawn(move || capture_loop(capture, &queue, &flags, &metrics))
                .map_err(|source| DaemonError::Spawn {
                    name: "capture",
                    source,
                })?
        };
        let inference = {
            let (queue, flags, metrics) = (queue.clone(), flags.clone(), metrics.clone());
            let (outbox, sink) = (outbox.clone(), sink.clone());
            std::thread::Builder::new()
                .name("caer-inference".into())
                .spawn(move || {
                    inference_loop(stages, &queue, &flags, &stamp, &outbox, &sink, &metrics)
                })
                .map_err(|source| DaemonError::Spawn {
                    name: "inference",
                    source,
                })?
        };
        Ok(Pipeline {
            flags,
            queue,
            capture,
            inference,
            model_info,
            backend,
        })
    }

    fn is_finished(&self) -> bool {
        self.inference.is_finished()
    }

    fn set_paused(&self, paused: bool) {
        self.flags.paused.store(paused, Ordering::Relaxed);
    }

    fn set_sampling_factor(&self, factor: f32) {
        self.flags
            .sampling_factor
            .store(factor.to_bits(), Ordering::Relaxed);
    }

    /// Stops (if still running) and joins both threads.
    fn stop(self, metrics: &Metrics) -> Result<PipelineEnd, DaemonError> {
        self.flags.stop.store(true, Ordering::Relaxed);
        let capture = self
            .capture
            .join()
            .map_err(|_| DaemonError::Panicked("capture"))?;
        // The capture thread closed the queue; the inference thread records the last interval.
        self.queue.close();
        let inference = self
            .inference
            .join()
            .map_err(|_| DaemonError::Panicked("inference"))?;
        metrics
            .frames_dropped_before
            .fetch_add(self.queue.dropped_total(), Ordering::Relaxed);
        Ok(match (capture, inference) {
            (Err(e), _) => PipelineEnd::Failed(format!("source: {e}")),
            (_, Err(e)) => PipelineEnd::Failed(e.to_string()),
            (Ok(CaptureEnd::SourceEnded), Ok(())) => PipelineEnd::SourceEnded,
            (Ok(CaptureEnd::Stopped), Ok(())) => PipelineEnd::Stopped,
        })
    }
}

/// Merges an accepted patch into the accumulated remote configuration: objects key by key;
/// anything else, `null` included (reset to default), replaces.
fn accumulate_patch(acc: &mut serde_json::Value, patch: &serde_json::Value) {
    match (acc, patch) {
        (serde_json::Value::Object(acc), serde_json::Value::Object(patch)) => {
            for (key, value) in patch {
                match acc.get_mut(key) {
                    Some(existing) if existing.is_object() && value.is_object() => {
                        accumulate_patch(existing, value)
                    }
                    _ => {
                        acc.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (acc, patch) => *acc = patch.clone(),
    }
}

/// Resident memory in bytes, from `/proc/self/status`.
fn memory_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The supervisor's view of the daemon.
struct Supervisor {
    config: ValidatedConfig,
    persistent: PersistentState,
    state_dir: PathBuf,
    outbox: SharedOutbox,
    sink: SyncSender<SinkMessage>,
    metrics: Arc<Metrics>,
    mqtt_connects: Option<Arc<AtomicU64>>,
    pipeline: Option<Pipeline>,
    state: RunState,
    reason: Option<String>,
    model_info: Option<ModelInfo>,
    backend: Option<BackendStatus>,
    started: Instant,
    started_at: SystemTime,
    last_stats: (Instant, u64, u64),
    next_stats: Instant,
    next_retry: Option<Instant>,
    /// The privacy LED and switch, shared with each pipeline's capture thread.
    privacy: Option<SharedPrivacy>,
    /// The thermal guard; none when `thermal.enabled` is false.
    thermal: Option<Thermal>,
    next_thermal: Instant,
}

impl Supervisor {
    fn status_payload(&self, state: RunState) -> Vec<u8> {
        let d = &self.config.config().device;
        let status = StatusPayload {
            schema: fleet::STATUS_SCHEMA,
            state,
            reason: self.reason.clone(),
            version: env!("CARGO_PKG_VERSION"),
            site: d.site.clone(),
            room: d.room.clone(),
            device: d.id.clone(),
            model: self.model_info.clone(),
            backend: self.backend.as_ref().map(|b| b.name),
            backend_reason: self.backend.as_ref().map(|b| b.reason.clone()),
            profile: self.config.config().policy.profile,
            calibration_version: self
                .model_info
                .as_ref()
                .and_then(|m| m.calibration_version.clone()),
            uptime_s: self.started.elapsed().as_secs(),
            started_at: crate::pipeline::aggregate::rfc3339(self.started_at),
            remote_config: self.persistent.remote_config.is_some(),
        };
        serde_json::to_vec(&status).expect("a status always serialises")
    }

    fn set_state(&mut self, state: RunState, reason: Option<String>) -> Result<(), DaemonError> {
        self.state = state;
        self.reason = reason;
        let line = match &self.reason {
            Some(r) => format!("{state:?}: {r}"),
            None => format!("{state:?}"),
        };
        if let Err(e) = caer_board::systemd::status(&line) {
            tracing::debug!(error = %e, "cannot notify systemd");
        }
        let payload = self.status_payload(state);
        self.send(SinkMessage::Status(payload))
    }

    fn send(&self, message: SinkMessage) -> Result<(), DaemonError> {
        self.sink.send(message).map_err(|_| DaemonError::Sink {
            kind: "output",
            source: SinkError::Disconnected,
        })
    }

    fn reply(&self, topic: ReplyTopic, payload: Vec<u8>) {
        if self
            .sink
            .try_send(SinkMessage::Reply(topic, payload))
            .is_err()
        {
            tracing::warn!("sink busy; a control reply was dropped");
        }
    }

    /// Builds and starts the pipeline for the current configuration, or enters safe mode.
    fn start_pipeline(&mut self) -> Result<(), DaemonError> {
        self.set_state(RunState::Starting, None)?;
        match build_parts(&self.config) {
            Ok(parts) => self.launch(parts),
            Err(e) => self.enter_safe_mode(e.to_string()),
        }
    }

    fn launch(&mut self, parts: Parts) -> Result<(), DaemonError> {
        let pipeline = Pipeline::spawn(
            parts,
            &self.config,
            self.persistent.paused,
            self.privacy.clone(),
            &self.outbox,
            &self.sink,
            &self.metrics,
        )?;
        pipeline.set_sampling_factor(self.sampling_factor());
        self.model_info = pipeline.model_info.clone();
        self.backend = pipeline.backend.clone();
        self.pipeline = Some(pipeline);
        self.next_retry = None;
        let c = self.config.config();
        tracing::info!(
            profile = %c.policy.profile,
            model = self.model_info.as_ref().map_or("none", |m| m.id.as_str()),
            report_interval_s = c.report.interval_secs.get(),
            min_group_size = c.policy.min_group_size.get(),
            "pipeline running"
        );
        let state = if self.persistent.paused {
            RunState::Paused
        } else {
            RunState::Running
        };
        self.set_state(state, None)
    }

    /// The thermal sampling-rate factor now (1 without a thermal guard).
    fn sampling_factor(&self) -> f32 {
        self.thermal.as_ref().map_or(1.0, Thermal::sampling_factor)
    }

    /// Polls the thermal guard and passes its factor on to the pipeline.
    fn poll_thermal(&mut self) {
        self.next_thermal = Instant::now() + THERMAL_POLL;
        if let Some(thermal) = &mut self.thermal {
            thermal.poll();
        }
        if let Some(p) = &self.pipeline {
            p.set_sampling_factor(self.sampling_factor());
        }
    }

    fn enter_safe_mode(&mut self, reason: String) -> Result<(), DaemonError> {
        tracing::error!(%reason, retry_s = SAFE_MODE_RETRY.as_secs(), "safe mode: the configuration is valid but cannot run");
        self.model_info = None;
        self.backend = None;
        self.next_retry = Some(Instant::now() + SAFE_MODE_RETRY);
        self.set_state(RunState::SafeMode, Some(reason))
    }

    fn stop_pipeline(&mut self) -> Result<Option<PipelineEnd>, DaemonError> {
        match self.pipeline.take() {
            Some(p) => p.stop(&self.metrics).map(Some),
            None => Ok(None),
        }
    }

    fn handle_control(&mut self, request: ControlRequest) -> Result<(), DaemonError> {
        match request {
            ControlRequest::SetConfig { id, patch } => {
                let ack = self.apply_remote(&patch)?;
                let ack = match ack {
                    Ok(()) => ConfigAck::ok(id),
                    Err(errors) => {
                        tracing::warn!(errors = ?errors, "remote configuration change rejected");
                        ConfigAck::error(id, errors)
                    }
                };
                self.reply(
                    ReplyTopic::ConfigAck,
                    serde_json::to_vec(&ack).expect("acks serialise"),
                );
            }
            ControlRequest::Command { id, command } => {
                let ack = match command {
                    Command::Pause | Command::Resume => {
                        let paused = command == Command::Pause;
                        let mut next = self.persistent.clone();
                        next.paused = paused;
                        match next.save(&self.state_dir) {
                            Ok(()) => {
                                self.persistent = next;
                                if let Some(p) = &self.pipeline {
                                    p.set_paused(paused);
                                    let state = if paused {
                                        RunState::Paused
                                    } else {
                                        RunState::Running
                                    };
                                    self.set_state(state, None)?;
                                }
                                tracing::info!(?command, "command carried out");
                                CmdAck::ok(id, command)
                            }
                            Err(e) => {
                                CmdAck::error(id, Some(command), vec![issue("", e.to_string())])
                            }
                        }
                    }
                    Command::Identify => {
                        let d = &self.config.config().device;
                        tracing::warn!(site = %d.site, room = %d.room, device = %d.id, "identify: this is the device");
                        CmdAck::ok(id, command)
                    }
                };
                self.reply(
                    ReplyTopic::CmdAck,
                    serde_json::to_vec(&ack).expect("acks serialise"),
                );
            }
        }
        Ok(())
    }

    /// Validates, builds, persists and swaps in a remote change (all or nothing).
    fn apply_remote(
        &mut self,
        patch: &serde_json::Value,
    ) -> Result<Result<(), Vec<ConfigIssue>>, DaemonError> {
        let validated = match self.config.merge_remote(patch) {
            Ok(v) => v,
            Err(errors) => return Ok(Err(errors.0)),
        };
        let parts = match build_parts(&validated) {
            Ok(parts) => parts,
            Err(e) => return Ok(Err(vec![issue("", format!("valid, but cannot run: {e}"))])),
        };
        let mut next = self.persistent.clone();
        let mut acc = next
            .remote_config
            .take()
            .unwrap_or_else(|| serde_json::json!({}));
        accumulate_patch(&mut acc, patch);
        next.remote_config = Some(acc);
        if let Err(e) = next.save(&self.state_dir) {
            return Ok(Err(vec![issue("", format!("cannot save the change: {e}"))]));
        }
        self.persistent = next;
        if let Some(PipelineEnd::Failed(reason)) = self.stop_pipeline()? {
            tracing::warn!(%reason, "the previous pipeline had failed");
        }
        self.config = validated;
        tracing::info!("remote configuration change applied");
        self.launch(parts)?;
        Ok(Ok(()))
    }

    fn send_stats(&mut self) -> Result<(), DaemonError> {
        let now = Instant::now();
        let m = &self.metrics;
        let captured = m.frames_captured.load(Ordering::Relaxed);
        let processed = m.frames_processed.load(Ordering::Relaxed);
        let (then, captured_then, processed_then) = self.last_stats;
        let secs = now.saturating_duration_since(then).as_secs_f64().max(1e-3);
        let round2 = |x: f64| (x * 100.0).round() / 100.0;
        let dropped = m.frames_dropped_before.load(Ordering::Relaxed)
            + self
                .pipeline
                .as_ref()
                .map_or(0, |p| p.queue.dropped_total());
        let latency_ms: BTreeMap<&'static str, LatencyFigures> = {
            let rings = m.latency.lock().unwrap_or_else(PoisonError::into_inner);
            STAGES
                .iter()
                .zip(rings.iter())
                .filter_map(|(name, ring)| ring.figures().map(|f| (*name, f)))
                .collect()
        };
        let outbox = {
            let o = lock_outbox(&self.outbox);
            let s = o.stats();
            OutboxFigures {
                depth: o.depth(),
                bytes: o.total_bytes(),
                next_seq: o.next_seq(),
                dropped_total: s.dropped_total,
                corrupt_total: s.corrupt_total,
            }
        };
        let d = &self.config.config().device;
        let stats = StatsPayload {
            schema: fleet::STATS_SCHEMA,
            site: d.site.clone(),
            device: d.id.clone(),
            at: crate::pipeline::aggregate::rfc3339(SystemTime::now()),
            uptime_s: self.started.elapsed().as_secs(),
            state: self.state,
            capture_fps: round2((captured - captured_then) as f64 / secs),
            inference_fps: round2((processed - processed_then) as f64 / secs),
            frames_captured_total: captured,
            frames_processed_total: processed,
            frames_dropped_total: dropped,
            frame_errors_total: m.frame_errors.load(Ordering::Relaxed),
            results_total: m.results.load(Ordering::Relaxed),
            tracks_active: m.tracks_active.load(Ordering::Relaxed),
            latency_ms,
            memory_rss_bytes: memory_rss_bytes(),
            temperature_c: self.thermal.as_ref().and_then(Thermal::temperature_c),
            thermal_throttled: self.thermal.as_ref().is_some_and(Thermal::throttled),
            sampling_factor: (f64::from(self.sampling_factor()) * 1e6).round() / 1e6,
            camera_allowed: self
                .privacy
                .as_ref()
                .map(|p| lock_privacy(p).camera_allowed()),
            privacy_switch: self.privacy.as_ref().and_then(|p| lock_privacy(p).switch()),
            outbox,
            mqtt_connects_total: self
                .mqtt_connects
                .as_ref()
                .map(|c| c.load(Ordering::Relaxed)),
        };
        self.last_stats = (now, captured, processed);
        self.next_stats = now + self.config.stats_interval();
        self.send(SinkMessage::Stats(
            serde_json::to_vec(&stats).expect("stats serialise"),
        ))
    }
}

fn issue(key: &str, reason: String) -> ConfigIssue {
    ConfigIssue {
        key: key.to_string(),
        reason,
    }
}

/// Loads `state.json` and applies its remote configuration on top of `file_config`.
fn initial_config(
    file_config: &ValidatedConfig,
    state_dir: &Path,
) -> (ValidatedConfig, PersistentState) {
    let mut persistent = match PersistentState::load(state_dir) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "ignoring the daemon state file (not paused, no remote configuration)");
            PersistentState::default()
        }
    };
    let config = match &persistent.remote_config {
        None => file_config.clone(),
        Some(remote) => match file_config.merge_remote(remote) {
            Ok(merged) => {
                tracing::info!("applying the remote configuration kept in the state directory");
                merged
            }
            Err(errors) => {
                tracing::error!(%errors, "the kept remote configuration no longer validates; using the file alone");
                persistent.remote_config = None;
                file_config.clone()
            }
        },
    };
    (config, persistent)
}

/// Runs the daemon until a signal (`shutdown` set), `options.duration`, or the end of the
/// source. See the module docs.
pub fn run(
    config: ValidatedConfig,
    options: &RunOptions,
    shutdown: &AtomicBool,
) -> Result<Exit, DaemonError> {
    let started = Instant::now();
    let state_dir = config.config().state_dir.clone();
    std::fs::create_dir_all(&state_dir).map_err(|source| DaemonError::StateDir {
        path: state_dir.clone(),
        source,
    })?;
    let (current, persistent) = initial_config(&config, &state_dir);
    drop(config);
    let outbox = Outbox::open(
        state_dir.join(OUTBOX_DIR),
        current.config().outbox.max_bytes.get(),
    )?;
    let stats = outbox.stats();
    if stats.recovered > 0 || stats.corrupt_total > 0 {
        tracing::info!(
            pending = stats.recovered,
            corrupt = stats.corrupt_total,
            next_seq = outbox.next_seq(),
            "outbox recovered"
        );
    }
    let outbox: SharedOutbox = Arc::new(Mutex::new(outbox));
    let (sink_tx, sink_rx) = mpsc::sync_channel(SINK_CHANNEL_CAPACITY);
    let (control_tx, control_rx): (SyncSender<ControlRequest>, Receiver<ControlRequest>) =
        mpsc::sync_channel(CONTROL_CAPACITY);

    let mut supervisor = Supervisor {
        config: current.clone(),
        persistent,
        state_dir,
        outbox: outbox.clone(),
        sink: sink_tx.clone(),
        metrics: Arc::new(Metrics::new()),
        mqtt_connects: None,
        pipeline: None,
        state: RunState::Starting,
        reason: None,
        model_info: None,
        backend: None,
        started,
        started_at: SystemTime::now(),
        last_stats: (started, 0, 0),
        next_stats: started + current.stats_interval(),
        next_retry: None,
        privacy: open_privacy(current.config())?,
        thermal: open_thermal(current.config()),
        next_thermal: started,
    };
    let offline = |s: &Supervisor| s.status_payload(RunState::Offline);

    let (sink_kind, sink_thread): (&'static str, JoinHandle<Result<(), SinkError>>) = if current
        .broker()
        .is_some()
    {
        let settings = MqttSettings::resolve(&current, offline(&supervisor))?;
        let connects = Arc::new(AtomicU64::new(0));
        supervisor.mqtt_connects = Some(connects.clone());
        let sink = MqttSink::new(
            settings,
            outbox.clone(),
            sink_rx,
            sink_tx.clone(),
            control_tx,
            connects,
        );
        tracing::info!(client_id = %current.client_id(), topics = %current.topics().prefix(), "publishing over MQTT");
        let thread = std::thread::Builder::new()
            .name("caer-mqtt".into())
            .spawn(move || sink.run())
            .map_err(|source| DaemonError::Spawn {
                name: "mqtt",
                source,
            })?;
        ("mqtt", thread)
    } else {
        drop(control_tx);
        let sink = StdoutSink::new(outbox.clone(), sink_rx);
        tracing::info!("no broker configured: payloads go to stdout as JSON lines");
        let thread = std::thread::Builder::new()
            .name("caer-stdout".into())
            .spawn(move || sink.run())
            .map_err(|source| DaemonError::Spawn {
                name: "stdout",
                source,
            })?;
        ("stdout", thread)
    };

    supervisor.poll_thermal();
    supervisor.start_pipeline()?;
    if let Err(e) = caer_board::systemd::ready() {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
    let mut watchdog = caer_board::systemd::Watchdog::from_env();
    let deadline = options.duration.map(|d| started + d);

    let exit = loop {
        if let Err(e) = watchdog.tick() {
            tracing::warn!(error = %e, "cannot ping the systemd watchdog");
        }
        if shutdown.load(Ordering::Relaxed) {
            tracing::info!("signal received; stopping");
            break Exit::Signal;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            tracing::info!("duration elapsed; stopping");
            break Exit::Duration;
        }
        if sink_thread.is_finished() {
            return match sink_thread.join() {
                Ok(Err(SinkError::BrokenPipe)) => Ok(Exit::StdoutClosed),
                Ok(Err(source)) => Err(DaemonError::Sink {
                    kind: sink_kind,
                    source,
                }),
                Ok(Ok(())) => Err(DaemonError::Sink {
                    kind: sink_kind,
                    source: SinkError::Disconnected,
                }),
                Err(_) => Err(DaemonError::Panicked(sink_kind)),
            };
        }
        if let Some(request) = control_rx_recv(&control_rx, TICK) {
            supervisor.handle_control(request)?;
        }
        if supervisor
            .pipeline
            .as_ref()
            .is_some_and(Pipeline::is_finished)
        {
            match supervisor.stop_pipeline()? {
                Some(PipelineEnd::SourceEnded) => {
                    tracing::info!("source ended; stopping");
                    break Exit::SourceEnded;
                }
                Some(PipelineEnd::Failed(reason)) => supervisor.enter_safe_mode(reason)?,
                Some(PipelineEnd::Stopped) | None => {}
            }
        }
        if supervisor.next_retry.is_some_and(|t| Instant::now() >= t) {
            supervisor.start_pipeline()?;
        }
        if Instant::now() >= supervisor.next_thermal {
            supervisor.poll_thermal();
        }
        if Instant::now() >= supervisor.next_stats {
            supervisor.send_stats()?;
        }
    };

    // Shutdown: stop the pipeline (it records the last partial interval), then let the sink
    // deliver what it can and publish the final status.
    if let Err(e) = caer_board::systemd::stopping() {
        tracing::debug!(error = %e, "cannot notify systemd");
    }
    supervisor.set_state(RunState::Stopping, None)?;
    if let Some(PipelineEnd::Failed(reason)) = supervisor.stop_pipeline()? {
        tracing::warn!(%reason, "the pipeline had failed");
    }
    supervisor.send_stats()?;
    let status = offline(&supervisor);
    supervisor.send(SinkMessage::Shutdown {
        drain: options.drain,
        status,
    })?;
    drop(supervisor);
    drop(sink_tx);
    match sink_thread.join() {
        Ok(Ok(())) => Ok(exit),
        Ok(Err(SinkError::BrokenPipe)) => Ok(Exit::StdoutClosed),
        Ok(Err(source)) => Err(DaemonError::Sink {
            kind: sink_kind,
            source,
        }),
        Err(_) => Err(DaemonError::Panicked(sink_kind)),
    }
}

/// Opens the privacy LED and switch lines (`[privacy]`); the only place that names the Linux
/// pin type. Opened once: `[privacy]` cannot change remotely.
#[cfg(feature = "gpio")]
fn open_privacy(config: &DaemonConfig) -> Result<Option<SharedPrivacy>, DaemonError> {
    let Some(pins) = &config.privacy else {
        return Ok(None);
    };
    let controller = caer_board::linux_gpio::open_privacy_controller(pins)
        .map_err(|e| DaemonError::PrivacyPins(Box::new(e)))?;
    tracing::info!(
        led = %format!("{}:{}", pins.led.chip.display(), pins.led.line),
        switch = %format!("{}:{}", pins.switch.chip.display(), pins.switch.line),
        "privacy LED and switch opened; the camera opens once the switch reads released"
    );
    Ok(Some(
        crate::daemon::board::Privacy::new(controller).shared(),
    ))
}

/// Without the `gpio` feature there are no pins (validation already refuses `[privacy]`).
#[cfg(not(feature = "gpio"))]
fn open_privacy(config: &DaemonConfig) -> Result<Option<SharedPrivacy>, DaemonError> {
    match config.privacy {
        None => Ok(None),
        Some(_) => Err(DaemonError::PrivacyPins(
            "[privacy] needs caerd built with the cargo feature gpio".into(),
        )),
    }
}

/// The thermal guard, unless `thermal.enabled` is false.
fn open_thermal(config: &DaemonConfig) -> Option<Thermal> {
    if !config.thermal.enabled {
        return None;
    }
    match Thermal::new(config.thermal.guard()) {
        Ok(thermal) => Some(thermal),
        // Validation rules this out.
        Err(e) => {
            tracing::error!(error = %e, "thermal guard off");
            None
        }
    }
}

/// Waits up to `timeout` for a control request (none in stdout mode: the sender is gone).
fn control_rx_recv(rx: &Receiver<ControlRequest>, timeout: Duration) -> Option<ControlRequest> {
    match rx.recv_timeout(timeout) {
        Ok(request) => Some(request),
        Err(RecvTimeoutError::Timeout) => None,
        Err(RecvTimeoutError::Disconnected) => {
            std::thread::sleep(timeout);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the fake LED, switch and source saw, in order.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Event {
        LedOn,
        LedOff,
        Opened,
        Polled,
        Closed,
    }

    #[derive(Debug, Clone, Default)]
    struct Log(Arc<Mutex<Vec<Event>>>);

    impl Log {
        fn push(&self, e: Event) {
            self.0.lock().unwrap().push(e);
        }
        fn events(&self) -> Vec<Event> {
            self.0.lock().unwrap().clone()
        }
        fn count(&self, e: Event) -> usize {
            self.events().iter().filter(|x| **x == e).count()
        }
        /// Waits until `done` holds for the events (panics after 5 s).
        fn wait(&self, what: &str, done: impl Fn(&[Event]) -> bool) {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !done(&self.events()) {
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for {what}: {:?}",
                    self.events()
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    use embedded_hal::digital::{ErrorKind, ErrorType, InputPin, OutputPin};

    /// An active-high LED that logs its writes.
    struct FakeLed(Log);
    impl ErrorType for FakeLed {
        type Error = ErrorKind;
    }
    impl OutputPin for FakeLed {
        fn set_low(&mut self) -> Result<(), ErrorKind> {
            self.0.push(Event::LedOff);
            Ok(())
        }
        fn set_high(&mut self) -> Result<(), ErrorKind> {
            self.0.push(Event::LedOn);
            Ok(())
        }
    }

    /// An active-high switch: engaged while the flag is set; fails while `broken` is set.
    #[derive(Clone, Default)]
    struct FakeSwitch {
        engaged: Arc<AtomicBool>,
        broken: Arc<AtomicBool>,
    }
    impl ErrorType for FakeSwitch {
        type Error = ErrorKind;
    }
    impl InputPin for FakeSwitch {
        fn is_high(&mut self) -> Result<bool, ErrorKind> {
            if self.broken.load(Ordering::SeqCst) {
                return Err(ErrorKind::Other);
            }
            Ok(self.engaged.load(Ordering::SeqCst))
        }
        fn is_low(&mut self) -> Result<bool, ErrorKind> {
            self.is_high().map(|high| !high)
        }
    }

    /// An endless source that logs each poll and its close.
    struct FakeSource(Log);
    impl FrameSource for FakeSource {
        fn next_frame(&mut self) -> Result<Option<crate::pipeline::frame::Frame>, SourceError> {
            self.0.push(Event::Polled);
            Ok(Some(crate::pipeline::frame::Frame::new(
                image::RgbImage::new(2, 2),
                0,
            )))
        }
        fn describe(&self) -> String {
            "fake".into()
        }
    }
    impl Drop for FakeSource {
        fn drop(&mut self) {
            self.0.push(Event::Closed);
        }
    }

    /// A capture thread gated by fake privacy pins (the switch starts engaged).
    struct Rig {
        log: Log,
        switch: FakeSwitch,
        queue: Arc<FrameQueue>,
        flags: Flags,
        thread: JoinHandle<Result<CaptureEnd, SourceError>>,
    }

    fn rig() -> Rig {
        use caer_board::privacy::{Polarity, PrivacyController, PrivacyLed, PrivacySwitch};
        let log = Log::default();
        let switch = FakeSwitch::default();
        switch.engaged.store(true, Ordering::SeqCst);
        let controller = PrivacyController::new(
            PrivacyLed::new(FakeLed(log.clone()), Polarity::ActiveHigh),
            PrivacySwitch::new(
                switch.clone(),
                Polarity::ActiveHigh,
                std::num::NonZeroU32::new(2).unwrap(),
            ),
        );
        let opener_log = log.clone();
        let capture = Capture {
            source: None,
            open_source: Box::new(move || {
                opener_log.push(Event::Opened);
                Ok(Box::new(FakeSource(opener_log.clone())) as Box<dyn FrameSource>)
            }),
            privacy: Some(crate::daemon::board::Privacy::new(controller).shared()),
            fps: 200.0,
            max_frames: None,
        };
        let queue = Arc::new(FrameQueue::new(std::num::NonZeroUsize::new(1000).unwrap()));
        let flags = Flags::new(false);
        let thread = {
            let (queue, flags) = (queue.clone(), flags.clone());
            std::thread::spawn(move || capture_loop(capture, &queue, &flags, &Metrics::new()))
        };
        Rig {
            log,
            switch,
            queue,
            flags,
            thread,
        }
    }

    /// Replays the log: the source is opened and polled only while the LED is lit, and the
    /// LED goes off only while the source is closed.
    fn check_invariants(events: &[Event]) {
        let (mut lit, mut open) = (false, false);
        for (i, e) in events.iter().enumerate() {
            match e {
                Event::LedOn => lit = true,
                Event::LedOff => {
                    assert!(
                        !open,
                        "LED off while the source is open, at {i}: {events:?}"
                    );
                    lit = false;
                }
                Event::Opened => {
                    assert!(
                        lit && !open,
                        "source opened with the LED off, at {i}: {events:?}"
                    );
                    open = true;
                }
                Event::Polled => {
                    assert!(lit && open, "polled with the LED off, at {i}: {events:?}")
                }
                Event::Closed => open = false,
            }
        }
    }

    fn frames_since(events: &[Event], from: usize) -> usize {
        events[from..]
            .iter()
            .filter(|e| **e == Event::Polled)
            .count()
    }

    #[test]
    fn privacy_switch_closes_the_source_before_the_led_goes_off_and_reopens_it_after() {
        let r = rig();
        // Engaged from the start: nothing is opened, the LED stays off.
        std::thread::sleep(Duration::from_millis(150));
        assert!(
            !r.log.events().contains(&Event::Opened),
            "{:?}",
            r.log.events()
        );
        assert_eq!(r.queue.pushed_total(), 0);

        // Released: LED on, then the source opens and frames flow.
        r.switch.engaged.store(false, Ordering::SeqCst);
        r.log.wait("frames", |e| frames_since(e, 0) >= 5);
        let events = r.log.events();
        let on = events.iter().position(|e| *e == Event::LedOn).unwrap();
        let opened = events.iter().position(|e| *e == Event::Opened).unwrap();
        assert!(on < opened, "{events:?}");

        // Engaged: the source is closed, then the LED goes off, and nothing is polled.
        r.switch.engaged.store(true, Ordering::SeqCst);
        r.log.wait("LED off", |e| e.last() == Some(&Event::LedOff));
        let closed_at = r.log.events().len();
        let pushed = r.queue.pushed_total();
        std::thread::sleep(Duration::from_millis(150));
        let events = r.log.events();
        assert_eq!(
            events.len(),
            closed_at,
            "activity while engaged: {events:?}"
        );
        assert_eq!(
            r.queue.pushed_total(),
            pushed,
            "frames delivered while engaged"
        );
        assert_eq!(&events[closed_at - 2..], [Event::Closed, Event::LedOff]);

        // Released again: the LED is lit before the source reopens.
        r.switch.engaged.store(false, Ordering::SeqCst);
        r.log
            .wait("frames again", |e| frames_since(e, closed_at) >= 5);
        assert_eq!(
            &r.log.events()[closed_at..closed_at + 2],
            [Event::LedOn, Event::Opened]
        );
        assert_eq!(r.log.count(Event::Opened), 2);

        // Stopping closes the source, then turns the LED off.
        r.flags.stop.store(true, Ordering::SeqCst);
        assert_eq!(r.thread.join().unwrap().unwrap(), CaptureEnd::Stopped);
        let events = r.log.events();
        assert_eq!(&events[events.len() - 2..], [Event::Closed, Event::LedOff]);
        check_invariants(&events);
        assert!(r.queue.pushed_total() as usize <= r.log.count(Event::Polled));
    }

    #[test]
    fn a_switch_error_or_a_pause_closes_the_source() {
        let r = rig();
        r.switch.engaged.store(false, Ordering::SeqCst);
        r.log.wait("frames", |e| frames_since(e, 0) >= 3);

        // A failing switch read counts as engaged.
        r.switch.broken.store(true, Ordering::SeqCst);
        r.log.wait("LED off", |e| e.last() == Some(&Event::LedOff));
        r.switch.broken.store(false, Ordering::SeqCst);
        r.log.wait("reopened", |e| {
            e.iter().filter(|x| **x == Event::Opened).count() == 2
        });

        // A pause closes the camera and turns the LED off, like the switch.
        r.flags.paused.store(true, Ordering::SeqCst);
        r.log.wait("LED off", |e| e.last() == Some(&Event::LedOff));
        let paused_at = r.log.events().len();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(r.log.events().len(), paused_at, "{:?}", r.log.events());
        r.flags.paused.store(false, Ordering::SeqCst);
        r.log.wait("resumed", |e| frames_since(e, paused_at) >= 3);

        r.flags.stop.store(true, Ordering::SeqCst);
        r.thread.join().unwrap().unwrap();
        check_invariants(&r.log.events());
    }

    #[test]
    fn latency_percentiles() {
        let mut ring = LatencyRing::new();
        assert!(ring.figures().is_none());
        for ms in 1..=100 {
            ring.push(Duration::from_millis(ms));
        }
        let f = ring.figures().unwrap();
        assert_eq!(f.samples, 100);
        assert!(
            (f.p50 - 51.0).abs() <= 1.0 && (f.p90 - 90.0).abs() <= 1.0 && f.p99 >= 98.0,
            "{f:?}"
        );
        for _ in 0..LATENCY_WINDOW {
            ring.push(Duration::from_millis(5));
        }
        assert_eq!(ring.figures().unwrap().p99, 5.0);
    }

    #[test]
    fn accumulated_patches_keep_nulls_and_merge_sections() {
        let mut acc = serde_json::json!({});
        accumulate_patch(
            &mut acc,
            &serde_json::json!({"policy": {"profile": "fine"}}),
        );
        accumulate_patch(
            &mut acc,
            &serde_json::json!({"policy": {"min_group_size": 3}, "report": {"interval_secs": null}}),
        );
        assert_eq!(
            acc,
            serde_json::json!({"policy": {"profile": "fine", "min_group_size": 3}, "report": {"interval_secs": null}})
        );
    }
}
