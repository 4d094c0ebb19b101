//! Counters and latencies shared by the pipeline threads and the supervisor (the `stats`
//! payload's figures).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::daemon::fleet::LatencyFigures;

/// Latency samples kept per stage for the percentiles.
pub(super) const LATENCY_WINDOW: usize = 512;

/// Percentile buffer of one stage.
#[derive(Debug)]
pub(super) struct LatencyRing {
    pub(super) samples: Vec<f32>,
    pub(super) next: usize,
}

impl LatencyRing {
    pub(super) fn new() -> Self {
        LatencyRing {
            samples: Vec::with_capacity(LATENCY_WINDOW),
            next: 0,
        }
    }

    pub(super) fn push(&mut self, d: Duration) {
        let ms = d.as_secs_f32() * 1000.0;
        if self.samples.len() < LATENCY_WINDOW {
            self.samples.push(ms);
        } else {
            self.samples[self.next] = ms;
            self.next = (self.next + 1) % LATENCY_WINDOW;
        }
    }

    pub(super) fn figures(&self) -> Option<LatencyFigures> {
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

/// The stages whose latency `stats.latency_ms` reports, keyed by [`Stage::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// Waiting in the frame queue.
    Queue,
    /// Face detection.
    Detect,
    /// Tracking and sampling.
    Track,
    /// Crops, encoding, windows and classification.
    Classify,
    /// The image encoder's calls alone (part of `Classify`), in frames that encoded crops.
    Encode,
    /// The whole frame, detection to aggregation.
    Frame,
}

impl Stage {
    /// Every stage, in report order.
    pub(super) const ALL: [Stage; 6] = [
        Stage::Queue,
        Stage::Detect,
        Stage::Track,
        Stage::Classify,
        Stage::Encode,
        Stage::Frame,
    ];

    /// The key in `stats.latency_ms`.
    pub(super) const fn name(self) -> &'static str {
        match self {
            Stage::Queue => "queue",
            Stage::Detect => "detect",
            Stage::Track => "track",
            Stage::Classify => "classify",
            Stage::Encode => "encode",
            Stage::Frame => "frame",
        }
    }
}

/// What each bounded stage refused or dropped so far: `stats.dropped_total_by_stage`.
#[derive(Debug, Default)]
pub(super) struct Dropped {
    /// Detections that started no track (`track.max_tracks` tracks held).
    pub(super) track: AtomicU64,
    /// Samples refused (`track.max_tracks` tracks with a due time).
    pub(super) sample: AtomicU64,
    /// Tracks evicted from the classifier's windows to make room for new ones.
    pub(super) window: AtomicU64,
    /// Results not tallied (the aggregator's per-interval bound).
    pub(super) aggregate: AtomicU64,
}

/// Counters and latencies shared by the pipeline threads and the supervisor.
#[derive(Debug)]
pub struct Metrics {
    pub(super) frames_captured: AtomicU64,
    pub(super) frames_processed: AtomicU64,
    pub(super) frame_errors: AtomicU64,
    pub(super) results: AtomicU64,
    /// Frames dropped by the queues of earlier pipelines (the current one's is read live).
    pub(super) frames_dropped_before: AtomicU64,
    pub(super) tracks_active: AtomicUsize,
    /// Drops of the stages of earlier pipelines, and the current one's as last reported.
    pub(super) dropped_before: Dropped,
    pub(super) dropped: Dropped,
    latency: Mutex<[LatencyRing; Stage::ALL.len()]>,
    /// Nanoseconds of every latency sample of each stage, summed since start.
    busy_ns: [AtomicU64; Stage::ALL.len()],
}

impl Metrics {
    pub(super) fn new() -> Self {
        Metrics {
            frames_captured: AtomicU64::new(0),
            frames_processed: AtomicU64::new(0),
            frame_errors: AtomicU64::new(0),
            results: AtomicU64::new(0),
            frames_dropped_before: AtomicU64::new(0),
            tracks_active: AtomicUsize::new(0),
            dropped_before: Dropped::default(),
            dropped: Dropped::default(),
            latency: Mutex::new([(); Stage::ALL.len()].map(|()| LatencyRing::new())),
            busy_ns: [(); Stage::ALL.len()].map(|()| AtomicU64::new(0)),
        }
    }

    /// One latency sample of `stage`.
    pub(super) fn record_latency(&self, stage: Stage, value: Duration) {
        let ns = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        self.busy_ns[stage as usize].fetch_add(ns, Ordering::Relaxed);
        let mut rings = self.latency.lock().unwrap_or_else(PoisonError::into_inner);
        rings[stage as usize].push(value);
    }

    /// The percentiles of every stage with samples, by name.
    pub(super) fn latency_figures(&self) -> BTreeMap<&'static str, LatencyFigures> {
        let rings = self.latency.lock().unwrap_or_else(PoisonError::into_inner);
        Stage::ALL
            .iter()
            .filter_map(|s| rings[*s as usize].figures().map(|f| (s.name(), f)))
            .collect()
    }

    /// `stats.busy_seconds_by_stage`: the inference thread's time since start in disjoint
    /// stages, so that they add up to its busy time and each share means what it says:
    /// `detect`, `track` (tracking and sampling), `encode` (the image encoder's calls) and
    /// `classify` (crops, preprocessing, windows, head and aggregation, without `encode`).
    pub(super) fn busy_seconds_by_stage(&self) -> BTreeMap<&'static str, f64> {
        let ns = |s: Stage| self.busy_ns[s as usize].load(Ordering::Relaxed);
        let secs = |ns: u64| (ns as f64 / 1e6).round() / 1e3;
        let encode = ns(Stage::Encode);
        BTreeMap::from([
            ("detect", secs(ns(Stage::Detect))),
            ("track", secs(ns(Stage::Track))),
            ("encode", secs(encode)),
            ("classify", secs(ns(Stage::Classify).saturating_sub(encode))),
        ])
    }

    /// A pipeline ended: its stages' drops stay counted.
    pub(super) fn retire_pipeline(&self, queue_dropped: u64) {
        self.frames_dropped_before
            .fetch_add(queue_dropped, Ordering::Relaxed);
        for (before, now) in [
            (&self.dropped_before.track, &self.dropped.track),
            (&self.dropped_before.sample, &self.dropped.sample),
            (&self.dropped_before.window, &self.dropped.window),
            (&self.dropped_before.aggregate, &self.dropped.aggregate),
        ] {
            before.fetch_add(now.swap(0, Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// `stats.dropped_total_by_stage`: every drop since the daemon started, by stage
    /// (`queue` is the frame queue's, given by the caller for the running pipeline).
    pub(super) fn dropped_by_stage(&self, queue_now: u64) -> BTreeMap<&'static str, u64> {
        let total = |before: &AtomicU64, now: &AtomicU64| {
            before.load(Ordering::Relaxed) + now.load(Ordering::Relaxed)
        };
        let (b, n) = (&self.dropped_before, &self.dropped);
        BTreeMap::from([
            (
                "queue",
                self.frames_dropped_before.load(Ordering::Relaxed) + queue_now,
            ),
            ("track", total(&b.track, &n.track)),
            ("sample", total(&b.sample, &n.sample)),
            ("window", total(&b.window, &n.window)),
            ("aggregate", total(&b.aggregate, &n.aggregate)),
        ])
    }
}

/// Resident memory in bytes, from `/proc/self/status`.
pub(super) fn memory_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn busy_seconds_are_disjoint_stages() {
        let m = Metrics::new();
        m.record_latency(Stage::Detect, Duration::from_millis(30));
        m.record_latency(Stage::Detect, Duration::from_millis(20));
        m.record_latency(Stage::Classify, Duration::from_millis(100));
        m.record_latency(Stage::Encode, Duration::from_millis(70));
        m.record_latency(Stage::Frame, Duration::from_millis(150));
        let busy = m.busy_seconds_by_stage();
        assert_eq!(busy["detect"], 0.05);
        assert_eq!(busy["track"], 0.0);
        assert_eq!(busy["encode"], 0.07);
        assert_eq!(busy["classify"], 0.03);
        assert!(!busy.contains_key("frame") && !busy.contains_key("queue"));
    }
}
