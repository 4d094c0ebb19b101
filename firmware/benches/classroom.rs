//! The classroom benchmark: the real `caerd` (this package's binary, bench profile) on a
//! generated 1920x1080 classroom of 30 students, for each backend and detector, at rising
//! per-student sampling rates: the highest rate it sustains with under 1 % of the frames
//! dropped, the inference thread's time per stage, the share of everything but the image
//! encoder, the process's CPU use and its resident memory at steady state.
//!
//! ```text
//! CAER_BENCH_BUNDLE=build/vit-b-32-random/bundle ORT_DYLIB_PATH=... \
//!   cargo bench -p caer-firmware --features ort --bench classroom
//! ```
//!
//! Each point runs `caerd` with the stdout sink (no broker), waits `CAER_BENCH_WARMUP_S`
//! (default 15) for the model to load and the tracks to form, then takes the difference of
//! two `stats` payloads `CAER_BENCH_SECS` apart (default 30): frames captured, analysed and
//! dropped, `busy_seconds_by_stage`, and the process's CPU time (`/proc/<pid>/stat`).
//! Rates rise through `CAER_BENCH_RATES` (default 0.25,0.5,1,2 samples per student per
//! second) until one drops 1 % of the frames or more. Detectors: `annotated` (the generated
//! source's known boxes, at `CAER_BENCH_FPS`, default 5) and the bundle's BlazeFace (at
//! `CAER_BENCH_DETECT_FPS`, default 2: it alone costs 160-700 ms per 1080p frame here);
//! `CAER_BENCH_DETECTORS` picks them (default annotated,blaze). Backends: tract, and with
//! the `ort` feature ONNX Runtime fp32 and int8 (`CAER_BENCH_BACKENDS` overrides), each with
//! `CAER_BENCH_THREADS` threads (default: every core). Without `CAER_BENCH_BUNDLE` it runs the
//! tiny fixture bundle, which only checks that the bench works.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

const CAERD: &str = env!("CARGO_BIN_EXE_caerd");
const STUDENTS: usize = 30;
/// Most frames dropped (as a share of those captured) for a rate to count as sustained.
const MAX_DROPPED: f64 = 0.01;

/// One measured point: a backend, a detector and a sampling rate.
struct Point {
    backend: String,
    detector: String,
    fps: f64,
    rate_hz: f64,
    captured: u64,
    processed: u64,
    dropped: u64,
    /// Seconds of the inference thread per stage over the measured span.
    busy: Vec<(String, f64)>,
    span_s: f64,
    /// CPU seconds of the whole process (every thread) over the span.
    cpu_s: f64,
    tracks: u64,
    rss_mib: f64,
}

impl Point {
    fn dropped_share(&self) -> f64 {
        self.dropped as f64 / self.captured.max(1) as f64
    }

    fn busy_of(&self, stage: &str) -> f64 {
        self.busy
            .iter()
            .find(|(s, _)| s == stage)
            .map_or(0.0, |(_, v)| *v)
    }

    fn busy_total(&self) -> f64 {
        self.busy.iter().map(|(_, v)| v).sum()
    }

    /// The share of the inference thread's time outside the image encoder.
    fn non_encoder_share(&self) -> f64 {
        let total = self.busy_total();
        if total > 0.0 {
            1.0 - self.busy_of("encode") / total
        } else {
            0.0
        }
    }
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn env_f64(name: &str, default: f64) -> f64 {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text}: not a number")),
        Err(_) => default,
    }
}

/// The bundle; a relative `CAER_BENCH_BUNDLE` is taken from the workspace root (cargo runs
/// benches in the package folder).
fn bundle() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    match std::env::var_os("CAER_BENCH_BUNDLE") {
        Some(p) => root.join(p),
        None => root.join("tests/golden/bundle"),
    }
}

/// `caerd`'s configuration for one point.
fn config(
    state: &Path,
    bundle: &Path,
    backend: &str,
    detector: &str,
    fps: f64,
    rate: f64,
) -> String {
    let threads = std::env::var("CAER_BENCH_THREADS")
        .map(|t| format!("threads = {t}\n"))
        .unwrap_or_default();
    format!(
        "state_dir = \"{state}\"\n\n[device]\nsite = \"bench\"\nroom = \"classroom\"\nid = \"bench-1\"\n\n\
         [source]\nkind = \"generated\"\nfps = {fps}\n\
         [source.generated]\nwidth = 1920\nheight = 1080\nstudents = {STUDENTS}\nseed = 7\n\n\
         [detect]\nkind = \"{detector}\"\n\n\
         [sampling]\nrate_hz = {rate}\n\n\
         [model]\nbundle = \"{bundle}\"\nbackend = \"{backend}\"\n{threads}\n\
         [report]\ninterval_secs = 60\nstats_interval_secs = 5\n",
        state = state.display(),
        bundle = bundle.display(),
    )
}

/// The daemon's `stats` payloads as they come, each with the process's CPU seconds then.
fn stats_lines(child: &mut Child) -> Receiver<(Value, f64)> {
    let stdout = child.stdout.take().expect("piped stdout");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if v["schema"] == "caer.stats.v1" && tx.send((v, cpu_seconds(pid))).is_err() {
                break;
            }
        }
    });
    rx
}

/// User and system CPU time of process `pid` (every thread), from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // Fields after the command name (which may hold spaces) start at its closing ')'.
    let after = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    // utime and stime are fields 14 and 15 of proc_pid_stat(5); 12 and 13 from `state`.
    (ticks(11) + ticks(12)) / rustix::param::clock_ticks_per_second() as f64
}

fn count(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// Runs one point; an error names what went wrong (the daemon's exit, no stats).
fn measure(
    bundle: &Path,
    backend: &str,
    detector: &str,
    fps: f64,
    rate: f64,
) -> Result<Point, String> {
    let warmup = Duration::from_secs_f64(env_f64("CAER_BENCH_WARMUP_S", 15.0));
    let span = Duration::from_secs_f64(env_f64("CAER_BENCH_SECS", 30.0));
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("caerd.toml");
    let text = config(
        &dir.path().join("state"),
        bundle,
        backend,
        detector,
        fps,
        rate,
    );
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    let mut child = Command::new(CAERD)
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {CAERD}: {e}"))?;
    let stats = stats_lines(&mut child);
    let started = Instant::now();
    let deadline = started + warmup + span + Duration::from_secs(300);
    let next = |stats: &Receiver<(Value, f64)>| {
        stats
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .map_err(|_| "no stats from caerd (did it exit? its log is above)".to_string())
    };
    // The first stats after the warm-up with the model running and faces tracked.
    let (first, first_cpu, first_at) = loop {
        let (v, cpu) = next(&stats)?;
        if v["state"] == "safe_mode" {
            let _ = child.kill();
            return Err(format!("caerd is in safe mode: {v}"));
        }
        if started.elapsed() >= warmup && v["state"] == "running" && count(&v, "tracks_active") > 0
        {
            break (v, cpu, Instant::now());
        }
    };
    let (last, last_cpu, last_at) = loop {
        let (v, cpu) = next(&stats)?;
        if first_at.elapsed() >= span {
            break (v, cpu, Instant::now());
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    let delta = |key: &str| count(&last, key).saturating_sub(count(&first, key));
    let busy = ["detect", "track", "encode", "classify"]
        .iter()
        .map(|s| {
            let at = |v: &Value| v["busy_seconds_by_stage"][s].as_f64().unwrap_or(0.0);
            (s.to_string(), at(&last) - at(&first))
        })
        .collect();
    Ok(Point {
        backend: backend.to_string(),
        detector: detector.to_string(),
        fps,
        rate_hz: rate,
        captured: delta("frames_captured_total"),
        processed: delta("frames_processed_total"),
        dropped: delta("frames_dropped_total"),
        busy,
        span_s: (last_at - first_at).as_secs_f64(),
        cpu_s: last_cpu - first_cpu,
        tracks: count(&last, "tracks_active"),
        rss_mib: count(&last, "memory_rss_bytes") as f64 / (1024.0 * 1024.0),
    })
}

fn print_point(p: &Point) {
    let per_s = |x: f64| x / p.span_s.max(1e-9);
    println!(
        "{} | {} | {} | {} | {}/{}/{} | {:.1} % | {:.0}/{:.0}/{:.0}/{:.0} | {:.0} % | {:.2} | {} | {:.0}",
        p.backend,
        p.detector,
        p.fps,
        p.rate_hz,
        p.captured,
        p.processed,
        p.dropped,
        100.0 * p.dropped_share(),
        1e3 * per_s(p.busy_of("detect")),
        1e3 * per_s(p.busy_of("track")),
        1e3 * per_s(p.busy_of("encode")),
        1e3 * per_s(p.busy_of("classify")),
        100.0 * p.non_encoder_share(),
        per_s(p.cpu_s),
        p.tracks,
        p.rss_mib,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported (env picks points).
    let bundle = bundle();
    let default_backends = if cfg!(feature = "ort") {
        "tract,ort-cpu,ort-cpu-int8"
    } else {
        "tract"
    };
    let backends = env_list("CAER_BENCH_BACKENDS", default_backends);
    let detectors = env_list("CAER_BENCH_DETECTORS", "annotated,blaze");
    let rates: Vec<f64> = env_list("CAER_BENCH_RATES", "0.25,0.5,1,2")
        .iter()
        .map(|r| {
            r.parse()
                .unwrap_or_else(|_| panic!("CAER_BENCH_RATES: {r}"))
        })
        .collect();
    println!(
        "classroom bench: {STUDENTS} students at 1920x1080, bundle {}, {} cores",
        bundle.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "backend | detector | fps | samples/student/s | frames captured/analysed/dropped | dropped | \
         inference thread ms/s detect/track/encode/classify | non-encoder share | CPU cores busy | tracks | RSS MiB"
    );
    let mut sustained = Vec::new();
    for backend in &backends {
        for detector in &detectors {
            let fps = if detector == "annotated" {
                env_f64("CAER_BENCH_FPS", 5.0)
            } else {
                env_f64("CAER_BENCH_DETECT_FPS", 2.0)
            };
            let mut best: Result<Option<Point>, String> = Ok(None);
            for &rate in &rates {
                match measure(&bundle, backend, detector, fps, rate) {
                    Ok(p) => {
                        print_point(&p);
                        if p.dropped_share() >= MAX_DROPPED {
                            break;
                        }
                        best = Ok(Some(p));
                    }
                    Err(e) => {
                        println!("{backend} | {detector} | {fps} | {rate} | failed: {e}");
                        best = Err(e);
                        break;
                    }
                }
            }
            sustained.push((backend.clone(), detector.clone(), fps, best));
        }
    }
    println!("\nhighest sustained rate (< 1 % of frames dropped):");
    println!("backend | detector | fps | samples/student/s | non-encoder share | RSS MiB");
    for (backend, detector, fps, best) in sustained {
        match best {
            Ok(Some(p)) => println!(
                "{backend} | {detector} | {fps} | {} | {:.0} % | {:.0}",
                p.rate_hz,
                100.0 * p.non_encoder_share(),
                p.rss_mib
            ),
            Ok(None) => println!("{backend} | {detector} | {fps} | none of {rates:?} | - | -"),
            Err(_) => println!("{backend} | {detector} | {fps} | failed (above) | - | -"),
        }
    }
}
