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
use crate::daemon::DaemonError;

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
        if let Some(t) = &self.update {
            if t.job == offer.job {
                // The operator's tool started again: ask for the outstanding chunk now.
                self.update.as_mut().expect("checked").requested_at = None;
                self.advance_update();
            } else {
                let reason = format!("busy with job {:?}; offer this one again after it", t.job);
                self.publish_job_status(&JobStatus::new(
                    Some(offer.job),
                    JobState::Rejected,
                    Some(reason),
                ));
            }
            return;
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
            Ok(Progress::Fetch(request)) => {
                let first = transfer.bytes_done() == 0 && transfer.retries == 0;
                transfer.requested_at = Some(Instant::now());
                let payload = serde_json::to_vec(&request).expect("a fetch request serialises");
                if first || request.offset == 0 {
                    let status = self.job_status(
                        self.update.as_ref().expect("set"),
                        JobState::InProgress,
                        Some(format!("fetching {}", request.path)),
                    );
                    self.publish_job_status(&status);
                }
                self.reply(ReplyTopic::ModelFetch, payload);
            }
            Ok(Progress::Complete(_)) => {
                let transfer = self.update.take().expect("set");
                let status = self.job_status(
                    &transfer,
                    JobState::InProgress,
                    Some("checking and loading the new model".into()),
                );
                self.publish_job_status(&status);
                tracing::info!(job = %transfer.job, bytes = transfer.bytes_total, seconds = transfer.started.elapsed().as_secs_f64(), "model transfer complete");
                let mut status = self.job_status(&transfer, JobState::Succeeded, None);
                match self.switch_bundle(BundleRef::Delivered(transfer.bundle.clone())) {
                    Ok(gap) => {
                        status.switch_gap_ms = Some(gap.as_millis() as u64);
                        status.reason = Some(format!(
                            "{} bytes in {:.1} s; switched with {} ms without inference",
                            transfer.bytes_total,
                            transfer.started.elapsed().as_secs_f64(),
                            gap.as_millis()
                        ));
                    }
                    Err(reason) => {
                        status.state = JobState::Failed;
                        status.reason = Some(format!("{reason}; the previous model runs on"));
                        if let Err(e) = bundles.remove_dir_all(&transfer.bundle) {
                            tracing::warn!(error = %e, "cannot remove the refused bundle");
                        }
                    }
                }
                status.at = crate::pipeline::aggregate::rfc3339(std::time::SystemTime::now());
                self.publish_job_status(&status);
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

    /// Builds a pipeline on `target` beside the running one, records the choice (the running
    /// bundle becomes the previous one), then swaps pipelines. Returns the time without
    /// inference; `Err` leaves everything as it was.
    pub(crate) fn switch_bundle(&mut self, target: BundleRef) -> Result<Duration, String> {
        let config = self.config.with_model_bundle(match &target {
            BundleRef::Delivered(id) => self.state_dir.join(BUNDLES_DIR).join(id),
            BundleRef::Configured => self.configured_bundle.clone(),
        });
        let parts = build_parts(&config).map_err(|e| format!("the new model cannot run: {e}"))?;
        let mut next = self.persistent.clone();
        next.previous_bundle = Some(next.bundle.clone());
        next.bundle = target;
        next.trial_starts = Some(0);
        next.save(&self.state_dir)
            .map_err(|e| format!("cannot save the choice of bundle: {e}"))?;
        self.persistent = next;
        let gap = Instant::now();
        match self.stop_pipeline() {
            Ok(Some(PipelineEnd::Failed(reason))) => {
                tracing::warn!(%reason, "the previous pipeline had failed")
            }
            Ok(_) => {}
            Err(e) => return Err(format!("cannot stop the running pipeline: {e}")),
        }
        self.config = config;
        self.switched_at = Some(Instant::now());
        if let Err(e) = self.launch(parts) {
            return Err(format!("cannot start the new pipeline: {e}"));
        }
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

    /// The `rollback` command: back to the previous bundle.
    pub(crate) fn rollback(&mut self, id: Option<String>) -> Result<CmdAck, DaemonError> {
        let Some(previous) = self.persistent.previous_bundle.clone() else {
            return Ok(CmdAck::error(
                id,
                Some(Command::Rollback),
                vec![issue("", "there is no previous bundle to return to".into())],
            ));
        };
        Ok(match self.switch_bundle(previous.clone()) {
            Ok(gap) => {
                tracing::info!(bundle = ?previous, gap_ms = gap.as_millis() as u64, "rolled back");
                CmdAck::ok(id, Command::Rollback)
            }
            Err(reason) => CmdAck::error(id, Some(Command::Rollback), vec![issue("", reason)]),
        })
    }
}

/// What an exhausted trial does: after a switch, the daemon started this many times without
/// the new model running for [`TRIAL_PERIOD`] goes back to the previous bundle.
pub const MAX_TRIAL_STARTS: u32 = 3;
/// How long the new model must run before its trial is over.
pub const TRIAL_PERIOD: Duration = Duration::from_secs(120);

impl Supervisor {
    /// Ends the trial of a new bundle once its pipeline ran for [`TRIAL_PERIOD`].
    pub(crate) fn trial_tick(&mut self) {
        if self.persistent.trial_starts.is_none() {
            return;
        }
        let running = self.pipeline.is_some();
        let since = self.switched_at.get_or_insert_with(Instant::now);
        if running && since.elapsed() >= TRIAL_PERIOD {
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
