//! What comes in from devices, checked before anything is stored: the topic's site and
//! device names, the size, JSON, the payload's JSON Schema (`schemas/`, the same files the
//! device's tests validate against), and that the payload names the device its topic names.
//! A message that fails is kept as [`Incoming::Rejected`] with the reason, never stored as
//! a record.

use std::time::SystemTime;

use serde_json::Value;

use crate::topic;

/// The largest message taken from a device; an engagement record is about 1 KiB.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// One engagement record, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// `site`.
    pub site: String,
    /// `device`.
    pub device: String,
    /// `seq`: the device's sequence number.
    pub seq: i64,
    /// `room`.
    pub room: String,
    /// `interval_start`.
    pub interval_start: SystemTime,
    /// `interval_end`.
    pub interval_end: SystemTime,
    /// `profile`.
    pub profile: String,
    /// `suppressed`.
    pub suppressed: bool,
    /// `students`, absent when suppressed.
    pub students: Option<i32>,
    /// `assessed`.
    pub assessed: Option<i32>,
    /// `engagement.engaged_ratio`.
    pub engaged_ratio: Option<f64>,
    /// `model_id`.
    pub model_id: Option<String>,
    /// The whole record.
    pub json: Value,
}

/// A message from the broker, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// An engagement record.
    Record(Box<Record>),
    /// A device's `status`.
    Status {
        /// The topic's site.
        site: String,
        /// The topic's device.
        device: String,
        /// `room`.
        room: String,
        /// The payload.
        json: Value,
    },
    /// A device's `stats`.
    Stats {
        /// The topic's site.
        site: String,
        /// The topic's device.
        device: String,
        /// The payload.
        json: Value,
    },
    /// A message that failed a check.
    Rejected {
        /// Its topic.
        topic: String,
        /// Its payload, as received.
        payload: Vec<u8>,
        /// Which check, and why.
        reason: String,
    },
    /// Nothing to store (a cleared retained status, a topic the tool does not store).
    Ignored,
}

/// The compiled schemas.
pub struct Checker {
    engagement: jsonschema::Validator,
    status: jsonschema::Validator,
    stats: jsonschema::Validator,
}

fn compile(text: &str) -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(text).expect("the committed schemas are JSON");
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("the committed schemas compile")
}

impl Default for Checker {
    fn default() -> Self {
        Checker {
            engagement: compile(include_str!("../../schemas/engagement.v2.json")),
            status: compile(include_str!("../../schemas/status.v1.json")),
            stats: compile(include_str!("../../schemas/stats.v1.json")),
        }
    }
}

impl Checker {
    /// Checks one message.
    pub fn check(&self, topic_name: &str, payload: &[u8]) -> Incoming {
        match self.try_check(topic_name, payload) {
            Ok(incoming) => incoming,
            Err(reason) => Incoming::Rejected {
                topic: topic_name.to_string(),
                payload: payload.to_vec(),
                reason,
            },
        }
    }

    fn try_check(&self, topic_name: &str, payload: &[u8]) -> Result<Incoming, String> {
        let topic = topic::parse(topic_name)?;
        let validator = match topic.leaf.as_str() {
            "engagement" => &self.engagement,
            "status" if payload.is_empty() => return Ok(Incoming::Ignored),
            "status" => &self.status,
            "stats" => &self.stats,
            _ => return Ok(Incoming::Ignored),
        };
        if payload.len() > MAX_MESSAGE_BYTES {
            return Err(format!(
                "payload is {} bytes; the limit is {MAX_MESSAGE_BYTES}",
                payload.len()
            ));
        }
        let json: Value = serde_json::from_slice(payload)
            .map_err(|e| format!("payload is not valid JSON: {e}"))?;
        if let Some(error) = validator.iter_errors(&json).next() {
            let at = error.instance_path.to_string();
            return Err(format!(
                "fails its schema at {:?}: {error}",
                if at.is_empty() { "/" } else { at.as_str() }
            ));
        }
        for key in ["site", "device"] {
            let named = json.get(key).and_then(Value::as_str).unwrap_or_default();
            let expected = if key == "site" {
                &topic.site
            } else {
                &topic.device
            };
            if named != expected {
                return Err(format!(
                    "payload {key} {named:?} is not the topic's {expected:?}"
                ));
            }
        }
        let text = |key: &str| json.get(key).and_then(Value::as_str).map(str::to_string);
        Ok(match topic.leaf.as_str() {
            "engagement" => Incoming::Record(Box::new(record(topic, json)?)),
            "status" => Incoming::Status {
                room: text("room").unwrap_or_default(),
                site: topic.site,
                device: topic.device,
                json,
            },
            _ => Incoming::Stats {
                site: topic.site,
                device: topic.device,
                json,
            },
        })
    }
}

/// The columns of a record that passed its schema; the conversions can still fail (a
/// sequence number above `i64::MAX`, a time the database cannot hold).
fn record(topic: topic::DeviceTopic, json: Value) -> Result<Record, String> {
    let time = |key: &str| -> Result<SystemTime, String> {
        let text = json.get(key).and_then(Value::as_str).unwrap_or_default();
        humantime::parse_rfc3339(text).map_err(|e| format!("{key} {text:?}: {e}"))
    };
    let count = |key: &str| -> Result<Option<i32>, String> {
        json.get(key)
            .and_then(Value::as_u64)
            .map(|n| i32::try_from(n).map_err(|_| format!("{key} {n} is too large")))
            .transpose()
    };
    let seq = json.get("seq").and_then(Value::as_u64).unwrap_or_default();
    Ok(Record {
        seq: i64::try_from(seq).map_err(|_| format!("seq {seq} is too large"))?,
        room: json["room"].as_str().unwrap_or_default().to_string(),
        interval_start: time("interval_start")?,
        interval_end: time("interval_end")?,
        profile: json["profile"].as_str().unwrap_or_default().to_string(),
        suppressed: json["suppressed"].as_bool().unwrap_or_default(),
        students: count("students")?,
        assessed: count("assessed")?,
        engaged_ratio: json
            .get("engagement")
            .and_then(|e| e.get("engaged_ratio"))
            .and_then(Value::as_f64),
        model_id: json
            .get("model_id")
            .and_then(Value::as_str)
            .map(str::to_string),
        site: topic.site,
        device: topic.device,
        json,
    })
}
