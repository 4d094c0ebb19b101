//! The sources' settings: the `[source]` section of `caerd`'s configuration and its
//! subsections, each with its ranges stated once.

use std::num::NonZeroU64;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::generated::GeneratedConfig;
use super::pixel_format::PixelFormat;
use crate::pipeline::settings::Issues;

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

impl SourceKind {
    /// Whether the source ends by itself (a directory or a file is read once).
    pub const fn is_finite(self) -> bool {
        matches!(self, SourceKind::FrameDir | SourceKind::VideoFile)
    }
}

/// Where frames come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Which source to read. Required.
    pub kind: SourceKind,
    /// Most frames per second taken from the source, 0.1 to 120; a faster source is paced
    /// down (files and generated frames are otherwise read as fast as possible).
    #[serde(default = "default_fps")]
    pub fps: f64,
    /// Stop after this many frames (the daemon then flushes and exits); none: run on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_frames: Option<NonZeroU64>,
    /// Analyse every frame: the source waits for the pipeline instead of being paced and
    /// dropping late frames, and frame times (sampling, report intervals, record times)
    /// follow `fps` from the start instead of the clock. For replaying recordings and for
    /// comparing two builds on the same frames; not for a camera, which cannot wait.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lockstep: bool,
    /// Settings of the `generated` source.
    #[serde(default)]
    pub generated: GeneratedConfig,
    /// Settings of the `frame_dir` source (required when `kind = "frame_dir"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_dir: Option<FrameDirConfig>,
    /// Settings of the `v4l2` camera source.
    #[serde(default)]
    pub v4l2: V4l2Config,
    /// Settings of the `video_file` source (required when `kind = "video_file"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_file: Option<VideoFileConfig>,
}

/// Default of `source.fps`.
pub const fn default_fps() -> f64 {
    10.0
}

impl SourceConfig {
    /// A source of `kind` with every other setting at its default.
    pub fn of_kind(kind: SourceKind) -> SourceConfig {
        SourceConfig {
            kind,
            fps: default_fps(),
            max_frames: None,
            lockstep: false,
            generated: GeneratedConfig::default(),
            frame_dir: None,
            v4l2: V4l2Config::default(),
            video_file: None,
        }
    }

    /// Every setting out of range, keyed relative to the section.
    pub fn issues(&self, v: &mut Issues) {
        v.range("fps", self.fps, 0.1, 120.0);
        v.section("generated", |v| self.generated.issues(v));
        v.section("v4l2", |v| self.v4l2.issues(v));
        match self.kind {
            SourceKind::Generated => {}
            SourceKind::FrameDir => match &self.frame_dir {
                None => v.push("frame_dir", "is required when source.kind is \"frame_dir\""),
                Some(fd) if fd.path.as_os_str().is_empty() => {
                    v.push("frame_dir.path", "must not be empty")
                }
                Some(_) => {}
            },
            SourceKind::VideoFile => match &self.video_file {
                None => v.push(
                    "video_file",
                    "is required when source.kind is \"video_file\"",
                ),
                Some(vf) if vf.path.as_os_str().is_empty() => {
                    v.push("video_file.path", "must not be empty")
                }
                Some(_) => {}
            },
            SourceKind::V4l2 => {
                if self.lockstep {
                    v.push(
                        "lockstep",
                        "a camera cannot wait for the pipeline: not with \"v4l2\"",
                    );
                }
                if !cfg!(feature = "v4l2") {
                    v.push(
                        "kind",
                        "\"v4l2\" needs caerd built with the cargo feature v4l2 \
                         (cargo build --release --features caer-firmware/v4l2)",
                    );
                }
            }
        }
    }

    /// Whether the frames carry known face boxes (the `annotated` detector needs them).
    pub fn has_annotations(&self) -> bool {
        match self.kind {
            SourceKind::Generated => true,
            SourceKind::FrameDir => self
                .frame_dir
                .as_ref()
                .is_some_and(|fd| fd.annotations.is_some()),
            SourceKind::V4l2 | SourceKind::VideoFile => false,
        }
    }

    /// The frame size this source is set up for, in pixels (for the memory budget): the
    /// generated classroom's and the camera's; none for files, whose frames are known only
    /// once read (the frame queue's byte bound holds them).
    pub fn frame_pixels(&self) -> Option<u64> {
        match self.kind {
            SourceKind::Generated => {
                Some(u64::from(self.generated.width) * u64::from(self.generated.height))
            }
            SourceKind::V4l2 => Some(u64::from(self.v4l2.width) * u64::from(self.v4l2.height)),
            SourceKind::FrameDir | SourceKind::VideoFile => None,
        }
    }
}

/// A directory of frames.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameDirConfig {
    /// The directory whose sorted `.jpg`/`.jpeg`/`.png` files are the frames. Required.
    pub path: PathBuf,
    /// Optional JSON file of known face boxes: `{"<file name>": [[l, t, r, b], ...]}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<PathBuf>,
}

/// A video file, decoded by FFmpeg (`ffprobe` and `ffmpeg` child processes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoFileConfig {
    /// The video file. Required.
    pub path: PathBuf,
    /// The `ffmpeg` program.
    #[serde(default = "default_ffmpeg")]
    pub ffmpeg: PathBuf,
    /// The `ffprobe` program.
    #[serde(default = "default_ffprobe")]
    pub ffprobe: PathBuf,
}

/// Default of `source.video_file.ffmpeg`: found on `PATH`.
pub fn default_ffmpeg() -> PathBuf {
    PathBuf::from("ffmpeg")
}

/// Default of `source.video_file.ffprobe`: found on `PATH`.
pub fn default_ffprobe() -> PathBuf {
    PathBuf::from("ffprobe")
}

/// A V4L2 camera: `[source.v4l2]`. Size, rate and format are requests: the camera's nearest
/// offer is used and logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct V4l2Config {
    /// The device node.
    pub device: PathBuf,
    /// Requested frame width in pixels, 16 to 4096.
    pub width: u32,
    /// Requested frame height in pixels, 16 to 4096.
    pub height: u32,
    /// Accepted pixel formats, most preferred first: `"mjpeg"`, `"yuyv"`, `"nv12"`.
    pub formats: Vec<PixelFormat>,
    /// Requested camera frame rate, 0 to 120 (0: leave the camera's setting).
    pub frame_rate: u32,
    /// Kernel capture buffers, 2 to 32.
    pub buffers: u32,
    /// A camera that delivers nothing for this long is closed and reopened (100 to 60000).
    pub stall_timeout_ms: u64,
    /// First delay before reopening a lost camera, in ms (10 to reopen_max_ms).
    pub reopen_min_ms: u64,
    /// Longest delay between reopening attempts, in ms (at most 600000).
    pub reopen_max_ms: u64,
}

impl Default for V4l2Config {
    fn default() -> Self {
        V4l2Config {
            device: PathBuf::from("/dev/video0"),
            width: 1280,
            height: 720,
            formats: PixelFormat::PREFERENCE.to_vec(),
            frame_rate: 15,
            buffers: 4,
            stall_timeout_ms: 2000,
            reopen_min_ms: 500,
            reopen_max_ms: 30_000,
        }
    }
}

impl V4l2Config {
    /// Every setting out of range, keyed relative to the section.
    pub fn issues(&self, v: &mut Issues) {
        if self.device.as_os_str().is_empty() {
            v.push("device", "must not be empty");
        }
        v.range("width", self.width, 16, 4096);
        v.range("height", self.height, 16, 4096);
        if self.formats.is_empty() {
            v.push(
                "formats",
                "must name at least one of \"mjpeg\", \"yuyv\", \"nv12\"",
            );
        } else if (1..self.formats.len()).any(|i| self.formats[..i].contains(&self.formats[i])) {
            v.push("formats", "names a format twice");
        }
        v.at_most("frame_rate", self.frame_rate, 120);
        v.range("buffers", self.buffers, 2, 32);
        v.range("stall_timeout_ms", self.stall_timeout_ms, 100, 60_000);
        v.at_most("reopen_max_ms", self.reopen_max_ms, 600_000);
        v.range(
            "reopen_min_ms",
            self.reopen_min_ms,
            10,
            self.reopen_max_ms.max(10),
        );
    }

    /// `stall_timeout_ms` as a duration.
    pub fn stall_timeout(&self) -> Duration {
        Duration::from_millis(self.stall_timeout_ms)
    }
}
