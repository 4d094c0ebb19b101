//! Home Assistant MQTT discovery (`mqtt.home_assistant`, off by default): retained sensor
//! configurations under `<prefix>/sensor/<node>/<object>/config`, so that Home Assistant
//! shows the device's classroom figures without hand-written YAML. Only aggregates: the
//! headcount and the engaged ratio (from `engagement`), the device state (from `status`) and
//! the temperature (from `stats`); never anything per student. Availability follows the
//! retained `status`, which the broker's last will sets to `offline`. The configurations
//! are published at every connection and again whenever Home Assistant announces itself
//! (`online` on `<prefix>/status`, its birth message).

use serde_json::{json, Value};

use crate::daemon::config::{DeviceConfig, Topics};

/// What the sink publishes for discovery.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovery {
    /// Home Assistant's birth and last-will topic, `<prefix>/status`.
    pub birth_topic: String,
    /// `(topic, payload)` of each sensor configuration, published retained.
    pub configs: Vec<(String, Vec<u8>)>,
}

/// Home Assistant allows `[a-zA-Z0-9_-]` in node and object ids; device names may hold dots.
fn node_id(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl Discovery {
    /// The configurations of one device.
    pub fn new(prefix: &str, device: &DeviceConfig, topics: &Topics, version: &str) -> Discovery {
        let node = node_id(&format!("caer_{}_{}", device.site, device.id));
        let device_block = json!({
            "identifiers": [node.clone()],
            "name": format!("caer {} ({})", device.id, device.room),
            "manufacturer": "caer-edge",
            "model": "caerd",
            "sw_version": version,
            "suggested_area": device.room,
        });
        let availability = json!({
            "topic": topics.status(),
            "value_template": "{{ 'offline' if value_json.state == 'offline' else 'online' }}",
        });
        let sensor =
            |object: &str, name: &str, state_topic: String, template: &str, extra: Value| {
                let mut config = json!({
                    "name": name,
                    "unique_id": format!("{node}_{object}"),
                    "object_id": format!("{node}_{object}"),
                    "state_topic": state_topic,
                    "value_template": template,
                    "device": device_block.clone(),
                });
                let map = config.as_object_mut().expect("an object");
                if let Value::Object(extra) = extra {
                    map.extend(extra);
                }
                (
                    format!("{prefix}/sensor/{node}/{object}/config"),
                    config.to_string().into_bytes(),
                )
            };
        let configs = vec![
            sensor(
                "students",
                "Students present",
                topics.engagement(),
                // A suppressed interval has no figure: the sensor is unknown, not zero.
                "{{ value_json.students if value_json.students is defined else None }}",
                json!({"state_class": "measurement", "unit_of_measurement": "students",
                       "availability": [availability.clone()]}),
            ),
            sensor(
                "engaged_ratio",
                "Engaged",
                topics.engagement(),
                "{{ (value_json.engagement.engaged_ratio * 100) | round(1) if value_json.engagement is defined else None }}",
                json!({"state_class": "measurement", "unit_of_measurement": "%",
                       "availability": [availability.clone()]}),
            ),
            sensor(
                "state",
                "State",
                topics.status(),
                "{{ value_json.state }}",
                json!({}),
            ),
            sensor(
                "temperature",
                "Temperature",
                topics.stats(),
                "{{ value_json.temperature_c if value_json.temperature_c is not none else None }}",
                json!({"device_class": "temperature", "state_class": "measurement",
                       "unit_of_measurement": "°C", "availability": [availability]}),
            ),
        ];
        Discovery {
            birth_topic: format!("{prefix}/status"),
            configs,
        }
    }
}

/// Checks `mqtt.home_assistant_prefix`: topic levels without wildcards.
pub fn prefix_issue(prefix: &str) -> Option<String> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 64
        && prefix.split('/').all(|level| {
            !level.is_empty()
                && level
                    .chars()
                    .all(|c| c.is_ascii_graphic() && c != '+' && c != '#')
        });
    (!ok).then(|| {
        format!("{prefix:?} must be 1 to 64 printable characters in topic levels, without + or #")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_aggregate_sensors_bound_to_the_device_topics() {
        let device = DeviceConfig {
            site: "school.1".into(),
            room: "3b".into(),
            id: "caer-0001".into(),
        };
        let topics = Topics::new(&device);
        let d = Discovery::new("homeassistant", &device, &topics, "0.1.0");
        assert_eq!(d.birth_topic, "homeassistant/status");
        let topics_seen: Vec<&str> = d.configs.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            topics_seen,
            [
                "homeassistant/sensor/caer_school_1_caer-0001/students/config",
                "homeassistant/sensor/caer_school_1_caer-0001/engaged_ratio/config",
                "homeassistant/sensor/caer_school_1_caer-0001/state/config",
                "homeassistant/sensor/caer_school_1_caer-0001/temperature/config",
            ]
        );
        for (_, payload) in &d.configs {
            let v: Value = serde_json::from_slice(payload).unwrap();
            let state = v["state_topic"].as_str().unwrap();
            assert!(state.starts_with("caer/school.1/caer-0001/"), "{v}");
            assert!(!state.ends_with("config/set") && !state.ends_with("cmd"));
            assert_eq!(v["device"]["identifiers"][0], "caer_school_1_caer-0001");
        }
        assert!(prefix_issue("homeassistant").is_none());
        assert!(prefix_issue("ha/discovery").is_none());
        for bad in ["", "ha/#", "ha/+/x", "ha//x", "h a"] {
            assert!(prefix_issue(bad).is_some(), "{bad:?}");
        }
    }
}
