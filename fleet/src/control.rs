//! `caer-fleet config set` and `caer-fleet cmd`: one request to every device that matches,
//! each device's ack awaited, one result per device.
//!
//! The targets are the devices whose retained `status` matches the filters. A device whose
//! status is `offline` (its last will, or a clean exit) is not sent anything and counts as a
//! failure, as do a refusal and a missing ack.

use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::{json, Map, Value};

use caer::daemon::fleet::{CMD_SCHEMA, CONFIG_SET_SCHEMA};

use crate::broker::Broker;
use crate::error::FleetError;
use crate::topic::device_topic;
use crate::view::Watch;

/// Which devices a request goes to; at least one filter, or `all`.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// `device.site`.
    pub site: Option<String>,
    /// `device.room`.
    pub room: Option<String>,
    /// Device ids (any of them).
    pub devices: Vec<String>,
    /// Every device.
    pub all: bool,
}

impl Targets {
    pub(crate) fn check(&self) -> Result<(), FleetError> {
        if !self.all && self.site.is_none() && self.room.is_none() && self.devices.is_empty() {
            return Err(FleetError::Usage(
                "name the targets: --site, --room, --device, or --all for every device".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn matches(&self, site: &str, room: &str, device: &str) -> bool {
        self.site.as_deref().is_none_or(|s| s == site)
            && self.room.as_deref().is_none_or(|r| r == room)
            && (self.devices.is_empty() || self.devices.iter().any(|d| d == device))
    }
}

/// What one device did with the request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum Outcome {
    /// It acked `ok: true`.
    Ok,
    /// It acked `ok: false`, with its reasons.
    Refused {
        /// `key: reason`, as the ack says.
        errors: Vec<String>,
    },
    /// No ack within the timeout.
    TimedOut,
    /// Its status is `offline`: nothing was sent.
    Offline,
    /// Named with `--device` but no status of it was found.
    Unknown,
}

/// One line of the result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceResult {
    /// Site.
    pub site: String,
    /// Device id.
    pub device: String,
    /// What happened.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// A request: a configuration change or a command.
#[derive(Debug, Clone)]
pub enum Request {
    /// `config/set` with this partial configuration.
    Config(Value),
    /// `cmd` with this command (`pause`, `resume`, `identify`, `rollback`).
    Command(String),
}

impl Request {
    /// The topic leaf the request goes to (its ack comes on `<leaf>/ack`, `config/ack`).
    fn topic(&self) -> &'static str {
        match self {
            Request::Config(_) => "config/set",
            Request::Command(_) => "cmd",
        }
    }

    fn payload(&self, id: &str) -> Vec<u8> {
        let value = match self {
            Request::Config(change) => {
                json!({"schema": CONFIG_SET_SCHEMA, "id": id, "config": change})
            }
            Request::Command(command) => {
                json!({"schema": CMD_SCHEMA, "id": id, "command": command})
            }
        };
        value.to_string().into_bytes()
    }

    /// The checks made before anything is sent: the same rules as the device's.
    pub fn check(&self) -> Result<(), FleetError> {
        match self {
            Request::Config(change) => caer::daemon::config::remote::check_change(change)
                .map_err(|e| FleetError::Usage(format!("the change is refused here: {e}"))),
            Request::Command(c) => {
                serde_json::from_value::<caer::daemon::fleet::Command>(Value::String(c.clone()))
                    .map(|_| ())
                    .map_err(|_| {
                        FleetError::Usage(format!(
                            "unknown command {c:?}: pause, resume, identify or rollback"
                        ))
                    })
            }
        }
    }
}

/// Builds a change from `key=value` pairs (`sampling.rate_hz=1.5`): the value is read as
/// JSON (a number, `true`, `null`, a list) and otherwise taken as a string.
pub fn change_from_pairs(pairs: &[String]) -> Result<Value, FleetError> {
    let mut root = Map::new();
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| FleetError::Usage(format!("--set {pair:?}: expected key=value")))?;
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.into()));
        let mut parts: Vec<&str> = key.split('.').collect();
        let leaf = parts
            .pop()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| FleetError::Usage(format!("--set {pair:?}: the key is empty")))?;
        let mut map = &mut root;
        for part in parts {
            map = map
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .ok_or_else(|| FleetError::Usage(format!("--set {pair:?}: {part} is a value")))?;
        }
        map.insert(leaf.to_string(), value);
    }
    Ok(Value::Object(root))
}

/// Sends `request` to every target and waits up to `timeout` for the acks.
pub fn send(
    broker: &Broker,
    targets: &Targets,
    request: &Request,
    timeout: Duration,
) -> Result<Vec<DeviceResult>, FleetError> {
    targets.check()?;
    request.check()?;
    let mut watch = Watch::open(broker, true)?;
    // The retained statuses follow the SUBACKs in a burst: wait until it is over.
    watch.settle(Duration::from_millis(500), Duration::from_secs(10))?;
    let id = format!(
        "fleet-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
    );
    let set_leaf = request.topic();
    let mut results: Vec<DeviceResult> = Vec::new();
    let mut waiting: Vec<(String, String)> = Vec::new();
    let matching: Vec<(String, String, bool)> = watch
        .devices
        .values()
        .filter(|v| v.status.is_some() && targets.matches(&v.site, v.room(), &v.device))
        .map(|v| (v.site.clone(), v.device.clone(), v.state() == "offline"))
        .collect();
    for (site, device, offline) in matching {
        if offline {
            results.push(DeviceResult {
                site,
                device,
                outcome: Outcome::Offline,
            });
            continue;
        }
        watch.publish(device_topic(&site, &device, set_leaf), request.payload(&id))?;
        waiting.push((site, device));
    }
    for named in &targets.devices {
        let known = watch
            .devices
            .values()
            .any(|v| &v.device == named && v.status.is_some());
        if !known {
            results.push(DeviceResult {
                site: targets.site.clone().unwrap_or_default(),
                device: named.clone(),
                outcome: Outcome::Unknown,
            });
        }
    }
    let deadline = Instant::now() + timeout;
    let mut seen = 0;
    while !waiting.is_empty() && Instant::now() < deadline {
        watch.poll(Duration::from_millis(100))?;
        for ack in &watch.acks[seen..] {
            let ours = ack.json.get("id").and_then(Value::as_str) == Some(id.as_str());
            let Some(at) = waiting
                .iter()
                .position(|(s, d)| *s == ack.site && *d == ack.device)
            else {
                continue;
            };
            if !ours {
                continue;
            }
            let (site, device) = waiting.remove(at);
            let outcome = if ack.json.get("ok").and_then(Value::as_bool) == Some(true) {
                Outcome::Ok
            } else {
                let errors = ack
                    .json
                    .get("errors")
                    .and_then(Value::as_array)
                    .map(|list| {
                        list.iter()
                            .map(|e| {
                                format!(
                                    "{}: {}",
                                    e["key"].as_str().unwrap_or(""),
                                    e["reason"].as_str().unwrap_or("")
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                Outcome::Refused { errors }
            };
            results.push(DeviceResult {
                site,
                device,
                outcome,
            });
        }
        seen = watch.acks.len();
    }
    for (site, device) in waiting {
        results.push(DeviceResult {
            site,
            device,
            outcome: Outcome::TimedOut,
        });
    }
    watch.close();
    results.sort_by(|a, b| (&a.site, &a.device).cmp(&(&b.site, &b.device)));
    Ok(results)
}

/// One readable line per device.
pub fn lines(results: &[DeviceResult]) -> String {
    let mut out = String::new();
    for r in results {
        let what = match &r.outcome {
            Outcome::Ok => "ok".to_string(),
            Outcome::Refused { errors } => format!("refused: {}", errors.join("; ")),
            Outcome::TimedOut => "timed out: no ack".to_string(),
            Outcome::Offline => "offline: not sent".to_string(),
            Outcome::Unknown => "unknown: no status of this device".to_string(),
        };
        let line = format!("{}/{}: {what}", r.site, r.device);
        out.push_str(&crate::devices::printable(&line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_make_a_nested_change_with_json_values() {
        let change = change_from_pairs(&[
            "sampling.rate_hz=1.5".into(),
            "policy.profile=coarse".into(),
            "detect.blaze.tile_sizes=[224,448]".into(),
        ])
        .unwrap();
        assert_eq!(
            change,
            json!({"sampling": {"rate_hz": 1.5}, "policy": {"profile": "coarse"},
                   "detect": {"blaze": {"tile_sizes": [224, 448]}}})
        );
        assert!(change_from_pairs(&["novalue".into()]).is_err());
        assert!(change_from_pairs(&["a=1".into(), "a.b=2".into()]).is_err());
    }

    #[test]
    fn a_change_the_device_would_refuse_is_refused_before_sending() {
        let bad = Request::Config(json!({"source": {"kind": "v4l2"}}));
        let message = bad.check().unwrap_err().to_string();
        assert!(message.contains("source.kind"), "{message}");
        assert!(Request::Command("reboot".into()).check().is_err());
        assert!(Request::Command("pause".into()).check().is_ok());
    }
}
