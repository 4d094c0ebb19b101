//! A running pipeline: its capture and inference threads, their shared flags, and how they
//! end.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::daemon::board::SharedPrivacy;
use crate::daemon::build::Parts;
use crate::daemon::capture::capture_loop;
use crate::daemon::capture::Capture;
use crate::daemon::capture::CaptureEnd;
use crate::daemon::config::ValidatedConfig;
use crate::daemon::fleet::{BackendStatus, ModelInfo};
use crate::daemon::inference::inference_loop;
use crate::daemon::inference::RecordStamp;
use crate::daemon::inference::Stages;
use crate::daemon::pace::Pace;
use crate::daemon::publish::{SharedOutbox, SinkMessage};
use crate::daemon::DaemonError;
use crate::daemon::Metrics;
use crate::daemon::PipelineError;
use crate::pipeline::schedule::FrameQueue;
use crate::pipeline::source::SourceError;

/// Shared flags of one pipeline.
#[derive(Debug, Clone)]
pub(super) struct Flags {
    pub(super) stop: Arc<AtomicBool>,
    pub(super) paused: Arc<AtomicBool>,
    /// The thermal sampling-rate factor, as `f32` bits (set by the supervisor).
    pub(super) sampling_factor: Arc<AtomicU32>,
}

impl Flags {
    pub(super) fn new(paused: bool) -> Self {
        Flags {
            stop: Arc::new(AtomicBool::new(false)),
            paused: Arc::new(AtomicBool::new(paused)),
            sampling_factor: Arc::new(AtomicU32::new(1.0f32.to_bits())),
        }
    }

    pub(super) fn sampling_factor(&self) -> f32 {
        f32::from_bits(self.sampling_factor.load(Ordering::Relaxed))
    }
}

/// A running pipeline: its threads and flags.
pub(super) struct Pipeline {
    pub(super) flags: Flags,
    pub(super) queue: Arc<FrameQueue>,
    pub(super) capture: JoinHandle<Result<CaptureEnd, SourceError>>,
    pub(super) inference: JoinHandle<Result<(), PipelineError>>,
    pub(super) model_info: Option<ModelInfo>,
    pub(super) backend: Option<BackendStatus>,
}

/// How a pipeline ended.
pub(super) enum PipelineEnd {
    SourceEnded,
    Stopped,
    Failed(PipelineError),
}

impl Pipeline {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn spawn(
        parts: Parts,
        config: &ValidatedConfig,
        paused: bool,
        privacy: Option<SharedPrivacy>,
        outbox: &SharedOutbox,
        sink: &SyncSender<SinkMessage>,
        metrics: &Arc<Metrics>,
    ) -> Result<Pipeline, DaemonError> {
        let c = config.config();
        let model_info = parts.model_info.clone();
        let backend = parts.backend.clone();
        let stamp = RecordStamp {
            site: c.device.site.clone(),
            room: c.device.room.clone(),
            device: c.device.id.clone(),
            model_id: model_info.as_ref().map(|m| m.id.clone()),
            report_interval: config.report_interval(),
        };
        let (stages, (source, open_source)) = Stages::new(parts);
        let queue = Arc::new(FrameQueue::with_max_bytes(
            c.sampling.queue_frames,
            crate::daemon::config::remote::queue_byte_budget(c),
        ));
        let flags = Flags::new(paused);
        let pace = Pace::new(c.source.lockstep, c.source.fps);
        // Frames dropped by earlier pipelines' queues stay counted.
        let capture = {
            let (queue, flags, metrics) = (queue.clone(), flags.clone(), metrics.clone());
            let capture = Capture {
                source,
                open_source,
                privacy,
                fps: c.source.fps,
                max_frames: c.source.max_frames.map(|m| m.get()),
                pace,
            };
            std::thread::Builder::new()
                .name("caer-capture".into())
                .spawn(move || capture_loop(capture, &queue, &flags, &metrics))
                .map_err(|source| DaemonError::Spawn {
                    name: "capture",
                    source,
                })?
        };
        let inference = {
            let (queue, flags, metrics) = (queue.clone(), flags.clone(), metrics.clone());
            let (outbox, sink) = (outbox.clone(), sink.clone());
            std::thread::Builder::new()
                .name("caer-inference".into())
                .spawn(move || {
                    inference_loop(
                        stages, &queue, &flags, pace, &stamp, &outbox, &sink, &metrics,
                    )
                })
                .map_err(|source| DaemonError::Spawn {
                    name: "inference",
                    source,
                })?
        };
        Ok(Pipeline {
            flags,
            queue,
            capture,
            inference,
            model_info,
            backend,
        })
    }

    pub(super) fn is_finished(&self) -> bool {
        self.inference.is_finished()
    }

    pub(super) fn set_paused(&self, paused: bool) {
        self.flags.paused.store(paused, Ordering::Relaxed);
    }

    pub(super) fn set_sampling_factor(&self, factor: f32) {
        self.flags
            .sampling_factor
            .store(factor.to_bits(), Ordering::Relaxed);
    }

    /// Stops (if still running) and joins both threads.
    pub(super) fn stop(self, metrics: &Metrics) -> Result<PipelineEnd, DaemonError> {
        self.flags.stop.store(true, Ordering::Relaxed);
        let capture = self
            .capture
            .join()
            .map_err(|_| DaemonError::Panicked("capture"))?;
        // The capture thread closed the queue; the inference thread records the last interval.
        self.queue.close();
        let inference = self
            .inference
            .join()
            .map_err(|_| DaemonError::Panicked("inference"))?;
        metrics.retire_pipeline(self.queue.dropped_total());
        Ok(match (capture, inference) {
            (Err(e), _) => PipelineEnd::Failed(e.into()),
            (_, Err(e)) => PipelineEnd::Failed(e),
            (Ok(CaptureEnd::SourceEnded), Ok(())) => PipelineEnd::SourceEnded,
            (Ok(CaptureEnd::Stopped), Ok(())) => PipelineEnd::Stopped,
        })
    }
}
