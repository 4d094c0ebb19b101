//! The fleet-facing protocol: payloads of `status`, `stats`, `config/set` → `config/ack` and
//! `cmd` → `cmd/ack`, and the daemon state kept across restarts.
//!
//! Every payload is JSON with a `schema` field naming its JSON Schema (`schemas/*.json` at
//! the repository root; the end-to-end tests validate real payloads against them). Incoming
//! messages are checked here, before anything acts on them: size first
//! ([`MAX_CONTROL_BYTES`]), then JSON, then the envelope (unknown keys, wrong types and a
//! wrong `schema` are errors that name the key). The configuration inside a `config/set` is
//! validated by [`crate::daemon::config::ValidatedConfig::merge_remote`].
//!
//! The daemon state kept across restarts (`state.json`) is in [`crate::daemon::state`].

use serde::{Deserialize, Serialize};

use crate::daemon::config::{ConfigIssue, Profile};

/// Schema id of `status` payloads.
pub const STATUS_SCHEMA: &str = "caer.status.v1";
/// Schema id of `stats` payloads.
pub const STATS_SCHEMA: &str = "caer.stats.v1";
/// Schema id of `config/set` payloads.
pub const CONFIG_SET_SCHEMA: &str = "caer.config-set.v1";
/// Schema id of `config/ack` payloads.
pub const CONFIG_ACK_SCHEMA: &str = "caer.config-ack.v1";
/// Schema id of `cmd` payloads.
pub const CMD_SCHEMA: &str = "caer.cmd.v1";
/// Schema id of `cmd/ack` payloads.
pub const CMD_ACK_SCHEMA: &str = "caer.cmd-ack.v1";
/// Largest accepted `config/set` or `cmd` payload, in bytes.
pub const MAX_CONTROL_BYTES: usize = 16 * 1024;
/// Longest accepted request `id`.
pub const MAX_ID_CHARS: usize = 128;

/// What the daemon is doing, as published in `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Loading the model and opening the source.
    Starting,
    /// Measuring and publishing.
    Running,
    /// Paused by a `pause` command: no frame is captured or analysed.
    Paused,
    /// The configuration is valid but cannot run (see `reason`); waiting for a fix.
    SafeMode,
    /// Shutting down cleanly.
    Stopping,
    /// Gone (clean exit, or the broker's last will).
    Offline,
}

/// The model as published in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelInfo {
    /// The bundle's `model_id`.
    pub id: String,
    /// The bundle's weights hash ([`crate::pipeline::model::calibration::bundle_hash`]), lowercase hex.
    pub sha256: String,
    /// `version` of the calibration applied to the logits (`model.calibration`), if any.
    #[serde(skip)]
    pub calibration_version: Option<String>,
}

/// The inference backend the pipeline runs, as `status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStatus {
    /// The backend's name ([`crate::pipeline::model::backend::InferenceBackend::name`]).
    pub name: &'static str,
    /// [`crate::pipeline::model::backend::Selected::reason`].
    pub reason: String,
}

/// The retained `status` payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusPayload {
    /// Always [`STATUS_SCHEMA`].
    pub schema: &'static str,
    /// What the daemon is doing.
    pub state: RunState,
    /// Why, for `safe_mode` (and `offline` after an error).
    pub reason: Option<String>,
    /// The firmware version.
    pub version: &'static str,
    /// `device.site`.
    pub site: String,
    /// `device.room`.
    pub room: String,
    /// `device.id`.
    pub device: String,
    /// The running model; none under `presence` or before it is loaded.
    pub model: Option<ModelInfo>,
    /// The inference backend, e.g. `ort-cpu` or `tensorrt-fp16`; none under `presence`.
    pub backend: Option<&'static str>,
    /// Why that backend runs, with its self-check figure and, under `auto`, the backends
    /// skipped and why (see [`select`](mod@crate::pipeline::model::backend::select)).
    pub backend_reason: Option<String>,
    /// The privacy profile in force.
    pub profile: Profile,
    /// `version` of the calibration applied to the logits (`model.calibration`); none
    /// without one.
    pub calibration_version: Option<String>,
    /// Seconds since the daemon started.
    pub uptime_s: u64,
    /// When the daemon started, RFC 3339 UTC.
    pub started_at: String,
    /// Whether a remote configuration change is in force (kept in `state.json`).
    pub remote_config: bool,
}

/// Latency percentiles of one pipeline stage, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencyFigures {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Samples the percentiles are computed over (the most recent ones).
    pub samples: usize,
}

/// Outbox figures in `stats`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OutboxFigures {
    /// Records awaiting acknowledgement.
    pub depth: usize,
    /// Bytes of segment files.
    pub bytes: u64,
    /// Sequence number of the next record.
    pub next_seq: u64,
    /// Records dropped because the outbox was full, since start.
    pub dropped_total: u64,
    /// Records that could not be written (disk full, I/O error): intervals lost, since start.
    pub lost_total: u64,
    /// Records found damaged or missing on disk at start (and damaged ledgers).
    pub corrupt_total: u64,
}

/// The periodic `stats` payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsPayload {
    /// Always [`STATS_SCHEMA`].
    pub schema: &'static str,
    /// `device.site`.
    pub site: String,
    /// `device.id`.
    pub device: String,
    /// When the figures were taken, RFC 3339 UTC.
    pub at: String,
    /// Seconds since the daemon started.
    pub uptime_s: u64,
    /// What the daemon is doing.
    pub state: RunState,
    /// Frames captured per second over the last stats interval.
    pub capture_fps: f64,
    /// Frames analysed per second over the last stats interval.
    pub inference_fps: f64,
    /// Frames captured since start.
    pub frames_captured_total: u64,
    /// Frames analysed since start.
    pub frames_processed_total: u64,
    /// Frames dropped since start (the queue to inference was full).
    pub frames_dropped_total: u64,
    /// Frames whose detection or classification failed, since start.
    pub frame_errors_total: u64,
    /// Full-window results since start (not published individually).
    pub results_total: u64,
    /// Faces tracked in the last analysed frame.
    pub tracks_active: usize,
    /// Per-stage latency: `queue` (capture to inference), `detect`, `track`, `classify`,
    /// `encode` (the image encoder's calls within `classify`, in frames that encoded crops),
    /// `frame` (whole frame through the pipeline).
    pub latency_ms: std::collections::BTreeMap<&'static str, LatencyFigures>,
    /// What each bounded stage dropped or refused since the start, by stage: `queue` (frames
    /// dropped oldest-first), `track` (detections that started no track), `sample` (samples
    /// refused), `window` (tracks evicted from the classifier), `aggregate` (results not
    /// tallied).
    pub dropped_total_by_stage: std::collections::BTreeMap<&'static str, u64>,
    /// Seconds the inference thread spent since start in each of its disjoint stages:
    /// `detect`, `track` (tracking and sampling), `encode` (the image encoder's calls) and
    /// `classify` (crops, preprocessing, windows, head and aggregation, without `encode`).
    pub busy_seconds_by_stage: std::collections::BTreeMap<&'static str, f64>,
    /// Resident memory of the daemon, bytes (Linux `/proc/self/status`).
    pub memory_rss_bytes: Option<u64>,
    /// Hottest thermal zone, °C, at the thermal guard's last poll; none when the guard is
    /// off or the board has no readable thermal zone.
    pub temperature_c: Option<f64>,
    /// Whether the thermal guard has lowered the sampling rate.
    pub thermal_throttled: bool,
    /// The multiplier applied to `sampling.rate_hz` now: 1, or `thermal.throttled_sampling_factor`.
    pub sampling_factor: f64,
    /// Whether the privacy controller lets the camera be open; none without `[privacy]`.
    pub camera_allowed: Option<bool>,
    /// The debounced privacy switch; none without `[privacy]` or before its first sample.
    pub privacy_switch: Option<caer_board::privacy::SwitchState>,
    /// The outbox.
    pub outbox: OutboxFigures,
    /// Successful broker connections since start (none in stdout mode).
    pub mqtt_connects_total: Option<u64>,
}

/// A command on `cmd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Stop capturing and analysing until `resume` (kept across restarts).
    Pause,
    /// Undo `pause`.
    Resume,
    /// Make the device findable: logs a notice (and lights the board's identify LED where
    /// the board support wires one).
    Identify,
    /// Go back to the model bundle that ran before the last switch.
    Rollback,
}

/// A checked control request, for the daemon's supervisor.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlRequest {
    /// A partial configuration change (not validated yet).
    SetConfig {
        /// The request's id, echoed in the ack.
        id: Option<String>,
        /// The partial configuration, a JSON object.
        patch: serde_json::Value,
    },
    /// A command.
    Command {
        /// The request's id, echoed in the ack.
        id: Option<String>,
        /// The command.
        command: Command,
    },
    /// A `model/offer` whose envelope passed [`crate::daemon::update::parse_offer`].
    ModelOffer(Box<crate::daemon::update::Offer>),
    /// A `model/chunk` whose bytes match its header.
    ModelChunk(crate::daemon::update::Chunk),
}

/// A rejected control message: the request id (if one could be read) and the problems.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The request's id, if the payload had a readable one.
    pub id: Option<String>,
    /// What is wrong, each naming its key.
    pub errors: Vec<ConfigIssue>,
}

impl Rejected {
    fn new(id: Option<String>, key: &str, reason: impl Into<String>) -> Self {
        Rejected {
            id,
            errors: vec![ConfigIssue {
                key: key.to_string(),
                reason: reason.into(),
            }],
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigSetEnvelope {
    schema: String,
    // Read by parse_envelope; declared so that deny_unknown_fields accepts it.
    #[serde(default)]
    #[allow(dead_code)]
    id: Option<String>,
    config: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CmdEnvelope {
    schema: String,
    // Read by parse_envelope; declared so that deny_unknown_fields accepts it.
    #[serde(default)]
    #[allow(dead_code)]
    id: Option<String>,
    command: Command,
}

/// Size, JSON and `id` checks shared by both topics; returns the parsed value and the id.
fn parse_envelope(payload: &[u8]) -> Result<(serde_json::Value, Option<String>), Rejected> {
    if payload.len() > MAX_CONTROL_BYTES {
        return Err(Rejected::new(
            None,
            "",
            format!(
                "payload is {} bytes; the limit is {MAX_CONTROL_BYTES}",
                payload.len()
            ),
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| Rejected::new(None, "", format!("payload is not valid JSON: {e}")))?;
    let id = match value.get("id") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) if s.chars().count() <= MAX_ID_CHARS => Some(s.clone()),
        Some(serde_json::Value::String(_)) => {
            return Err(Rejected::new(
                None,
                "id",
                format!("must be at most {MAX_ID_CHARS} characters"),
            ))
        }
        Some(_) => return Err(Rejected::new(None, "id", "must be a string")),
    };
    if !value.is_object() {
        return Err(Rejected::new(id, "", "payload must be a JSON object"));
    }
    Ok((value, id))
}

fn deserialize<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    id: &Option<String>,
) -> Result<T, Rejected> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { String::new() } else { key };
        Rejected::new(id.clone(), &key, e.inner().to_string())
    })
}

fn check_schema(found: &str, expected: &str, id: &Option<String>) -> Result<(), Rejected> {
    if found == expected {
        Ok(())
    } else {
        Err(Rejected::new(
            id.clone(),
            "schema",
            format!("is {found:?}; expected {expected:?}"),
        ))
    }
}

/// Checks a `config/set` payload: `{"schema": "caer.config-set.v1", "id": "...",
/// "config": {...}}`.
pub fn parse_config_set(payload: &[u8]) -> Result<ControlRequest, Rejected> {
    let (value, id) = parse_envelope(payload)?;
    let envelope: ConfigSetEnvelope = deserialize(value, &id)?;
    check_schema(&envelope.schema, CONFIG_SET_SCHEMA, &id)?;
    Ok(ControlRequest::SetConfig {
        id,
        patch: serde_json::Value::Object(envelope.config),
    })
}

/// Checks a `cmd` payload: `{"schema": "caer.cmd.v1", "id": "...", "command": "pause"}`.
pub fn parse_cmd(payload: &[u8]) -> Result<ControlRequest, Rejected> {
    let (value, id) = parse_envelope(payload)?;
    let envelope: CmdEnvelope = deserialize(value, &id)?;
    check_schema(&envelope.schema, CMD_SCHEMA, &id)?;
    Ok(ControlRequest::Command {
        id,
        command: envelope.command,
    })
}

/// The `config/ack` payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfigAck {
    /// Always [`CONFIG_ACK_SCHEMA`].
    pub schema: &'static str,
    /// The request's id, if it had one.
    pub id: Option<String>,
    /// Whether the change is in force.
    pub ok: bool,
    /// Why not (empty when `ok`).
    pub errors: Vec<ConfigIssue>,
}

impl ConfigAck {
    /// Success.
    pub fn ok(id: Option<String>) -> Self {
        ConfigAck {
            schema: CONFIG_ACK_SCHEMA,
            id,
            ok: true,
            errors: Vec::new(),
        }
    }
    /// Failure.
    pub fn error(id: Option<String>, errors: Vec<ConfigIssue>) -> Self {
        ConfigAck {
            schema: CONFIG_ACK_SCHEMA,
            id,
            ok: false,
            errors,
        }
    }
}

/// The `cmd/ack` payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CmdAck {
    /// Always [`CMD_ACK_SCHEMA`].
    pub schema: &'static str,
    /// The request's id, if it had one.
    pub id: Option<String>,
    /// The command, if it could be read.
    pub command: Option<Command>,
    /// Whether the command was carried out.
    pub ok: bool,
    /// Why not (empty when `ok`).
    pub errors: Vec<ConfigIssue>,
}

impl CmdAck {
    /// Success.
    pub fn ok(id: Option<String>, command: Command) -> Self {
        CmdAck {
            schema: CMD_ACK_SCHEMA,
            id,
            command: Some(command),
            ok: true,
            errors: Vec::new(),
        }
    }
    /// Failure.
    pub fn error(id: Option<String>, command: Option<Command>, errors: Vec<ConfigIssue>) -> Self {
        CmdAck {
            schema: CMD_ACK_SCHEMA,
            id,
            command,
            ok: false,
            errors,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(r: Result<ControlRequest, Rejected>) -> Rejected {
        r.expect_err("should be rejected")
    }

    #[test]
    fn config_set_envelope() {
        let ok = parse_config_set(
            br#"{"schema":"caer.config-set.v1","id":"r1","config":{"policy":{"profile":"fine"}}}"#,
        )
        .unwrap();
        assert_eq!(
            ok,
            ControlRequest::SetConfig {
                id: Some("r1".into()),
                patch: serde_json::json!({"policy": {"profile": "fine"}})
            }
        );
        let r = rejected(parse_config_set(b"{not json"));
        assert!(r.errors[0].reason.contains("not valid JSON"));
        let r = rejected(parse_config_set(
            br#"{"schema":"caer.config-set.v1","id":"r2","config":[]}"#,
        ));
        assert_eq!(
            (r.id.as_deref(), r.errors[0].key.as_str()),
            (Some("r2"), "config")
        );
        let r = rejected(parse_config_set(
            br#"{"schema":"caer.config-set.v1","config":{},"extra":1}"#,
        ));
        assert!(
            r.errors[0].reason.contains("unknown field `extra`"),
            "{r:?}"
        );
        let r = rejected(parse_config_set(br#"{"schema":"caer.cmd.v1","config":{}}"#));
        assert_eq!(r.errors[0].key, "schema");
        let r = rejected(parse_config_set(
            br#"{"id":5,"schema":"caer.config-set.v1","config":{}}"#,
        ));
        assert_eq!(r.errors[0].key, "id");
        let big = format!(
            r#"{{"schema":"caer.config-set.v1","config":{{"x":"{}"}}}}"#,
            "a".repeat(MAX_CONTROL_BYTES)
        );
        assert!(rejected(parse_config_set(big.as_bytes())).errors[0]
            .reason
            .contains("limit"));
    }

    #[test]
    fn cmd_envelope() {
        assert_eq!(
            parse_cmd(br#"{"schema":"caer.cmd.v1","command":"pause"}"#).unwrap(),
            ControlRequest::Command {
                id: None,
                command: Command::Pause
            }
        );
        let r = rejected(parse_cmd(
            br#"{"schema":"caer.cmd.v1","id":"x","command":"reboot"}"#,
        ));
        assert_eq!(
            (r.id.as_deref(), r.errors[0].key.as_str()),
            (Some("x"), "command")
        );
        assert!(
            rejected(parse_cmd(br#"{"schema":"caer.cmd.v1","command":7}"#)).errors[0].key
                == "command"
        );
        assert!(rejected(parse_cmd(b"[]")).errors[0]
            .reason
            .contains("object"));
    }
}
