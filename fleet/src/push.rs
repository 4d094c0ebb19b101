//! `caer-fleet model push`: offers a signed bundle to the devices that match, serves the
//! chunks each asks for on `model/fetch`, and follows each device's `model/status` to the
//! end of its job. With a canary, the first N devices go first; the rest follow only if at
//! most `--max-failures` of them failed.
//!
//! The tool serves only the files the bundle's manifest lists, at the offsets and lengths
//! asked for (each chunk at most [`MAX_CHUNK_BYTES`]); a request for anything else is ignored.
//! The device checks everything again: the signature, each chunk's hash, each file's hash.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::Value;

use caer::daemon::update::{self, JobState, Offer, OfferedFile, OFFER_SCHEMA};
use caer::pipeline::model::bundle::{Bundle, MANIFEST_FILE};
use caer::pipeline::model::signature::{signature_path, SignatureFile};

use crate::broker::Broker;
use crate::control::Targets;
use crate::error::FleetError;
use crate::topic::device_topic;
use crate::view::Watch;

/// Longest chunk served: what a device asks for at most (a chunk and its header stay below
/// the 1 MiB `max_packet_size` of docs/remote-config.md).
pub const MAX_CHUNK_BYTES: u64 = update::CHUNK_BYTES;

/// A bundle ready to offer.
#[derive(Debug, Clone)]
pub struct Offered {
    /// The offer (the job id is set per push).
    pub offer: Offer,
    /// The bundle id: sha256 of its manifest.
    pub bundle: String,
    /// Each listed file and where it is.
    files: BTreeMap<String, (PathBuf, u64)>,
}

impl Offered {
    /// Loads a signed bundle directory: every file checked against the manifest, the
    /// signature file present.
    pub fn load(dir: &Path, job: &str) -> Result<Offered, FleetError> {
        let bundle =
            Bundle::load(dir).map_err(|e| FleetError::Usage(format!("{}: {e}", dir.display())))?;
        let manifest_path = dir.join(MANIFEST_FILE);
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| FleetError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let manifest = String::from_utf8(read(&manifest_path)?)
            .map_err(|_| FleetError::Usage(format!("{}: not UTF-8", manifest_path.display())))?;
        let sig_path = signature_path(&manifest_path);
        if !sig_path.exists() {
            return Err(FleetError::Usage(format!(
                "{} is not signed: sign it first with `caer-fleet bundle sign`",
                dir.display()
            )));
        }
        let signature: SignatureFile = serde_json::from_slice(&read(&sig_path)?)
            .map_err(|e| FleetError::Usage(format!("{}: {e}", sig_path.display())))?;
        let mut files = BTreeMap::new();
        let mut offered = Vec::new();
        for listed in bundle.manifest().listed_files() {
            let path = dir.join(&listed.path);
            let bytes = std::fs::metadata(&path)
                .map_err(|source| FleetError::Read {
                    path: path.clone(),
                    source,
                })?
                .len();
            offered.push(OfferedFile {
                path: listed.path.clone(),
                bytes,
            });
            files.insert(listed.path, (path, bytes));
        }
        Ok(Offered {
            bundle: update::sha256_hex(manifest.as_bytes()),
            offer: Offer {
                schema: OFFER_SCHEMA.to_string(),
                job: job.to_string(),
                manifest,
                signature,
                files: offered,
            },
            files,
        })
    }

    /// Bytes of the bundle.
    pub fn bytes_total(&self) -> u64 {
        self.files.values().map(|(_, b)| b).sum()
    }

    /// The chunk a `model/fetch` asks for, if it asks for one of ours.
    fn chunk(&self, request: &Value) -> Option<Vec<u8>> {
        let job = request.get("job")?.as_str()?;
        let path = request.get("path")?.as_str()?;
        let offset = request.get("offset")?.as_u64()?;
        let bytes = request.get("bytes")?.as_u64()?;
        let (file, size) = self.files.get(path)?;
        let in_range = job == self.offer.job
            && request.get("bundle")?.as_str()? == self.bundle
            && bytes > 0
            && bytes <= MAX_CHUNK_BYTES
            && offset.checked_add(bytes)? <= *size;
        if !in_range {
            return None;
        }
        let mut data = vec![0; bytes as usize];
        let mut f = File::open(file).ok()?;
        f.seek(SeekFrom::Start(offset)).ok()?;
        f.read_exact(&mut data).ok()?;
        Some(update::chunk_payload(job, path, offset, &data))
    }
}

/// What became of the push on one device.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum PushOutcome {
    /// The new model runs.
    Succeeded {
        /// The device's figures (transfer time, switch gap).
        reason: Option<String>,
        /// Milliseconds without inference while switching.
        switch_gap_ms: Option<u64>,
    },
    /// Fetched but not run, or refused: the old model runs on.
    Failed {
        /// `failed` or `rejected`.
        state: String,
        /// Why.
        reason: String,
    },
    /// No end state within the timeout.
    TimedOut {
        /// The last state seen.
        last: Option<String>,
    },
    /// Its status is `offline`: nothing was sent.
    Offline,
    /// Not offered: the canary failed.
    NotSent,
    /// Named with `--device` but no status of it was found.
    Unknown,
}

/// One line of the result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PushResult {
    /// Site.
    pub site: String,
    /// Device id.
    pub device: String,
    /// What happened.
    #[serde(flatten)]
    pub outcome: PushOutcome,
    /// Seconds from the offer to the end state.
    pub seconds: Option<f64>,
}

/// How the push goes.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Devices offered first (0: all at once).
    pub canary: usize,
    /// Failures among the canary devices that still let the rest go on.
    pub max_failures: usize,
    /// Longest wait for each group of devices.
    pub timeout: Duration,
    /// Most bytes served per second, all devices together (0: no limit), so that a push
    /// does not take a school's uplink.
    pub rate_bytes_per_s: u64,
}

/// A fresh job id.
pub fn job_id() -> String {
    format!(
        "push-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
    )
}

/// Offers `bundle` to the targets (see the module docs).
pub fn push(
    broker: &Broker,
    targets: &Targets,
    bundle: &Offered,
    options: &PushOptions,
) -> Result<Vec<PushResult>, FleetError> {
    targets.check()?;
    let mut watch = Watch::open_for_push(broker)?;
    watch.settle(Duration::from_millis(500), Duration::from_secs(10))?;
    let mut results = Vec::new();
    let mut online = Vec::new();
    for v in watch.devices.values() {
        if v.status.is_none() || !targets.matches(&v.site, v.room(), &v.device) {
            continue;
        }
        if v.state() == "offline" {
            results.push(result(&v.site, &v.device, PushOutcome::Offline, None));
        } else {
            online.push((v.site.clone(), v.device.clone()));
        }
    }
    for named in &targets.devices {
        if !watch
            .devices
            .values()
            .any(|v| &v.device == named && v.status.is_some())
        {
            let site = targets.site.clone().unwrap_or_default();
            results.push(result(&site, named, PushOutcome::Unknown, None));
        }
    }
    let split = if options.canary == 0 {
        online.len()
    } else {
        options.canary.min(online.len())
    };
    let (canary, rest) = online.split_at(split);
    let outcomes = run_group(&mut watch, bundle, canary, options)?;
    let failures = outcomes
        .iter()
        .filter(|r| !matches!(r.outcome, PushOutcome::Succeeded { .. }))
        .count();
    results.extend(outcomes);
    if failures > options.max_failures {
        tracing::error!(
            failures,
            "the canary failed; the other devices are not offered the bundle"
        );
        for (site, device) in rest {
            results.push(result(site, device, PushOutcome::NotSent, None));
        }
    } else {
        results.extend(run_group(&mut watch, bundle, rest, options)?);
    }
    watch.close();
    results.sort_by(|a, b| (&a.site, &a.device).cmp(&(&b.site, &b.device)));
    Ok(results)
}

fn result(site: &str, device: &str, outcome: PushOutcome, seconds: Option<f64>) -> PushResult {
    PushResult {
        site: site.to_string(),
        device: device.to_string(),
        outcome,
        seconds,
    }
}

/// Offers the bundle to `group` and serves it until each device's job ended or `timeout`.
fn run_group(
    watch: &mut Watch,
    bundle: &Offered,
    group: &[(String, String)],
    options: &PushOptions,
) -> Result<Vec<PushResult>, FleetError> {
    if group.is_empty() {
        return Ok(Vec::new());
    }
    let offer = serde_json::to_vec(&bundle.offer).expect("an offer serialises");
    let started = Instant::now();
    // Each device's `started_at` when offered: a device that restarts during its job
    // (a crash, a power cut, during the transfer or the switch) is offered the bundle again,
    // and goes on from what it kept.
    let mut offered_to = BTreeMap::new();
    for (site, device) in group {
        watch.publish(device_topic(site, device, "model/offer"), offer.clone())?;
        offered_to.insert(
            (site.clone(), device.clone()),
            started_at(watch, site, device),
        );
    }
    tracing::info!(devices = group.len(), bytes = bundle.bytes_total(), job = %bundle.offer.job, "offered");
    let mut waiting: Vec<&(String, String)> = group.iter().collect();
    let mut done = Vec::new();
    let deadline = started + options.timeout;
    // A token bucket holding at most one second of the rate: time spent waiting on devices
    // does not save up for a burst.
    let rate = options.rate_bytes_per_s as f64;
    let (mut tokens, mut refilled) = (rate, Instant::now());
    while !waiting.is_empty() && Instant::now() < deadline {
        // Short turns: every request waits for the next turn.
        watch.poll(Duration::from_millis(2))?;
        while let Some(fetch) = watch.fetches.pop_front() {
            if rate > 0.0 {
                tokens = (tokens + rate * refilled.elapsed().as_secs_f64()).min(rate);
                refilled = Instant::now();
                if tokens < 0.0 {
                    // Over the rate: the request waits for the next turn.
                    watch.fetches.push_front(fetch);
                    break;
                }
            }
            let ours = waiting
                .iter()
                .any(|(s, d)| *s == fetch.site && *d == fetch.device);
            if let Some(chunk) = bundle.chunk(&fetch.json).filter(|_| ours) {
                tokens -= chunk.len() as f64;
                let topic = device_topic(&fetch.site, &fetch.device, "model/chunk");
                watch.publish(topic, chunk)?;
            }
        }
        for (site, device) in &waiting {
            let now = started_at(watch, site, device);
            let key = (site.clone(), device.clone());
            if now.is_some() && offered_to.get(&key) != Some(&now) {
                tracing::info!(%site, %device, "the device restarted: the bundle is offered again");
                watch.publish(device_topic(site, device, "model/offer"), offer.clone())?;
                offered_to.insert(key, now);
            }
        }
        waiting.retain(|(site, device)| {
            let status = watch
                .devices
                .get(&(site.clone(), device.clone()))
                .and_then(|v| v.model_status.as_ref())
                .filter(|s| s.get("job").and_then(Value::as_str) == Some(&bundle.offer.job));
            let Some(outcome) = status.and_then(end_state) else {
                return true;
            };
            let seconds = Some((started.elapsed().as_secs_f64() * 10.0).round() / 10.0);
            done.push(result(site, device, outcome, seconds));
            false
        });
    }
    for (site, device) in waiting {
        let last = watch
            .devices
            .get(&(site.clone(), device.clone()))
            .and_then(|v| v.model_status.as_ref())
            .filter(|s| s.get("job").and_then(Value::as_str) == Some(&bundle.offer.job))
            .and_then(|s| s.get("state").and_then(Value::as_str).map(str::to_string));
        done.push(result(site, device, PushOutcome::TimedOut { last }, None));
    }
    Ok(done)
}

/// The device's `status.started_at` while it is up; `None` while offline or unknown.
fn started_at(watch: &Watch, site: &str, device: &str) -> Option<String> {
    let view = watch.devices.get(&(site.to_string(), device.to_string()))?;
    if view.state() == "offline" {
        return None;
    }
    let status = view.status.as_ref()?;
    status.get("started_at")?.as_str().map(str::to_string)
}

/// The outcome a `model/status` ends the job with; none while it runs.
fn end_state(status: &Value) -> Option<PushOutcome> {
    let state: JobState = serde_json::from_value(status.get("state")?.clone()).ok()?;
    let reason = status
        .get("reason")
        .and_then(Value::as_str)
        .map(str::to_string);
    match state {
        JobState::Succeeded => Some(PushOutcome::Succeeded {
            reason,
            switch_gap_ms: status.get("switch_gap_ms").and_then(Value::as_u64),
        }),
        JobState::Failed | JobState::Rejected => Some(PushOutcome::Failed {
            state: if state == JobState::Failed {
                "failed"
            } else {
                "rejected"
            }
            .to_string(),
            reason: reason.unwrap_or_default(),
        }),
        JobState::Queued | JobState::InProgress => None,
    }
}

/// One readable line per device.
pub fn lines(results: &[PushResult]) -> String {
    let mut out = String::new();
    for r in results {
        let what = match &r.outcome {
            PushOutcome::Succeeded { reason, .. } => {
                format!("succeeded: {}", reason.as_deref().unwrap_or(""))
            }
            PushOutcome::Failed { state, reason } => format!("{state}: {reason}"),
            PushOutcome::TimedOut { last } => {
                format!(
                    "timed out (last state: {})",
                    last.as_deref().unwrap_or("none")
                )
            }
            PushOutcome::Offline => "offline: not offered".into(),
            PushOutcome::NotSent => "not offered: the canary failed".into(),
            PushOutcome::Unknown => "unknown: no status of this device".into(),
        };
        out.push_str(&crate::devices::printable(&format!(
            "{}/{}: {what}",
            r.site, r.device
        )));
        out.push('\n');
    }
    out
}
