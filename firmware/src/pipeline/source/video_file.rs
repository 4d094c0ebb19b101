//! A video file as a frame source (bench path): any container and codec FFmpeg reads.
//!
//! Decoding is FFmpeg's, run as a child process (`ffprobe` for the stream's size, `ffmpeg`
//! for the frames): it reads every format a bench recording comes in (MP4/H.264, MKV, AVI
//! with MJPEG, ...) and is a Debian package on every board, where linking libav* would tie
//! the build to one FFmpeg version. The child writes raw RGB24 frames to a pipe that this
//! source reads one frame at a time: nothing is written to disk. Rotation metadata is
//! ignored (`-noautorotate`), so frames have the stream's coded size, as `ffprobe` reports.
//!
//! Bounds: one frame buffer; the child's stderr is kept to its last 4 KiB for error
//! messages. Pacing is the caller's (`source.fps` in the daemon); files decode as fast as
//! FFmpeg goes. Dropping the source kills the child.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::Deserialize;

use super::{FrameSource, SourceError};
use crate::pipeline::frame::Frame;

/// Most stderr kept from the child, for error messages.
const STDERR_KEEP: usize = 4096;

/// Largest accepted frame side (a sanity bound on what `ffprobe` reports).
const MAX_SIDE: u32 = 16_384;

/// The programs that decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FfmpegTools {
    /// `ffmpeg`, found on `PATH` by default.
    pub ffmpeg: PathBuf,
    /// `ffprobe`, found on `PATH` by default.
    pub ffprobe: PathBuf,
}

impl Default for FfmpegTools {
    fn default() -> Self {
        FfmpegTools {
            ffmpeg: PathBuf::from("ffmpeg"),
            ffprobe: PathBuf::from("ffprobe"),
        }
    }
}

/// The first video stream of a file, decoded by FFmpeg.
pub struct VideoFileSource {
    path: PathBuf,
    width: u32,
    height: u32,
    child: Child,
    frames: ChildStdout,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_reader: Option<JoinHandle<()>>,
    sequence: u64,
    finished: bool,
}

impl std::fmt::Debug for VideoFileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VideoFileSource")
            .field("path", &self.path)
            .field("size", &(self.width, self.height))
            .field("sequence", &self.sequence)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    streams: Vec<ProbeStream>,
}

#[derive(Deserialize)]
struct ProbeStream {
    width: Option<u32>,
    height: Option<u32>,
    nb_read_packets: Option<String>,
}

impl VideoFileSource {
    /// Probes `path` and starts decoding its first video stream.
    pub fn open(path: impl Into<PathBuf>, tools: &FfmpegTools) -> Result<Self, SourceError> {
        let path = path.into();
        let stream = probe(&path, tools, false)?;
        let (width, height) = match (stream.width, stream.height) {
            (Some(w), Some(h))
                if (1..=MAX_SIDE).contains(&w)
                    && (1..=MAX_SIDE).contains(&h)
                    && u64::from(w) * u64::from(h) <= crate::pipeline::decode::MAX_PIXELS =>
            {
                (w, h)
            }
            (w, h) => {
                return Err(video_error(
                    &path,
                    format!(
                        "its video stream reports an unusable size {w:?}x{h:?} (at most {} pixels)",
                        crate::pipeline::decode::MAX_PIXELS
                    ),
                ))
            }
        };
        let mut child = child_command(&tools.ffmpeg)
            .args([
                "-nostdin",
                "-hide_banner",
                "-loglevel",
                "error",
                "-noautorotate",
            ])
            .arg("-i")
            .arg(&path)
            .args([
                "-map", "0:v:0", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| SourceError::Tool {
                program: tools.ffmpeg.clone(),
                source,
            })?;
        let frames = child.stdout.take().expect("stdout is piped");
        let mut child_stderr = child.stderr.take().expect("stderr is piped");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&stderr);
        // Drained on a thread so that a chatty decoder never blocks on a full pipe.
        let stderr_reader = std::thread::Builder::new()
            .name("caer-ffmpeg-stderr".into())
            .spawn(move || {
                let mut chunk = [0u8; 1024];
                while let Ok(n @ 1..) = child_stderr.read(&mut chunk) {
                    let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                    kept.extend_from_slice(&chunk[..n]);
                    let excess = kept.len().saturating_sub(STDERR_KEEP);
                    kept.drain(..excess);
                }
            })
            .map_err(|source| SourceError::Io {
                path: path.clone(),
                source,
            })?;
        tracing::info!(path = %path.display(), width, height, "video file opened");
        Ok(VideoFileSource {
            path,
            width,
            height,
            child,
            frames,
            stderr,
            stderr_reader: Some(stderr_reader),
            sequence: 0,
            finished: false,
        })
    }

    /// Frames in the file's first video stream, counted by `ffprobe` from its packets
    /// (one per frame for every common codec; no decoding, so quick).
    pub fn count_frames(path: &Path, tools: &FfmpegTools) -> Result<u64, SourceError> {
        let stream = probe(path, tools, true)?;
        stream
            .nb_read_packets
            .as_deref()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| video_error(path, "ffprobe could not count its frames".to_owned()))
    }

    /// The frames' width and height.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Waits for the child after its output ended; an error if it failed.
    fn finish(&mut self) -> Result<(), SourceError> {
        self.finished = true;
        let status = self.child.wait().map_err(|source| SourceError::Io {
            path: self.path.clone(),
            source,
        })?;
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        if status.success() {
            Ok(())
        } else {
            log_child_stderr(
                "ffmpeg",
                &self.path,
                &self.stderr.lock().unwrap_or_else(|e| e.into_inner()),
            );
            Err(video_error(
                &self.path,
                format!("ffmpeg failed ({status}; its messages are in the daemon's log)"),
            ))
        }
    }
}

impl FrameSource for VideoFileSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        if self.finished {
            return Ok(None);
        }
        let len = self.width as usize * self.height as usize * 3;
        let mut pixels = vec![0u8; len];
        let mut filled = 0;
        while filled < len {
            match self.frames.read(&mut pixels[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(source) => {
                    self.finished = true;
                    return Err(SourceError::Io {
                        path: self.path.clone(),
                        source,
                    });
                }
            }
        }
        if filled < len {
            self.finish()?;
            if filled > 0 {
                return Err(video_error(
                    &self.path,
                    format!("ffmpeg's output ended inside frame {}", self.sequence),
                ));
            }
            return Ok(None);
        }
        let image = image::RgbImage::from_raw(self.width, self.height, pixels)
            .expect("the buffer has the frame's size");
        let frame = Frame::new(image, self.sequence);
        self.sequence += 1;
        Ok(Some(frame))
    }

    fn describe(&self) -> String {
        format!(
            "video file {} ({}x{})",
            self.path.display(),
            self.width,
            self.height
        )
    }
}

impl Drop for VideoFileSource {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A decoder child: the program with a minimal environment (`PATH` only, so that no secret
/// of the daemon's environment reaches it) and no stdin.
fn child_command(program: &Path) -> Command {
    let mut command = Command::new(program);
    command
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .stdin(Stdio::null());
    command
}

/// A child's messages go to the daemon's log, printable characters only, never into an
/// error (errors reach acks and status).
fn log_child_stderr(program: &str, path: &Path, stderr: &[u8]) {
    let text: String = String::from_utf8_lossy(stderr)
        .chars()
        .map(|c| if c.is_control() && c != '\n' { ' ' } else { c })
        .collect();
    tracing::warn!(program, path = %path.display(), stderr = %text.trim(), "decoder failed");
}

fn video_error(path: &Path, reason: String) -> SourceError {
    SourceError::Video {
        path: path.to_owned(),
        reason,
    }
}

/// The first video stream as `ffprobe` sees it; `count`: also count its packets.
fn probe(path: &Path, tools: &FfmpegTools, count: bool) -> Result<ProbeStream, SourceError> {
    // ffprobe reports a missing file in its own words; name it plainly instead.
    std::fs::metadata(path).map_err(|source| SourceError::Io {
        path: path.to_owned(),
        source,
    })?;
    let entries = if count {
        "stream=width,height,nb_read_packets"
    } else {
        "stream=width,height"
    };
    let mut command = child_command(&tools.ffprobe);
    command.args(["-v", "error", "-select_streams", "v:0"]);
    if count {
        command.arg("-count_packets");
    }
    let output = command
        .args(["-show_entries", entries, "-of", "json"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| SourceError::Tool {
            program: tools.ffprobe.clone(),
            source,
        })?;
    if !output.status.success() {
        log_child_stderr("ffprobe", path, &output.stderr);
        return Err(video_error(
            path,
            format!(
                "ffprobe cannot read it ({}; its messages are in the daemon's log)",
                output.status
            ),
        ));
    }
    let probe: Probe = serde_json::from_slice(&output.stdout).map_err(|e| {
        video_error(
            path,
            format!(
                "unexpected ffprobe output (line {}, column {})",
                e.line(),
                e.column()
            ),
        )
    })?;
    probe
        .streams
        .into_iter()
        .next()
        .ok_or_else(|| video_error(path, "it has no video stream".to_owned()))
}

#[cfg(test)]
mod tests {
    //! These run the real FFmpeg (`scripts/setup.sh` installs it) on files it makes here.

    use super::*;

    fn ffmpeg(args: &[&str]) {
        let status = Command::new("ffmpeg")
            .args(["-nostdin", "-v", "error", "-y"])
            .args(args)
            .status()
            .expect("ffmpeg runs (apt install ffmpeg)");
        assert!(status.success(), "ffmpeg {args:?}");
    }

    /// `frames` frames of FFmpeg's test pattern at `size` (`WxH`), encoded with `codec`.
    fn test_video(path: &Path, size: &str, frames: u32, codec: &str) {
        let source = format!("testsrc=size={size}:rate=10");
        let frames = frames.to_string();
        let mut args = vec![
            "-f",
            "lavfi",
            "-i",
            &source,
            "-frames:v",
            &frames,
            "-c:v",
            codec,
        ];
        if codec == "libx264" {
            args.extend(["-pix_fmt", "yuv420p"]);
        }
        args.push(path.to_str().unwrap());
        ffmpeg(&args);
    }

    /// Five 64x48 frames that differ in every pixel.
    fn pattern_frames() -> Vec<image::RgbImage> {
        (0..5u32)
            .map(|i| {
                image::RgbImage::from_fn(64, 48, |x, y| {
                    image::Rgb([
                        (x * 4 + i * 40) as u8,
                        (y * 5) as u8,
                        (i * 50 + x + y) as u8,
                    ])
                })
            })
            .collect()
    }

    fn read_all(source: &mut VideoFileSource) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(frame) = source.next_frame().expect("frame") {
            frames.push(frame);
        }
        frames
    }

    #[test]
    fn a_lossless_video_gives_back_its_frames_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let expected = pattern_frames();
        for (i, frame) in expected.iter().enumerate() {
            frame.save(dir.path().join(format!("{i:03}.png"))).unwrap();
        }
        let video = dir.path().join("clip.mkv");
        let pattern = dir.path().join("%03d.png");
        ffmpeg(&[
            "-framerate",
            "5",
            "-i",
            pattern.to_str().unwrap(),
            "-c:v",
            "png",
            video.to_str().unwrap(),
        ]);
        let tools = FfmpegTools::default();
        assert_eq!(VideoFileSource::count_frames(&video, &tools).unwrap(), 5);
        let mut source = VideoFileSource::open(&video, &tools).unwrap();
        assert_eq!(source.size(), (64, 48));
        assert!(source.describe().contains("clip.mkv"));
        let frames = read_all(&mut source);
        assert_eq!(frames.len(), 5);
        for (i, (frame, want)) in frames.iter().zip(&expected).enumerate() {
            assert_eq!(frame.sequence, i as u64);
            assert!(frame.annotations.is_none());
            assert!(frame.image == *want, "frame {i} differs");
        }
        assert!(source.next_frame().unwrap().is_none(), "stays ended");
    }

    #[test]
    fn an_h264_mp4_decodes_to_frames_of_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let video = dir.path().join("clip.mp4");
        test_video(&video, "160x120", 12, "libx264");
        let tools = FfmpegTools::default();
        assert_eq!(VideoFileSource::count_frames(&video, &tools).unwrap(), 12);
        let mut source = VideoFileSource::open(&video, &tools).unwrap();
        let frames = read_all(&mut source);
        assert_eq!(frames.len(), 12);
        assert!(frames.iter().all(|f| f.image.dimensions() == (160, 120)));
        // testsrc is colourful: not a black frame.
        let bright = frames[0].image.pixels().filter(|p| p[0] > 128).count();
        assert!(bright > 1000, "{bright}");
    }

    #[test]
    fn bad_files_and_missing_tools_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let tools = FfmpegTools::default();

        let missing = dir.path().join("missing.mp4");
        let err = VideoFileSource::open(&missing, &tools).unwrap_err();
        assert!(matches!(err, SourceError::Io { .. }), "{err}");
        assert!(err.to_string().contains("missing.mp4"), "{err}");

        let text = dir.path().join("notes.mp4");
        std::fs::write(&text, "not a video").unwrap();
        let err = VideoFileSource::open(&text, &tools).unwrap_err();
        assert!(matches!(err, SourceError::Video { .. }), "{err}");
        assert!(err.to_string().contains("notes.mp4"), "{err}");

        let image = dir.path().join("still.png");
        pattern_frames()[0].save(&image).unwrap();
        let absent = FfmpegTools {
            ffmpeg: PathBuf::from("/nonexistent/ffmpeg"),
            ffprobe: PathBuf::from("/nonexistent/ffprobe"),
        };
        let err = VideoFileSource::open(&image, &absent).unwrap_err();
        assert!(matches!(err, SourceError::Tool { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/ffprobe"), "{err}");
        assert!(!err.is_transient());
    }

    #[test]
    fn a_truncated_video_ends_or_fails_without_panicking() {
        let dir = tempfile::tempdir().unwrap();
        let video = dir.path().join("clip.avi");
        test_video(&video, "160x120", 20, "mjpeg");
        let bytes = std::fs::read(&video).unwrap();
        std::fs::write(&video, &bytes[..bytes.len() / 2]).unwrap();
        let mut source = VideoFileSource::open(&video, &FfmpegTools::default()).unwrap();
        let mut frames = 0;
        loop {
            match source.next_frame() {
                Ok(Some(_)) => frames += 1,
                Ok(None) => break,
                Err(e) => {
                    assert!(e.to_string().contains("clip.avi"), "{e}");
                    break;
                }
            }
        }
        assert!((1..20).contains(&frames), "{frames} frames");
    }

    #[test]
    fn dropping_a_source_mid_stream_stops_ffmpeg() {
        let dir = tempfile::tempdir().unwrap();
        let video = dir.path().join("long.mp4");
        test_video(&video, "320x240", 250, "libx264");
        let mut source = VideoFileSource::open(&video, &FfmpegTools::default()).unwrap();
        assert!(source.next_frame().unwrap().is_some());
        let pid = source.child.id();
        drop(source);
        // The child was killed and reaped: its pid no longer names a process of ours.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"));
        assert!(
            status.map_or(true, |s| !s.contains("ffmpeg")),
            "ffmpeg {pid} still running"
        );
    }

    #[test]
    fn decoder_children_get_path_and_nothing_else() {
        // The daemon's own environment (here: the test runner's, HOME and all) stays out.
        let output = child_command(Path::new("env")).output().expect("run env");
        let lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].starts_with("PATH="), "{lines:?}");
    }
}
