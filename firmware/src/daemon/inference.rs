//! The inference thread: each frame through the stages in flow order, one engagement
//! record per report interval into the outbox.

use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant, SystemTime};

use crate::daemon::build::{ModelParts, Parts, SourceOpener};
use crate::daemon::metrics::{Metrics, Stage};
use crate::daemon::pace::Pace;
use crate::daemon::publish::{lock_outbox, SharedOutbox, SinkMessage};
use crate::daemon::running::Flags;
use crate::daemon::PipelineError;
use crate::pipeline::aggregate::{Aggregate, Aggregator, EngagementRecord, RecordContext};
use crate::pipeline::crop::ContextBoxes;
use crate::pipeline::detect::{Detection, FaceDetector, LookSchedule};
use crate::pipeline::error::ClassifyError;
use crate::pipeline::frame::Frame;
use crate::pipeline::model::bundle::NUM_CLASSES;
use crate::pipeline::model::classify::{softmax, TrackInput};
use crate::pipeline::schedule::{FrameQueue, Popped, TrackSampler};
use crate::pipeline::source::FrameSource;
use crate::pipeline::track::{TrackUpdate, TrackedFace, Tracker};

/// The inference thread's stages, each built once from its checked settings.
pub(super) struct Stages {
    detector: Box<dyn FaceDetector>,
    /// Full looks between looks near the tracks only.
    looks: LookSchedule,
    tracker: Tracker,
    sampler: TrackSampler,
    contexts: ContextBoxes,
    /// The classifier and calibration; none under `presence`.
    model: Option<ModelParts>,
    pub(super) aggregator: Aggregator,
    /// The thermal factor applied to the sampler's rate.
    rate_factor: f32,
}

/// A pipeline's source: opened at build time, or not yet (privacy), and how to open it.
pub(super) type SourceParts = (Option<Box<dyn FrameSource>>, SourceOpener);

impl Stages {
    /// The stages of `parts`, and its source for the capture thread.
    pub(super) fn new(parts: Parts) -> (Stages, SourceParts) {
        let stages = Stages {
            detector: parts.detector,
            looks: LookSchedule::new(parts.full_every),
            tracker: parts.tracker,
            sampler: parts.sampler,
            contexts: parts.contexts,
            model: parts.model,
            aggregator: parts.aggregator,
            rate_factor: 1.0,
        };
        (stages, (parts.source, parts.open_source))
    }

    /// Applies the thermal sampling-rate factor.
    pub(super) fn set_rate_factor(&mut self, factor: f32) {
        if factor != self.rate_factor {
            tracing::info!(factor, "per-track sampling rate factor");
            self.rate_factor = factor;
            self.sampler.set_rate_factor(f64::from(factor));
        }
    }

    /// Forgets every track (after a pause: no features from before it may be mixed in).
    pub(super) fn reset_tracks(&mut self) {
        self.tracker.reset();
        self.looks.restart();
        self.sampler.reset();
        if let Some(m) = self.model.as_mut() {
            m.classifier.reset();
        }
    }

    /// One frame through the stages, in flow order: detections -> track update -> samples
    /// -> track inputs -> results -> aggregate. A frame whose detection or classification
    /// fails is counted and skipped; a model that fails ends the pipeline.
    pub(super) fn process(
        &mut self,
        frame: &Frame,
        metrics: &Metrics,
    ) -> Result<(), PipelineError> {
        let start = Instant::now();
        metrics.record_latency(
            Stage::Queue,
            start.saturating_duration_since(frame.captured_at),
        );
        let regions = self.tracker.expected_boxes();
        let full = self.looks.full_look(regions.len());
        let near: &[[f32; 4]] = if full { &[] } else { &regions };
        let Some(detections) = self.detect(frame, near, metrics) else {
            if full {
                // A failed full look is not a look: the next frame gets one.
                self.looks.restart();
            }
            return Ok(());
        };
        let detected = Instant::now();
        let update = self.track(&detections, full, metrics);
        let samples = self.sample(frame, &update);
        let tracked = Instant::now();
        let inputs = self.crop(frame, &samples);
        let results = self.classify(frame, &inputs, metrics)?;
        self.aggregate(&results, &update);
        let done = Instant::now();
        self.report_drops(metrics);
        metrics.frames_processed.fetch_add(1, Ordering::Relaxed);
        metrics.record_latency(Stage::Detect, detected - start);
        metrics.record_latency(Stage::Track, tracked - detected);
        metrics.record_latency(Stage::Classify, done - tracked);
        metrics.record_latency(Stage::Frame, done - start);
        tracing::trace!(
            sequence = frame.sequence,
            faces = update.faces.len(),
            sampled = samples.len(),
            "frame"
        );
        Ok(())
    }

    /// Face boxes of the frame, from a full look, or from looks near `regions` only when
    /// there are any; none (counted) if the detector fails on it.
    fn detect(
        &mut self,
        frame: &Frame,
        regions: &[[f32; 4]],
        metrics: &Metrics,
    ) -> Option<Vec<Detection>> {
        let found = if regions.is_empty() {
            self.detector.detect(frame)
        } else {
            self.detector.detect_near(frame, regions)
        };
        match found {
            Ok(d) => Some(d),
            Err(e) => {
                count_frame_error(metrics, &e, "face detection failed; frame skipped");
                None
            }
        }
    }

    /// Tracks the detections; ended tracks are forgotten by every later stage.
    fn track(&mut self, detections: &[Detection], full: bool, metrics: &Metrics) -> TrackUpdate {
        let update = if full {
            self.tracker.update(detections)
        } else {
            self.tracker.update_near(detections)
        };
        for id in &update.ended {
            self.sampler.forget(*id);
            if let Some(m) = self.model.as_mut() {
                m.classifier.forget(*id);
            }
        }
        metrics
            .tracks_active
            .store(update.faces.len(), Ordering::Relaxed);
        update
    }

    /// The tracked faces whose sample is due in this frame.
    fn sample(&mut self, frame: &Frame, update: &TrackUpdate) -> Vec<TrackedFace> {
        self.sampler.select(frame.captured_at, &update.faces)
    }

    /// Each sampled face with its context box (none under `presence`: nothing is cropped).
    fn crop(&self, frame: &Frame, samples: &[TrackedFace]) -> Vec<TrackInput> {
        if self.model.is_none() {
            return Vec::new();
        }
        samples
            .iter()
            .map(|f| self.contexts.track_input(f, frame.width(), frame.height()))
            .collect()
    }

    /// Crops, encodes and windows the inputs; the calibrated probabilities of every window
    /// that became full.
    fn classify(
        &mut self,
        frame: &Frame,
        inputs: &[TrackInput],
        metrics: &Metrics,
    ) -> Result<Vec<(u64, [f32; NUM_CLASSES])>, PipelineError> {
        let Some(m) = self.model.as_mut() else {
            return Ok(Vec::new());
        };
        let encoder_before = m.classifier.encoder_busy();
        let pushed = m.classifier.push_frame(frame.rgb(), inputs);
        let encoded = m.classifier.encoder_busy().saturating_sub(encoder_before);
        if !encoded.is_zero() {
            metrics.record_latency(Stage::Encode, encoded);
        }
        match pushed {
            Ok(results) => {
                metrics
                    .results
                    .fetch_add(results.len() as u64, Ordering::Relaxed);
                Ok(results
                    .iter()
                    .map(|r| {
                        let probabilities = match &m.calibration {
                            Some(c) => softmax(&c.apply(&r.logits)),
                            None => r.probabilities,
                        };
                        (r.track_id, probabilities)
                    })
                    .collect())
            }
            Err(ClassifyError::Inference(e)) => Err(e.into()),
            Err(e) => {
                count_frame_error(metrics, &e, "frame not classified");
                Ok(Vec::new())
            }
        }
    }

    /// Tallies the results, then the faces visible in this frame, into the interval's
    /// figures.
    fn aggregate(&mut self, results: &[(u64, [f32; NUM_CLASSES])], update: &TrackUpdate) {
        for (track_id, probabilities) in results {
            self.aggregator.observe_result(*track_id, probabilities);
        }
        self.aggregator
            .observe_frame(update.faces.iter().map(|face| face.id));
    }

    /// Publishes the stages' drop counters for `stats`.
    fn report_drops(&self, metrics: &Metrics) {
        let d = &metrics.dropped;
        d.track
            .store(self.tracker.refused_total(), Ordering::Relaxed);
        d.sample
            .store(self.sampler.refused_total(), Ordering::Relaxed);
        d.window.store(
            self.model
                .as_ref()
                .map_or(0, |m| m.classifier.evicted_total()),
            Ordering::Relaxed,
        );
        d.aggregate
            .store(self.aggregator.untallied_total(), Ordering::Relaxed);
    }
}

/// Counts a frame that a stage skipped; logs the first and then every power of two.
fn count_frame_error(metrics: &Metrics, error: &dyn std::fmt::Display, what: &str) {
    let n = metrics.frame_errors.fetch_add(1, Ordering::Relaxed) + 1;
    if n.is_power_of_two() {
        tracing::warn!(error = %error, count = n, "{what}");
    }
}

/// Identity and policy stamped on each record by the inference thread.
#[derive(Debug, Clone)]
pub(super) struct RecordStamp {
    pub(super) site: String,
    pub(super) room: String,
    pub(super) device: String,
    pub(super) model_id: Option<String>,
    pub(super) report_interval: Duration,
}

/// The report interval being tallied: when it began, and the source's frame count then.
struct Interval {
    start: Instant,
    start_wall: SystemTime,
    captured_before: u64,
    /// Frames taken from the queue in this interval (lockstep: the frames it captured, the
    /// capture thread being up to a queue ahead).
    popped: u64,
    lockstep: bool,
}

impl Interval {
    fn begin(start: Instant, pace: &Pace, metrics: &Metrics) -> Self {
        Interval {
            start,
            start_wall: pace.wall(start),
            captured_before: metrics.frames_captured.load(Ordering::Relaxed),
            popped: 0,
            lockstep: pace.is_lockstep(),
        }
    }

    /// Frames the source captured since the interval began (analysed or dropped).
    fn captured(&self, metrics: &Metrics) -> u64 {
        if self.lockstep {
            return self.popped;
        }
        metrics
            .frames_captured
            .load(Ordering::Relaxed)
            .saturating_sub(self.captured_before)
    }
}

/// Writes one interval's record to the outbox and wakes the sink.
#[allow(clippy::too_many_arguments)]
fn publish_interval(
    aggregator: &mut Aggregator,
    interval: &Interval,
    end: SystemTime,
    stamp: &RecordStamp,
    outbox: &SharedOutbox,
    sink: &SyncSender<SinkMessage>,
    metrics: &Metrics,
) {
    let aggregate = aggregator.finish(interval.captured(metrics));
    let settings = aggregator.settings();
    let context = RecordContext {
        site: &stamp.site,
        room: &stamp.room,
        device: &stamp.device,
        profile: settings.profile,
        min_group_size: settings.min_group_size,
        model_id: stamp.model_id.as_deref(),
    };
    let (suppressed, students) = match &aggregate {
        Aggregate::Published(f) => (false, f.students),
        Aggregate::Suppressed(_) => (true, 0),
    };
    let appended = lock_outbox(outbox).append(|seq| {
        let record = EngagementRecord::new(&context, seq, interval.start_wall, end, aggregate);
        serde_json::to_vec(&record).expect("an engagement record always serialises")
    });
    match appended {
        Ok(seq) => {
            tracing::info!(seq, suppressed, students, "interval recorded");
            let _ = sink.try_send(SinkMessage::OutboxReady);
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot write an engagement record to the outbox; interval lost")
        }
    }
}

/// The inference thread: frames from the queue through the stages; one record per interval.
/// Live, an interval ends by the clock; in lockstep, by the times of the frames (the first
/// frame at or past its end closes it), so that the figures do not depend on speed.
#[allow(clippy::too_many_arguments)]
pub(super) fn inference_loop(
    mut stages: Stages,
    queue: &FrameQueue,
    flags: &Flags,
    pace: Pace,
    stamp: &RecordStamp,
    outbox: &SharedOutbox,
    sink: &SyncSender<SinkMessage>,
    metrics: &Metrics,
) -> Result<(), PipelineError> {
    let publish = |aggregator: &mut Aggregator, interval: &Interval, end: Instant| {
        let end = pace.wall(end);
        publish_interval(aggregator, interval, end, stamp, outbox, sink, metrics);
    };
    let mut interval = Interval::begin(pace.start(), &pace, metrics);
    // In lockstep after a pause: the next interval begins at the next frame.
    let mut begin_at_next_frame = false;
    // In lockstep, the stream's time: the last frame's.
    let mut stream_now = interval.start;
    let mut was_paused = false;
    loop {
        stages.set_rate_factor(flags.sampling_factor());
        let paused = flags.paused.load(Ordering::Relaxed);
        let now = |stream_now: Instant| {
            if pace.is_lockstep() {
                stream_now
            } else {
                Instant::now()
            }
        };
        if paused && !was_paused {
            publish(&mut stages.aggregator, &interval, now(stream_now));
            stages.reset_tracks();
            tracing::info!("paused: no frame is captured or analysed");
        } else if !paused && was_paused {
            if pace.is_lockstep() {
                begin_at_next_frame = true;
            } else {
                interval = Interval::begin(Instant::now(), &pace, metrics);
            }
            tracing::info!("resumed");
        }
        was_paused = paused;
        let next_report = interval.start + stamp.report_interval;
        let wait = if pace.is_lockstep() {
            Duration::from_millis(100)
        } else {
            next_report
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100))
        };
        match queue.pop(wait) {
            Popped::Frame(frame) if !paused => {
                if pace.is_lockstep() {
                    stream_now = frame.captured_at;
                    if std::mem::take(&mut begin_at_next_frame) {
                        interval = Interval::begin(frame.captured_at, &pace, metrics);
                    }
                    while frame.captured_at >= interval.start + stamp.report_interval {
                        let end = interval.start + stamp.report_interval;
                        publish(&mut stages.aggregator, &interval, end);
                        interval = Interval::begin(end, &pace, metrics);
                    }
                }
                interval.popped += 1;
                stages.process(&frame, metrics)?
            }
            Popped::Frame(_) | Popped::Empty => {}
            Popped::Closed => {
                if !paused {
                    publish(&mut stages.aggregator, &interval, now(stream_now));
                }
                return Ok(());
            }
        }
        if !pace.is_lockstep() && !paused && Instant::now() >= next_report {
            publish(&mut stages.aggregator, &interval, next_report);
            interval = Interval::begin(next_report, &pace, metrics);
        }
    }
}
