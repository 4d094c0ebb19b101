//! The stdout sink: every payload as one JSON line, for the demo and for runs without a
//! broker.
//!
//! Engagement records still go through the outbox (so sequence numbers are the same as
//! with a broker and survive restarts); a record is acknowledged once its line is written
//! and flushed. Status and stats lines are written as they come; there is no remote control
//! without a broker, so replies are dropped. A closed stdout (`caerd --demo | head`) ends the
//! sink with [`SinkError::BrokenPipe`], which the daemon treats as a clean stop.
//!
//! For the person watching, each engagement record also gets one readable line on stderr
//! ([`summary`]): the time, the headcount, the assessed, the engaged share and the top
//! classes. It is written from the record itself, so it says nothing the record does not.

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
                if let Some(line) = serde_json::from_slice(&payload)
                    .ok()
                    .and_then(|r| summary(&r))
                {
                    // Best effort: a closed stderr must not stop the records.
                    let _ = writeln!(io::stderr(), "{line}");
                }
                lock_outbox(&self.outbox).ack(seq);
            }
        }
    }
}

/// One readable line of an engagement record, e.g.
/// `12:00:31 room-3b: 28 students, 27 assessed, 81% engaged; neutrality 14, enjoyment 6,
/// confusion 4; coverage 100%`. `None` for anything that is not an engagement record.
pub fn summary(record: &serde_json::Value) -> Option<String> {
    let schema = record["schema"].as_str()?;
    if !schema.starts_with("caer.engagement.") {
        return None;
    }
    let time = record["interval_end"]
        .as_str()
        .and_then(|t| t.get(11..19))
        .unwrap_or("?");
    let room = record["room"].as_str().unwrap_or("?");
    if record["suppressed"] == true {
        return Some(format!(
            "{time} {room}: suppressed (fewer than {} people behind the figures)",
            record["min_group_size"]
        ));
    }
    let mut line = format!("{time} {room}: {} students", record["students"]);
    if let Some(assessed) = record["assessed"].as_u64() {
        line.push_str(&format!(", {assessed} assessed"));
    }
    if let Some(ratio) = record["engagement"]["engaged_ratio"].as_f64() {
        line.push_str(&format!(", {:.0}% engaged", ratio * 100.0));
    }
    if let Some(counts) = record["classes"]["counts"].as_object() {
        let mut top: Vec<(&String, u64)> = counts
            .iter()
            .filter_map(|(class, n)| n.as_u64().filter(|n| *n > 0).map(|n| (class, n)))
            .collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let top: Vec<String> = top
            .iter()
            .take(3)
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        if !top.is_empty() {
            line.push_str(&format!("; {}", top.join(", ")));
        }
    }
    if let Some(coverage) = record["coverage"].as_f64() {
        line.push_str(&format!("; coverage {:.0}%", coverage * 100.0));
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::summary;

    #[test]
    fn a_record_reads_as_one_line() {
        let record = json!({
            "schema": "caer.engagement.v2", "room": "room-3b", "suppressed": false,
            "interval_end": "2026-12-01T12:00:31.250Z", "students": 28, "assessed": 27,
            "coverage": 0.996,
            "engagement": {"engaged_ratio": 0.8148},
            "classes": {"counts": {"neutrality": 14, "enjoyment": 6, "confusion": 4,
                                    "fatigue": 0, "distraction": 3}},
        });
        assert_eq!(
            summary(&record).unwrap(),
            "12:00:31 room-3b: 28 students, 27 assessed, 81% engaged; \
             neutrality 14, enjoyment 6, confusion 4; coverage 100%"
        );
        let suppressed = json!({
            "schema": "caer.engagement.v2", "room": "r", "suppressed": true,
            "interval_end": "2026-12-01T12:00:31.250Z", "min_group_size": 5,
        });
        assert_eq!(
            summary(&suppressed).unwrap(),
            "12:00:31 r: suppressed (fewer than 5 people behind the figures)"
        );
        assert!(summary(&json!({"schema": "caer.status.v1"})).is_none());
    }
}
