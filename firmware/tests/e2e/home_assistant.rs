//! Home Assistant MQTT discovery (`mqtt.home_assistant`): the retained sensor configurations
//! a Home Assistant would read, sent at connection and again on its birth message.

use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

use super::util::{config_toml, Broker, Daemon, Subscriber, CAERD, PREFIX};

/// A client standing in for Home Assistant: subscribes to the discovery prefix and counts
/// the configurations it receives.
fn discovery_messages(
    broker: &Broker,
    until: usize,
    also_publish: Option<&str>,
) -> Vec<(String, Value)> {
    let mut options = MqttOptions::new(
        format!("ha-{}", std::process::id()),
        "127.0.0.1",
        broker.port(),
    );
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut connection) = Client::new(options, 16);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut birth_sent = false;
    while seen.len() < until {
        assert!(
            Instant::now() < deadline,
            "{} of {until} discovery messages",
            seen.len()
        );
        match connection.recv_timeout(Duration::from_millis(200)) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                client
                    .subscribe("homeassistant/#", QoS::AtLeastOnce)
                    .unwrap();
            }
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) if p.topic.ends_with("/config") => {
                seen.push((p.topic.clone(), serde_json::from_slice(&p.payload).unwrap()));
                // Once the retained set is in, Home Assistant "starts" and announces itself.
                if let (Some(birth), false) = (also_publish, birth_sent) {
                    if seen.len() == 4 {
                        client
                            .publish("homeassistant/status", QoS::AtLeastOnce, false, birth)
                            .unwrap();
                        birth_sent = true;
                    }
                }
            }
            _ => {}
        }
    }
    seen
}

#[test]
fn discovery_configs_are_aggregates_on_the_device_topics_and_follow_the_birth_message() {
    let broker = Broker::start();
    let subscriber = Subscriber::connect(&broker);
    let dir = tempfile::tempdir().unwrap();
    let source = "[source]\nkind = \"generated\"\nfps = 10.0\n[source.generated]\nwidth = 160\nheight = 120\nstudents = 4";
    let mut config = config_toml(&dir.path().join("state"), Some(&broker.url()), source, "");
    config = config.replace(
        "keep_alive_secs = 5\n",
        "keep_alive_secs = 5\nhome_assistant = true\n",
    );
    config.push_str(
        "[policy]\nprofile = \"presence\"\nmin_group_size = 2\n[report]\ninterval_secs = 1\n",
    );
    let path = dir.path().join("caerd.toml");
    std::fs::write(&path, config).unwrap();
    let _daemon = Daemon::start(CAERD, dir.path(), &path, &[]);
    subscriber.wait_for(Duration::from_secs(30), "a running status", |m| {
        m.iter()
            .any(|m| m.topic.ends_with("/status") && m.json()["state"] == "running")
    });

    // The retained set, then the same set again after Home Assistant's birth message.
    let seen = discovery_messages(&broker, 8, Some("online"));
    let first: Vec<&str> = seen[..4].iter().map(|(t, _)| t.as_str()).collect();
    let again: Vec<&str> = seen[4..].iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(first, again);
    let objects: Vec<&str> = first.iter().map(|t| t.split('/').nth(3).unwrap()).collect();
    assert_eq!(
        objects,
        ["students", "engaged_ratio", "state", "temperature"]
    );
    for (topic, config) in &seen {
        assert!(
            topic.starts_with("homeassistant/sensor/caer_e2e_dev-1/"),
            "{topic}"
        );
        let state_topic = config["state_topic"].as_str().unwrap();
        assert!(
            [
                format!("{PREFIX}/engagement"),
                format!("{PREFIX}/status"),
                format!("{PREFIX}/stats")
            ]
            .contains(&state_topic.to_string()),
            "{config}"
        );
        if let Some(availability) = config["availability"].as_array() {
            assert_eq!(availability[0]["topic"], format!("{PREFIX}/status"));
        }
        assert_eq!(config["device"]["identifiers"][0], "caer_e2e_dev-1");
    }
    // A client that connects later gets the four, retained.
    assert_eq!(discovery_messages(&broker, 4, None).len(), 4);
}
