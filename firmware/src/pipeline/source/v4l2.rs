//! A Linux camera through V4L2 (cargo feature `v4l2`), memory-mapped streaming.
//!
//! Opening: the device's formats are enumerated and the first of `formats` it offers is
//! chosen ([`PixelFormat::choose`]; by default MJPEG, then YUYV, then NV12); the requested
//! size and frame rate are asked for and the driver's answer is used as is (a camera rounds to a size it
//! supports). Frames are decoded to RGB in memory and never written anywhere.
//!
//! Failures, reported and survived without a restart: a dequeue that errors (camera
//! unplugged) or waits longer than `stall_timeout` (camera stopped delivering) closes the
//! device and returns [`SourceError::Device`] or [`SourceError::Stalled`]; the next calls
//! sleep out the backoff delay ([`Backoff`]: doubling from `reopen_initial` up to
//! `reopen_max`) and try to reopen, returning the open error while that fails. All of
//! these are transient ([`SourceError::is_transient`]). A frame the driver flags as
//! corrupt is skipped and counted; one that does not decode is returned as a transient
//! error and the stream goes on.
//!
//! Bounds: `buffers` kernel buffers (default 4) and one decoded frame at a time.

use std::time::{Duration, Instant};

use v4l::buffer::{Flags, Type};
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::capture::Parameters;
use v4l::video::Capture;
use v4l::{Device, FourCC};

use super::backoff::Backoff;
use super::pixel_format::PixelFormat;
pub use super::settings::V4l2Config;
use super::{FrameSource, SourceError};
use crate::pipeline::frame::Frame;

/// Counters of a camera's troubles since the source was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct V4l2Stats {
    /// Times the camera was lost (dequeue error or stall).
    pub lost_total: u64,
    /// Successful opens after the first.
    pub reopened_total: u64,
    /// Frames the driver flagged as corrupt, skipped.
    pub corrupt_total: u64,
}

struct OpenCamera {
    // Declared before `_device`: the stream is dropped (streaming stopped, buffers
    // unmapped) before the file is closed.
    stream: Stream<'static>,
    _device: Device,
    format: PixelFormat,
    width: u32,
    height: u32,
    stride: u32,
}

/// Frames from a V4L2 camera; see the module docs.
pub struct V4l2Source {
    config: V4l2Config,
    camera: Option<OpenCamera>,
    backoff: Backoff,
    reopen_at: Option<Instant>,
    opened_once: bool,
    sequence: u64,
    stats: V4l2Stats,
}

impl std::fmt::Debug for V4l2Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V4l2Source")
            .field("config", &self.config)
            .field("open", &self.camera.is_some())
            .field("stats", &self.stats)
            .finish()
    }
}

impl V4l2Source {
    /// Opens the camera once, so that a wrong device or format fails at start-up; later
    /// losses are handled by [`FrameSource::next_frame`].
    pub fn open(config: V4l2Config) -> Result<Self, SourceError> {
        if !(2..=32).contains(&config.buffers) {
            return Err(SourceError::Config {
                source_kind: "v4l2",
                field: "buffers",
                reason: "must be 2 to 32",
            });
        }
        if config.formats.is_empty() {
            return Err(SourceError::Config {
                source_kind: "v4l2",
                field: "formats",
                reason: "must name at least one format",
            });
        }
        if config.width == 0 || config.height == 0 || config.stall_timeout_ms == 0 {
            return Err(SourceError::Config {
                source_kind: "v4l2",
                field: "width/height/stall_timeout",
                reason: "must not be zero",
            });
        }
        let backoff = Backoff::new(
            Duration::from_millis(config.reopen_min_ms),
            Duration::from_millis(config.reopen_max_ms),
        );
        let mut source = V4l2Source {
            config,
            camera: None,
            backoff,
            reopen_at: None,
            opened_once: false,
            sequence: 0,
            stats: V4l2Stats::default(),
        };
        source.camera = Some(source.open_camera()?);
        source.opened_once = true;
        Ok(source)
    }

    /// The trouble counters.
    pub fn stats(&self) -> V4l2Stats {
        self.stats
    }

    /// The negotiated format and size, while the camera is open.
    pub fn format(&self) -> Option<(PixelFormat, u32, u32)> {
        self.camera.as_ref().map(|c| (c.format, c.width, c.height))
    }

    fn device_name(&self) -> String {
        self.config.device.display().to_string()
    }

    fn open_camera(&self) -> Result<OpenCamera, SourceError> {
        let name = self.device_name();
        let dev_err = |action, source| SourceError::Device {
            device: name.clone(),
            action,
            source,
        };
        let device = Device::with_path(&self.config.device).map_err(|e| dev_err("open", e))?;
        let offered: Vec<[u8; 4]> = device
            .enum_formats()
            .map_err(|e| dev_err("enumerate formats", e))?
            .iter()
            .map(|d| d.fourcc.repr)
            .collect();
        let format = PixelFormat::choose(&self.config.formats, &offered).ok_or_else(|| {
            SourceError::UnsupportedFormat {
                device: name.clone(),
                offered: offered
                    .iter()
                    .map(|f| String::from_utf8_lossy(f).into_owned())
                    .collect(),
            }
        })?;
        let mut wanted = device.format().map_err(|e| dev_err("get format", e))?;
        wanted.width = self.config.width;
        wanted.height = self.config.height;
        wanted.fourcc = FourCC::new(&format.fourcc());
        let got = device
            .set_format(&wanted)
            .map_err(|e| dev_err("set format", e))?;
        let format = PixelFormat::from_fourcc(got.fourcc.repr).ok_or_else(|| {
            SourceError::UnsupportedFormat {
                device: name.clone(),
                offered: vec![String::from_utf8_lossy(&got.fourcc.repr).into_owned()],
            }
        })?;
        if self.config.frame_rate > 0 {
            // Not every driver supports setting the rate; the camera's own rate is fine then.
            if let Err(e) = device.set_params(&Parameters::with_fps(self.config.frame_rate)) {
                tracing::warn!(device = %name, error = %e, "cannot set the frame rate; using the camera's");
            }
        }
        let mut stream = Stream::with_buffers(&device, Type::VideoCapture, self.config.buffers)
            .map_err(|e| dev_err("map buffers", e))?;
        stream.set_timeout(self.config.stall_timeout());
        tracing::info!(device = %name, %format, width = got.width, height = got.height, "camera open");
        Ok(OpenCamera {
            stream,
            _device: device,
            format,
            width: got.width,
            height: got.height,
            stride: got.stride,
        })
    }

    /// Closes the camera after a failure and schedules the reopening.
    fn lose_camera(&mut self) {
        self.camera = None;
        self.stats.lost_total += 1;
        self.reopen_at = Some(Instant::now() + self.backoff.next_delay());
    }
}

impl FrameSource for V4l2Source {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        loop {
            if self.camera.is_none() {
                if let Some(at) = self.reopen_at {
                    let now = Instant::now();
                    if at > now {
                        std::thread::sleep(at - now);
                    }
                }
                match self.open_camera() {
                    Ok(camera) => {
                        self.camera = Some(camera);
                        if self.opened_once {
                            self.stats.reopened_total += 1;
                        }
                        self.opened_once = true;
                    }
                    Err(e) => {
                        self.reopen_at = Some(Instant::now() + self.backoff.next_delay());
                        return Err(e);
                    }
                }
            }
            let Some(camera) = self.camera.as_mut() else {
                continue;
            };
            let (width, height, stride, format) =
                (camera.width, camera.height, camera.stride, camera.format);
            let decoded = match CaptureStream::next(&mut camera.stream) {
                Ok((buffer, meta)) => {
                    if meta.flags.contains(Flags::ERROR) {
                        self.stats.corrupt_total += 1;
                        continue;
                    }
                    let used = (meta.bytesused as usize).min(buffer.len());
                    format.decode(&buffer[..used], width, height, stride)
                }
                Err(e) => {
                    let err = if e.kind() == std::io::ErrorKind::TimedOut {
                        SourceError::Stalled {
                            device: self.device_name(),
                            waited: self.config.stall_timeout(),
                        }
                    } else {
                        SourceError::Device {
                            device: self.device_name(),
                            action: "dequeue",
                            source: e,
                        }
                    };
                    self.lose_camera();
                    return Err(err);
                }
            };
            let image = decoded?;
            self.backoff.reset();
            let frame = Frame::new(image, self.sequence);
            self.sequence += 1;
            return Ok(Some(frame));
        }
    }

    fn describe(&self) -> String {
        match self.format() {
            Some((format, w, h)) => format!("camera {} ({format} {w}x{h})", self.device_name()),
            None => format!("camera {} (reopening)", self.device_name()),
        }
    }
}
