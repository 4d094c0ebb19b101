//! Frame sources: where the pipeline's [`Frame`]s come from.
//!
//! A [`FrameSource`] is pulled by one capture thread; `next_frame` blocks until a frame is
//! ready and returns `Ok(None)` at the end of a finite source. Implementations:
//!
//! - [`frame_dir::FrameDirSource`]: the sorted image files of one clip directory (RAER
//!   layout), with optional known face boxes (bench).
//! - [`generated::GeneratedSource`]: a deterministic synthetic classroom with known face
//!   boxes (demo on a fresh machine, tests).
//! - [`video_file::VideoFileSource`]: the first video stream of a video file, decoded by
//!   FFmpeg in a child process (bench).
//! - `v4l2::V4l2Source` (cargo feature `v4l2`): a Linux camera, MJPEG, YUYV or NV12,
//!   reopened with backoff when it disappears.
//!
//! [`pixel_format`] (with [`mjpeg`] and [`yuv`]) chooses a camera format and turns camera
//! buffers into RGB; plain functions, compiled and tested without the `v4l2` feature.
//! [`backoff`] paces camera reopening.
//!
//! Bounds: a source holds at most one decoded frame at a time; frames are never written to
//! disk. Errors say which file or device failed; [`SourceError::is_transient`] tells a
//! caller whether polling again may succeed (a camera being reopened, one corrupt frame).

use std::path::PathBuf;
use std::time::Duration;

use crate::pipeline::frame::Frame;

pub mod backoff;
pub mod frame_dir;
pub mod generated;
pub mod mjpeg;
pub mod pixel_format;
pub mod settings;
#[cfg(feature = "v4l2")]
pub mod v4l2;
pub mod video_file;
pub mod yuv;

pub use settings::{FrameDirConfig, SourceConfig, SourceKind, V4l2Config, VideoFileConfig};

/// Produces frames, one at a time, for one capture thread.
pub trait FrameSource: Send {
    /// The next frame; blocks until one is ready. `Ok(None)` ends a finite source (every
    /// later call returns `Ok(None)` too). After a transient error
    /// ([`SourceError::is_transient`]) the caller may call again.
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError>;

    /// A short human-readable description (path, device, format) for logs.
    fn describe(&self) -> String;
}

/// A failure to produce a frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// A file or directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A clip directory holds no image files.
    #[error("{} holds no image files (.jpg, .jpeg, .png); is it a clip directory?", path.display())]
    NoFrames {
        /// The directory.
        path: PathBuf,
    },
    /// An image file could not be decoded.
    #[error("cannot decode image {}: {source}", path.display())]
    Image {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: crate::pipeline::decode::DecodeError,
    },
    /// A face box file is not the expected JSON (the place is named, never the content).
    #[error("{} is not a face box file ({{\"frame file name\": [[left, top, right, bottom], ...]}}): error at line {line}, column {column}", path.display())]
    AnnotationsJson {
        /// The face box file.
        path: PathBuf,
        /// Line of the error.
        line: usize,
        /// Column of the error.
        column: usize,
    },
    /// A face box file names a frame that is not in the clip directory.
    #[error("{} has boxes for {name:?}, which is not an image file of {}", path.display(), dir.display())]
    AnnotationsUnknownFrame {
        /// The face box file.
        path: PathBuf,
        /// The clip directory.
        dir: PathBuf,
        /// The file name in the face box file.
        name: String,
    },
    /// A face box is not finite or has `right <= left` or `bottom <= top`.
    #[error("{}: box {bbox:?} of {name:?} must be finite [left, top, right, bottom] with left < right and top < bottom", path.display())]
    AnnotationsBox {
        /// The face box file.
        path: PathBuf,
        /// The frame file name.
        name: String,
        /// The box.
        bbox: [f32; 4],
    },
    /// A source setting is out of range.
    #[error("{source_kind} source: {field} {reason}")]
    Config {
        /// Which source (`generated`, `v4l2`).
        source_kind: &'static str,
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A camera's JPEG frame could not be decoded, or has another size than the stream.
    #[error("cannot decode mjpeg frame: {0}")]
    Jpeg(#[source] crate::pipeline::decode::DecodeError),
    /// A raw (YUYV, NV12) camera buffer is too short or could not be converted.
    #[error("{format} frame {width}x{height}: {reason}")]
    RawFrame {
        /// The pixel format.
        format: &'static str,
        /// The stream's width.
        width: u32,
        /// The stream's height.
        height: u32,
        /// What is wrong.
        reason: String,
    },
    /// A camera could not be opened, configured or read.
    #[error("camera {device}: {action} failed: {source}")]
    Device {
        /// The device path.
        device: String,
        /// What was being done (`open`, `set format`, `dequeue`, ...).
        action: &'static str,
        /// The kernel's error.
        #[source]
        source: std::io::Error,
    },
    /// A camera offers none of the pixel formats this firmware decodes.
    #[error("camera {device} offers {offered:?}; this firmware decodes MJPG, YUYV and NV12")]
    UnsupportedFormat {
        /// The device path.
        device: String,
        /// The FourCCs the camera offers.
        offered: Vec<String>,
    },
    /// A decoding program (FFmpeg) could not be started.
    #[error("cannot run {}: {source} (the video file source needs FFmpeg: apt install ffmpeg)", program.display())]
    Tool {
        /// The program.
        program: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A video file could not be probed or decoded.
    #[error("video file {}: {reason}", path.display())]
    Video {
        /// The file.
        path: PathBuf,
        /// What went wrong, with FFmpeg's message.
        reason: String,
    },
    /// A camera delivered no frame for too long; it is closed and reopened.
    #[error("camera {device} delivered no frame for {waited:?}; reopening it")]
    Stalled {
        /// The device path.
        device: String,
        /// How long it was waited for.
        waited: Duration,
    },
}

impl SourceError {
    /// Whether calling `next_frame` again may succeed: a corrupt camera frame, or a camera
    /// that is lost, stalled or being reopened. File and configuration errors are not.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SourceError::Jpeg(_)
                | SourceError::RawFrame { .. }
                | SourceError::Device { .. }
                | SourceError::Stalled { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camera_errors_are_transient_and_file_errors_are_not() {
        let stalled = SourceError::Stalled {
            device: "/dev/video0".into(),
            waited: Duration::from_secs(2),
        };
        assert!(stalled.is_transient());
        let missing = SourceError::NoFrames {
            path: PathBuf::from("/clips/a"),
        };
        assert!(!missing.is_transient());
        assert!(missing.to_string().contains("/clips/a"));
    }
}
