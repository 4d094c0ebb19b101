//! `caer-vivid-check`: runs inside a small qemu VM (see tests/tests/vivid.rs and
//! tests/vm/make-initramfs.sh) against Linux's `vivid` virtual camera, a real V4L2 driver,
//! and checks `caer::pipeline::source::v4l2::V4l2Source` with it:
//!
//! 1. YUYV at 640x360: several frames of that size with a non-uniform picture (vivid draws
//!    colour bars).
//! 2. NV12 at 640x360, then at 1280x720 (a size change). The first comes with padded rows:
//!    the source asks for the device's current `bytesperline` (YUYV's 1280 from step 1) and
//!    vivid keeps any value above the minimum, so the NV12 rows are 1280 bytes for 640
//!    pixels.
//! 3. The camera lost mid-stream and coming back: while the source streams, `rmmod vivid`
//!    is tried (the kernel refuses it while the device is open: an open V4L2 node holds
//!    its driver module), so the device is unplugged through sysfs (`unbind`, what a USB
//!    disconnect does); the source must report a transient error naming the device and
//!    close it, after which the module is removed (`rmmod`), a reopen must fail while it is
//!    gone, and once it is loaded again (`vivid-load`, written by the VM's init) the same
//!    source must reopen the stream by itself and deliver frames; its stats must count one
//!    loss and one reopening.
//!
//! Output, one line per check on stdout: `VIVID-CHECK ok ...` or `VIVID-CHECK fail ...`,
//! and last `VIVID-CHECK done ok` or `VIVID-CHECK done fail` (exit status 0 or 1).
//! Usage: `caer-vivid-check [DEVICE]` (default /dev/video0); it needs `rmmod` and
//! `vivid-load` on the PATH and the sysfs of the VM.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use caer::pipeline::frame::Frame;
use caer::pipeline::source::pixel_format::PixelFormat;
use caer::pipeline::source::v4l2::{V4l2Config, V4l2Source, V4l2Stats};
use caer::pipeline::source::{FrameSource, SourceError};

/// Frames read and checked per capture.
const FRAMES: usize = 5;

struct Checker {
    failed: bool,
}

impl Checker {
    fn ok(&mut self, what: &str) {
        println!("VIVID-CHECK ok {what}");
    }

    fn fail(&mut self, what: &str) {
        println!("VIVID-CHECK fail {what}");
        self.failed = true;
    }

    fn check(&mut self, cond: bool, ok: &str, fail: &str) -> bool {
        if cond {
            self.ok(ok);
        } else {
            self.fail(fail);
        }
        cond
    }
}

fn config(device: &Path, format: PixelFormat, width: u32, height: u32) -> V4l2Config {
    V4l2Config {
        device: device.to_path_buf(),
        width,
        height,
        formats: vec![format],
        frame_rate: 15,
        buffers: 4,
        stall_timeout_ms: 5000,
        reopen_min_ms: 200,
        reopen_max_ms: 1000,
    }
}

/// Distinct colours in a frame (capped): vivid's colour bars give several, a blank or
/// garbage-free uniform buffer gives one.
fn distinct_colours(frame: &Frame) -> usize {
    let mut seen = std::collections::BTreeSet::new();
    for p in frame.image.pixels().step_by(7) {
        seen.insert(p.0);
        if seen.len() >= 64 {
            break;
        }
    }
    seen.len()
}

/// Opens `device` with one format and size, reads [`FRAMES`] frames and checks them.
fn capture(c: &mut Checker, device: &Path, format: PixelFormat, width: u32, height: u32) {
    let label = format!("{format} {width}x{height}");
    let mut source = match V4l2Source::open(config(device, format, width, height)) {
        Ok(s) => s,
        Err(e) => return c.fail(&format!("{label}: open: {e}")),
    };
    let negotiated = source.format();
    if !c.check(
        negotiated == Some((format, width, height)),
        &format!("{label} negotiated ({})", source.describe()),
        &format!("{label}: negotiated {negotiated:?}"),
    ) {
        return;
    }
    let mut colours = Vec::new();
    for i in 0..FRAMES {
        match source.next_frame() {
            Ok(Some(f)) if f.width() == width && f.height() == height => {
                colours.push(distinct_colours(&f))
            }
            Ok(Some(f)) => {
                return c.fail(&format!(
                    "{label}: frame {i} is {}x{}",
                    f.width(),
                    f.height()
                ))
            }
            Ok(None) => return c.fail(&format!("{label}: frame {i}: end of stream")),
            Err(e) => return c.fail(&format!("{label}: frame {i}: {e}")),
        }
    }
    c.check(
        colours.iter().all(|&n| n >= 4),
        &format!("{label} {FRAMES} frames, distinct colours {colours:?}"),
        &format!("{label}: frames look uniform, distinct colours {colours:?}"),
    );
}

/// Runs a command of the VM (busybox applets, vivid-load); Ok(()) on exit status 0.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    match Command::new(program).args(args).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "{program} {args:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("{program}: {e}")),
    }
}

/// The platform device vivid's driver is bound to (`vivid.0`).
fn vivid_platform_device() -> Option<String> {
    std::fs::read_dir("/sys/bus/platform/drivers/vivid")
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("vivid."))
}

fn lose_and_reopen(c: &mut Checker, device: &Path) {
    let label = "reopen";
    let mut source = match V4l2Source::open(config(device, PixelFormat::Yuyv, 640, 360)) {
        Ok(s) => s,
        Err(e) => return c.fail(&format!("{label}: open: {e}")),
    };
    for i in 0..3 {
        if let Err(e) = source.next_frame() {
            return c.fail(&format!("{label}: frame {i} before the loss: {e}"));
        }
    }
    // Mid-stream (streaming on, buffers queued): take the device away.
    let mut removed = match run("rmmod", &["vivid"]) {
        Ok(()) => {
            c.ok("rmmod vivid while streaming succeeded");
            true
        }
        Err(e) => {
            println!("VIVID-CHECK info rmmod refused while the device is open ({e}); unplugging it through sysfs unbind");
            let Some(dev) = vivid_platform_device() else {
                return c.fail(&format!("{label}: no vivid platform device to unbind"));
            };
            if let Err(e) = std::fs::write("/sys/bus/platform/drivers/vivid/unbind", &dev) {
                return c.fail(&format!("{label}: unbind {dev}: {e}"));
            }
            println!("VIVID-CHECK info unbound {dev} while streaming");
            false
        }
    };
    let t = Instant::now();
    let err = match source.next_frame() {
        Ok(_) => {
            return c.fail(&format!(
                "{label}: a frame came after the device was removed"
            ))
        }
        Err(e) => e,
    };
    let kind = match &err {
        SourceError::Device { action, .. } => format!("Device({action})"),
        SourceError::Stalled { .. } => "Stalled".to_string(),
        other => format!("{other:?}"),
    };
    c.check(
        err.is_transient()
            && err.to_string().contains(&device.display().to_string())
            && matches!(
                err,
                SourceError::Device { .. } | SourceError::Stalled { .. }
            ),
        &format!("loss reported after {:?}: {kind}: {err}", t.elapsed()),
        &format!(
            "{label}: loss reported as {kind} (transient {}): {err}",
            err.is_transient()
        ),
    );
    c.check(
        source.format().is_none(),
        "lost camera closed",
        &format!(
            "{label}: source still open after the loss: {:?}",
            source.format()
        ),
    );
    if !removed {
        // The source closed the device: the module is no longer in use.
        match run("rmmod", &["vivid"]) {
            Ok(()) => {
                c.ok("rmmod vivid after the source closed the lost device");
                removed = true;
            }
            Err(e) => c.fail(&format!("{label}: rmmod after the loss: {e}")),
        }
    }
    if removed {
        match source.next_frame() {
            Err(e @ SourceError::Device { action: "open", .. }) if e.is_transient() => {
                c.ok(&format!("reopen while the module is gone fails: {e}"))
            }
            Err(e) => c.fail(&format!(
                "{label}: reopen without the module: unexpected error {e} ({e:?})"
            )),
            Ok(_) => c.fail(&format!("{label}: a frame without the module")),
        }
    }
    if let Err(e) = run("vivid-load", &[]) {
        return c.fail(&format!("{label}: reload: {e}"));
    }
    println!("VIVID-CHECK info vivid loaded again");
    // The same source, polled as the capture thread does: transient errors until the
    // device node is back, then frames.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut errors = Vec::new();
    let mut frames = 0;
    while frames < FRAMES && Instant::now() < deadline {
        match source.next_frame() {
            Ok(Some(f)) if f.width() == 640 && f.height() == 360 && distinct_colours(&f) >= 4 => {
                frames += 1
            }
            Ok(Some(f)) => {
                return c.fail(&format!(
                    "{label}: reopened frame {}x{} with {} colours",
                    f.width(),
                    f.height(),
                    distinct_colours(&f)
                ))
            }
            Ok(None) => return c.fail(&format!("{label}: end of stream")),
            Err(e) if e.is_transient() => errors.push(e.to_string()),
            Err(e) => return c.fail(&format!("{label}: permanent error {e}")),
        }
    }
    c.check(
        frames == FRAMES,
        &format!(
            "reopened by itself: {frames} frames after {} transient errors ({})",
            errors.len(),
            source.describe()
        ),
        &format!("{label}: {frames} frames in 30 s after reload; errors {errors:?}"),
    );
    let stats = source.stats();
    let want = V4l2Stats {
        lost_total: 1,
        reopened_total: 1,
        corrupt_total: 0,
    };
    c.check(
        stats == want,
        &format!("stats {stats:?}"),
        &format!("{label}: stats {stats:?}, expected {want:?}"),
    );
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let device = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "/dev/video0".into()),
    );
    let mut c = Checker { failed: false };
    capture(&mut c, &device, PixelFormat::Yuyv, 640, 360);
    capture(&mut c, &device, PixelFormat::Nv12, 640, 360);
    capture(&mut c, &device, PixelFormat::Nv12, 1280, 720);
    lose_and_reopen(&mut c, &device);
    println!("VIVID-CHECK done {}", if c.failed { "fail" } else { "ok" });
    std::process::exit(i32::from(c.failed));
}
