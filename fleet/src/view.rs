//! The fleet as the broker shows it: every device's retained `status`, its latest `stats`,
//! and the acks of requests sent by this tool. One short-lived MQTT 5 connection
//! (clean start), polled by the caller.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{Client, Connection, Event};
use serde_json::Value;

use crate::broker::Broker;
use crate::check::MAX_MESSAGE_BYTES;
use crate::error::FleetError;
use crate::topic;

/// Most devices kept in view, and most acks kept while waiting: a flood of made-up device
/// topics cannot take the tool's memory.
pub const MAX_DEVICES: usize = 100_000;
const MAX_ACKS: usize = 100_000;

/// What is known of one device.
#[derive(Debug, Clone, Default)]
pub struct DeviceView {
    /// Site.
    pub site: String,
    /// Device id.
    pub device: String,
    /// The retained `status`.
    pub status: Option<Value>,
    /// The latest `stats` seen.
    pub stats: Option<Value>,
    /// The retained `model/status`: the last model update job.
    pub model_status: Option<Value>,
    /// When anything of the device was last received.
    pub last_seen: Option<SystemTime>,
}

impl DeviceView {
    /// `status.state`, or `unknown`.
    pub fn state(&self) -> &str {
        self.status
            .as_ref()
            .and_then(|s| s.get("state"))
            .and_then(Value::as_str)
            .unwrap_or("unknown")
    }
    /// `status.room`.
    pub fn room(&self) -> &str {
        self.status
            .as_ref()
            .and_then(|s| s.get("room"))
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

/// An ack received: the device, the topic leaf (`config/ack`, `cmd/ack`), the payload.
#[derive(Debug, Clone)]
pub struct AckSeen {
    /// Site.
    pub site: String,
    /// Device id.
    pub device: String,
    /// The payload.
    pub json: Value,
}

/// A connection that watches the fleet.
pub struct Watch {
    client: Client,
    connection: Connection,
    broker: String,
    subscribed: usize,
    topics: Vec<String>,
    /// Every device seen, by (site, device).
    pub devices: BTreeMap<(String, String), DeviceView>,
    /// Acks received, in order.
    pub acks: Vec<AckSeen>,
    /// `model/fetch` requests received and not yet taken (only with [`Watch::open_for_push`]).
    pub fetches: std::collections::VecDeque<AckSeen>,
}

impl Watch {
    /// Connects and subscribes to status and stats (and acks with `with_acks`), and waits
    /// for the subscriptions to be granted, so that every retained status follows.
    pub fn open(broker: &Broker, with_acks: bool) -> Result<Watch, FleetError> {
        let mut topics = vec![
            "caer/+/+/status".to_string(),
            "caer/+/+/stats".to_string(),
            "caer/+/+/model/status".to_string(),
        ];
        if with_acks {
            topics.push("caer/+/+/config/ack".into());
            topics.push("caer/+/+/cmd/ack".into());
        }
        Watch::open_topics(broker, topics)
    }

    /// [`Watch::open`] for `model push`: with the devices' `model/fetch` requests.
    pub fn open_for_push(broker: &Broker) -> Result<Watch, FleetError> {
        let topics = ["status", "model/status", "model/fetch"]
            .map(|leaf| format!("caer/+/+/{leaf}"))
            .to_vec();
        Watch::open_topics(broker, topics)
    }

    fn open_topics(broker: &Broker, topics: Vec<String>) -> Result<Watch, FleetError> {
        let id = format!(
            "caer-fleet-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .subsec_nanos()
        );
        let mut options = broker.options(&id)?;
        options.set_clean_start(true);
        options.set_max_packet_size(Some(256 * 1024));
        let (client, connection) = Client::new(options, 256);
        let mut watch = Watch {
            client,
            connection,
            broker: broker.describe(),
            subscribed: 0,
            topics,
            devices: BTreeMap::new(),
            acks: Vec::new(),
            fetches: std::collections::VecDeque::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while watch.subscribed < watch.topics.len() {
            if Instant::now() >= deadline {
                return Err(watch.error("no answer to the subscriptions within 10 s"));
            }
            watch.poll(Duration::from_millis(100))?;
        }
        Ok(watch)
    }

    fn error(&self, reason: impl Into<String>) -> FleetError {
        FleetError::Broker {
            broker: self.broker.clone(),
            reason: reason.into(),
        }
    }

    /// Handles what arrives within `duration`.
    pub fn poll(&mut self, duration: Duration) -> Result<(), FleetError> {
        let deadline = Instant::now() + duration;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            match self.connection.recv_timeout(left) {
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                    for topic in &self.topics {
                        self.client
                            .try_subscribe(topic.clone(), QoS::AtLeastOnce)
                            .map_err(|e| FleetError::Broker {
                                broker: self.broker.clone(),
                                reason: e.to_string(),
                            })?;
                    }
                }
                Ok(Ok(Event::Incoming(Packet::SubAck(ack)))) => {
                    self.subscribed += ack.return_codes.len();
                }
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    self.on_message(&topic, &p.payload);
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(self.error(e.to_string())),
                Err(rumqttc::v5::RecvTimeoutError::Timeout) => return Ok(()),
                Err(rumqttc::v5::RecvTimeoutError::Disconnected) => {
                    return Err(self.error("the connection ended"))
                }
            }
        }
    }

    fn on_message(&mut self, topic_name: &str, payload: &[u8]) {
        // A name that is not a device's, or a payload that is not a JSON object, is not shown.
        let Ok(t) = topic::parse(topic_name) else {
            return;
        };
        if payload.len() > MAX_MESSAGE_BYTES {
            return;
        }
        let Ok(json) = serde_json::from_slice::<Value>(payload) else {
            return;
        };
        if !json.is_object() {
            return;
        }
        if t.leaf == "model/fetch" {
            if self.fetches.len() < MAX_ACKS {
                self.fetches.push_back(AckSeen {
                    site: t.site,
                    device: t.device,
                    json,
                });
            }
            return;
        }
        if t.leaf.ends_with("/ack") {
            if self.acks.len() >= MAX_ACKS {
                return;
            }
            self.acks.push(AckSeen {
                site: t.site,
                device: t.device,
                json,
            });
            return;
        }
        let key = (t.site.clone(), t.device.clone());
        if self.devices.len() >= MAX_DEVICES && !self.devices.contains_key(&key) {
            return;
        }
        let view = self.devices.entry(key).or_insert_with(|| DeviceView {
            site: t.site.clone(),
            device: t.device.clone(),
            ..DeviceView::default()
        });
        view.last_seen = Some(SystemTime::now());
        match t.leaf.as_str() {
            "status" => view.status = Some(json),
            "stats" => view.stats = Some(json),
            "model/status" => view.model_status = Some(json),
            _ => {}
        }
    }

    /// Publishes a request (QoS 1, never retained: a device refuses retained requests).
    /// While the client's request queue is full, the connection is polled to drain it.
    pub fn publish(&mut self, topic: String, payload: Vec<u8>) -> Result<(), FleetError> {
        self.publish_qos(topic, payload, QoS::AtLeastOnce)
    }

    /// [`Watch::publish`] at `qos`.
    pub fn publish_qos(
        &mut self,
        topic: String,
        payload: Vec<u8>,
        qos: QoS,
    ) -> Result<(), FleetError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self
                .client
                .try_publish(topic.clone(), qos, false, payload.clone())
            {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(self.error(e.to_string())),
                Err(_) => self.poll(Duration::from_millis(20))?,
            }
        }
    }

    /// Polls until no new device has appeared for `quiet` (the retained statuses after a
    /// subscription come in a burst), at most `limit`.
    pub fn settle(&mut self, quiet: Duration, limit: Duration) -> Result<(), FleetError> {
        let deadline = Instant::now() + limit;
        let mut known = self.devices.len();
        let mut since = Instant::now();
        while Instant::now() < deadline && since.elapsed() < quiet {
            self.poll(Duration::from_millis(50))?;
            if self.devices.len() != known {
                known = self.devices.len();
                since = Instant::now();
            }
        }
        Ok(())
    }

    /// Sends DISCONNECT and lets it out.
    pub fn close(mut self) {
        let _ = self.client.try_disconnect();
        let _ = self.poll(Duration::from_millis(300));
    }
}
