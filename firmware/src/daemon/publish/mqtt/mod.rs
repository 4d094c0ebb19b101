//! The MQTT sink: rumqttc's synchronous client, with the outbox as the source of truth.
//!
//! Threads: the sink thread ([`MqttSink::run`]) owns the [`rumqttc::Client`] and all
//! delivery state; one short-lived connection thread per connection attempt iterates the
//! [`rumqttc::Connection`] (never with a timeout, so no poll future is ever cancelled) and
//! forwards each event into the session's own bounded channel, then wakes the sink with a
//! [`SinkMessage::Wake`]. It stops after the first error or once the session is dropped
//! (its channel closes), so events of an old connection never reach a new one.
//!
//! Connections: clean session, last will = `status` `offline` (retained). rumqttc keeps
//! unacknowledged publishes only in memory and, with a clean session, forgets them on
//! reconnect, so on any error the sink drops the whole client and builds a new one after a
//! backoff (doubling from `reconnect_min_ms` to `reconnect_max_ms`, with jitter). After each
//! CONNACK it subscribes to `config/set` and `cmd`, publishes the current status, and
//! replays every outbox record not yet acknowledged, oldest first.
//!
//! Acknowledgement mapping: rumqttc assigns packet ids itself and reports them, in the order
//! the requests were made, as `Outgoing::Publish(pkid)` events. The sink keeps a FIFO of what
//! it submitted (a record's `seq`, a control message, or a QoS 0 message) and pairs each
//! event with the head of the FIFO; a PUBACK then names the record to delete from the
//! outbox. Records in flight are capped at `max_in_flight` and QoS 1 messages in total
//! stay below rumqttc's own in-flight limit, so packet ids are never reused while
//! outstanding. The pairing state is per connection and starts empty on each.
//!
//! Delivery is at-least-once: a record whose PUBACK was lost is sent again after the next
//! reconnect or restart, with the same `seq`.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{
    Client, ConnectReturnCode, ConnectionError, Event, Outgoing, Packet, QoS, SubscribeReasonCode,
};

pub mod discovery;
mod settings;
mod state;

pub use settings::{
    parse_broker_url, BrokerAddress, MqttConfig, MqttSettings, MqttSetupError, Secret, TlsMaterial,
};
use state::{InFlight, Tag};

use crate::pipeline::source::backoff::Backoff;

use super::{lock_outbox, ReplyTopic, SharedOutbox, SinkError, SinkMessage};
use crate::daemon::fleet::{self, CmdAck, ConfigAck, ControlRequest, Rejected};

/// QoS 1 control messages (status, acks) allowed in flight besides records.
const CONTROL_SLOTS: usize = 8;
/// Replies waiting to be sent (while disconnected, or a flood of requests); older ones are
/// dropped beyond this (acks are small: at most a few hundred KiB).
const MAX_QUEUED_REPLIES: usize = 256;
/// Largest incoming packet rumqttc accepts; larger ones end the connection (limit them at the
/// broker: docs/remote-config.md). Payloads above [`fleet::MAX_CONTROL_BYTES`] but below this
/// get an error ack and the connection stays.
const MAX_INCOMING_PACKET: usize = 16 * 1024 * 1024;
/// Largest outgoing packet.
const MAX_OUTGOING_PACKET: usize = 256 * 1024;

/// Events of one connection, in the order rumqttc reported them.
type ConnectionEvent = Result<Event, ConnectionError>;

/// Most connection events handled in one turn of the loop, so that the daemon's messages
/// are not starved by a busy connection.
const EVENTS_PER_TURN: usize = 256;

/// One client and its connection thread; everything here dies with the connection.
struct Session {
    client: Client,
    events: Receiver<ConnectionEvent>,
    connected: bool,
    /// Submitted and sent publishes, waiting for their packet ids and PUBACKs.
    in_flight: InFlight,
    /// Packet id of the final status, once sent (shutdown).
    final_status_sent: bool,
}

impl Session {
    /// Submits a publish; returns whether rumqttc took it.
    fn publish(
        &mut self,
        topic: String,
        qos: QoS,
        retain: bool,
        payload: Vec<u8>,
        tag: Tag,
    ) -> bool {
        match self.client.try_publish(topic, qos, retain, payload) {
            Ok(()) => {
                self.in_flight.submitted(tag);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "mqtt request channel full; will retry");
                false
            }
        }
    }
}

/// Publishes to the broker (see the module docs).
pub struct MqttSink {
    settings: MqttSettings,
    outbox: SharedOutbox,
    inbox: Receiver<SinkMessage>,
    /// The sink's own channel, given to connection threads to wake it.
    wake: SyncSender<SinkMessage>,
    control: SyncSender<ControlRequest>,
    connects: Arc<AtomicU64>,
    backoff: Backoff,
    epoch: u64,
    session: Option<Session>,
    reconnect_at: Instant,
    failures: u32,
    status: Option<Vec<u8>>,
    status_dirty: bool,
    /// Home Assistant discovery configurations are due (a connection, Home Assistant's birth).
    discovery_dirty: bool,
    replies: VecDeque<(ReplyTopic, Vec<u8>)>,
    shutdown: Option<(Instant, Vec<u8>)>,
    last_flush: Instant,
}

impl fmt::Debug for MqttSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttSink")
            .field("host", &self.settings.host)
            .field("epoch", &self.epoch)
            .finish()
    }
}

impl MqttSink {
    /// A sink for `settings`. `inbox`/`wake` are the two ends of its channel; checked
    /// control requests go to `control`; successful connections are counted in `connects`.
    pub fn new(
        settings: MqttSettings,
        outbox: SharedOutbox,
        inbox: Receiver<SinkMessage>,
        wake: SyncSender<SinkMessage>,
        control: SyncSender<ControlRequest>,
        connects: Arc<AtomicU64>,
    ) -> Self {
        let backoff = Backoff::with_jitter(settings.reconnect_min, settings.reconnect_max);
        MqttSink {
            settings,
            outbox,
            inbox,
            wake,
            control,
            connects,
            backoff,
            epoch: 0,
            session: None,
            reconnect_at: Instant::now(),
            failures: 0,
            status: None,
            status_dirty: false,
            discovery_dirty: false,
            replies: VecDeque::new(),
            shutdown: None,
            last_flush: Instant::now(),
        }
    }

    /// Runs until a [`SinkMessage::Shutdown`] has been carried out.
    pub fn run(mut self) -> Result<(), SinkError> {
        loop {
            if self.session.is_none() && Instant::now() >= self.reconnect_at {
                self.connect()?;
            }
            match self.inbox.recv_timeout(Duration::from_millis(100)) {
                Ok(message) => self.handle(message)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(SinkError::Disconnected),
            }
            self.handle_connection_events()?;
            self.pump()?;
            if let Some((deadline, _)) = &self.shutdown {
                if self.finished_draining() || Instant::now() >= *deadline {
                    self.finish();
                    return Ok(());
                }
            }
            if self.last_flush.elapsed() >= Duration::from_secs(1) {
                lock_outbox(&self.outbox).flush();
                self.last_flush = Instant::now();
            }
        }
    }

    fn connect(&mut self) -> Result<(), SinkError> {
        self.epoch += 1;
        // Room for every QoS 1 message the window allows, plus QoS 0 stats and subscriptions.
        let capacity = 4 * (self.settings.max_in_flight + CONTROL_SLOTS) + 16;
        let (client, mut connection) = Client::new(self.settings.options(), capacity);
        let (events_tx, events) = mpsc::sync_channel(capacity);
        let wake = self.wake.clone();
        let epoch = self.epoch;
        std::thread::Builder::new()
            .name(format!("caer-mqtt-{epoch}"))
            .spawn(move || {
                for event in connection.iter() {
                    let failed = event.is_err();
                    // Blocks while the session's channel is full: rumqttc then stops reading.
                    if events_tx.send(event).is_err() || failed {
                        let _ = wake.try_send(SinkMessage::Wake);
                        return;
                    }
                    // A full channel means the sink is awake anyway.
                    let _ = wake.try_send(SinkMessage::Wake);
                }
            })
            .map_err(SinkError::Thread)?;
        tracing::debug!(host = %self.settings.host, port = self.settings.port, epoch, "connecting to the broker");
        self.session = Some(Session {
            client,
            events,
            connected: false,
            in_flight: InFlight::default(),
            final_status_sent: false,
        });
        Ok(())
    }

    fn handle(&mut self, message: SinkMessage) -> Result<(), SinkError> {
        match message {
            SinkMessage::OutboxReady | SinkMessage::Wake => {}
            SinkMessage::Status(payload) => {
                self.status = Some(payload);
                self.status_dirty = true;
            }
            SinkMessage::Stats(payload) => {
                if let Some(session) = self.session.as_mut().filter(|s| s.connected) {
                    session.publish(
                        self.settings.topics.stats(),
                        QoS::AtMostOnce,
                        false,
                        payload,
                        Tag::Fire,
                    );
                }
            }
            SinkMessage::Reply(topic, payload) => self.queue_reply(topic, payload),
            SinkMessage::Shutdown { drain, status } => {
                self.shutdown = Some((Instant::now() + drain, status));
            }
        }
        Ok(())
    }

    /// Handles what the current connection reported since the last turn.
    fn handle_connection_events(&mut self) -> Result<(), SinkError> {
        for _ in 0..EVENTS_PER_TURN {
            let Some(session) = self.session.as_ref() else {
                return Ok(());
            };
            match session.events.try_recv() {
                Ok(Ok(event)) => self.on_event(event)?,
                Ok(Err(error)) => self.on_error(&error),
                // The connection thread ends only after an error, handled above.
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return Ok(()),
            }
        }
        Ok(())
    }

    fn queue_reply(&mut self, topic: ReplyTopic, payload: Vec<u8>) {
        if self.replies.len() >= MAX_QUEUED_REPLIES {
            self.replies.pop_front();
            tracing::warn!("too many unsent replies; dropped the oldest");
        }
        self.replies.push_back((topic, payload));
    }

    fn on_event(&mut self, event: Event) -> Result<(), SinkError> {
        let Some(session) = self.session.as_mut() else {
            return Ok(());
        };
        match event {
            Event::Incoming(Packet::ConnAck(_)) => {
                session.connected = true;
                self.failures = 0;
                self.backoff.reset();
                self.connects.fetch_add(1, Ordering::Relaxed);
                let depth = lock_outbox(&self.outbox).depth();
                tracing::info!(host = %self.settings.host, port = self.settings.port, pending_records = depth, "connected to the broker");
                let topics = &self.settings.topics;
                for topic in [
                    topics.config_set(),
                    topics.cmd(),
                    topics.model_offer(),
                    topics.model_chunk(),
                ] {
                    if let Err(e) = session
                        .client
                        .try_subscribe(topic.clone(), QoS::AtLeastOnce)
                    {
                        tracing::warn!(%topic, error = %e, "cannot subscribe");
                    }
                }
                if let Some(discovery) = &self.settings.discovery {
                    if let Err(e) = session
                        .client
                        .try_subscribe(discovery.birth_topic.clone(), QoS::AtLeastOnce)
                    {
                        tracing::warn!(topic = %discovery.birth_topic, error = %e, "cannot subscribe");
                    }
                    self.discovery_dirty = true;
                }
                self.status_dirty = true;
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                if let Err(e) = session.in_flight.sent(pkid) {
                    // Should not happen; start a clean connection rather than risk
                    // acknowledging the wrong record.
                    tracing::error!(error = %e, "reconnecting");
                    self.drop_session(Duration::ZERO);
                }
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                if let Some(Tag::Record(seq)) = session.in_flight.acked(ack.pkid) {
                    lock_outbox(&self.outbox).ack(seq);
                    tracing::trace!(seq, "record acknowledged");
                }
            }
            Event::Incoming(Packet::SubAck(ack))
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, SubscribeReasonCode::Failure)) =>
            {
                tracing::error!(
                    "the broker refused a subscription to config/set or cmd; remote control is off"
                );
            }
            Event::Incoming(Packet::Publish(publish)) => {
                self.on_control(&publish.topic, &publish.payload, publish.retain)
            }
            _ => {}
        }
        Ok(())
    }

    /// A `config/set` or `cmd` message: checked, then handed to the supervisor, or refused
    /// with an ack. A retained one is refused (and never applied): it would be applied again
    /// at every connection and every start, undoing later changes.
    fn on_control(&mut self, topic: &str, payload: &[u8], retained: bool) {
        if let Some(discovery) = &self.settings.discovery {
            if topic == discovery.birth_topic {
                // Home Assistant (re)started: it has forgotten non-retained state.
                self.discovery_dirty |= payload == b"online";
                return;
            }
        }
        let topics = &self.settings.topics;
        if topic == topics.model_offer() || topic == topics.model_chunk() {
            return self.on_model_message(topic, payload, retained);
        }
        let (parsed, reply_topic) = if topic == topics.config_set() {
            (fleet::parse_config_set(payload), ReplyTopic::ConfigAck)
        } else if topic == topics.cmd() {
            (fleet::parse_cmd(payload), ReplyTopic::CmdAck)
        } else {
            return;
        };
        let rejected = match parsed {
            Ok(request) if retained => rejection(
                &request,
                "retained control messages are refused: publish it without the retain flag \
                 (and clear the retained one with an empty retained message)",
            ),
            Ok(request) => match self.control.try_send(request) {
                Ok(()) => return,
                Err(TrySendError::Full(request)) => {
                    rejection(&request, "the daemon is busy; retry later")
                }
                Err(TrySendError::Disconnected(request)) => {
                    rejection(&request, "the daemon is shutting down")
                }
            },
            Err(rejected) => rejected,
        };
        tracing::warn!(%topic, errors = ?rejected.errors, "rejected a control message");
        let payload = match reply_topic {
            ReplyTopic::ConfigAck => {
                serde_json::to_vec(&ConfigAck::error(rejected.id, rejected.errors))
            }
            ReplyTopic::CmdAck => {
                serde_json::to_vec(&CmdAck::error(rejected.id, None, rejected.errors))
            }
            ReplyTopic::ModelFetch | ReplyTopic::ModelStatus => return,
        };
        if let Ok(payload) = payload {
            self.queue_reply(reply_topic, payload);
        }
    }

    /// A `model/offer` or `model/chunk`: checked, then handed to the supervisor. A refused
    /// offer gets a `rejected` job status; a refused chunk is dropped (the device asks for
    /// it again).
    fn on_model_message(&mut self, topic: &str, payload: &[u8], retained: bool) {
        use crate::daemon::update::{self, JobState, JobStatus};
        let offer = topic == self.settings.topics.model_offer();
        let parsed = if retained {
            Err(update::Refused {
                job: None,
                reason: "retained model messages are refused: publish without the retain flag"
                    .into(),
            })
        } else if offer {
            update::parse_offer(payload).map(|o| ControlRequest::ModelOffer(Box::new(o)))
        } else if payload.len() > update::MAX_CHUNK_PAYLOAD_BYTES {
            Err(update::Refused {
                job: None,
                reason: format!(
                    "a chunk of {} bytes; the device asks for at most {}",
                    payload.len(),
                    update::CHUNK_BYTES
                ),
            })
        } else {
            update::parse_chunk(payload).map(ControlRequest::ModelChunk)
        };
        let refused = match parsed {
            Ok(request) => match self.control.try_send(request) {
                Ok(()) => return,
                Err(_) => update::Refused {
                    job: None,
                    reason: "the daemon is busy; offer it again later".into(),
                },
            },
            Err(refused) => refused,
        };
        tracing::warn!(%topic, reason = %refused.reason, "refused a model message");
        if offer {
            let status = JobStatus::new(refused.job, JobState::Rejected, Some(refused.reason));
            self.queue_reply(ReplyTopic::ModelStatus, status.to_payload());
        }
    }

    fn on_error(&mut self, error: &ConnectionError) {
        self.failures += 1;
        let delay = self.backoff.next_delay();
        let was_connected = self.session.as_ref().is_some_and(|s| s.connected);
        let retry_ms = delay.as_millis() as u64;
        match error {
            ConnectionError::ConnectionRefused(
                code @ (ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized),
            ) => tracing::error!(
                host = %self.settings.host,
                code = ?code,
                attempt = self.failures,
                retry_ms,
                "the broker refused the credentials; check mqtt.username and the password"
            ),
            _ if was_connected => {
                tracing::warn!(host = %self.settings.host, error = %error, retry_ms, "lost the broker connection")
            }
            _ => tracing::warn!(
                host = %self.settings.host,
                port = self.settings.port,
                error = %error,
                attempt = self.failures,
                retry_ms,
                "cannot connect to the broker"
            ),
        }
        self.drop_session(delay);
    }

    /// Forgets the client (its connection thread then ends) and schedules a reconnection.
    fn drop_session(&mut self, delay: Duration) {
        self.session = None;
        self.reconnect_at = Instant::now() + delay;
    }

    /// Submits what the window allows: status, replies, then outbox records.
    fn pump(&mut self) -> Result<(), SinkError> {
        let Some(session) = self.session.as_mut().filter(|s| s.connected) else {
            return Ok(());
        };
        let topics = &self.settings.topics;
        let qos1_cap = self.settings.max_in_flight + CONTROL_SLOTS;
        if self.status_dirty && session.in_flight.qos1() < qos1_cap {
            if let Some(status) = &self.status {
                if session.publish(
                    topics.status(),
                    QoS::AtLeastOnce,
                    true,
                    status.clone(),
                    Tag::Control,
                ) {
                    self.status_dirty = false;
                }
            } else {
                self.status_dirty = false;
            }
        }
        if self.discovery_dirty {
            // QoS 0, retained: sent again at every connection and every birth message, so a
            // lost one costs nothing, and no packet id is taken from the records.
            let configs = self.settings.discovery.iter().flat_map(|d| &d.configs);
            self.discovery_dirty = !configs.into_iter().all(|(topic, payload)| {
                session.publish(
                    topic.clone(),
                    QoS::AtMostOnce,
                    true,
                    payload.clone(),
                    Tag::Fire,
                )
            });
        }
        while session.in_flight.qos1() < qos1_cap {
            let Some((topic, payload)) = self.replies.pop_front() else {
                break;
            };
            let (topic, retain) = match topic {
                ReplyTopic::ConfigAck => (topics.config_ack(), false),
                ReplyTopic::CmdAck => (topics.cmd_ack(), false),
                ReplyTopic::ModelFetch => (topics.model_fetch(), false),
                ReplyTopic::ModelStatus => (topics.model_status(), true),
            };
            if !session.publish(topic, QoS::AtLeastOnce, retain, payload, Tag::Control) {
                break;
            }
        }
        let room = self
            .settings
            .max_in_flight
            .saturating_sub(session.in_flight.records());
        if room > 0 {
            let batch = lock_outbox(&self.outbox).pending_after(session.in_flight.cursor(), room);
            for (seq, payload) in batch {
                if !session.publish(
                    topics.engagement(),
                    QoS::AtLeastOnce,
                    false,
                    payload,
                    Tag::Record(seq),
                ) {
                    break;
                }
            }
        }
        if let Some((_, status)) = &self.shutdown {
            let drained =
                session.in_flight.records() == 0 && lock_outbox(&self.outbox).depth() == 0;
            if drained && !session.final_status_sent && session.in_flight.qos1() < qos1_cap {
                session.final_status_sent = session.publish(
                    topics.status(),
                    QoS::AtLeastOnce,
                    true,
                    status.clone(),
                    Tag::Control,
                );
            }
        }
        Ok(())
    }

    /// Whether shutdown may complete: every record delivered and the final status acked.
    fn finished_draining(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| s.final_status_sent && s.in_flight.qos1() == 0)
    }

    fn finish(&mut self) {
        lock_outbox(&self.outbox).flush();
        let depth = lock_outbox(&self.outbox).depth();
        if let Some(session) = self.session.take() {
            if session.connected {
                // A clean DISCONNECT: the broker does not publish the last will, so the
                // final status (published above, retained) is what remains.
                let _ = session.client.try_disconnect();
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if depth > 0 {
            tracing::warn!(
                pending_records = depth,
                "stopping with undelivered records; they are sent after the next start"
            );
        }
    }
}

fn rejection(request: &ControlRequest, reason: &str) -> Rejected {
    let id = match request {
        ControlRequest::SetConfig { id, .. } | ControlRequest::Command { id, .. } => id.clone(),
        ControlRequest::ModelOffer(_) | ControlRequest::ModelChunk(_) => None,
    };
    Rejected {
        id,
        errors: vec![crate::daemon::config::ConfigIssue {
            key: String::new(),
            reason: reason.to_string(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_not_printed() {
        let settings = format!(
            "{:?}",
            (
                Secret::new("hunter2".into()),
                TlsMaterial {
                    ca: vec![1],
                    client_auth: Some((vec![2], Secret::new("KEY".into()))),
                }
            )
        );
        assert!(
            !settings.contains("hunter2") && !settings.contains("KEY"),
            "{settings}"
        );
    }
}
