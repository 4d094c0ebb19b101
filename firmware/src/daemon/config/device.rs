//! Who this device is (`[device]`), and the MQTT topics that follow from it.

use serde::{Deserialize, Serialize};

use crate::pipeline::settings::Issues;

/// Device identity: the `[device]` section. Each value is 1 to 64 characters of
/// `A-Z a-z 0-9 . _ -`, so that it is safe inside an MQTT topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// The site (school, campus); second level of every topic. Required.
    pub site: String,
    /// The room the device watches; carried in every payload. Required.
    pub room: String,
    /// This device's id, unique within the site; third level of every topic. Required.
    pub id: String,
}

impl DeviceConfig {
    /// Every name that is not safe inside a topic.
    pub fn issues(&self, v: &mut Issues) {
        for (key, value) in [("site", &self.site), ("room", &self.room), ("id", &self.id)] {
            if !is_topic_name(value) {
                v.push(
                    key,
                    format!("{value:?} must be 1 to 64 characters of A-Z a-z 0-9 . _ -"),
                );
            }
        }
    }
}

/// 1 to 64 characters of `A-Z a-z 0-9 . _ -`: no MQTT wildcard, separator or control.
pub fn is_topic_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The topics of one device, all under `caer/<site>/<device>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    /// The topics of `device`.
    pub fn new(device: &DeviceConfig) -> Self {
        Topics {
            prefix: format!("caer/{}/{}", device.site, device.id),
        }
    }
    /// `caer/<site>/<device>`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
    /// Retained daemon status (and the last will).
    pub fn status(&self) -> String {
        format!("{}/status", self.prefix)
    }
    /// Aggregate records (QoS 1, from the outbox).
    pub fn engagement(&self) -> String {
        format!("{}/engagement", self.prefix)
    }
    /// Periodic operating figures.
    pub fn stats(&self) -> String {
        format!("{}/stats", self.prefix)
    }
    /// Remote configuration changes (subscribed).
    pub fn config_set(&self) -> String {
        format!("{}/config/set", self.prefix)
    }
    /// Answers to `config/set`.
    pub fn config_ack(&self) -> String {
        format!("{}/config/ack", self.prefix)
    }
    /// Commands (subscribed).
    pub fn cmd(&self) -> String {
        format!("{}/cmd", self.prefix)
    }
    /// Model bundle offers (subscribed).
    pub fn model_offer(&self) -> String {
        format!("{}/model/offer", self.prefix)
    }
    /// Chunks of an offered bundle (subscribed).
    pub fn model_chunk(&self) -> String {
        format!("{}/model/chunk", self.prefix)
    }
    /// Requests for chunks.
    pub fn model_fetch(&self) -> String {
        format!("{}/model/fetch", self.prefix)
    }
    /// Retained state of the last model update job.
    pub fn model_status(&self) -> String {
        format!("{}/model/status", self.prefix)
    }
    /// Answers to `cmd`.
    pub fn cmd_ack(&self) -> String {
        format!("{}/cmd/ack", self.prefix)
    }
}
