//! Pacing between capture and inference: a drop-oldest frame queue and a per-track
//! sampling scheduler.
//!
//! - [`FrameQueue`] joins the capture thread to the inference thread. A camera cannot be
//!   told to wait, so when the queue is full the **oldest** frame is dropped (the newest is
//!   what the classroom looks like now), and the drop is counted in an atomic counter
//!   that stats can read at any time ([`FrameQueue::dropped_total`]). A source that can
//!   wait (a file replayed in lockstep) uses [`FrameQueue::push_wait`] instead: it waits for
//!   room and nothing is dropped.
//! - [`TrackSampler`] decides which tracked faces of a frame go to the classifier: each
//!   track at most `rate_hz` times per second of capture time (default 2), so a clip of
//!   `T` = 16 samples spans 8 s whatever the camera's frame rate. Due times advance by the
//!   period, so jitter in frame times does not lower the average rate; after a gap (frames
//!   dropped, the face away) sampling restarts from the next frame. A new track's first
//!   sample waits a share of the period fixed by its id ([`stagger`]): faces found together
//!   (at start, after a pause, a class walking in) would otherwise be sampled in the same
//!   frame every period, one burst of 2 images per student that stalls the pipeline and
//!   drops frames at an average load it could carry (measured: the classroom bench).
//!
//! Bounds: the queue holds at most `capacity` frames in a buffer allocated once; the
//! sampler keeps one due time per track, for at most `max_tracks` tracks (a track beyond
//! that is not sampled and is counted); the caller forgets tracks that end.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::pipeline::frame::Frame;
use crate::pipeline::settings::{check, Issues, SettingsError};
use crate::pipeline::track::TrackedFace;

/// What [`FrameQueue::pop`] got.
#[derive(Debug)]
pub enum Popped {
    /// The oldest queued frame.
    Frame(Frame),
    /// No frame came before the timeout.
    Empty,
    /// The queue is closed and empty: the producer is gone.
    Closed,
}

#[derive(Debug)]
struct QueueState {
    frames: VecDeque<Frame>,
    /// Pixel bytes of `frames`.
    bytes: usize,
    closed: bool,
}

/// A bounded frame queue that drops the oldest frame when full (by count, or by the bytes of
/// its frames); shared through `Arc`.
#[derive(Debug)]
pub struct FrameQueue {
    capacity: usize,
    max_bytes: usize,
    state: Mutex<QueueState>,
    ready: Condvar,
    /// Notified when a frame leaves (room for [`FrameQueue::push_wait`]).
    room: Condvar,
    pushed: AtomicU64,
    dropped: AtomicU64,
}

impl FrameQueue {
    /// An empty queue of `capacity` frames (its buffer is allocated here, once).
    pub fn new(capacity: NonZeroUsize) -> Self {
        Self::with_max_bytes(capacity, usize::MAX)
    }

    /// An empty queue of at most `capacity` frames and `max_bytes` of pixels: whichever
    /// bound a new frame would pass, the oldest frames are dropped (the newest is always
    /// kept, so a frame larger than `max_bytes` still passes, alone).
    pub fn with_max_bytes(capacity: NonZeroUsize, max_bytes: usize) -> Self {
        FrameQueue {
            capacity: capacity.get(),
            max_bytes,
            state: Mutex::new(QueueState {
                frames: VecDeque::with_capacity(capacity.get()),
                bytes: 0,
                closed: false,
            }),
            ready: Condvar::new(),
            room: Condvar::new(),
            pushed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    // A panic while holding the lock leaves a consistent `VecDeque`: go on with it.
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `frame`, dropping the oldest queued frame if full. Returns `false` (and
    /// drops `frame`) once the queue is closed.
    pub fn push(&self, frame: Frame) -> bool {
        let mut state = self.lock();
        if state.closed {
            return false;
        }
        let size = frame.image.as_raw().len();
        while state.frames.len() == self.capacity
            || (!state.frames.is_empty() && state.bytes + size > self.max_bytes)
        {
            if let Some(old) = state.frames.pop_front() {
                state.bytes -= old.image.as_raw().len();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        state.bytes += size;
        state.frames.push_back(frame);
        self.pushed.fetch_add(1, Ordering::Relaxed);
        drop(state);
        self.ready.notify_one();
        true
    }

    /// Queues `frame` without dropping any: waits up to `timeout` for room. `Ok(true)`:
    /// queued; `Ok(false)`: the queue is closed (`frame` dropped); `Err(frame)`: still full.
    pub fn push_wait(&self, frame: Frame, timeout: Duration) -> Result<bool, Frame> {
        let size = frame.image.as_raw().len();
        let full = |s: &mut QueueState| {
            !s.closed
                && (s.frames.len() == self.capacity
                    || (!s.frames.is_empty() && s.bytes + size > self.max_bytes))
        };
        let state = self.lock();
        let (mut state, _) = self
            .room
            .wait_timeout_while(state, timeout, full)
            .unwrap_or_else(PoisonError::into_inner);
        if state.closed {
            return Ok(false);
        }
        if full(&mut state) {
            return Err(frame);
        }
        state.bytes += size;
        state.frames.push_back(frame);
        self.pushed.fetch_add(1, Ordering::Relaxed);
        drop(state);
        self.ready.notify_one();
        Ok(true)
    }

    /// The oldest frame, waiting up to `timeout` for one.
    pub fn pop(&self, timeout: Duration) -> Popped {
        let state = self.lock();
        let (mut state, _) = self
            .ready
            .wait_timeout_while(state, timeout, |s| s.frames.is_empty() && !s.closed)
            .unwrap_or_else(PoisonError::into_inner);
        match state.frames.pop_front() {
            Some(frame) => {
                state.bytes -= frame.image.as_raw().len();
                drop(state);
                self.room.notify_one();
                Popped::Frame(frame)
            }
            None if state.closed => Popped::Closed,
            None => Popped::Empty,
        }
    }

    /// Refuses further frames; consumers get the queued ones, then [`Popped::Closed`].
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
        self.room.notify_all();
    }

    /// Frames queued now.
    pub fn len(&self) -> usize {
        self.lock().frames.len()
    }

    /// Whether no frame is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Most frames held.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Frames accepted by [`FrameQueue::push`] since creation.
    pub fn pushed_total(&self) -> u64 {
        self.pushed.load(Ordering::Relaxed)
    }

    /// Frames dropped (oldest first) because the queue was full, since creation.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Sampling settings: the `[sampling]` section of `caerd`'s configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingConfig {
    /// Samples per second per tracked face, above 0.01 and at most 60. A window of `T` = 16
    /// samples then spans `16 / rate_hz` seconds (8 s at the default).
    pub rate_hz: f64,
    /// Frames waiting between capture and inference, at most 256; when full the oldest is
    /// dropped.
    pub queue_frames: NonZeroUsize,
    /// Samples a full window slides before the next result, 1 to `T`; none: `T`
    /// (non-overlapping windows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_stride: Option<NonZeroUsize>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            rate_hz: 2.0,
            queue_frames: NonZeroUsize::new(4).expect("4 is not zero"),
            window_stride: None,
        }
    }
}

/// Most frames the frame queue may hold.
pub const MAX_QUEUE_FRAMES: usize = 256;

impl SamplingConfig {
    /// Every setting out of range, keyed relative to the section.
    pub fn issues(&self, v: &mut Issues) {
        v.range("rate_hz", self.rate_hz, 0.01, 60.0);
        v.at_most("queue_frames", self.queue_frames.get(), MAX_QUEUE_FRAMES);
        if let Some(stride) = self.window_stride {
            // T comes from the bundle (checked again when the classifier is built); no model
            // has T above 64.
            v.at_most("window_stride", stride.get(), 64);
        }
    }
}

/// The share of the period, in [0, 1), that track `id`'s first sample waits: the id times
/// the golden ratio, modulo 1, so that consecutive ids (faces found together) spread evenly
/// over the period.
pub fn stagger(id: u64) -> f64 {
    // 2^64 / golden ratio: the fractional part of id * 0.618.. in the top 53 bits.
    let spread = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    spread as f64 / (1u64 << 53) as f64
}

/// Decides which tracked faces of each frame are sampled for the classifier.
#[derive(Debug)]
pub struct TrackSampler {
    /// The configured period, `1 / rate_hz`.
    base_period: Duration,
    /// `base_period` divided by the rate factor (thermal throttling).
    period: Duration,
    max_tracks: usize,
    next_due: HashMap<u64, Instant>,
    refused_total: u64,
}

impl TrackSampler {
    /// A sampler with no tracks, for at most `max_tracks` of them; fails on settings out of
    /// range ([`SamplingConfig::issues`]).
    pub fn new(config: &SamplingConfig, max_tracks: NonZeroUsize) -> Result<Self, SettingsError> {
        check(|v| config.issues(v))?;
        let period = Duration::from_secs_f64(1.0 / config.rate_hz);
        Ok(TrackSampler {
            base_period: period,
            period,
            max_tracks: max_tracks.get(),
            next_due: HashMap::with_capacity(max_tracks.get()),
            refused_total: 0,
        })
    }

    /// Forgets every track (after a pause); the rate factor stays.
    pub fn reset(&mut self) {
        self.next_due.clear();
    }

    /// Multiplies the configured rate by `factor` in (0, 1] (1 restores it); anything else is
    /// taken as 1. Due times already set stay; the next ones use the new period.
    pub fn set_rate_factor(&mut self, factor: f64) {
        let factor = if factor > 0.0 && factor <= 1.0 {
            factor
        } else {
            1.0
        };
        self.period = self.base_period.div_f64(factor);
    }

    /// Whether track `id` is sampled in the frame captured at `at`; records the sample.
    pub fn is_due(&mut self, id: u64, at: Instant) -> bool {
        let period = self.period;
        let full = self.next_due.len() >= self.max_tracks;
        match self.next_due.get_mut(&id) {
            Some(due) if at < *due => false,
            Some(due) => {
                *due += period;
                if *due <= at {
                    // Behind by more than a period (a gap): restart from now.
                    *due = at + period;
                }
                true
            }
            None if full => {
                self.refused_total += 1;
                false
            }
            None => {
                let first = at + period.mul_f64(stagger(id));
                self.next_due.insert(id, first);
                self.is_due(id, at)
            }
        }
    }

    /// The faces of the frame captured at `at` that are due, in the given order.
    pub fn select(&mut self, at: Instant, faces: &[TrackedFace]) -> Vec<TrackedFace> {
        faces
            .iter()
            .filter(|f| self.is_due(f.id, at))
            .copied()
            .collect()
    }

    /// Forgets an ended track.
    pub fn forget(&mut self, id: u64) {
        self.next_due.remove(&id);
    }

    /// Tracks with a due time.
    pub fn tracks(&self) -> usize {
        self.next_due.len()
    }

    /// Samples refused because `max_tracks` tracks were held.
    pub fn refused_total(&self) -> u64 {
        self.refused_total
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const MAX: NonZeroUsize = NonZeroUsize::new(64).expect("64 is not zero");

    fn frame(sequence: u64) -> Frame {
        Frame::new(image::RgbImage::new(2, 2), sequence)
    }

    fn queue(capacity: usize) -> FrameQueue {
        FrameQueue::new(NonZeroUsize::new(capacity).expect("non-zero"))
    }

    #[test]
    fn a_full_queue_drops_the_oldest_frame() {
        let q = queue(3);
        for s in 0..5 {
            assert!(q.push(frame(s)));
        }
        assert_eq!((q.len(), q.pushed_total(), q.dropped_total()), (3, 5, 2));
        let mut got = Vec::new();
        while let Popped::Frame(f) = q.pop(Duration::ZERO) {
            got.push(f.sequence);
        }
        assert_eq!(got, [2, 3, 4]);
    }

    #[test]
    fn pop_times_out_when_empty_and_reports_close_after_draining() {
        let q = queue(2);
        assert!(matches!(q.pop(Duration::from_millis(5)), Popped::Empty));
        q.push(frame(1));
        q.close();
        assert!(!q.push(frame(2)), "closed queue accepted a frame");
        assert!(matches!(q.pop(Duration::ZERO), Popped::Frame(f) if f.sequence == 1));
        assert!(matches!(q.pop(Duration::from_secs(5)), Popped::Closed));
    }

    /// A consumer thread that takes a frame every `pause` and returns the sequence numbers
    /// it saw once the queue closes.
    fn slow_consumer(q: &Arc<FrameQueue>, pause: Duration) -> std::thread::JoinHandle<Vec<u64>> {
        let q = Arc::clone(q);
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            loop {
                match q.pop(Duration::from_secs(5)) {
                    Popped::Frame(f) => {
                        seen.push(f.sequence);
                        std::thread::sleep(pause);
                    }
                    Popped::Empty => panic!("producer stalled"),
                    Popped::Closed => return seen,
                }
            }
        })
    }

    /// A producer much faster than its consumer: frames are dropped oldest first, the queue
    /// never holds more than its capacity nor reallocates, and the newest frame survives.
    #[test]
    fn a_slow_consumer_loses_old_frames_and_memory_stays_bounded() {
        let q = Arc::new(queue(4));
        let initial_alloc = q.lock().frames.capacity();
        let consumer = slow_consumer(&q, Duration::from_millis(2));
        let mut max_len = 0;
        for s in 0..500 {
            q.push(frame(s));
            max_len = max_len.max(q.len());
            if s % 50 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        q.close();
        let seen = consumer.join().expect("consumer");
        assert!(max_len <= 4, "queue held {max_len} frames");
        assert_eq!(
            q.lock().frames.capacity(),
            initial_alloc,
            "queue buffer grew"
        );
        assert!(q.dropped_total() > 100, "only {} drops", q.dropped_total());
        assert_eq!(seen.len() as u64 + q.dropped_total(), 500);
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "frames out of order");
        assert_eq!(seen.last(), Some(&499), "newest frame was dropped");
    }

    /// A producer that waits (lockstep) beside a slow consumer: every frame arrives, in
    /// order, and the queue never holds more than its capacity.
    #[test]
    fn push_wait_loses_no_frame_and_stays_bounded() {
        let q = Arc::new(queue(2));
        let consumer = slow_consumer(&q, Duration::from_millis(1));
        let mut max_len = 0;
        for s in 0..100 {
            let mut f = frame(s);
            loop {
                match q.push_wait(f, Duration::from_millis(50)) {
                    Ok(queued) => {
                        assert!(queued, "queue closed early");
                        break;
                    }
                    Err(back) => f = back,
                }
            }
            max_len = max_len.max(q.len());
        }
        q.close();
        let seen = consumer.join().expect("consumer");
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
        assert_eq!(q.dropped_total(), 0);
        assert!(max_len <= 2, "queue held {max_len} frames");
    }

    #[test]
    fn push_wait_gives_the_frame_back_when_full_and_refuses_when_closed() {
        let q = queue(1);
        assert_eq!(q.push_wait(frame(1), Duration::ZERO).ok(), Some(true));
        let back = q.push_wait(frame(2), Duration::from_millis(5));
        assert_eq!(back.err().map(|f| f.sequence), Some(2));
        q.close();
        assert_eq!(
            q.push_wait(frame(3), Duration::from_secs(5)).ok(),
            Some(false)
        );
    }

    fn face(id: u64) -> TrackedFace {
        TrackedFace {
            id,
            bbox: [0.0, 0.0, 1.0, 1.0],
            score: 1.0,
            detection: 0,
        }
    }

    #[test]
    fn each_track_is_sampled_at_the_configured_rate() {
        let mut sampler = TrackSampler::new(&SamplingConfig::default(), MAX).expect("sampler");
        let start = Instant::now();
        let mut counts = [0u32; 2];
        // 10 s of 30 fps capture with jittery frame times; track 2 appears after 5 s.
        for k in 0..300u64 {
            let jitter = Duration::from_micros(k * 7919 % 9000);
            let at = start + Duration::from_millis(k * 1000 / 30) + jitter;
            let faces: Vec<TrackedFace> = if k < 150 {
                vec![face(1)]
            } else {
                vec![face(1), face(2)]
            };
            for f in sampler.select(at, &faces) {
                counts[(f.id - 1) as usize] += 1;
            }
        }
        assert_eq!(counts, [20, 10]);
    }

    #[test]
    fn sampling_restarts_after_a_gap_and_forgotten_tracks_free_their_slot() {
        let one = NonZeroUsize::new(1).expect("1");
        let mut sampler = TrackSampler::new(&SamplingConfig::default(), one).expect("sampler");
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // The first sample waits its stagger: 500 ms x stagger(1) (309 ms).
        let first = (500.0 * stagger(1)).ceil() as u64;
        assert!(!sampler.is_due(1, at(0)), "first sample staggered");
        assert!(!sampler.is_due(1, at(first - 1)));
        assert!(sampler.is_due(1, at(first)));
        assert!(!sampler.is_due(1, at(first + 499)));
        assert!(sampler.is_due(1, at(first + 500)));
        assert!(sampler.is_due(1, at(5000)), "after a gap");
        assert!(!sampler.is_due(1, at(5400)), "no burst to catch up");
        assert!(sampler.is_due(1, at(5500)));
        assert!(!sampler.is_due(2, at(5500)), "second track over max_tracks");
        assert_eq!(sampler.refused_total(), 1);
        sampler.forget(1);
        // Track 2's due time is set now; it is sampled once its stagger has passed.
        assert!(!sampler.is_due(2, at(5600)));
        assert!(sampler.is_due(2, at(6100)));
        assert_eq!(sampler.tracks(), 1);
    }

    #[test]
    fn faces_found_together_are_sampled_in_different_frames() {
        let mut sampler = TrackSampler::new(&SamplingConfig::default(), MAX).expect("sampler");
        let t0 = Instant::now();
        // 30 faces found in the same frame, 10 s of 10 fps at 2 Hz per face: 5 frames per
        // period, so an even spread samples 6 faces per frame; never all 30 at once.
        let faces: Vec<TrackedFace> = (1..=30).map(face).collect();
        let mut per_frame = Vec::new();
        let mut total = 0;
        for k in 0..100u64 {
            let n = sampler
                .select(t0 + Duration::from_millis(k * 100), &faces)
                .len();
            per_frame.push(n);
            total += n;
        }
        assert!((30 * 19..=30 * 20).contains(&total), "{total} samples");
        let most = per_frame.iter().max().copied().unwrap_or(0);
        assert!(
            most <= 9,
            "{most} faces sampled in one frame: {per_frame:?}"
        );
        for id in 1..=30 {
            assert!((0.0..1.0).contains(&stagger(id)));
        }
    }

    #[test]
    fn a_rate_factor_lowers_the_per_track_rate_and_one_restores_it() {
        let mut sampler = TrackSampler::new(&SamplingConfig::default(), MAX).expect("sampler");
        let t0 = Instant::now();
        let count = |sampler: &mut TrackSampler, from_ms: u64| {
            (0..100u64)
                .filter(|k| sampler.is_due(1, t0 + Duration::from_millis(from_ms + k * 100)))
                .count()
        };
        // 10 s of 10 fps: 2 Hz gives 20 samples, half the rate 10.
        assert_eq!(count(&mut sampler, 0), 20);
        sampler.set_rate_factor(0.5);
        assert_eq!(count(&mut sampler, 10_000), 10);
        sampler.set_rate_factor(1.0);
        assert_eq!(count(&mut sampler, 20_000), 20);
        sampler.set_rate_factor(f64::NAN);
        assert_eq!(count(&mut sampler, 30_000), 20, "a bad factor counts as 1");
    }

    #[test]
    fn rates_out_of_range_are_rejected() {
        for rate_hz in [0.0, -1.0, f64::NAN, 1e6] {
            let config = SamplingConfig {
                rate_hz,
                ..SamplingConfig::default()
            };
            assert!(TrackSampler::new(&config, MAX).is_err(), "{rate_hz}");
        }
    }

    #[test]
    fn a_byte_bound_drops_the_oldest_frames_too() {
        // 2x2 RGB frames are 12 bytes: 30 bytes hold two of them.
        let q = FrameQueue::with_max_bytes(NonZeroUsize::new(10).expect("10"), 30);
        for sequence in 0..4 {
            assert!(q.push(frame(sequence)));
        }
        assert_eq!((q.len(), q.dropped_total()), (2, 2));
        let Popped::Frame(oldest) = q.pop(Duration::ZERO) else {
            panic!("a frame")
        };
        assert_eq!(oldest.sequence, 2);
        let big = FrameQueue::with_max_bytes(NonZeroUsize::new(10).expect("10"), 5);
        assert!(big.push(frame(9)), "a frame over the bound passes alone");
        assert_eq!(big.len(), 1);
    }
}
