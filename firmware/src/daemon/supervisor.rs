//! The supervisor: status, stats, control requests (config/set, cmd), safe mode, the
//! thermal guard and the privacy controller, around one running pipeline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::daemon::board::{lock_privacy, SharedPrivacy, Thermal};
use crate::daemon::build::build_parts;
use crate::daemon::build::Parts;
use crate::daemon::config::{ConfigIssue, DaemonConfig, ValidatedConfig};
use crate::daemon::fleet;
use crate::daemon::fleet::{
    BackendStatus, CmdAck, Command, ConfigAck, ControlRequest, ModelInfo, OutboxFigures, RunState,
    StatsPayload, StatusPayload,
};
use crate::daemon::metrics::memory_rss_bytes;
use crate::daemon::publish::{lock_outbox, ReplyTopic, SharedOutbox, SinkError, SinkMessage};
use crate::daemon::running::Pipeline;
use crate::daemon::running::PipelineEnd;
use crate::daemon::state::{accumulate_patch, PersistentState};
use crate::daemon::state_dir::StateDir;
use crate::daemon::Metrics;
use crate::daemon::SAFE_MODE_RETRY;
use crate::daemon::THERMAL_POLL;
use crate::daemon::{DaemonError, Exit};

/// What became of one remote change: applied, or the reasons it was not.
pub(super) type RemoteResult = (Option<String>, Result<(), Vec<ConfigIssue>>);

/// The supervisor's view of the daemon.
pub(super) struct Supervisor {
    pub(super) config: ValidatedConfig,
    pub(super) persistent: PersistentState,
    pub(super) state_dir: StateDir,
    /// Why the daemon is paused when it did not choose to be (a damaged state file).
    pub(super) paused_reason: Option<String>,
    /// When the last remote change was applied (the rate limit).
    pub(super) last_remote_change: Option<Instant>,
    pub(super) outbox: SharedOutbox,
    pub(super) sink: SyncSender<SinkMessage>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) mqtt_connects: Option<Arc<AtomicU64>>,
    pub(super) pipeline: Option<Pipeline>,
    pub(super) state: RunState,
    pub(super) reason: Option<String>,
    pub(super) model_info: Option<ModelInfo>,
    pub(super) backend: Option<BackendStatus>,
    pub(super) started: Instant,
    pub(super) started_at: SystemTime,
    pub(super) last_stats: (Instant, u64, u64),
    pub(super) next_stats: Instant,
    pub(super) next_retry: Option<Instant>,
    /// The privacy LED and switch, shared with each pipeline's capture thread.
    pub(super) privacy: Option<SharedPrivacy>,
    /// The thermal guard; none when `thermal.enabled` is false.
    pub(super) thermal: Option<Thermal>,
    pub(super) next_thermal: Instant,
    /// The model bundle being fetched, if any.
    pub(super) update: Option<crate::daemon::update::transfer::Transfer>,
    /// `model.bundle` of the file configuration (what a rollback to it loads).
    pub(super) configured_bundle: std::path::PathBuf,
    /// When the running bundle was switched to.
    pub(super) switched_at: Option<Instant>,
    /// A model switch whose pipeline is being built.
    pub(super) switching: Option<crate::daemon::update::PendingSwitch>,
    /// Since when the current pipeline runs (a bundle's trial needs one long run).
    pub(super) running_since: Option<Instant>,
}

impl Supervisor {
    /// The supervisor of a daemon started at `started`, before any pipeline runs.
    pub(super) fn new(
        config: ValidatedConfig,
        persistent: PersistentState,
        state_dir: StateDir,
        outbox: SharedOutbox,
        sink: SyncSender<SinkMessage>,
        started: Instant,
    ) -> Result<Supervisor, DaemonError> {
        Ok(Supervisor {
            persistent,
            state_dir,
            paused_reason: None,
            last_remote_change: None,
            outbox,
            sink,
            metrics: Arc::new(Metrics::new()),
            mqtt_connects: None,
            pipeline: None,
            state: RunState::Starting,
            reason: None,
            model_info: None,
            backend: None,
            started,
            started_at: SystemTime::now(),
            last_stats: (started, 0, 0),
            next_stats: started + config.stats_interval(),
            next_retry: None,
            privacy: open_privacy(config.config())?,
            thermal: open_thermal(config.config()),
            next_thermal: started,
            update: None,
            configured_bundle: config.config().model.bundle.clone(),
            switched_at: None,
            switching: None,
            running_since: None,
            config,
        })
    }

    /// One turn of the run loop after control requests: a pipeline that ended, the safe-mode
    /// retry, the thermal poll and the stats. `Some` when the daemon should stop.
    pub(super) fn step(&mut self) -> Result<Option<Exit>, DaemonError> {
        if self.pipeline.as_ref().is_some_and(Pipeline::is_finished) {
            match self.stop_pipeline()? {
                Some(PipelineEnd::SourceEnded) => {
                    tracing::info!("source ended; stopping");
                    return Ok(Some(Exit::SourceEnded));
                }
                Some(PipelineEnd::Failed(reason)) => self.enter_safe_mode(reason.to_string())?,
                Some(PipelineEnd::Stopped) | None => {}
            }
        }
        let now = Instant::now();
        // A switch being built replaces the pipeline anyway (and may hold the camera).
        if self.next_retry.is_some_and(|t| now >= t) && self.switching.is_none() {
            self.start_pipeline()?;
        }
        if now >= self.next_thermal {
            self.poll_thermal();
        }
        if now >= self.next_stats {
            self.send_stats()?;
        }
        self.update_tick();
        self.switch_tick();
        self.trial_tick();
        Ok(None)
    }

    /// Stops the pipeline (it records the last partial interval), sends the last stats, then
    /// asks the sink to deliver what it can within `drain` and publish the final status.
    pub(super) fn shutdown(&mut self, drain: Duration) -> Result<(), DaemonError> {
        if let Err(e) = caer_board::systemd::stopping() {
            tracing::debug!(error = %e, "cannot notify systemd");
        }
        self.set_state(RunState::Stopping, None)?;
        self.abandon_switch();
        if let Some(PipelineEnd::Failed(reason)) = self.stop_pipeline()? {
            tracing::warn!(%reason, "the pipeline had failed");
        }
        self.send_stats()?;
        let status = self.offline_status();
        self.send(SinkMessage::Shutdown { drain, status })
    }

    /// The status payload the broker shows once this device is gone (the last will).
    pub(super) fn offline_status(&self) -> Vec<u8> {
        self.status_payload(RunState::Offline)
    }

    pub(super) fn status_payload(&self, state: RunState) -> Vec<u8> {
        let d = &self.config.config().device;
        let status = StatusPayload {
            schema: fleet::STATUS_SCHEMA,
            state,
            reason: self.reason.clone(),
            version: env!("CARGO_PKG_VERSION"),
            site: d.site.clone(),
            room: d.room.clone(),
            device: d.id.clone(),
            model: self.model_info.clone(),
            backend: self.backend.as_ref().map(|b| b.name),
            backend_reason: self.backend.as_ref().map(|b| b.reason.clone()),
            profile: self.config.config().policy.profile,
            calibration_version: self
                .model_info
                .as_ref()
                .and_then(|m| m.calibration_version.clone()),
            uptime_s: self.started.elapsed().as_secs(),
            started_at: crate::pipeline::aggregate::rfc3339(self.started_at),
            remote_config: self.persistent.remote_config.is_some(),
        };
        serde_json::to_vec(&status).expect("a status always serialises")
    }

    pub(super) fn set_state(
        &mut self,
        state: RunState,
        reason: Option<String>,
    ) -> Result<(), DaemonError> {
        self.state = state;
        self.reason = reason;
        let line = match &self.reason {
            Some(r) => format!("{state:?}: {r}"),
            None => format!("{state:?}"),
        };
        if let Err(e) = caer_board::systemd::status(&line) {
            tracing::debug!(error = %e, "cannot notify systemd");
        }
        let payload = self.status_payload(state);
        self.send(SinkMessage::Status(payload))
    }

    pub(super) fn send(&self, message: SinkMessage) -> Result<(), DaemonError> {
        self.sink.send(message).map_err(|_| DaemonError::Sink {
            kind: "output",
            source: SinkError::Disconnected,
        })
    }

    /// Hands an ack to the sink. Waits while its channel is full (the sink drains it within
    /// a tick, and never waits on the supervisor): every request gets its answer.
    pub(super) fn reply(&self, topic: ReplyTopic, payload: Vec<u8>) {
        if self.sink.send(SinkMessage::Reply(topic, payload)).is_err() {
            tracing::warn!("the sink is gone; a control reply was dropped");
        }
    }

    /// Builds and starts the pipeline for the current configuration, or enters safe mode.
    pub(super) fn start_pipeline(&mut self) -> Result<(), DaemonError> {
        self.set_state(RunState::Starting, None)?;
        match build_parts(&self.config) {
            Ok(parts) => self.launch(parts),
            Err(e) => self.enter_safe_mode(e.to_string()),
        }
    }

    pub(super) fn launch(&mut self, parts: Parts) -> Result<(), DaemonError> {
        let pipeline = Pipeline::spawn(
            parts,
            &self.config,
            self.persistent.paused,
            self.privacy.clone(),
            &self.outbox,
            &self.sink,
            &self.metrics,
        )?;
        pipeline.set_sampling_factor(self.sampling_factor());
        self.model_info = pipeline.model_info.clone();
        self.backend = pipeline.backend.clone();
        self.pipeline = Some(pipeline);
        self.running_since = Some(Instant::now());
        self.next_retry = None;
        let c = self.config.config();
        tracing::info!(
            profile = %c.policy.profile,
            model = self.model_info.as_ref().map_or("none", |m| m.id.as_str()),
            report_interval_s = c.report.interval_secs.get(),
            min_group_size = c.policy.min_group_size.get(),
            "pipeline running"
        );
        self.set_run_state()
    }

    /// Running, or paused (with the reason when the daemon did not choose to pause).
    fn set_run_state(&mut self) -> Result<(), DaemonError> {
        if self.persistent.paused {
            let reason = self.paused_reason.clone();
            self.set_state(RunState::Paused, reason)
        } else {
            self.set_state(RunState::Running, None)
        }
    }

    /// The thermal sampling-rate factor now (1 without a thermal guard).
    pub(super) fn sampling_factor(&self) -> f32 {
        self.thermal.as_ref().map_or(1.0, Thermal::sampling_factor)
    }

    /// Polls the thermal guard and passes its factor on to the pipeline.
    pub(super) fn poll_thermal(&mut self) {
        self.next_thermal = Instant::now() + THERMAL_POLL;
        if let Some(thermal) = &mut self.thermal {
            thermal.poll();
        }
        if let Some(p) = &self.pipeline {
            p.set_sampling_factor(self.sampling_factor());
        }
    }

    pub(super) fn enter_safe_mode(&mut self, reason: String) -> Result<(), DaemonError> {
        tracing::error!(%reason, retry_s = SAFE_MODE_RETRY.as_secs(), "safe mode: the configuration is valid but cannot run");
        self.running_since = None;
        self.roll_back_on_trial_failure(&reason);
        self.model_info = None;
        self.backend = None;
        self.next_retry = Some(Instant::now() + SAFE_MODE_RETRY);
        self.set_state(RunState::SafeMode, Some(reason))
    }

    pub(super) fn stop_pipeline(&mut self) -> Result<Option<PipelineEnd>, DaemonError> {
        self.running_since = None;
        match self.pipeline.take() {
            Some(p) => p.stop(&self.metrics).map(Some),
            None => Ok(None),
        }
    }

    /// Handles `first` and every control request already waiting behind it: commands in
    /// order, configuration changes coalesced into one (see [`Supervisor::apply_remote`]).
    pub(super) fn handle_controls(
        &mut self,
        first: ControlRequest,
        waiting: &Receiver<ControlRequest>,
    ) -> Result<(), DaemonError> {
        let mut changes = Vec::new();
        let mut next = Some(first);
        while let Some(request) = next.take().or_else(|| waiting.try_recv().ok()) {
            match request {
                ControlRequest::SetConfig { id, patch } => changes.push((id, patch)),
                ControlRequest::Command { id, command } => self.handle_command(id, command)?,
                ControlRequest::ModelOffer(offer) => self.on_offer(*offer),
                ControlRequest::ModelChunk(chunk) => self.on_chunk(chunk),
            }
        }
        if !changes.is_empty() {
            for (id, result) in self.apply_remote(changes)? {
                let ack = match result {
                    Ok(()) => ConfigAck::ok(id),
                    Err(errors) => {
                        tracing::warn!(errors = ?errors, "remote configuration change rejected");
                        ConfigAck::error(id, errors)
                    }
                };
                self.reply(
                    ReplyTopic::ConfigAck,
                    serde_json::to_vec(&ack).expect("acks serialise"),
                );
            }
        }
        Ok(())
    }

    fn handle_command(&mut self, id: Option<String>, command: Command) -> Result<(), DaemonError> {
        let ack = match command {
            Command::Pause | Command::Resume => {
                let paused = command == Command::Pause;
                let mut next = self.persistent.clone();
                next.paused = paused;
                match next.save(&self.state_dir) {
                    Ok(()) => {
                        self.persistent = next;
                        self.paused_reason = None;
                        if let Some(p) = &self.pipeline {
                            p.set_paused(paused);
                            self.set_run_state()?;
                        }
                        tracing::info!(?command, "command carried out");
                        CmdAck::ok(id, command)
                    }
                    Err(e) => CmdAck::error(id, Some(command), vec![issue("", e.to_string())]),
                }
            }
            Command::Rollback => {
                // Answered once the switch is done.
                self.rollback(id);
                return Ok(());
            }
            Command::Identify => {
                let d = &self.config.config().device;
                tracing::warn!(site = %d.site, room = %d.room, device = %d.id, "identify: this is the device");
                CmdAck::ok(id, command)
            }
        };
        self.reply(
            ReplyTopic::CmdAck,
            serde_json::to_vec(&ack).expect("acks serialise"),
        );
        Ok(())
    }

    /// Validates, builds, persists and swaps in a remote change (all or nothing).
    /// Validates, builds, persists and swaps in remote changes that arrived together, as
    /// one: each change is validated on top of the ones before it (a refused one is left
    /// out, with its reasons), and the pipeline is rebuilt once for all that were accepted
    /// (all or nothing from there). At most one rebuild per `remote.min_change_interval_secs`:
    /// changes sooner are refused, saying when to retry. One result per change, in order.
    pub(super) fn apply_remote(
        &mut self,
        changes: Vec<(Option<String>, serde_json::Value)>,
    ) -> Result<Vec<RemoteResult>, DaemonError> {
        if self.switching.is_some() {
            let reason = "a model switch is under way; retry once it is done".to_string();
            return Ok(changes
                .into_iter()
                .map(|(id, _)| (id, Err(vec![issue("", reason.clone())])))
                .collect());
        }
        let interval = Duration::from_secs(self.config.config().remote.min_change_interval_secs);
        if let Some(wait) = self
            .last_remote_change
            .map(|t| interval.saturating_sub(t.elapsed()))
            .filter(|w| !w.is_zero())
        {
            let reason = format!(
                "too many changes: one was applied less than {}s ago; retry in {}s",
                interval.as_secs(),
                wait.as_secs().max(1)
            );
            return Ok(changes
                .into_iter()
                .map(|(id, _)| (id, Err(vec![issue("", reason.clone())])))
                .collect());
        }
        let mut results = Vec::with_capacity(changes.len());
        let mut validated = self.config.clone();
        let mut accepted = Vec::new();
        let mut merged: Option<serde_json::Value> = None;
        for (id, patch) in changes {
            match validated.merge_remote(&patch) {
                Ok(v) => {
                    validated = v;
                    accepted.push(results.len());
                    results.push((id, Ok(())));
                    accumulate_patch(merged.get_or_insert_with(|| serde_json::json!({})), &patch);
                }
                Err(errors) => results.push((id, Err(errors.0))),
            }
        }
        let Some(patch) = merged else {
            return Ok(results);
        };
        let fail = |results: &mut Vec<RemoteResult>, reason: String| {
            for &i in &accepted {
                results[i].1 = Err(vec![issue("", reason.clone())]);
            }
        };
        let parts = match build_parts(&validated) {
            Ok(parts) => parts,
            Err(e) => {
                fail(&mut results, format!("valid, but cannot run: {e}"));
                return Ok(results);
            }
        };
        let mut next = self.persistent.clone();
        let mut acc = next
            .remote_config
            .take()
            .unwrap_or_else(|| serde_json::json!({}));
        accumulate_patch(&mut acc, &patch);
        next.remote_config = Some(acc);
        if let Err(e) = next.save(&self.state_dir) {
            fail(&mut results, format!("cannot save the change: {e}"));
            return Ok(results);
        }
        self.persistent = next;
        if let Some(PipelineEnd::Failed(reason)) = self.stop_pipeline()? {
            tracing::warn!(%reason, "the previous pipeline had failed");
        }
        self.config = validated;
        self.last_remote_change = Some(Instant::now());
        tracing::info!(
            changes = accepted.len(),
            "remote configuration change applied"
        );
        self.launch(parts)?;
        Ok(results)
    }

    pub(super) fn send_stats(&mut self) -> Result<(), DaemonError> {
        let now = Instant::now();
        let m = &self.metrics;
        let captured = m.frames_captured.load(Ordering::Relaxed);
        let processed = m.frames_processed.load(Ordering::Relaxed);
        let (then, captured_then, processed_then) = self.last_stats;
        let secs = now.saturating_duration_since(then).as_secs_f64().max(1e-3);
        let round2 = |x: f64| (x * 100.0).round() / 100.0;
        let queue_now = self
            .pipeline
            .as_ref()
            .map_or(0, |p| p.queue.dropped_total());
        let dropped_by_stage = m.dropped_by_stage(queue_now);
        let dropped = dropped_by_stage["queue"];
        let latency_ms = m.latency_figures();
        let outbox = {
            let o = lock_outbox(&self.outbox);
            let s = o.stats();
            OutboxFigures {
                depth: o.depth(),
                bytes: o.total_bytes(),
                next_seq: o.next_seq(),
                dropped_total: s.dropped_total,
                lost_total: s.lost_total,
                corrupt_total: s.corrupt_total,
            }
        };
        let d = &self.config.config().device;
        let stats = StatsPayload {
            schema: fleet::STATS_SCHEMA,
            site: d.site.clone(),
            device: d.id.clone(),
            at: crate::pipeline::aggregate::rfc3339(SystemTime::now()),
            uptime_s: self.started.elapsed().as_secs(),
            state: self.state,
            capture_fps: round2((captured - captured_then) as f64 / secs),
            inference_fps: round2((processed - processed_then) as f64 / secs),
            frames_captured_total: captured,
            frames_processed_total: processed,
            frames_dropped_total: dropped,
            frame_errors_total: m.frame_errors.load(Ordering::Relaxed),
            results_total: m.results.load(Ordering::Relaxed),
            tracks_active: m.tracks_active.load(Ordering::Relaxed),
            latency_ms,
            dropped_total_by_stage: dropped_by_stage,
            busy_seconds_by_stage: m.busy_seconds_by_stage(),
            memory_rss_bytes: memory_rss_bytes(),
            temperature_c: self.thermal.as_ref().and_then(Thermal::temperature_c),
            thermal_throttled: self.thermal.as_ref().is_some_and(Thermal::throttled),
            sampling_factor: (f64::from(self.sampling_factor()) * 1e6).round() / 1e6,
            camera_allowed: self
                .privacy
                .as_ref()
                .map(|p| lock_privacy(p).camera_allowed()),
            privacy_switch: self.privacy.as_ref().and_then(|p| lock_privacy(p).switch()),
            outbox,
            mqtt_connects_total: self
                .mqtt_connects
                .as_ref()
                .map(|c| c.load(Ordering::Relaxed)),
        };
        self.last_stats = (now, captured, processed);
        self.next_stats = now + self.config.stats_interval();
        self.send(SinkMessage::Stats(
            serde_json::to_vec(&stats).expect("stats serialise"),
        ))
    }
}

pub(super) fn issue(key: &str, reason: String) -> ConfigIssue {
    ConfigIssue {
        key: key.to_string(),
        reason,
    }
}

/// Opens the privacy LED and switch lines (`[privacy]`); the only place that names the Linux
/// pin type. Opened once: `[privacy]` cannot change remotely.
#[cfg(feature = "gpio")]
pub(super) fn open_privacy(config: &DaemonConfig) -> Result<Option<SharedPrivacy>, DaemonError> {
    let Some(pins) = &config.privacy else {
        return Ok(None);
    };
    let controller = caer_board::linux_gpio::open_privacy_controller(pins)
        .map_err(|e| DaemonError::PrivacyPins(Box::new(e)))?;
    tracing::info!(
        led = %format!("{}:{}", pins.led.chip.display(), pins.led.line),
        switch = %format!("{}:{}", pins.switch.chip.display(), pins.switch.line),
        "privacy LED and switch opened; the camera opens once the switch reads released"
    );
    Ok(Some(
        crate::daemon::board::Privacy::new(controller).shared(),
    ))
}

/// Without the `gpio` feature there are no pins (validation already refuses `[privacy]`).
#[cfg(not(feature = "gpio"))]
pub(super) fn open_privacy(config: &DaemonConfig) -> Result<Option<SharedPrivacy>, DaemonError> {
    match config.privacy {
        None => Ok(None),
        Some(_) => Err(DaemonError::PrivacyPins(
            "[privacy] needs caerd built with the cargo feature gpio".into(),
        )),
    }
}

/// The thermal guard, unless `thermal.enabled` is false.
pub(super) fn open_thermal(config: &DaemonConfig) -> Option<Thermal> {
    if !config.thermal.enabled {
        return None;
    }
    match Thermal::new(config.thermal.guard()) {
        Ok(thermal) => Some(thermal),
        // Validation rules this out.
        Err(e) => {
            tracing::error!(error = %e, "thermal guard off");
            None
        }
    }
}
