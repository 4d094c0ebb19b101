//! Sinks: where the daemon's payloads go.
//!
//! A sink runs on its own thread and owns the way out: [`mqtt::MqttSink`] (a broker) or
//! [`stdout::StdoutSink`] (JSON lines, when no broker is configured). Both take the same
//! [`SinkMessage`]s from one bounded channel and drain the same on-disk
//! [`Outbox`]: engagement records are published from the outbox and
//! removed from it only once delivered (a PUBACK, or a completed write to stdout). Status,
//! stats and acks are not kept on disk: status is re-sent on every connection, stats are
//! periodic, acks are best-effort answers.
//!
//! Nothing here runs inference or blocks for long: a sink waits on its channel with a short
//! timeout so that it notices new outbox records, shutdown and reconnection deadlines.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::daemon::outbox::{Outbox, OutboxError};

pub mod mqtt;
pub mod stdout;

/// Capacity of a sink's channel.
pub const SINK_CHANNEL_CAPACITY: usize = 64;

/// The outbox, shared by the pipeline (appends) and the sink (acks).
pub type SharedOutbox = Arc<Mutex<Outbox>>;

/// Locks the outbox; a panic elsewhere while it was held leaves it consistent (every
/// mutation is complete before it returns), so a poisoned lock is used as is.
pub fn lock_outbox(outbox: &SharedOutbox) -> MutexGuard<'_, Outbox> {
    outbox.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Which answer topic a reply goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyTopic {
    /// `config/ack`.
    ConfigAck,
    /// `cmd/ack`.
    CmdAck,
    /// `model/fetch`.
    ModelFetch,
    /// `model/status` (retained).
    ModelStatus,
}

/// What a sink is asked to do.
#[derive(Debug)]
pub enum SinkMessage {
    /// New records were appended to the outbox.
    OutboxReady,
    /// The new status payload (JSON); the MQTT sink publishes it retained, and again on
    /// every connection.
    Status(Vec<u8>),
    /// A stats payload (JSON), sent once and not kept.
    Stats(Vec<u8>),
    /// An answer to a control message (JSON).
    Reply(ReplyTopic, Vec<u8>),
    /// Deliver what can be delivered within `drain`, publish the final status, then stop.
    Shutdown {
        /// Longest wait for outstanding records.
        drain: Duration,
        /// The final status payload (JSON), e.g. `offline`.
        status: Vec<u8>,
    },
    /// Something the sink itself is waiting for has arrived (the MQTT sink's connection
    /// thread sends it after each event); carries nothing.
    Wake,
}

/// A sink that cannot go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The outbox failed.
    #[error(transparent)]
    Outbox(#[from] OutboxError),
    /// stdout was closed by the reader (e.g. `caerd --demo | head`).
    #[error("stdout closed")]
    BrokenPipe,
    /// stdout could not be written.
    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] std::io::Error),
    /// Every sender of the sink's channel is gone (the supervisor exited).
    #[error("sink channel closed")]
    Disconnected,
    /// The MQTT connection thread could not be started.
    #[error("cannot start the MQTT connection thread: {0}")]
    Thread(#[source] std::io::Error),
}
