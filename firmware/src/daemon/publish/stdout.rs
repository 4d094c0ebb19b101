//! The stdout sink: every payload as one JSON line, for the demo and for runs without a
//! broker.
//!
//! Engagement records still go through the outbox (so sequence numbers are the same as
//! with a broker and survive restarts); a record is acknowledged once its line is written
//! and flushed. Status and stats lines are written as they come; there is no remote control
//! without a broker, so replies are dropped. A closed stdout (`caerd --demo | head`) ends the
//! sink with [`SinkError::BrokenPipe`], which the daemon treats as a clean stop.

use std::io::{self, Write};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::{lock_outbox, SharedOutbox, SinkError, SinkMessage};

/// Records written per outbox lock.
const BATCH: usize = 32;

/// Writes payloads to stdout (see the module docs).
#[derive(Debug)]
pub struct StdoutSink {
    outbox: SharedOutbox,
    inbox: Receiver<SinkMessage>,
}

fn write_line(payload: &[u8]) -> Result<(), SinkError> {
    let mut out = io::stdout().lock();
    out.write_all(payload)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
        .map_err(|e| {
            if e.kind() == io::ErrorKind::BrokenPipe {
                SinkError::BrokenPipe
            } else {
                SinkError::Stdout(e)
            }
        })
}

impl StdoutSink {
    /// A sink draining `outbox` and taking messages from `inbox`.
    pub fn new(outbox: SharedOutbox, inbox: Receiver<SinkMessage>) -> Self {
        StdoutSink { outbox, inbox }
    }

    /// Runs until [`SinkMessage::Shutdown`] (or until every sender is gone).
    pub fn run(self) -> Result<(), SinkError> {
        let mut last_flush = Instant::now();
        loop {
            match self.inbox.recv_timeout(Duration::from_millis(250)) {
                Ok(SinkMessage::Status(payload) | SinkMessage::Stats(payload)) => {
                    write_line(&payload)?
                }
                Ok(SinkMessage::Shutdown { status, .. }) => {
                    self.drain()?;
                    lock_outbox(&self.outbox).flush();
                    return write_line(&status);
                }
                Ok(SinkMessage::OutboxReady | SinkMessage::Reply(..) | SinkMessage::Wake) => {}
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.drain()?;
                    lock_outbox(&self.outbox).flush();
                    return Err(SinkError::Disconnected);
                }
            }
            self.drain()?;
            if last_flush.elapsed() >= Duration::from_secs(1) {
                lock_outbox(&self.outbox).flush();
                last_flush = Instant::now();
            }
        }
    }

    /// Writes and acknowledges every pending record.
    fn drain(&self) -> Result<(), SinkError> {
        loop {
            let batch = lock_outbox(&self.outbox).pending_after(None, BATCH);
            if batch.is_empty() {
                return Ok(());
            }
            for (seq, payload) in batch {
                write_line(&payload)?;
                lock_outbox(&self.outbox).ack(seq);
            }
        }
    }
}
