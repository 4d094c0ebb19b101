//! `caer-fleet ingest`: every device's engagement records into PostgreSQL, exactly once.
//!
//! - **At least once in, exactly once stored.** The broker delivers each record at least
//!   once (QoS 1). Records are stored with their primary key `(site, device, seq)` and
//!   `ON CONFLICT DO NOTHING`, so a redelivery changes nothing.
//! - **Acknowledged after the commit.** Acks are manual: a message is acknowledged to the
//!   broker only once the transaction holding it has committed. An ingester killed at any
//!   moment leaves its unacknowledged messages in its persistent session (clean start off,
//!   a session expiry of [`SESSION_EXPIRY_SECS`]); the broker delivers them again when it
//!   comes back with the same client id.
//! - **Bounded.** The broker sends at most two batches (`2 x batch_max`) of unacknowledged
//!   messages at once (MQTT 5 receive maximum), so a database outage holds at most that in
//!   memory: the broker keeps the rest.
//! - **Scaling out.** Engagement and stats are subscribed as MQTT 5 shared subscriptions,
//!   `$share/<group>/caer/+/+/engagement`: every ingester of a group gets a share of the
//!   records. The retained `status` is subscribed by each ingester (shared subscriptions get
//!   no retained messages), and stored as the device's latest state.
//! - **Reconnections.** Packet ids belong to one connection: messages received before a
//!   reconnection are stored but not acknowledged; the broker sends them again (the session
//!   is kept), and the second copy is acknowledged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{Client, Event};
use tracing::{info, warn};

use crate::broker::Broker;
use crate::check::{Checker, Incoming};
use crate::error::FleetError;
use crate::store::{Store, Stored};

/// How long the broker keeps an ingester's session while it is away (7 days).
pub const SESSION_EXPIRY_SECS: u32 = 7 * 24 * 3600;

/// How an ingester runs.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// PostgreSQL URL (`postgres://user@host:port/db`).
    pub database: String,
    /// The shared-subscription group.
    pub group: String,
    /// MQTT client id; must stay the same across restarts (the session is found by it).
    pub client_id: String,
    /// Largest batch, and the receive maximum (1 to 65535).
    pub batch_max: u16,
    /// Longest a received message waits for its batch to be stored.
    pub batch_wait: Duration,
}

/// One received message, checked, and whether it may still be acknowledged.
struct Pending {
    incoming: Incoming,
    /// None once a reconnection made its packet id meaningless.
    ack: Option<Publish>,
}

/// Runs until `stop` is set: stores what is pending, acknowledges it, disconnects.
pub fn run(
    broker: &Broker,
    options: &IngestOptions,
    stop: Arc<AtomicBool>,
) -> Result<Stored, FleetError> {
    // The database first: when it refuses, nothing has been received, nothing is lost.
    let mut store = Some(Store::connect(&options.database)?);
    let mut mqtt = broker.options(&options.client_id)?;
    mqtt.set_clean_start(false);
    mqtt.set_session_expiry_interval(Some(SESSION_EXPIRY_SECS));
    mqtt.set_manual_acks(true);
    // Two batches in flight: the next one arrives while one is being stored.
    mqtt.set_receive_maximum(Some(options.batch_max.saturating_mul(2)));
    mqtt.set_max_packet_size(Some(256 * 1024));
    let (client, mut connection) = Client::new(mqtt, usize::from(options.batch_max) * 4 + 16);
    let checker = Checker::default();
    let topics = [
        format!("$share/{}/caer/+/+/engagement", options.group),
        format!("$share/{}/caer/+/+/stats", options.group),
        "caer/+/+/status".to_string(),
    ];
    let mut pending: Vec<Pending> = Vec::new();
    let mut oldest: Option<Instant> = None;
    let mut total = Stored::default();
    let mut last_db_attempt = Instant::now();
    let mut last_log = Instant::now();
    let mut mqtt_errors = 0u32;
    info!(broker = %broker.describe(), group = %options.group, client_id = %options.client_id, "ingesting");
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let database_down = store.as_ref().is_none_or(Store::is_closed);
        let wait = match oldest {
            // A batch is due but cannot be stored: listen while waiting for the next attempt.
            Some(_) if database_down => Duration::from_millis(200),
            Some(t) => options.batch_wait.saturating_sub(t.elapsed()),
            None => Duration::from_millis(200),
        };
        if !stopping {
            match connection.recv_timeout(wait.max(Duration::from_millis(1))) {
                Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                    mqtt_errors = 0;
                    for p in &mut pending {
                        p.ack = None;
                    }
                    info!(session_present = ack.session_present, "connected");
                    for topic in &topics {
                        // A full request channel here would mean a stuck connection; the
                        // next ConnAck subscribes again.
                        let _ = client.try_subscribe(topic.clone(), QoS::AtLeastOnce);
                    }
                }
                Ok(Ok(Event::Incoming(Packet::Publish(publish)))) => {
                    let topic = String::from_utf8_lossy(&publish.topic).into_owned();
                    let incoming = checker.check(&topic, &publish.payload);
                    if let Incoming::Rejected { reason, .. } = &incoming {
                        warn!(%topic, %reason, "rejected");
                    }
                    oldest.get_or_insert_with(Instant::now);
                    let ack = (publish.qos != QoS::AtMostOnce).then_some(publish);
                    pending.push(Pending { incoming, ack });
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    mqtt_errors = mqtt_errors.saturating_add(1);
                    warn!(error = %e, "broker connection");
                    std::thread::sleep(Duration::from_millis(200 * u64::from(mqtt_errors.min(10))));
                }
                Err(rumqttc::v5::RecvTimeoutError::Timeout) => {}
                Err(rumqttc::v5::RecvTimeoutError::Disconnected) => {
                    return Err(FleetError::Broker {
                        broker: broker.describe(),
                        reason: "the connection ended".into(),
                    })
                }
            }
        }
        let due = oldest.is_some_and(|t| t.elapsed() >= options.batch_wait)
            || pending.len() >= usize::from(options.batch_max)
            || stopping;
        if due && !pending.is_empty() {
            if store.as_ref().is_none_or(Store::is_closed)
                && last_db_attempt.elapsed() >= Duration::from_secs(1)
            {
                last_db_attempt = Instant::now();
                match Store::connect(&options.database) {
                    Ok(s) => {
                        info!("database connection back");
                        store = Some(s);
                    }
                    Err(e) => warn!(error = %e, "database still unreachable"),
                }
            }
            if let Some(s) = store.as_mut().filter(|s| !s.is_closed()) {
                let batch: Vec<&Incoming> = pending.iter().map(|p| &p.incoming).collect();
                match s.store(&batch) {
                    Ok(stored) => {
                        total += stored;
                        for p in pending.drain(..) {
                            if let Some(publish) = p.ack {
                                let _ = client.try_ack(&publish);
                            }
                        }
                        oldest = None;
                    }
                    Err(e) => {
                        warn!(error = %e, held = pending.len(), "database; holding the batch, not acknowledged");
                        store = None;
                    }
                }
            }
        }
        if last_log.elapsed() >= Duration::from_secs(10) {
            last_log = Instant::now();
            info!(
                records = total.records,
                duplicates = total.duplicates,
                rejected = total.rejected,
                "stored so far"
            );
        }
        if stopping && (pending.is_empty() || store.is_none()) {
            // Lets the acks out before the DISCONNECT.
            let _ = client.try_disconnect();
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                match connection.recv_timeout(Duration::from_millis(100)) {
                    Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)))
                    | Ok(Err(_))
                    | Err(_) => break,
                    _ => {}
                }
            }
            info!(
                records = total.records,
                duplicates = total.duplicates,
                rejected = total.rejected,
                held = pending.len(),
                "stopped"
            );
            return Ok(total);
        }
    }
}
