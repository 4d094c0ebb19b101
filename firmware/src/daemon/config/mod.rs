//! The daemon's configuration: one TOML file, one typed [`DaemonConfig`].
//!
//! The struct is the documentation: every field has a doc comment and a named `default_*`
//! function, closed choices are enums and capacities are `NonZero*`. `caerd.example.toml`
//! (beside this crate's `Cargo.toml`) lists every key with its default; a test fails if a
//! key is missing from it.
//!
//! Life of a configuration:
//!
//! 1. [`DaemonConfig::from_toml`] parses (unknown keys and wrong types are errors that name
//!    the key); [`DaemonConfig::load`] reads the file first.
//! 2. [`DaemonConfig::validate`] checks every value and cross-field rule **without I/O**,
//!    collects every problem ([`ConfigErrors`], each naming its key and the reason) and
//!    returns a [`ValidatedConfig`], the only thing the daemon builds from.
//! 3. A remote change (`config/set`) is a partial JSON object merged onto the running
//!    configuration by [`ValidatedConfig::merge_remote`], then validated the same way; only
//!    the sections in [`REMOTE_SECTIONS`] may change remotely.
//!
//! Whether a valid configuration can *run* (the bundle exists, the frame directory exists)
//! is decided when the daemon builds its pipeline, not here.

use std::fmt;
use std::num::{NonZeroU16, NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::pipeline::detect::DetectError;
use crate::pipeline::model::backend::BackendChoice;
use crate::pipeline::source::pixel_format::PixelFormat;
pub use caer_board::linux_gpio::{LineConfig, PrivacyPinsConfig};

/// Default path of the configuration file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/caer/caerd.toml";

/// Top-level sections that a remote `config/set` may change. Identity, broker, state
/// directory and outbox stay as the file says: a wrong remote value there could cut the
/// device off its broker or lose data, with no way back but a site visit.
pub const REMOTE_SECTIONS: [&str; 8] = [
    "source", "detect", "track", "context", "sampling", "model", "policy", "report",
];

/// Largest accepted TOML file or remote change, in bytes.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;

/// Everything `caerd` reads from its configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Directory for the daemon's own state: the aggregate outbox and `state.json` (paused
    /// flag, remote configuration). Nothing derived from pixels is ever written here.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Who this device is; names the MQTT topics.
    pub device: DeviceConfig,
    /// Where frames come from.
    pub source: SourceConfig,
    /// How faces are found in a frame.
    #[serde(default)]
    pub detect: DetectConfig,
    /// How faces are followed from frame to frame.
    #[serde(default)]
    pub track: TrackConfig,
    /// The context region around each face.
    #[serde(default)]
    pub context: ContextBoxConfig,
    /// Which frames of each tracked face the model sees.
    #[serde(default)]
    pub sampling: SamplingConfig,
    /// The model bundle and the inference backend.
    #[serde(default)]
    pub model: ModelConfig,
    /// What may leave the device.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// How often records are published.
    #[serde(default)]
    pub report: ReportConfig,
    /// The MQTT broker; without `mqtt.url` payloads are written to stdout as JSON lines.
    #[serde(default)]
    pub mqtt: MqttConfig,
    /// The on-disk outbox of aggregate records.
    #[serde(default)]
    pub outbox: OutboxConfig,
    /// The privacy LED and hardware privacy switch (caerd built with the cargo feature
    /// `gpio`); none: no LED, no switch. With it, the camera is open only while the switch is
    /// released, and the LED is lit whenever it is open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<PrivacyPinsConfig>,
    /// The thermal guard: board temperature in stats, lower sampling rate while hot.
    #[serde(default)]
    pub thermal: ThermalConfig,
}

/// The thermal guard (the board crate's settings, plus `enabled`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThermalConfig {
    /// Read the thermal zones at all (only sysfs reads; a board without zones reports no
    /// temperature and is never throttled).
    #[serde(default = "default_thermal_enabled")]
    pub enabled: bool,
    /// The directory holding `thermal_zone*/`.
    #[serde(default = "caer_board::thermal::default_root")]
    pub root: PathBuf,
    /// Lower the sampling rate when the hottest zone reaches this temperature (°C).
    #[serde(default = "caer_board::thermal::default_throttle_above_celsius")]
    pub throttle_above_celsius: f32,
    /// Restore it once the hottest zone is below `throttle_above_celsius` minus this (°C).
    #[serde(default = "caer_board::thermal::default_hysteresis_celsius")]
    pub hysteresis_celsius: f32,
    /// Sampling-rate multiplier while throttled, in (0, 1].
    #[serde(default = "caer_board::thermal::default_throttled_sampling_factor")]
    pub throttled_sampling_factor: f32,
    /// Zone types (the `type` file, exact match) never used, e.g. fixed sensors.
    #[serde(default = "caer_board::thermal::default_ignore_zone_types")]
    pub ignore_zone_types: Vec<String>,
}

impl Default for ThermalConfig {
    fn default() -> Self {
        let board = caer_board::thermal::ThermalConfig::default();
        ThermalConfig {
            enabled: default_thermal_enabled(),
            root: board.root,
            throttle_above_celsius: board.throttle_above_celsius,
            hysteresis_celsius: board.hysteresis_celsius,
            throttled_sampling_factor: board.throttled_sampling_factor,
            ignore_zone_types: board.ignore_zone_types,
        }
    }
}

impl ThermalConfig {
    /// The board crate's guard settings.
    pub fn guard(&self) -> caer_board::thermal::ThermalConfig {
        caer_board::thermal::ThermalConfig {
            root: self.root.clone(),
            throttle_above_celsius: self.throttle_above_celsius,
            hysteresis_celsius: self.hysteresis_celsius,
            throttled_sampling_factor: self.throttled_sampling_factor,
            ignore_zone_types: self.ignore_zone_types.clone(),
        }
    }
}

/// Default of `thermal.enabled`.
pub const fn default_thermal_enabled() -> bool {
    true
}

/// Device identity. Each value is 1 to 64 characters of `A-Z a-z 0-9 . _ -`, so that it is
/// safe inside an MQTT topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// The site (school, campus); second level of every topic. Required.
    pub site: String,
    /// The room the device watches; carried in every payload. Required.
    pub room: String,
    /// This device's id, unique within the site; third level of every topic. Required.
    pub id: String,
}

/// Closed choice of frame source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// A synthetic classroom with known face boxes (demo, tests); see `[source.generated]`.
    Generated,
    /// The sorted image files of a directory, optionally with face boxes; see
    /// `[source.frame_dir]`.
    FrameDir,
    /// A Linux camera through V4L2 (caerd built with the cargo feature `v4l2`); see
    /// `[source.v4l2]`.
    V4l2,
    /// The first video stream of a video file, decoded by FFmpeg; see `[source.video_file]`.
    VideoFile,
}

/// Where frames come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Which source to read. Required.
    pub kind: SourceKind,
    /// Most frames per second taken from the source; a faster source is paced down
    /// (files and generated frames are otherwise read as fast as possible). 0.1 to 120.
    #[serde(default = "default_source_fps")]
    pub fps: f64,
    /// Stop after this many frames (the daemon then flushes and exits); none: run on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_frames: Option<NonZeroU64>,
    /// Settings of the `generated` source.
    #[serde(default)]
    pub generated: GeneratedSourceConfig,
    /// Settings of the `frame_dir` source (required when `kind = "frame_dir"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_dir: Option<FrameDirSourceConfig>,
    /// Settings of the `v4l2` camera source.
    #[serde(default)]
    pub v4l2: V4l2SourceConfig,
    /// Settings of the `video_file` source (required when `kind = "video_file"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_file: Option<VideoFileSourceConfig>,
}

/// A video file, decoded by FFmpeg (`ffprobe` and `ffmpeg` child processes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoFileSourceConfig {
    /// The video file. Required.
    pub path: PathBuf,
    /// The `ffmpeg` program.
    #[serde(default = "default_ffmpeg")]
    pub ffmpeg: PathBuf,
    /// The `ffprobe` program.
    #[serde(default = "default_ffprobe")]
    pub ffprobe: PathBuf,
}

/// A V4L2 camera. Size, rate and format are requests: the camera's nearest offer is used
/// and logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct V4l2SourceConfig {
    /// The device node.
    #[serde(default = "default_v4l2_device")]
    pub device: PathBuf,
    /// Requested frame width in pixels, 16 to 4096.
    #[serde(default = "default_v4l2_width")]
    pub width: u32,
    /// Requested frame height in pixels, 16 to 4096.
    #[serde(default = "default_v4l2_height")]
    pub height: u32,
    /// Accepted pixel formats, most preferred first: `"mjpeg"`, `"yuyv"`, `"nv12"`.
    #[serde(default = "default_v4l2_formats")]
    pub formats: Vec<PixelFormat>,
    /// Requested camera frame rate, 0 to 120 (0: leave the camera's setting).
    #[serde(default = "default_v4l2_frame_rate")]
    pub frame_rate: u32,
    /// Kernel capture buffers, 2 to 32.
    #[serde(default = "default_v4l2_buffers")]
    pub buffers: u32,
    /// A camera that delivers nothing for this long is closed and reopened (100 to 60000).
    #[serde(default = "default_v4l2_stall_timeout_ms")]
    pub stall_timeout_ms: u64,
    /// First delay before reopening a lost camera, in ms (10 to reopen_max_ms).
    #[serde(default = "default_v4l2_reopen_min_ms")]
    pub reopen_min_ms: u64,
    /// Longest delay between reopening attempts, in ms (at most 600000).
    #[serde(default = "default_v4l2_reopen_max_ms")]
    pub reopen_max_ms: u64,
}

impl Default for V4l2SourceConfig {
    fn default() -> Self {
        V4l2SourceConfig {
            device: default_v4l2_device(),
            width: default_v4l2_width(),
            height: default_v4l2_height(),
            formats: default_v4l2_formats(),
            frame_rate: default_v4l2_frame_rate(),
            buffers: default_v4l2_buffers(),
            stall_timeout_ms: default_v4l2_stall_timeout_ms(),
            reopen_min_ms: default_v4l2_reopen_min_ms(),
            reopen_max_ms: default_v4l2_reopen_max_ms(),
        }
    }
}

/// Default of `source.v4l2.device`.
pub fn default_v4l2_device() -> PathBuf {
    PathBuf::from("/dev/video0")
}
/// Default of `source.v4l2.width`.
pub const fn default_v4l2_width() -> u32 {
    1280
}
/// Default of `source.v4l2.height`.
pub const fn default_v4l2_height() -> u32 {
    720
}
/// Default of `source.v4l2.formats`: every decodable format, MJPEG first.
pub fn default_v4l2_formats() -> Vec<PixelFormat> {
    PixelFormat::PREFERENCE.to_vec()
}
/// Default of `source.v4l2.frame_rate`.
pub const fn default_v4l2_frame_rate() -> u32 {
    15
}
/// Default of `source.v4l2.buffers`.
pub const fn default_v4l2_buffers() -> u32 {
    4
}
/// Default of `source.v4l2.stall_timeout_ms`.
pub const fn default_v4l2_stall_timeout_ms() -> u64 {
    2000
}
/// Default of `source.v4l2.reopen_min_ms`.
pub const fn default_v4l2_reopen_min_ms() -> u64 {
    500
}
/// Default of `source.v4l2.reopen_max_ms`.
pub const fn default_v4l2_reopen_max_ms() -> u64 {
    30_000
}

/// The synthetic classroom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratedSourceConfig {
    /// Frame width in pixels, 64 to 4096.
    #[serde(default = "default_generated_width")]
    pub width: u32,
    /// Frame height in pixels, 64 to 4096.
    #[serde(default = "default_generated_height")]
    pub height: u32,
    /// Students in the room.
    #[serde(default = "default_generated_students")]
    pub students: NonZeroUsize,
    /// Changes colours and the students' behaviour phases.
    #[serde(default)]
    pub seed: u64,
}

impl Default for GeneratedSourceConfig {
    fn default() -> Self {
        GeneratedSourceConfig {
            width: default_generated_width(),
            height: default_generated_height(),
            students: default_generated_students(),
            seed: 0,
        }
    }
}

/// A directory of frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameDirSourceConfig {
    /// The directory whose sorted `.jpg`/`.jpeg`/`.png` files are the frames. Required.
    pub path: PathBuf,
    /// Optional JSON file of known face boxes: `{"<file name>": [[l, t, r, b], ...]}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<PathBuf>,
}

/// Closed choice of face detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    /// The frames' known face boxes (generated source, annotated frame directories).
    #[default]
    Annotated,
    /// SeetaFace frontal detector on the CPU (built-in model); see `[detect.seeta]`.
    Seeta,
    /// The bundle's BlazeFace network on the model's backend, tiled; see `[detect.blaze]`.
    Blaze,
}

/// Face detection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectConfig {
    /// Which detector to run.
    #[serde(default)]
    pub kind: DetectorKind,
    /// Settings of the `seeta` detector.
    #[serde(default)]
    pub seeta: SeetaDetectConfig,
    /// Settings of the `blaze` detector.
    #[serde(default)]
    pub blaze: BlazeDetectConfig,
}

/// BlazeFace settings (see [`crate::pipeline::detect::blaze`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlazeDetectConfig {
    /// Tile sides in frame pixels, 32 to 4096; faces of a sixth to a quarter of a tile are
    /// found best.
    #[serde(default = "default_blaze_tile_sizes")]
    pub tile_sizes: Vec<u32>,
    /// Score a face needs, between 0 and 1.
    #[serde(default = "default_blaze_score_threshold")]
    pub score_threshold: f32,
    /// Overlap (IoU) above which the weaker of two boxes is dropped, (0, 1].
    #[serde(default = "default_blaze_nms_iou")]
    pub nms_iou: f32,
}

impl Default for BlazeDetectConfig {
    fn default() -> Self {
        BlazeDetectConfig {
            tile_sizes: default_blaze_tile_sizes(),
            score_threshold: default_blaze_score_threshold(),
            nms_iou: default_blaze_nms_iou(),
        }
    }
}

impl SeetaDetectConfig {
    /// The detector's settings.
    pub fn to_detector_config(&self) -> crate::pipeline::detect::SeetaConfig {
        crate::pipeline::detect::SeetaConfig {
            min_face_size: self.min_face_size,
            score_threshold: self.score_threshold,
            pyramid_scale_factor: self.pyramid_scale_factor,
            window_step: self.window_step,
        }
    }
}

impl BlazeDetectConfig {
    /// The detector's settings.
    pub fn to_detector_config(&self) -> crate::pipeline::detect::BlazeConfig {
        crate::pipeline::detect::BlazeConfig {
            tile_sizes: self.tile_sizes.clone(),
            score_threshold: self.score_threshold,
            nms_iou: self.nms_iou,
        }
    }
}

/// SeetaFace settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeetaDetectConfig {
    /// Smallest face to find, in pixels, at least 20 (larger is faster).
    #[serde(default = "default_seeta_min_face_size")]
    pub min_face_size: u32,
    /// Score a face needs, above 0 (higher: fewer false positives, fewer faces).
    #[serde(default = "default_seeta_score_threshold")]
    pub score_threshold: f64,
    /// Ratio between image pyramid levels, 0.5 to 0.95.
    #[serde(default = "default_seeta_pyramid_scale_factor")]
    pub pyramid_scale_factor: f32,
    /// Sliding window step in pixels, 1 to 16.
    #[serde(default = "default_seeta_window_step")]
    pub window_step: u32,
}

impl Default for SeetaDetectConfig {
    fn default() -> Self {
        SeetaDetectConfig {
            min_face_size: default_seeta_min_face_size(),
            score_threshold: default_seeta_score_threshold(),
            pyramid_scale_factor: default_seeta_pyramid_scale_factor(),
            window_step: default_seeta_window_step(),
        }
    }
}

/// The face tracker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackConfig {
    /// Smallest overlap (IoU) between a track's predicted box and a detection to match
    /// them, in (0, 1].
    #[serde(default = "default_track_iou_threshold")]
    pub iou_threshold: f32,
    /// Consecutive detections before a face becomes a track.
    #[serde(default = "default_track_min_hits")]
    pub min_hits: NonZeroU32,
    /// Consecutive missed frames a track survives.
    #[serde(default = "default_track_max_misses")]
    pub max_misses: u32,
    /// Most faces followed at once; also bounds the classifier's per-student windows. At
    /// most 1024.
    #[serde(default = "default_track_max_tracks")]
    pub max_tracks: NonZeroUsize,
}

impl Default for TrackConfig {
    fn default() -> Self {
        TrackConfig {
            iou_threshold: default_track_iou_threshold(),
            min_hits: default_track_min_hits(),
            max_misses: default_track_max_misses(),
            max_tracks: default_track_max_tracks(),
        }
    }
}

/// The context box around each face (what the context stream of the model sees).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextBoxConfig {
    /// Context width in face widths, at least 1.
    #[serde(default = "default_context_width_factor")]
    pub width_factor: f32,
    /// Context height in face heights, at least 1.
    #[serde(default = "default_context_height_factor")]
    pub height_factor: f32,
    /// Face heights of context above the face's top, 0 to `height_factor - 1`.
    #[serde(default = "default_context_above_factor")]
    pub above_factor: f32,
}

impl Default for ContextBoxConfig {
    fn default() -> Self {
        ContextBoxConfig {
            width_factor: default_context_width_factor(),
            height_factor: default_context_height_factor(),
            above_factor: default_context_above_factor(),
        }
    }
}

/// Which frames of each tracked face the model sees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingConfig {
    /// Samples per second per tracked face, above 0 and at most 60. A window of `T` = 16
    /// samples then spans `16 / rate_hz` seconds (8 s at the default).
    #[serde(default = "default_sampling_rate_hz")]
    pub rate_hz: f64,
    /// Frames waiting between capture and inference; when full the oldest is dropped.
    #[serde(default = "default_sampling_queue_frames")]
    pub queue_frames: NonZeroUsize,
    /// Samples a full window slides before the next result, 1 to `T`; none: `T`
    /// (non-overlapping windows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_stride: Option<NonZeroUsize>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            rate_hz: default_sampling_rate_hz(),
            queue_frames: default_sampling_queue_frames(),
            window_stride: None,
        }
    }
}

/// The model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The model bundle directory (`manifest.json` and ONNX files). Not needed by the
    /// `presence` policy, which runs no model.
    #[serde(default = "default_model_bundle")]
    pub bundle: PathBuf,
    /// The inference backend: `auto` (the first of `tensorrt`, `cuda`, `ort-cpu`, `tract`
    /// that is compiled in, loads and passes the bundle's self-check), or one of `tensorrt`,
    /// `cuda`, `ort-cpu`, `ort-cpu-int8`, `tract` (safe mode if it fails). See
    /// [`crate::pipeline::model::backend::select`].
    #[serde(default)]
    pub backend: BackendChoice,
    /// Threads for inference; none: every core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<NonZeroUsize>,
    /// Optional `calibration.json` (from `caer-calibrate fit`) for this bundle: a
    /// temperature and per-class offsets applied to the logits. Its `version` is published
    /// in `status`. A file made for another bundle is refused (safe mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<PathBuf>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            bundle: default_model_bundle(),
            backend: BackendChoice::default(),
            threads: None,
            calibration: None,
        }
    }
}

/// Privacy profile: what the published aggregates may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// Counts and mean probabilities of the five classes, plus the engaged/distracted split.
    Fine,
    /// Engaged/distracted only; the five classes never leave the inference thread (for
    /// places where inferring emotions in education is restricted, e.g. EU AI Act
    /// Art. 5(1)(f)).
    #[default]
    Coarse,
    /// Student count only; no affect model is loaded or run.
    Presence,
}

impl Profile {
    /// The name used in config and payloads.
    pub const fn as_str(self) -> &'static str {
        match self {
            Profile::Fine => "fine",
            Profile::Coarse => "coarse",
            Profile::Presence => "presence",
        }
    }

    /// Whether the affect model runs under this profile.
    pub const fn runs_model(self) -> bool {
        !matches!(self, Profile::Presence)
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What may leave the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The privacy profile: `fine`, `coarse` or `presence`.
    #[serde(default)]
    pub profile: Profile,
    /// Smallest number of students an interval needs for its figures to be published
    /// (k-anonymity); with fewer, a suppressed record is published instead. At least 2.
    #[serde(default = "default_policy_min_group_size")]
    pub min_group_size: NonZeroU32,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            profile: Profile::default(),
            min_group_size: default_policy_min_group_size(),
        }
    }
}

/// Publication intervals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    /// Seconds per engagement record, 1 to 86400.
    #[serde(default = "default_report_interval_secs")]
    pub interval_secs: NonZeroU64,
    /// Seconds between `stats` records, 1 to 86400.
    #[serde(default = "default_report_stats_interval_secs")]
    pub stats_interval_secs: NonZeroU64,
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            interval_secs: default_report_interval_secs(),
            stats_interval_secs: default_report_stats_interval_secs(),
        }
    }
}

/// The MQTT broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host[:port]` (port 1883 by default) or `mqtts://host[:port]` (TLS, port 8883).
    /// None: no broker; every payload is written to stdout as one JSON line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// MQTT client id; none: `caerd-<site>-<device id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// User name, if the broker wants credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// File holding the password (trailing newline ignored). Never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password (instead of `password_file`). Never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// PEM file of the CA certificates that sign the broker's certificate; required with
    /// `mqtts://` (e.g. `/etc/ssl/certs/ca-certificates.crt` for public CAs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with `client_key_file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`. Never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<PathBuf>,
    /// Keep-alive in seconds, 5 to 3600.
    #[serde(default = "default_mqtt_keep_alive_secs")]
    pub keep_alive_secs: NonZeroU16,
    /// Engagement records published and not yet acknowledged at once, 1 to 64.
    #[serde(default = "default_mqtt_max_in_flight")]
    pub max_in_flight: NonZeroU16,
    /// First reconnection delay in milliseconds; doubled after each failure (with jitter).
    #[serde(default = "default_mqtt_reconnect_min_ms")]
    pub reconnect_min_ms: NonZeroU64,
    /// Longest reconnection delay in milliseconds.
    #[serde(default = "default_mqtt_reconnect_max_ms")]
    pub reconnect_max_ms: NonZeroU64,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: None,
            client_id: None,
            username: None,
            password_file: None,
            password_env: None,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            keep_alive_secs: default_mqtt_keep_alive_secs(),
            max_in_flight: default_mqtt_max_in_flight(),
            reconnect_min_ms: default_mqtt_reconnect_min_ms(),
            reconnect_max_ms: default_mqtt_reconnect_max_ms(),
        }
    }
}

/// The on-disk outbox of aggregate records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// Most bytes the outbox keeps on disk, 1 MiB to 1 GiB; when full the oldest records are
    /// dropped (and counted). The default holds weeks of one-minute records.
    #[serde(default = "default_outbox_max_bytes")]
    pub max_bytes: NonZeroU64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            max_bytes: default_outbox_max_bytes(),
        }
    }
}

/// Default of `state_dir`.
pub fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/caer")
}
/// Default of `source.fps`.
pub const fn default_source_fps() -> f64 {
    10.0
}
/// Default of `source.generated.width`.
pub const fn default_generated_width() -> u32 {
    640
}
/// Default of `source.generated.height`.
pub const fn default_generated_height() -> u32 {
    480
}
/// Default of `source.generated.students`.
pub const fn default_generated_students() -> NonZeroUsize {
    NonZeroUsize::new(6).expect("6 is not zero")
}
/// Default of `detect.seeta.min_face_size`.
pub const fn default_seeta_min_face_size() -> u32 {
    20
}
/// Default of `detect.seeta.score_threshold`.
pub const fn default_seeta_score_threshold() -> f64 {
    2.0
}
/// Default of `detect.seeta.pyramid_scale_factor`.
pub const fn default_seeta_pyramid_scale_factor() -> f32 {
    0.8
}
/// Default of `detect.seeta.window_step`.
pub const fn default_seeta_window_step() -> u32 {
    4
}
/// Default of `source.video_file.ffmpeg`.
pub fn default_ffmpeg() -> PathBuf {
    crate::pipeline::source::video_file::FfmpegTools::default().ffmpeg
}
/// Default of `source.video_file.ffprobe`.
pub fn default_ffprobe() -> PathBuf {
    crate::pipeline::source::video_file::FfmpegTools::default().ffprobe
}
/// Default of `detect.blaze.tile_sizes`.
pub fn default_blaze_tile_sizes() -> Vec<u32> {
    crate::pipeline::detect::BlazeConfig::default().tile_sizes
}
/// Default of `detect.blaze.score_threshold`.
pub fn default_blaze_score_threshold() -> f32 {
    crate::pipeline::detect::BlazeConfig::default().score_threshold
}
/// Default of `detect.blaze.nms_iou`.
pub fn default_blaze_nms_iou() -> f32 {
    crate::pipeline::detect::BlazeConfig::default().nms_iou
}
/// Default of `track.iou_threshold`.
pub const fn default_track_iou_threshold() -> f32 {
    0.3
}
/// Default of `track.min_hits`.
pub const fn default_track_min_hits() -> NonZeroU32 {
    NonZeroU32::new(3).expect("3 is not zero")
}
/// Default of `track.max_misses`.
pub const fn default_track_max_misses() -> u32 {
    5
}
/// Default of `track.max_tracks`.
pub const fn default_track_max_tracks() -> NonZeroUsize {
    NonZeroUsize::new(32).expect("32 is not zero")
}
/// Default of `context.width_factor`.
pub const fn default_context_width_factor() -> f32 {
    3.0
}
/// Default of `context.height_factor`.
pub const fn default_context_height_factor() -> f32 {
    4.0
}
/// Default of `context.above_factor`.
pub const fn default_context_above_factor() -> f32 {
    0.5
}
/// Default of `sampling.rate_hz`.
pub const fn default_sampling_rate_hz() -> f64 {
    2.0
}
/// Default of `sampling.queue_frames`.
pub const fn default_sampling_queue_frames() -> NonZeroUsize {
    NonZeroUsize::new(4).expect("4 is not zero")
}
/// Default of `model.bundle`.
pub fn default_model_bundle() -> PathBuf {
    PathBuf::from("/opt/caer/bundle")
}
/// Default of `policy.min_group_size`.
pub const fn default_policy_min_group_size() -> NonZeroU32 {
    NonZeroU32::new(5).expect("5 is not zero")
}
/// Default of `report.interval_secs`.
pub const fn default_report_interval_secs() -> NonZeroU64 {
    NonZeroU64::new(60).expect("60 is not zero")
}
/// Default of `report.stats_interval_secs`.
pub const fn default_report_stats_interval_secs() -> NonZeroU64 {
    NonZeroU64::new(60).expect("60 is not zero")
}
/// Default of `mqtt.keep_alive_secs`.
pub const fn default_mqtt_keep_alive_secs() -> NonZeroU16 {
    NonZeroU16::new(30).expect("30 is not zero")
}
/// Default of `mqtt.max_in_flight`.
pub const fn default_mqtt_max_in_flight() -> NonZeroU16 {
    NonZeroU16::new(16).expect("16 is not zero")
}
/// Default of `mqtt.reconnect_min_ms`.
pub const fn default_mqtt_reconnect_min_ms() -> NonZeroU64 {
    NonZeroU64::new(500).expect("500 is not zero")
}
/// Default of `mqtt.reconnect_max_ms`.
pub const fn default_mqtt_reconnect_max_ms() -> NonZeroU64 {
    NonZeroU64::new(30_000).expect("30000 is not zero")
}
/// Default of `outbox.max_bytes` (16 MiB).
pub const fn default_outbox_max_bytes() -> NonZeroU64 {
    NonZeroU64::new(16 * 1024 * 1024).expect("16 MiB is not zero")
}

/// One problem with a configuration: the key (dotted path) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigIssue {
    /// Dotted key, e.g. `policy.min_group_size`; empty for the document itself.
    pub key: String,
    /// What is wrong, lowercase.
    pub reason: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.key, self.reason)
        }
    }
}

/// Every problem found in one configuration (never empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigIssue>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "{n} configuration error{}: ",
            if n == 1 { "" } else { "s" }
        )?;
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    fn one(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigErrors(vec![ConfigIssue {
            key: key.into(),
            reason: reason.into(),
        }])
    }
}

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid, or not a valid configuration.
    #[error("{}: {errors}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        errors: ConfigErrors,
    },
}

/// The MQTT transport named by `mqtt.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    /// Host name or IP address (without brackets for IPv6).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether the connection uses TLS (`mqtts://`).
    pub tls: bool,
}

/// The topics of one device, all under `caer/<site>/<device>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    /// The topics of `device`.
    pub fn new(device: &DeviceConfig) -> Self {
        Topics {
            prefix: format!("caer/{}/{}", device.site, device.id),
        }
    }
    /// `caer/<site>/<device>`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    /// Retained daemon status (and the last will).
    pub fn status(&self) -> String {
        format!("{}/status", self.prefix)
    }
    /// Aggregate records (QoS 1, from the outbox).
    pub fn engagement(&self) -> String {
        format!("{}/engagement", self.prefix)
    }
    /// Periodic operating figures.
    pub fn stats(&self) -> String {
        format!("{}/stats", self.prefix)
    }
    /// Remote configuration changes (subscribed).
    pub fn config_set(&self) -> String {
        format!("{}/config/set", self.prefix)
    }
    /// Answers to `config/set`.
    pub fn config_ack(&self) -> String {
        format!("{}/config/ack", self.prefix)
    }
    /// Commands (subscribed).
    pub fn cmd(&self) -> String {
        format!("{}/cmd", self.prefix)
    }
    /// Answers to `cmd`.
    pub fn cmd_ack(&self) -> String {
        format!("{}/cmd/ack", self.prefix)
    }
}

/// A configuration that passed [`DaemonConfig::validate`]: the only input the daemon
/// builds from.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedConfig {
    config: DaemonConfig,
    broker: Option<BrokerAddress>,
    topics: Topics,
}

impl ValidatedConfig {
    /// The configuration.
    pub fn config(&self) -> &DaemonConfig {
        &self.config
    }
    /// The broker, if one is configured (else payloads go to stdout).
    pub fn broker(&self) -> Option<&BrokerAddress> {
        self.broker.as_ref()
    }
    /// This device's topics.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }
    /// The MQTT client id.
    pub fn client_id(&self) -> String {
        let d = &self.config.device;
        self.config
            .mqtt
            .client_id
            .clone()
            .unwrap_or_else(|| format!("caerd-{}-{}", d.site, d.id))
    }
    /// The report interval.
    pub fn report_interval(&self) -> Duration {
        Duration::from_secs(self.config.report.interval_secs.get())
    }
    /// The stats interval.
    pub fn stats_interval(&self) -> Duration {
        Duration::from_secs(self.config.report.stats_interval_secs.get())
    }

    /// Applies a remote partial change (a JSON object shaped like the TOML file, `null`
    /// resetting a key to its default) on top of this configuration and validates the
    /// result. All or nothing: on error, `self` is what stays in force.
    pub fn merge_remote(&self, patch: &serde_json::Value) -> Result<ValidatedConfig, ConfigErrors> {
        let Some(patch_map) = patch.as_object() else {
            return Err(ConfigErrors::one(
                "",
                "a configuration change must be a JSON object",
            ));
        };
        let mut issues = Vec::new();
        for key in patch_map.keys() {
            if !REMOTE_SECTIONS.contains(&key.as_str()) {
                issues.push(ConfigIssue {
                    key: key.clone(),
                    reason: format!(
                        "cannot be changed remotely (allowed: {}); edit the configuration file",
                        REMOTE_SECTIONS.join(", ")
                    ),
                });
            }
        }
        if !issues.is_empty() {
            return Err(ConfigErrors(issues));
        }
        let mut merged = serde_json::to_value(&self.config).map_err(|e| {
            ConfigErrors::one("", format!("cannot serialise the configuration: {e}"))
        })?;
        merge_json(&mut merged, patch);
        let config: DaemonConfig = serde_path_to_error::deserialize(merged)
            .map_err(|e| ConfigErrors::one(path_key(e.path()), e.inner().to_string()))?;
        config.validate()
    }
}

/// Recursive merge: objects merge key by key, `null` removes the key (back to its
/// default), anything else replaces.
fn merge_json(base: &mut serde_json::Value, patch: &serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(base), serde_json::Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    base.remove(key);
                } else if let Some(existing) = base.get_mut(key) {
                    merge_json(existing, value);
                } else {
                    base.insert(key.clone(), value.clone());
                }
            }
        }
        (base, patch) => *base = patch.clone(),
    }
}

/// A serde path rendered as a dotted key (`?` segments of untagged data dropped).
fn path_key(path: &serde_path_to_error::Path) -> String {
    let key = path.to_string();
    if key == "." {
        String::new()
    } else {
        key
    }
}

impl DaemonConfig {
    /// Parses a TOML document. Unknown keys, missing required keys and wrong types are
    /// errors naming the key (parsing stops at the first of these).
    pub fn from_toml(text: &str) -> Result<DaemonConfig, ConfigErrors> {
        if text.len() > MAX_CONFIG_BYTES {
            return Err(ConfigErrors::one(
                "",
                format!(
                    "file is {} bytes; the limit is {MAX_CONFIG_BYTES}",
                    text.len()
                ),
            ));
        }
        let deserializer = toml::Deserializer::parse(text)
            .map_err(|e| ConfigErrors::one("", one_line(&e.to_string())))?;
        serde_path_to_error::deserialize(deserializer)
            .map_err(|e| ConfigErrors::one(path_key(e.path()), one_line(&e.inner().to_string())))
    }

    /// Reads and parses the file at `path` (not validated yet).
    pub fn load(path: &Path) -> Result<DaemonConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        DaemonConfig::from_toml(&text).map_err(|errors| ConfigError::Invalid {
            path: path.to_path_buf(),
            errors,
        })
    }

    /// Checks every value and cross-field rule, without I/O, and reports every problem.
    pub fn validate(self) -> Result<ValidatedConfig, ConfigErrors> {
        let mut v = Issues::default();
        for (key, value) in [
            ("device.site", &self.device.site),
            ("device.room", &self.device.room),
            ("device.id", &self.device.id),
        ] {
            check_name(&mut v, key, value);
        }
        if self.state_dir.as_os_str().is_empty() {
            v.push("state_dir", "must not be empty");
        } else if !self.state_dir.is_absolute() {
            v.push(
                "state_dir",
                format!("{:?} must be an absolute path", self.state_dir),
            );
        }

        let s = &self.source;
        check_range(&mut v, "source.fps", s.fps, 0.1, 120.0);
        let g = &s.generated;
        for (key, value) in [
            ("source.generated.width", g.width),
            ("source.generated.height", g.height),
        ] {
            if !(64..=4096).contains(&value) {
                v.push(key, format!("is {value}; it must be between 64 and 4096"));
            }
        }
        if g.students.get() > 256 {
            v.push(
                "source.generated.students",
                format!("is {}; at most 256", g.students),
            );
        }
        let annotated_source = match s.kind {
            SourceKind::Generated => true,
            SourceKind::FrameDir => match &s.frame_dir {
                None => {
                    v.push(
                        "source.frame_dir",
                        "is required when source.kind is \"frame_dir\"",
                    );
                    false
                }
                Some(fd) => {
                    if fd.path.as_os_str().is_empty() {
                        v.push("source.frame_dir.path", "must not be empty");
                    }
                    fd.annotations.is_some()
                }
            },
            SourceKind::VideoFile => {
                match &s.video_file {
                    None => v.push(
                        "source.video_file",
                        "is required when source.kind is \"video_file\"",
                    ),
                    Some(vf) if vf.path.as_os_str().is_empty() => {
                        v.push("source.video_file.path", "must not be empty");
                    }
                    Some(_) => {}
                }
                false
            }
            SourceKind::V4l2 => {
                if !cfg!(feature = "v4l2") {
                    v.push(
                        "source.kind",
                        "\"v4l2\" needs caerd built with the cargo feature v4l2 \
                         (cargo build --release --features caer-firmware/v4l2)",
                    );
                }
                false
            }
        };
        let cam = &s.v4l2;
        if cam.device.as_os_str().is_empty() {
            v.push("source.v4l2.device", "must not be empty");
        }
        for (key, value) in [
            ("source.v4l2.width", cam.width),
            ("source.v4l2.height", cam.height),
        ] {
            if !(16..=4096).contains(&value) {
                v.push(key, format!("is {value}; it must be between 16 and 4096"));
            }
        }
        if cam.formats.is_empty() {
            v.push(
                "source.v4l2.formats",
                "must name at least one of \"mjpeg\", \"yuyv\", \"nv12\"",
            );
        } else if (1..cam.formats.len()).any(|i| cam.formats[..i].contains(&cam.formats[i])) {
            v.push("source.v4l2.formats", "names a format twice");
        }
        if cam.frame_rate > 120 {
            v.push(
                "source.v4l2.frame_rate",
                format!(
                    "is {}; at most 120 (0: the camera's setting)",
                    cam.frame_rate
                ),
            );
        }
        if !(2..=32).contains(&cam.buffers) {
            v.push(
                "source.v4l2.buffers",
                format!("is {}; it must be between 2 and 32", cam.buffers),
            );
        }
        if !(100..=60_000).contains(&cam.stall_timeout_ms) {
            v.push(
                "source.v4l2.stall_timeout_ms",
                format!(
                    "is {}; it must be between 100 and 60000",
                    cam.stall_timeout_ms
                ),
            );
        }
        if cam.reopen_max_ms > 600_000 {
            v.push(
                "source.v4l2.reopen_max_ms",
                format!("is {}; at most 600000", cam.reopen_max_ms),
            );
        }
        if cam.reopen_min_ms < 10 || cam.reopen_min_ms > cam.reopen_max_ms {
            v.push(
                "source.v4l2.reopen_min_ms",
                format!(
                    "is {}; it must be at least 10 and at most source.v4l2.reopen_max_ms ({})",
                    cam.reopen_min_ms, cam.reopen_max_ms
                ),
            );
        }
        if self.detect.kind == DetectorKind::Annotated && !annotated_source {
            v.push(
                "detect.kind",
                "\"annotated\" needs a source with known face boxes (generated, or frame_dir \
                 with annotations); use \"blaze\" or \"seeta\" for real frames",
            );
        }
        // The detectors' own range checks, every issue named by its key.
        let detectors = [
            (
                "detect.blaze",
                self.detect.blaze.to_detector_config().issues(),
            ),
            (
                "detect.seeta",
                self.detect.seeta.to_detector_config().issues(),
            ),
        ];
        for (table, issues) in detectors {
            for issue in issues {
                if let DetectError::Config {
                    field,
                    value,
                    reason,
                } = issue
                {
                    v.push(&format!("{table}.{field}"), format!("is {value}; {reason}"));
                }
            }
        }

        let t = &self.track;
        if !(t.iou_threshold > 0.0 && t.iou_threshold <= 1.0) {
            v.push(
                "track.iou_threshold",
                format!("is {}; it must be in (0, 1]", t.iou_threshold),
            );
        }
        if t.max_tracks.get() > 1024 {
            v.push(
                "track.max_tracks",
                format!("is {}; at most 1024", t.max_tracks),
            );
        }
        if t.max_misses > 1000 {
            v.push(
                "track.max_misses",
                format!("is {}; at most 1000", t.max_misses),
            );
        }
        let c = &self.context;
        if !(c.width_factor.is_finite() && c.width_factor >= 1.0 && c.width_factor <= 20.0) {
            v.push(
                "context.width_factor",
                format!("is {}; it must be between 1 and 20", c.width_factor),
            );
        }
        if !(c.height_factor.is_finite() && c.height_factor >= 1.0 && c.height_factor <= 20.0) {
            v.push(
                "context.height_factor",
                format!("is {}; it must be between 1 and 20", c.height_factor),
            );
        }
        if !(c.above_factor >= 0.0 && c.above_factor <= c.height_factor - 1.0) {
            v.push(
                "context.above_factor",
                format!(
                    "is {}; it must be between 0 and height_factor - 1",
                    c.above_factor
                ),
            );
        }

        check_range(
            &mut v,
            "sampling.rate_hz",
            self.sampling.rate_hz,
            0.01,
            60.0,
        );
        if self.sampling.queue_frames.get() > 256 {
            v.push(
                "sampling.queue_frames",
                format!("is {}; at most 256", self.sampling.queue_frames),
            );
        }
        if let Some(stride) = self.sampling.window_stride {
            // T comes from the bundle (checked again at start); no model has T above 64.
            if stride.get() > 64 {
                v.push(
                    "sampling.window_stride",
                    format!("is {stride}; at most frames_per_clip (16)"),
                );
            }
        }
        if self.policy.profile.runs_model() && self.model.bundle.as_os_str().is_empty() {
            v.push("model.bundle", "must not be empty");
        }
        if let Some(threads) = self.model.threads {
            if threads.get() > 256 {
                v.push("model.threads", format!("is {threads}; at most 256"));
            }
        }
        if self.policy.min_group_size.get() < 2 {
            v.push(
                "policy.min_group_size",
                "is 1; at least 2 (one student's figures would be that student's own)",
            );
        } else if self.policy.min_group_size.get() > 1000 {
            v.push(
                "policy.min_group_size",
                format!("is {}; at most 1000", self.policy.min_group_size),
            );
        }
        for (key, value) in [
            ("report.interval_secs", self.report.interval_secs),
            (
                "report.stats_interval_secs",
                self.report.stats_interval_secs,
            ),
        ] {
            if value.get() > 86_400 {
                v.push(key, format!("is {value}; at most 86400 (one day)"));
            }
        }

        let m = &self.mqtt;
        let broker = match &m.url {
            None => {
                for (key, set) in [
                    ("mqtt.client_id", m.client_id.is_some()),
                    ("mqtt.username", m.username.is_some()),
                    ("mqtt.password_file", m.password_file.is_some()),
                    ("mqtt.password_env", m.password_env.is_some()),
                    ("mqtt.ca_file", m.ca_file.is_some()),
                    ("mqtt.client_cert_file", m.client_cert_file.is_some()),
                    ("mqtt.client_key_file", m.client_key_file.is_some()),
                ] {
                    if set {
                        v.push(
                            key,
                            "is set but mqtt.url is not (no broker: payloads go to stdout)",
                        );
                    }
                }
                None
            }
            Some(url) => match parse_broker_url(url) {
                Ok(broker) => Some(broker),
                Err(reason) => {
                    v.push("mqtt.url", reason);
                    None
                }
            },
        };
        if let Some(id) = &m.client_id {
            if id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control()) {
                v.push("mqtt.client_id", "must be 1 to 128 printable characters");
            }
        }
        let has_password = m.password_file.is_some() || m.password_env.is_some();
        if m.password_file.is_some() && m.password_env.is_some() {
            v.push(
                "mqtt.password_env",
                "set only one of mqtt.password_file and mqtt.password_env",
            );
        }
        if has_password && m.username.is_none() {
            v.push("mqtt.username", "is required when a password is configured");
        }
        if let Some(name) = &m.password_env {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                v.push("mqtt.password_env", "must be an environment variable name");
            }
        }
        if m.client_cert_file.is_some() != m.client_key_file.is_some() {
            v.push(
                "mqtt.client_key_file",
                "set both mqtt.client_cert_file and mqtt.client_key_file, or neither",
            );
        }
        if let Some(broker) = &broker {
            if broker.tls && m.ca_file.is_none() {
                v.push(
                    "mqtt.ca_file",
                    "is required with mqtts:// (e.g. /etc/ssl/certs/ca-certificates.crt for a public CA)",
                );
            }
            if !broker.tls {
                for (key, set) in [
                    ("mqtt.ca_file", m.ca_file.is_some()),
                    ("mqtt.client_cert_file", m.client_cert_file.is_some()),
                ] {
                    if set {
                        v.push(key, "is set but mqtt.url is not mqtts:// (TLS)");
                    }
                }
            }
        }
        if !(5..=3600).contains(&m.keep_alive_secs.get()) {
            v.push(
                "mqtt.keep_alive_secs",
                format!("is {}; it must be between 5 and 3600", m.keep_alive_secs),
            );
        }
        if m.max_in_flight.get() > 64 {
            v.push(
                "mqtt.max_in_flight",
                format!("is {}; at most 64", m.max_in_flight),
            );
        }
        if m.reconnect_min_ms > m.reconnect_max_ms {
            v.push(
                "mqtt.reconnect_min_ms",
                "must not exceed mqtt.reconnect_max_ms",
            );
        }
        if m.reconnect_max_ms.get() > 3_600_000 {
            v.push(
                "mqtt.reconnect_max_ms",
                format!("is {}; at most 3600000 (one hour)", m.reconnect_max_ms),
            );
        }
        let max_bytes = self.outbox.max_bytes.get();
        if !(1 << 20..=1 << 30).contains(&max_bytes) {
            v.push(
                "outbox.max_bytes",
                format!("is {max_bytes}; it must be between 1 MiB and 1 GiB"),
            );
        }

        if let Some(p) = &self.privacy {
            if !cfg!(feature = "gpio") {
                v.push(
                    "privacy",
                    "needs caerd built with the cargo feature gpio \
                     (cargo build --release --features caer-firmware/gpio)",
                );
            }
            for (key, line) in [
                ("privacy.led.chip", &p.led),
                ("privacy.switch.chip", &p.switch),
            ] {
                if line.chip.as_os_str().is_empty() {
                    v.push(key, "must not be empty");
                }
            }
            if p.led.chip == p.switch.chip && p.led.line == p.switch.line {
                v.push(
                    "privacy.switch.line",
                    format!(
                        "is line {} of {}, the same as privacy.led",
                        p.led.line,
                        p.led.chip.display()
                    ),
                );
            }
            if p.release_after.get() > 100 {
                v.push(
                    "privacy.release_after",
                    format!("is {}; at most 100", p.release_after),
                );
            }
        }
        if let Err(e) = self.thermal.guard().validate() {
            use caer_board::ThermalConfigError as E;
            for problem in e.0 {
                let key = match problem {
                    E::ThrottleNotFinite(_) => "thermal.throttle_above_celsius",
                    E::HysteresisNotPositive(_) => "thermal.hysteresis_celsius",
                    E::FactorOutOfRange(_) => "thermal.throttled_sampling_factor",
                    _ => "thermal",
                };
                v.push(key, problem.to_string());
            }
        }
        if self.thermal.enabled && self.thermal.root.as_os_str().is_empty() {
            v.push("thermal.root", "must not be empty");
        }

        if !v.0.is_empty() {
            return Err(ConfigErrors(v.0));
        }
        let topics = Topics::new(&self.device);
        Ok(ValidatedConfig {
            config: self,
            broker,
            topics,
        })
    }

    /// A configuration with built-in defaults for the demo: the synthetic classroom, the
    /// annotated detector, no broker, a short report interval.
    pub fn demo(bundle: PathBuf, state_dir: PathBuf) -> DaemonConfig {
        DaemonConfig {
            state_dir,
            device: DeviceConfig {
                site: "demo".into(),
                room: "room-1".into(),
                id: "caerd-demo".into(),
            },
            source: SourceConfig {
                kind: SourceKind::Generated,
                fps: 10.0,
                max_frames: None,
                generated: GeneratedSourceConfig {
                    width: 320,
                    height: 240,
                    students: NonZeroUsize::new(8).expect("8 is not zero"),
                    seed: 0,
                },
                frame_dir: None,
                v4l2: V4l2SourceConfig::default(),
                video_file: None,
            },
            detect: DetectConfig::default(),
            track: TrackConfig::default(),
            context: ContextBoxConfig::default(),
            sampling: SamplingConfig {
                rate_hz: 10.0,
                window_stride: NonZeroUsize::new(4),
                ..SamplingConfig::default()
            },
            model: ModelConfig {
                bundle,
                ..ModelConfig::default()
            },
            policy: PolicyConfig {
                profile: Profile::Fine,
                ..PolicyConfig::default()
            },
            report: ReportConfig {
                interval_secs: NonZeroU64::new(5).expect("5 is not zero"),
                stats_interval_secs: NonZeroU64::new(10).expect("10 is not zero"),
            },
            mqtt: MqttConfig::default(),
            outbox: OutboxConfig::default(),
            privacy: None,
            thermal: ThermalConfig::default(),
        }
    }
}

/// toml's messages span several lines (a code excerpt); keep them on one for logs and acks.
fn one_line(message: &str) -> String {
    message
        .split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Default)]
struct Issues(Vec<ConfigIssue>);

impl Issues {
    fn push(&mut self, key: &str, reason: impl Into<String>) {
        self.0.push(ConfigIssue {
            key: key.to_string(),
            reason: reason.into(),
        });
    }
}

fn check_range(v: &mut Issues, key: &str, value: f64, min: f64, max: f64) {
    if !(value.is_finite() && value >= min && value <= max) {
        v.push(
            key,
            format!("is {value}; it must be between {min} and {max}"),
        );
    }
}

fn check_name(v: &mut Issues, key: &str, value: &str) {
    let ok_chars = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if value.is_empty() || value.len() > 64 || !ok_chars {
        v.push(
            key,
            format!("{value:?} must be 1 to 64 characters of A-Z a-z 0-9 . _ -"),
        );
    }
}

/// Parses `mqtt://host[:port]` or `mqtts://host[:port]` (IPv6 hosts in brackets).
fn parse_broker_url(url: &str) -> Result<BrokerAddress, String> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("mqtt://") {
        (false, rest)
    } else {
        return Err(format!("{url:?} must start with mqtt:// or mqtts://"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '@', '?', '#']) {
        return Err(format!(
            "{url:?} must be scheme://host[:port] only (credentials go in mqtt.username and mqtt.password_file)"
        ));
    }
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("{url:?} has an unclosed '['"))?;
        (host, after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let port = match port {
        None => {
            if tls {
                8883
            } else {
                1883
            }
        }
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("{url:?} has port {p:?}; it must be 1 to 65535")),
        },
    };
    Ok(BrokerAddress {
        host: host.to_string(),
        port,
        tls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [device]
        site = "school-1"
        room = "3b"
        id = "cam-01"
        [source]
        kind = "generated"
    "#;

    fn issues(text: &str) -> Vec<ConfigIssue> {
        DaemonConfig::from_toml(text)
            .unwrap()
            .validate()
            .unwrap_err()
            .0
    }

    fn keys(issues: &[ConfigIssue]) -> Vec<&str> {
        issues.iter().map(|i| i.key.as_str()).collect()
    }

    #[test]
    fn minimal_file_takes_every_default() {
        let v = DaemonConfig::from_toml(MINIMAL)
            .unwrap()
            .validate()
            .unwrap();
        let c = v.config();
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/caer"));
        assert_eq!(c.policy.profile, Profile::Coarse);
        assert_eq!(c.policy.min_group_size.get(), 5);
        assert_eq!(c.report.interval_secs.get(), 60);
        assert_eq!(c.model.bundle, PathBuf::from("/opt/caer/bundle"));
        assert!(v.broker().is_none());
        assert_eq!(v.topics().engagement(), "caer/school-1/cam-01/engagement");
        assert_eq!(v.client_id(), "caerd-school-1-cam-01");
    }

    #[test]
    fn example_file_is_valid_and_mentions_every_key() {
        let text = include_str!("../../../caerd.example.toml");
        let config = DaemonConfig::from_toml(text).unwrap();
        config.clone().validate().unwrap();
        // Every key of a fully populated configuration must be documented in the example.
        let mut full = DaemonConfig::demo("/b".into(), "/s".into());
        full.source.max_frames = NonZeroU64::new(1);
        full.source.frame_dir = Some(FrameDirSourceConfig {
            path: "/f".into(),
            annotations: Some("/a".into()),
        });
        full.source.video_file = Some(VideoFileSourceConfig {
            path: "/v.mp4".into(),
            ffmpeg: default_ffmpeg(),
            ffprobe: default_ffprobe(),
        });
        full.model.threads = NonZeroUsize::new(1);
        full.model.calibration = Some("/c".into());
        full.mqtt = MqttConfig {
            url: Some("mqtt://h".into()),
            client_id: Some("c".into()),
            username: Some("u".into()),
            password_file: Some("/p".into()),
            password_env: Some("E".into()),
            ca_file: Some("/ca".into()),
            client_cert_file: Some("/c".into()),
            client_key_file: Some("/k".into()),
            ..MqttConfig::default()
        };
        full.privacy = Some(PrivacyPinsConfig {
            led: LineConfig {
                chip: "/dev/gpiochip0".into(),
                line: 1,
                active_low: false,
            },
            switch: LineConfig {
                chip: "/dev/gpiochip0".into(),
                line: 2,
                active_low: true,
            },
            release_after: NonZeroU32::MIN,
        });
        let mut paths = Vec::new();
        collect_keys("", &serde_json::to_value(&full).unwrap(), &mut paths);
        let documented: Vec<String> = text
            .lines()
            .map(|l| l.trim_start_matches('#').trim())
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_string()))
            .collect();
        let mut section = String::new();
        let mut seen = Vec::new();
        for line in text.lines() {
            let l = line.trim_start_matches('#').trim();
            if l.starts_with('[') && l.ends_with(']') {
                section = l.trim_matches(['[', ']']).to_string();
            } else if let Some((k, _)) = l.split_once('=') {
                let k = k.trim();
                seen.push(if section.is_empty() {
                    k.to_string()
                } else {
                    format!("{section}.{k}")
                });
            }
        }
        assert!(!documented.is_empty());
        let missing: Vec<_> = paths.iter().filter(|p| !seen.contains(p)).collect();
        assert!(
            missing.is_empty(),
            "keys missing from caerd.example.toml: {missing:?}"
        );
    }

    fn collect_keys(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
        if let serde_json::Value::Object(map) = value {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                if v.is_object() {
                    collect_keys(&path, v, out);
                } else {
                    out.push(path);
                }
            }
        }
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_key() {
        let err = DaemonConfig::from_toml(&format!("{MINIMAL}\n[policy]\nprofil = \"fine\""))
            .unwrap_err();
        assert_eq!(err.0[0].key, "policy.profil");
        assert!(err.0[0].reason.contains("unknown field `profil`"), "{err}");
        let err =
            DaemonConfig::from_toml(&format!("{MINIMAL}\n[policy]\nmin_group_size = \"five\""))
                .unwrap_err();
        assert_eq!(err.0[0].key, "policy.min_group_size", "{err}");
        let err = DaemonConfig::from_toml(&format!("{MINIMAL}\n[report]\ninterval_secs = 0"))
            .unwrap_err();
        assert_eq!(err.0[0].key, "report.interval_secs", "{err}");
        let err = DaemonConfig::from_toml("[source]\nkind = \"generated\"").unwrap_err();
        assert!(err.to_string().contains("missing field `device`"), "{err}");
    }

    #[test]
    fn camera_settings_are_validated() {
        let text = format!(
            "{MINIMAL}\n[source.v4l2]\nformats = []\nbuffers = 1\nreopen_min_ms = 5000\nreopen_max_ms = 1000"
        )
        .replace("kind = \"generated\"", "kind = \"v4l2\"");
        let errors = DaemonConfig::from_toml(&text)
            .unwrap()
            .validate()
            .unwrap_err();
        let keys: Vec<&str> = errors.0.iter().map(|e| e.key.as_str()).collect();
        for key in [
            "source.v4l2.formats",
            "source.v4l2.buffers",
            "source.v4l2.reopen_min_ms",
        ] {
            assert!(keys.contains(&key), "{key} missing: {errors}");
        }
        assert_eq!(
            keys.contains(&"source.kind"),
            !cfg!(feature = "v4l2"),
            "without the v4l2 feature the kind itself is refused: {errors}"
        );
        let err =
            DaemonConfig::from_toml(&format!("{MINIMAL}\n[source.v4l2]\nformats = [\"h264\"]"))
                .unwrap_err();
        assert_eq!(err.0[0].key, "source.v4l2.formats[0]", "{err}");
    }

    #[test]
    fn privacy_pins_are_validated_and_need_the_gpio_feature() {
        let pins = "[privacy]\nrelease_after = 500\n\
                    led = { chip = \"/dev/gpiochip0\", line = 7 }\n\
                    switch = { chip = \"/dev/gpiochip0\", line = 7, active_low = true }";
        let config = DaemonConfig::from_toml(&format!("{MINIMAL}\n{pins}")).unwrap();
        let p = config.privacy.as_ref().unwrap();
        assert!(p.switch.active_low && !p.led.active_low);
        let found = issues(&format!("{MINIMAL}\n{pins}"));
        let found = keys(&found);
        assert!(found.contains(&"privacy.switch.line"), "{found:?}");
        assert!(found.contains(&"privacy.release_after"), "{found:?}");
        assert_eq!(
            found.contains(&"privacy"),
            !cfg!(feature = "gpio"),
            "without the gpio feature the section itself is refused: {found:?}"
        );

        let lines = "led = { chip = \"/dev/gpiochip0\", line = 7 }\n\
                     switch = { chip = \"/dev/gpiochip0\", line = 8 }";
        let good = format!("[privacy]\n{lines}");
        let result = DaemonConfig::from_toml(&format!("{MINIMAL}\n{good}"))
            .unwrap()
            .validate();
        if cfg!(feature = "gpio") {
            let v = result.unwrap();
            let p = v.config().privacy.as_ref().unwrap();
            assert_eq!(p.release_after.get(), 3, "default");
        } else {
            let errors = result.unwrap_err();
            assert_eq!(keys(&errors.0), ["privacy"]);
            assert!(errors.0[0].reason.contains("feature gpio"), "{errors}");
        }

        // Parse errors name the key.
        let err =
            DaemonConfig::from_toml(&format!("{MINIMAL}\n[privacy]\nrelease_after = 0\n{lines}"))
                .unwrap_err();
        assert_eq!(err.0[0].key, "privacy.release_after", "{err}");
        let err = DaemonConfig::from_toml(&format!(
            "{MINIMAL}\n[privacy]\nled = {{ chip = \"/dev/gpiochip0\", line = 7, pin = 3 }}"
        ))
        .unwrap_err();
        assert_eq!(err.0[0].key, "privacy.led.pin", "{err}");
        let err = DaemonConfig::from_toml(&format!(
            "{MINIMAL}\n[privacy]\nled = {{ chip = \"/dev/gpiochip0\", line = 7 }}"
        ))
        .unwrap_err();
        assert!(err.0[0].reason.contains("switch"), "{err}");
        // Not changeable remotely.
        let v = DaemonConfig::from_toml(MINIMAL)
            .unwrap()
            .validate()
            .unwrap();
        let err = v
            .merge_remote(&serde_json::json!({"privacy": null, "thermal": {"enabled": false}}))
            .unwrap_err();
        assert_eq!(keys(&err.0), ["privacy", "thermal"]);
    }

    #[test]
    fn thermal_settings_default_to_on_and_are_validated() {
        let v = DaemonConfig::from_toml(MINIMAL)
            .unwrap()
            .validate()
            .unwrap();
        let t = &v.config().thermal;
        assert!(t.enabled);
        assert_eq!(t.root, PathBuf::from("/sys/class/thermal"));
        assert_eq!(t.guard(), caer_board::thermal::ThermalConfig::default());

        let found = issues(&format!(
            "{MINIMAL}\n[thermal]\nhysteresis_celsius = 0\nthrottled_sampling_factor = 1.5\nroot = \"\""
        ));
        assert_eq!(
            keys(&found),
            [
                "thermal.hysteresis_celsius",
                "thermal.throttled_sampling_factor",
                "thermal.root"
            ]
        );
        assert!(found[1].reason.contains("1.5"), "{found:?}");
        let err =
            DaemonConfig::from_toml(&format!("{MINIMAL}\n[thermal]\nthreshold = 80")).unwrap_err();
        assert_eq!(err.0[0].key, "thermal.threshold", "{err}");
        let off = DaemonConfig::from_toml(&format!(
            "{MINIMAL}\n[thermal]\nenabled = false\nthrottle_above_celsius = 70"
        ))
        .unwrap()
        .validate()
        .unwrap();
        assert!(!off.config().thermal.enabled);
        assert_eq!(off.config().thermal.throttle_above_celsius, 70.0);
    }

    #[test]
    fn validation_collects_every_error() {
        let text = r#"
            state_dir = "relative"
            [device]
            site = "a/b"
            room = ""
            id = "ok"
            [source]
            kind = "frame_dir"
            fps = 0.0
            [policy]
            min_group_size = 1
            [mqtt]
            url = "http://broker"
            max_in_flight = 100
        "#;
        let found = issues(text);
        let found = keys(&found);
        for key in [
            "state_dir",
            "device.site",
            "device.room",
            "source.fps",
            "source.frame_dir",
            "detect.kind",
            "policy.min_group_size",
            "mqtt.url",
            "mqtt.max_in_flight",
        ] {
            assert!(found.contains(&key), "{key} not in {found:?}");
        }
        assert!(!found.contains(&"device.id"));
    }

    #[test]
    fn detector_settings_out_of_range_are_each_named_by_key() {
        let text = format!(
            "{MINIMAL}\n[detect.blaze]\ntile_sizes = [224, 8]\nscore_threshold = 1.5\nnms_iou = 0.0\n\
             [detect.seeta]\nmin_face_size = 10\nwindow_step = 0\n"
        );
        let found = issues(&text);
        assert_eq!(
            keys(&found),
            [
                "detect.blaze.tile_sizes",
                "detect.blaze.score_threshold",
                "detect.blaze.nms_iou",
                "detect.seeta.min_face_size",
                "detect.seeta.window_step",
            ],
            "{found:?}"
        );
        assert!(found[1].reason.contains("1.5"), "{found:?}");
    }

    #[test]
    fn broker_urls() {
        let ok = |u: &str| parse_broker_url(u).unwrap();
        assert_eq!(
            ok("mqtt://localhost"),
            BrokerAddress {
                host: "localhost".into(),
                port: 1883,
                tls: false
            }
        );
        assert_eq!(
            ok("mqtts://b.example:8884"),
            BrokerAddress {
                host: "b.example".into(),
                port: 8884,
                tls: true
            }
        );
        assert_eq!(ok("mqtt://[::1]:1999").host, "::1");
        assert_eq!(ok("mqtts://h").port, 8883);
        for bad in [
            "tcp://h",
            "mqtt://",
            "mqtt://h:0",
            "mqtt://h:99999",
            "mqtt://u:p@h",
            "mqtt://h/x",
        ] {
            assert!(parse_broker_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tls_and_credentials_rules() {
        let base = format!("{MINIMAL}\n[mqtt]\n");
        let found = issues(&format!(
            "{base}url = \"mqtts://h\"\npassword_file = \"/p\"\npassword_env = \"P\""
        ));
        let found = keys(&found);
        assert!(found.contains(&"mqtt.ca_file"));
        assert!(found.contains(&"mqtt.username"));
        assert!(found.contains(&"mqtt.password_env"));
        let found = issues(&format!("{MINIMAL}\n[mqtt]\nusername = \"u\""));
        assert_eq!(keys(&found), ["mqtt.username"]);
    }

    #[test]
    fn remote_merge_is_all_or_nothing() {
        let v = DaemonConfig::from_toml(MINIMAL)
            .unwrap()
            .validate()
            .unwrap();
        let merged = v
            .merge_remote(
                &serde_json::json!({"policy": {"profile": "fine"}, "report": {"interval_secs": 5}}),
            )
            .unwrap();
        assert_eq!(merged.config().policy.profile, Profile::Fine);
        assert_eq!(merged.config().report.interval_secs.get(), 5);
        assert_eq!(merged.config().policy.min_group_size.get(), 5);
        // null resets to the default.
        let back = merged
            .merge_remote(&serde_json::json!({"report": {"interval_secs": null}}))
            .unwrap();
        assert_eq!(back.config().report.interval_secs.get(), 60);

        let err = v
            .merge_remote(&serde_json::json!({"policy": {"min_group_size": "x"}}))
            .unwrap_err();
        assert_eq!(err.0[0].key, "policy.min_group_size");
        let err = v
            .merge_remote(&serde_json::json!({"policy": {"colour": 1}}))
            .unwrap_err();
        assert_eq!(err.0[0].key, "policy.colour");
        assert!(err.0[0].reason.contains("colour"));
        let err = v
            .merge_remote(&serde_json::json!({"policy": {"min_group_size": 1}}))
            .unwrap_err();
        assert_eq!(err.0[0].key, "policy.min_group_size");
        let err = v
            .merge_remote(&serde_json::json!({"mqtt": {"url": "mqtt://evil"}, "device": {}}))
            .unwrap_err();
        assert_eq!(keys(&err.0), ["device", "mqtt"]);
        assert!(v.merge_remote(&serde_json::json!([1])).is_err());
    }

    #[test]
    fn demo_config_is_valid() {
        let v = DaemonConfig::demo("/b".into(), "/tmp/s".into())
            .validate()
            .unwrap();
        assert_eq!(v.config().policy.profile, Profile::Fine);
    }
}
