//! The inference thread: each frame through the stages in flow order, one engagement
//! record per report interval into the outbox.

use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant, SystemTime};

use crate::daemon::build::setting_error;
use crate::daemon::build::ModelParts;
use crate::daemon::build::Parts;
use crate::daemon::build::SourceOpener;
use crate::daemon::publish::{lock_outbox, SharedOutbox, SinkMessage};
use crate::daemon::running::Flags;
use crate::daemon::BuildError;
use crate::daemon::Metrics;
use crate::daemon::PipelineError;
use crate::pipeline::aggregate::{Aggregate, Aggregator, EngagementRecord, RecordContext};
use crate::pipeline::crop::ContextBoxes;
use crate::pipeline::detect::FaceDetector;
use crate::pipeline::error::ClassifyError;
use crate::pipeline::model::classify::{softmax, StreamingClassifier};
use crate::pipeline::schedule::{FrameQueue, Popped, SamplerConfig, TrackSampler};
use crate::pipeline::source::FrameSource;
use crate::pipeline::track::{Tracker, TrackerConfig};

/// The inference thread's stages.
pub(super) struct Stages {
    pub(super) detector: Box<dyn FaceDetector>,
    pub(super) tracker_config: TrackerConfig,
    pub(super) tracker: Tracker,
    pub(super) sampler_config: SamplerConfig,
    pub(super) sampler: TrackSampler,
    pub(super) contexts: ContextBoxes,
    pub(super) model: Option<ModelParts>,
    pub(super) classifier: Option<StreamingClassifier>,
    pub(super) aggregator: Aggregator,
    /// The thermal factor applied to the sampler's rate.
    pub(super) rate_factor: f32,
}

/// A pipeline's source: opened at build time, or not yet (privacy), and how to open it.
pub(super) type SourceParts = (Option<Box<dyn FrameSource>>, SourceOpener);

impl Stages {
    pub(super) fn new(parts: Parts) -> Result<(Stages, SourceParts), BuildError> {
        let tracker = Tracker::new(parts.tracker.clone()).map_err(setting_error)?;
        let sampler = TrackSampler::new(&parts.sampler).map_err(setting_error)?;
        let classifier = match &parts.model {
            Some(m) => Some(StreamingClassifier::new(m.backend.clone(), &m.streaming)?),
            None => None,
        };
        let stages = Stages {
            detector: parts.detector,
            tracker_config: parts.tracker,
            tracker,
            sampler_config: parts.sampler,
            sampler,
            contexts: parts.contexts,
            model: parts.model,
            classifier,
            aggregator: Aggregator::new(parts.aggregator),
            rate_factor: 1.0,
        };
        Ok((stages, (parts.source, parts.open_source)))
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
    pub(super) fn reset_tracks(&mut self) -> Result<(), PipelineError> {
        // These settings were accepted by the same constructors when the pipeline was built.
        if let Ok(tracker) = Tracker::new(self.tracker_config.clone()) {
            self.tracker = tracker;
        }
        if let Ok(sampler) = TrackSampler::new(&self.sampler_config) {
            self.sampler = sampler;
            self.sampler.set_rate_factor(f64::from(self.rate_factor));
        }
        if let Some(m) = &self.model {
            match StreamingClassifier::new(m.backend.clone(), &m.streaming) {
                Ok(c) => self.classifier = Some(c),
                Err(ClassifyError::Inference(e)) => return Err(e.into()),
                Err(e) => tracing::error!(error = %e, "cannot reset the classifier"),
            }
        }
        Ok(())
    }

    /// Runs one frame through detect, track, sample, crop and classify.
    pub(super) fn process(
        &mut self,
        frame: &crate::pipeline::frame::Frame,
        metrics: &Metrics,
    ) -> Result<(), PipelineError> {
        let start = Instant::now();
        let queued = start.saturating_duration_since(frame.captured_at);
        let detections = match self.detector.detect(frame) {
            Ok(d) => d,
            Err(e) => {
                let n = metrics.frame_errors.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(error = %e, count = n, "face detection failed; frame skipped");
                }
                return Ok(());
            }
        };
        let detected = Instant::now();
        let update = self.tracker.update(&detections);
        for id in &update.ended {
            self.sampler.forget(*id);
            if let Some(classifier) = self.classifier.as_mut() {
                classifier.forget(*id);
            }
        }
        for face in &update.faces {
            self.aggregator.observe_seen(face.id);
        }
        metrics
            .tracks_active
            .store(update.faces.len(), Ordering::Relaxed);
        let due = self.sampler.select(frame.captured_at, &update.faces);
        for face in &due {
            self.aggregator.observe_sample(face.id);
        }
        let tracked = Instant::now();
        if let Some(classifier) = self.classifier.as_mut() {
            let inputs: Vec<_> = due
                .iter()
                .map(|f| self.contexts.track_input(f, frame.width(), frame.height()))
                .collect();
            match classifier.push_frame(frame.rgb(), &inputs) {
                Ok(results) => {
                    metrics
                        .results
                        .fetch_add(results.len() as u64, Ordering::Relaxed);
                    let calibration = self.model.as_ref().and_then(|m| m.calibration.as_ref());
                    for r in &results {
                        let probabilities = match calibration {
                            Some(c) => softmax(&c.apply(&r.logits)),
                            None => r.probabilities,
                        };
                        self.aggregator.observe_result(r.track_id, &probabilities);
                    }
                }
                Err(ClassifyError::Inference(e)) => return Err(e.into()),
                Err(e) => {
                    let n = metrics.frame_errors.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_power_of_two() {
                        tracing::warn!(error = %e, count = n, "frame not classified");
                    }
                }
            }
        }
        let done = Instant::now();
        metrics.frames_processed.fetch_add(1, Ordering::Relaxed);
        metrics.record_latencies([
            queued,
            detected - start,
            tracked - detected,
            done - tracked,
            done - start,
        ]);
        tracing::trace!(
            sequence = frame.sequence,
            faces = update.faces.len(),
            sampled = due.len(),
            "frame"
        );
        Ok(())
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

/// Writes one interval's record to the outbox and wakes the sink.
pub(super) fn publish_interval(
    aggregator: &mut Aggregator,
    stamp: &RecordStamp,
    start: SystemTime,
    outbox: &SharedOutbox,
    sink: &SyncSender<SinkMessage>,
) {
    let aggregate = aggregator.finish();
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
    let end = SystemTime::now();
    let appended = lock_outbox(outbox).append(|seq| {
        let record = EngagementRecord::new(&context, seq, start, end, aggregate);
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
pub(super) fn inference_loop(
    mut stages: Stages,
    queue: &FrameQueue,
    flags: &Flags,
    stamp: &RecordStamp,
    outbox: &SharedOutbox,
    sink: &SyncSender<SinkMessage>,
    metrics: &Metrics,
) -> Result<(), PipelineError> {
    let mut interval_start = (Instant::now(), SystemTime::now());
    let mut was_paused = false;
    loop {
        stages.set_rate_factor(flags.sampling_factor());
        let paused = flags.paused.load(Ordering::Relaxed);
        if paused && !was_paused {
            publish_interval(
                &mut stages.aggregator,
                stamp,
                interval_start.1,
                outbox,
                sink,
            );
            stages.reset_tracks()?;
            tracing::info!("paused: no frame is captured or analysed");
        } else if !paused && was_paused {
            interval_start = (Instant::now(), SystemTime::now());
            tracing::info!("resumed");
        }
        was_paused = paused;
        let next_report = interval_start.0 + stamp.report_interval;
        let wait = next_report
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        match queue.pop(wait) {
            Popped::Frame(frame) if !paused => stages.process(&frame, metrics)?,
            Popped::Frame(_) | Popped::Empty => {}
            Popped::Closed => {
                if !paused {
                    publish_interval(
                        &mut stages.aggregator,
                        stamp,
                        interval_start.1,
                        outbox,
                        sink,
                    );
                }
                return Ok(());
            }
        }
        if !paused && Instant::now() >= next_report {
            publish_interval(
                &mut stages.aggregator,
                stamp,
                interval_start.1,
                outbox,
                sink,
            );
            interval_start = (next_report, SystemTime::now());
        }
    }
}
