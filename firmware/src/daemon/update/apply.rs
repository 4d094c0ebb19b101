//! The supervisor's side of model updates: offers and chunks in, fetch requests and job
//! statuses out, and the switch: the new bundle is loaded and self-checked beside the running
//! pipeline, the state file names it, and only then is the old pipeline stopped (recording
//! its last interval under the old model) and the new one started.

use std::time::{Duration, Instant};

use super::transfer::{prune, Progress, Transfer, BUNDLES_DIR};
use super::{Chunk, JobState, JobStatus, Offer};
use crate::daemon::build::build_parts;
use crate::daemon::fleet::{CmdAck, Command};
use crate::daemon::publish::ReplyTopic;
use crate::daemon::running::PipelineEnd;
use crate::daemon::state::BundleRef;
use crate::daemon::state_dir::StateDir;
use crate::daemon::supervisor::{issue, Supervisor};

/// How long the device waits for a chunk before asking again.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests repeated without an answer before the job fails (the partial bundle is kept: a
/// new offer of the same bundle goes on from it).
pub const MAX_FETCH_RETRIES: u32 = 24;

impl Supervisor {
    fn bundles(&self) -> Result<StateDir, String> {
        self.state_dir.subdir(BUNDLES_DIR).map_err(|e| {
            format!(
                "cannot open {}: {e}",
                self.state_dir.join(BUNDLES_DIR).display()
            )
        })
    }

    fn job_status(
        &self,
        transfer: &Transfer,
        state: JobState,
        reason: Option<String>,
    ) -> JobStatus {
        let mut status = JobStatus::new(Some(transfer.job.clone()), state, reason);
        status.bundle = Some(transfer.bundle.clone());
        status.model_id = Some(transfer.model_id.clone());
        status.bytes_done = transfer.bytes_done();
        status.bytes_total = transfer.bytes_total;
        status
    }

    pub(crate) fn publish_job_status(&self, status: &JobStatus) {
        match status.state {
            JobState::Failed | JobState::Rejected => {
                tracing::warn!(job = ?status.job, state = ?status.state, reason = ?status.reason, "model update")
            }
            _ => {
                tracing::info!(job = ?status.job, state = ?status.state, bytes_done = status.bytes_done, bytes_total = status.bytes_total, "model update")
            }
        }
        self.reply(ReplyTopic::ModelStatus, status.to_payload());
    }

    /// Goes on with a transfer an earlier run left unfinished.
    pub(crate) fn resume_update(&mut self) {
        let trusted = self.config.config().model.trusted_keys();
        let Ok(bundles) = self.bundles() else {
            return;
        };
        if let Some(transfer) = Transfer::resume(&bundles, &trusted) {
            tracing::info!(job = %transfer.job, bundle = %transfer.bundle, "resuming a model transfer");
            self.update = Some(transfer);
            self.advance_update();
        }
    }

    /// A checked `model/offer`.
    pub(crate) fn on_offer(&mut self, offer: Offer) {
        let bundle = super::sha256_hex(offer.manifest.as_bytes());
        if self.persistent.bundle == BundleRef::Delivered(bundle.clone()) {
            let mut status = JobStatus::new(
                Some(offer.job),
                JobState::Succeeded,
                Some("this bundle is already running".into()),
            );
            status.bundle = Some(bundle);
            return self.publish_job_status(&status);
        }
        if let Some(t) = self.update.as_mut().filter(|t| t.bundle == bundle) {
            // The same bundle again (the operator's tool started again, or the transfer
            // resumed after a restart): go on under the new job id.
            if let Err(e) = t.adopt(&offer) {
                return self.fail_update(e.to_string(), true);
            }
            return self.advance_update();
        }
        if self.switching.is_some() {
            let status = JobStatus::new(
                Some(offer.job),
                JobState::Rejected,
                Some("a model switch is under way; offer it again once it is done".into()),
            );
            return self.publish_job_status(&status);
        }
        if let Some(old) = self.update.take() {
            tracing::warn!(job = %old.job, "a new bundle was offered: the unfinished transfer is given up");
            let status = self.job_status(
                &old,
                JobState::Failed,
                Some(format!("replaced by job {:?}", offer.job)),
            );
            self.publish_job_status(&status);
        }
        let trusted = self.config.config().model.trusted_keys();
        let started = self
            .bundles()
            .and_then(|bundles| Transfer::start(&bundles, &offer, &trusted));
        match started {
            Ok(transfer) => {
                if let Ok(bundles) = self.bundles() {
                    // Other partial bundles are given up.
                    let keep = self.kept_bundles();
                    let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
                    prune(&bundles, &keep, Some(&transfer.bundle));
                }
                self.update = Some(transfer);
                self.advance_update();
            }
            Err(reason) => {
                let mut status = JobStatus::new(Some(offer.job), JobState::Rejected, Some(reason));
                status.bundle = Some(super::sha256_hex(offer.manifest.as_bytes()));
                self.publish_job_status(&status);
            }
        }
    }

    /// A checked `model/chunk`.
    pub(crate) fn on_chunk(&mut self, chunk: Chunk) {
        let Some(transfer) = self.update.as_mut() else {
            return;
        };
        match transfer.accept(&chunk) {
            Ok(true) => self.advance_update(),
            Ok(false) => {
                tracing::debug!(path = %chunk.header.path, offset = chunk.header.offset, "ignored a chunk that answers no outstanding request")
            }
            Err(e) => self.fail_update(e.to_string(), true),
        }
    }

    /// Asks for the next chunk, or switches once the bundle is complete.
    fn advance_update(&mut self) {
        let Ok(bundles) = self.bundles() else {
            return self.fail_update("cannot open the bundles directory".into(), false);
        };
        let Some(transfer) = self.update.as_mut() else {
            return;
        };
        match transfer.next(&bundles) {
            Ok(Progress::Fetch(requests)) => {
                if !requests.is_empty() {
                    transfer.requested_at = Some(Instant::now());
                }
                for request in requests {
                    if request.offset == 0 {
                        let status = self.job_status(
                            self.update.as_ref().expect("set"),
                            JobState::InProgress,
                            Some(format!("fetching {}", request.path)),
                        );
                        self.publish_job_status(&status);
                    }
                    let payload = serde_json::to_vec(&request).expect("a fetch request serialises");
                    self.reply(ReplyTopic::ModelFetch, payload);
                }
            }
            Ok(Progress::Complete(_)) => {
                let transfer = self.update.take().expect("set");
                let status = self.job_status(
                    &transfer,
                    JobState::InProgress,
                    Some("checking and loading the new model".into()),
                );
                self.publish_job_status(&status);
                let transfer_s = transfer.started.elapsed().as_secs_f64();
                tracing::info!(job = %transfer.job, bytes = transfer.bytes_total, seconds = transfer_s, "model transfer complete");
                let finish = SwitchFinish::Job {
                    status,
                    remove_on_failure: Some(transfer.bundle.clone()),
                    transfer_s,
                };
                self.begin_switch(BundleRef::Delivered(transfer.bundle), finish);
            }
            Err(e) => self.fail_update(e.to_string(), true),
        }
    }

    /// Ends the transfer as failed; `discard` removes what was fetched.
    fn fail_update(&mut self, reason: String, discard: bool) {
        let Some(transfer) = self.update.take() else {
            return;
        };
        let status = self.job_status(
            &transfer,
            JobState::Failed,
            Some(format!("{reason}; the previous model runs on")),
        );
        if discard {
            if let Ok(bundles) = self.bundles() {
                transfer.discard(&bundles);
            }
        }
        self.publish_job_status(&status);
    }

    /// Asks again for a chunk that did not come; gives up after [`MAX_FETCH_RETRIES`].
    pub(crate) fn update_tick(&mut self) {
        let Some(transfer) = self.update.as_mut() else {
            return;
        };
        if transfer
            .requested_at
            .is_none_or(|t| t.elapsed() < FETCH_TIMEOUT)
        {
            return;
        }
        transfer.retries += 1;
        if transfer.retries > MAX_FETCH_RETRIES {
            let waited = FETCH_TIMEOUT * MAX_FETCH_RETRIES;
            let done = transfer.bytes_done();
            return self.fail_update(
                format!("no chunk came for {} s: the transfer stalled (offer the bundle again to go on from {done} bytes)", waited.as_secs()),
                false,
            );
        }
        transfer.rewind();
        self.advance_update();
    }

    /// The bundle directories to keep: the running one and the previous one.
    fn kept_bundles(&self) -> Vec<String> {
        [
            &Some(self.persistent.bundle.clone()),
            &self.persistent.previous_bundle,
        ]
        .into_iter()
        .flatten()
        .filter_map(|b| match b {
            BundleRef::Delivered(id) => Some(id.clone()),
            BundleRef::Configured => None,
        })
        .collect()
    }

    /// Starts building a pipeline on `target` in a thread of its own, beside the running
    /// one (loading a model can take minutes: a TensorRT engine is built for a new one, and
    /// the run loop must go on answering and pinging the watchdog meanwhile).
    /// [`Supervisor::switch_tick`] finishes the switch once it is built.
    fn begin_switch(&mut self, target: BundleRef, finish: SwitchFinish) {
        if self.switching.is_some() {
            // A complete bundle stays on disk: offered again, it switches without a transfer.
            let finish = match finish {
                SwitchFinish::Job {
                    status, transfer_s, ..
                } => SwitchFinish::Job {
                    status,
                    remove_on_failure: None,
                    transfer_s,
                },
                other => other,
            };
            return self.report_switch(
                finish,
                Err("another model switch is under way; offer it again once it is done".into()),
            );
        }
        let config = self.config.with_model_bundle(match &target {
            BundleRef::Delivered(id) => self.state_dir.join(BUNDLES_DIR).join(id),
            BundleRef::Configured => self.configured_bundle.clone(),
        });
        let for_build = config.clone();
        let build = std::thread::Builder::new()
            .name("caer-model-load".into())
            .spawn(move || build_parts(&for_build).map_err(|e| e.to_string()));
        match build {
            Ok(build) => {
                self.switching = Some(PendingSwitch {
                    build,
                    config,
                    target,
                    finish,
                })
            }
            Err(e) => self.report_switch(finish, Err(format!("cannot start loading: {e}"))),
        }
    }

    /// Finishes a switch whose pipeline is built: records the choice (the running bundle
    /// becomes the previous one), then swaps pipelines.
    pub(crate) fn switch_tick(&mut self) {
        if !self
            .switching
            .as_ref()
            .is_some_and(|p| p.build.is_finished())
        {
            return;
        }
        let pending = self.switching.take().expect("checked");
        let built = pending
            .build
            .join()
            .unwrap_or_else(|_| Err("loading the model panicked".into()));
        // A new bundle goes on trial; a rollback returns to one that ran, and is not (else
        // a failure of the old bundle would switch back to the failed one).
        let trial = matches!(pending.finish, SwitchFinish::Job { .. });
        let result = built
            .map_err(|e| format!("the new model cannot run: {e}"))
            .and_then(|parts| {
                self.swap_pipelines(pending.target.clone(), pending.config, parts, trial)
            });
        self.report_switch(pending.finish, result);
    }

    /// At shutdown: a switch still being built is given up, and said so (its thread ends
    /// with the process).
    pub(crate) fn abandon_switch(&mut self) {
        if let Some(pending) = self.switching.take() {
            let reason = "the daemon stopped while the new model was loading".to_string();
            self.report_switch(pending.finish, Err(reason));
        }
    }

    /// Saves the choice of `target`, stops the running pipeline and launches `parts`. On a
    /// failure after the old pipeline stopped, the previous choice is restored and started
    /// again. Returns the time without inference.
    fn swap_pipelines(
        &mut self,
        target: BundleRef,
        config: crate::daemon::config::ValidatedConfig,
        parts: crate::daemon::build::Parts,
        trial: bool,
    ) -> Result<Duration, String> {
        let before = (self.persistent.clone(), self.config.clone());
        let mut next = self.persistent.clone();
        next.previous_bundle = Some(next.bundle.clone());
        next.bundle = target;
        next.trial_starts = trial.then_some(0);
        next.save(&self.state_dir)
            .map_err(|e| format!("cannot save the choice of bundle: {e}"))?;
        self.persistent = next;
        let gap = Instant::now();
        let swapped = match self.stop_pipeline() {
            Ok(end) => {
                if let Some(PipelineEnd::Failed(reason)) = end {
                    tracing::warn!(%reason, "the previous pipeline had failed");
                }
                self.config = config;
                self.launch(parts)
                    .map_err(|e| format!("cannot start the new pipeline: {e}"))
            }
            Err(e) => Err(format!("cannot stop the running pipeline: {e}")),
        };
        if let Err(reason) = swapped {
            let (persistent, config) = before;
            if let Err(e) = persistent.save(&self.state_dir) {
                tracing::error!(error = %e, "cannot restore the choice of bundle");
            }
            self.persistent = persistent;
            self.config = config;
            if let Err(e) = self.start_pipeline() {
                tracing::error!(error = %e, "cannot restart the previous pipeline");
            }
            return Err(reason);
        }
        self.switched_at = Some(Instant::now());
        let gap = gap.elapsed();
        if let Ok(bundles) = self.bundles() {
            let keep = self.kept_bundles();
            let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
            prune(
                &bundles,
                &keep,
                self.update.as_ref().map(|t| t.bundle.as_str()),
            );
        }
        Ok(gap)
    }

    /// Tells the operator how a switch ended.
    fn report_switch(&mut self, finish: SwitchFinish, result: Result<Duration, String>) {
        match finish {
            SwitchFinish::Job {
                mut status,
                remove_on_failure,
                transfer_s,
            } => {
                match result {
                    Ok(gap) => {
                        status.state = JobState::Succeeded;
                        status.switch_gap_ms = Some(gap.as_millis() as u64);
                        status.reason = Some(format!(
                            "{} bytes fetched in {transfer_s:.1} s; switched with {} ms without inference",
                            status.bytes_total,
                            gap.as_millis()
                        ));
                    }
                    Err(reason) => {
                        status.state = JobState::Failed;
                        status.reason = Some(format!("{reason}; the previous model runs on"));
                        let kept = self.kept_bundles();
                        let removable = remove_on_failure.filter(|id| !kept.contains(id));
                        if let (Some(id), Ok(bundles)) = (removable, self.bundles()) {
                            if let Err(e) = bundles.remove_dir_all(&id) {
                                tracing::warn!(error = %e, "cannot remove the refused bundle");
                            }
                        }
                    }
                }
                status.at = crate::pipeline::aggregate::rfc3339(std::time::SystemTime::now());
                self.publish_job_status(&status);
            }
            SwitchFinish::Command(id) => {
                let ack = match result {
                    Ok(gap) => {
                        tracing::info!(bundle = ?self.persistent.bundle, gap_ms = gap.as_millis() as u64, "rolled back");
                        CmdAck::ok(id, Command::Rollback)
                    }
                    Err(reason) => {
                        CmdAck::error(id, Some(Command::Rollback), vec![issue("", reason)])
                    }
                };
                self.reply(
                    ReplyTopic::CmdAck,
                    serde_json::to_vec(&ack).expect("acks serialise"),
                );
            }
            SwitchFinish::Quiet => {
                if let Err(reason) = result {
                    tracing::error!(%reason, "the automatic rollback failed");
                }
            }
        }
    }

    /// The `rollback` command: back to the previous bundle, answered once switched.
    pub(crate) fn rollback(&mut self, id: Option<String>) {
        match self.persistent.previous_bundle.clone() {
            Some(previous) => self.begin_switch(previous, SwitchFinish::Command(id)),
            None => self.report_switch(
                SwitchFinish::Command(id),
                Err("there is no previous bundle to return to".into()),
            ),
        }
    }

    /// A bundle on trial that cannot run goes back to the previous one at once; `true` when
    /// a rollback started.
    pub(crate) fn roll_back_on_trial_failure(&mut self, reason: &str) -> bool {
        let Some(previous) = self.persistent.previous_bundle.clone() else {
            return false;
        };
        if self.persistent.trial_starts.is_none() || self.switching.is_some() {
            return false;
        }
        tracing::error!(%reason, ?previous, "the new model failed during its trial: rolling back");
        self.begin_switch(previous, SwitchFinish::Quiet);
        true
    }
}

/// Who is told how a switch ended.
pub(crate) enum SwitchFinish {
    /// A model update job: its status is published; the bundle is removed on failure.
    Job {
        status: JobStatus,
        remove_on_failure: Option<String>,
        transfer_s: f64,
    },
    /// A `rollback` command: its ack.
    Command(Option<String>),
    /// An automatic rollback: logged.
    Quiet,
}

/// A switch whose pipeline is being built.
pub(crate) struct PendingSwitch {
    build: std::thread::JoinHandle<Result<crate::daemon::build::Parts, String>>,
    config: crate::daemon::config::ValidatedConfig,
    target: BundleRef,
    finish: SwitchFinish,
}

/// What an exhausted trial does: after a switch, the daemon started this many times without
/// the new model running for [`TRIAL_PERIOD`] goes back to the previous bundle.
pub const MAX_TRIAL_STARTS: u32 = 3;
/// How long the new model's pipeline must run without a break before its trial is over.
pub const TRIAL_PERIOD: Duration = Duration::from_secs(120);

impl Supervisor {
    /// Ends the trial of a new bundle once one pipeline on it ran for [`TRIAL_PERIOD`].
    pub(crate) fn trial_tick(&mut self) {
        if self.persistent.trial_starts.is_none() {
            return;
        }
        if self
            .running_since
            .is_some_and(|since| since.elapsed() >= TRIAL_PERIOD)
        {
            let mut next = self.persistent.clone();
            next.trial_starts = None;
            match next.save(&self.state_dir) {
                Ok(()) => {
                    tracing::info!("the new model ran its trial period; it stays");
                    self.persistent = next;
                }
                Err(e) => tracing::warn!(error = %e, "cannot end the model trial"),
            }
        }
    }
}
