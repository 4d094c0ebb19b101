//! Counters and latencies shared by the pipeline threads and the supervisor (the `stats`
//! payload's figures).

use std::sync::atomic::{AtomicU64, AtomicUsize};
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

/// Stage names in `stats.latency_ms`.
pub(super) const STAGES: [&str; 5] = ["queue", "detect", "track", "classify", "frame"];

/// Counters and latencies shared by the pipeline threads and the supervisor.
#[derive(Debug)]
pub struct Metrics {
    pub(super) frames_captured: AtomicU64,
    pub(super) frames_processed: AtomicU64,
    pub(super) frame_errors: AtomicU64,
    pub(super) results: AtomicU64,
    pub(super) frames_dropped_before: AtomicU64,
    pub(super) tracks_active: AtomicUsize,
    pub(super) latency: Mutex<[LatencyRing; 5]>,
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
            latency: Mutex::new([(); 5].map(|()| LatencyRing::new())),
        }
    }

    pub(super) fn record_latencies(&self, values: [Duration; 5]) {
        let mut rings = self.latency.lock().unwrap_or_else(PoisonError::into_inner);
        for (ring, value) in rings.iter_mut().zip(values) {
            ring.push(value);
        }
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
}
