//! The at-least-once core of the MQTT sink, without I/O: which submitted publish each packet
//! id stands for, and which outbox record a PUBACK acknowledges.
//!
//! rumqttc assigns packet ids itself and reports them, in the order the requests were made,
//! as `Outgoing::Publish(pkid)` events (0 for QoS 0). [`InFlight`] keeps a FIFO of what was
//! submitted and pairs each event with its head; a PUBACK then names the publish it answers.
//! Everything here belongs to one connection: a new connection starts with a fresh
//! [`InFlight`], and the outbox (the source of truth) is replayed after the cursor it left.
//!
//! Invariants: a record's seq is acknowledged only by the PUBACK of the packet id that carried
//! it on this connection; a duplicate or unknown PUBACK acknowledges nothing; an event out of
//! step with the FIFO is reported ([`OutOfStep`]) so that the sink drops the connection
//! instead of risking acknowledging the wrong record.

use std::collections::{HashMap, VecDeque};

/// What one submitted publish was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// An outbox record, by seq.
    Record(u64),
    /// A QoS 1 control message (status, ack).
    Control,
    /// A QoS 0 message (no packet id, no acknowledgement).
    Fire,
}

/// An `Outgoing::Publish` event that does not match the head of the FIFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("publish bookkeeping out of step: packet id {pkid} for {expected:?}")]
pub struct OutOfStep {
    /// The packet id reported.
    pub pkid: u16,
    /// What the FIFO held (none: nothing was submitted).
    pub expected: Option<Tag>,
}

/// The publishes of one connection between submission and acknowledgement.
#[derive(Debug, Default)]
pub struct InFlight {
    /// Submitted, waiting for their `Outgoing::Publish` event, in order.
    submitted: VecDeque<Tag>,
    /// Sent QoS 1 publishes by packet id, waiting for their PUBACK.
    sent: HashMap<u16, Tag>,
    /// Highest record seq submitted on this connection.
    cursor: Option<u64>,
}

impl InFlight {
    /// A publish was handed to the client.
    pub fn submitted(&mut self, tag: Tag) {
        if let Tag::Record(seq) = tag {
            self.cursor = Some(self.cursor.map_or(seq, |c| c.max(seq)));
        }
        self.submitted.push_back(tag);
    }

    /// The client sent the oldest submitted publish with packet id `pkid`.
    pub fn sent(&mut self, pkid: u16) -> Result<(), OutOfStep> {
        match self.submitted.pop_front() {
            Some(Tag::Fire) if pkid == 0 => Ok(()),
            Some(tag) if tag != Tag::Fire && pkid != 0 => {
                self.sent.insert(pkid, tag);
                Ok(())
            }
            expected => Err(OutOfStep { pkid, expected }),
        }
    }

    /// The broker acknowledged `pkid`: the publish it carried, if it was ours and not
    /// acknowledged before.
    pub fn acked(&mut self, pkid: u16) -> Option<Tag> {
        self.sent.remove(&pkid)
    }

    /// Highest record seq submitted on this connection (the replay continues after it).
    pub fn cursor(&self) -> Option<u64> {
        self.cursor
    }

    /// Records submitted or sent and not yet acknowledged.
    pub fn records(&self) -> usize {
        let is_record = |t: &&Tag| matches!(t, Tag::Record(_));
        self.submitted.iter().filter(is_record).count()
            + self.sent.values().filter(is_record).count()
    }

    /// QoS 1 publishes submitted or sent and not yet acknowledged (rumqttc's in-flight
    /// window must stay above this).
    pub fn qos1(&self) -> usize {
        self.submitted.iter().filter(|t| **t != Tag::Fire).count() + self.sent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_acknowledged_by_its_own_packet_id_only() {
        let mut f = InFlight::default();
        f.submitted(Tag::Record(7));
        f.submitted(Tag::Fire);
        f.submitted(Tag::Record(8));
        assert_eq!(f.records(), 2);
        f.sent(1).unwrap();
        f.sent(0).unwrap();
        f.sent(2).unwrap();
        assert_eq!(f.acked(3), None, "not ours");
        assert_eq!(f.acked(2), Some(Tag::Record(8)));
        assert_eq!(f.records(), 1);
        assert_eq!(f.cursor(), Some(8));
    }

    #[test]
    fn acks_out_of_order_and_duplicates() {
        let mut f = InFlight::default();
        for seq in 0..4 {
            f.submitted(Tag::Record(seq));
            f.sent(seq as u16 + 1).unwrap();
        }
        f.submitted(Tag::Control);
        f.sent(5).unwrap();
        assert_eq!(f.qos1(), 5);
        let order = [3u16, 1, 5, 4, 2];
        let acked: Vec<_> = order.iter().map(|&p| f.acked(p)).collect();
        assert_eq!(
            acked,
            [
                Some(Tag::Record(2)),
                Some(Tag::Record(0)),
                Some(Tag::Control),
                Some(Tag::Record(3)),
                Some(Tag::Record(1))
            ]
        );
        assert_eq!(f.acked(3), None, "a duplicate PUBACK acknowledges nothing");
        assert_eq!((f.records(), f.qos1()), (0, 0));
    }

    #[test]
    fn a_new_connection_forgets_what_the_old_one_had_in_flight() {
        let mut old = InFlight::default();
        old.submitted(Tag::Record(10));
        old.sent(1).unwrap();
        old.submitted(Tag::Record(11));
        // The connection drops before either is acknowledged: the sink replays from the
        // outbox on a fresh state, and an ack for the old packet id means nothing there.
        let mut new = InFlight::default();
        assert_eq!(
            new.cursor(),
            None,
            "replay starts from the oldest unacked record"
        );
        new.submitted(Tag::Record(10));
        new.sent(1).unwrap();
        new.submitted(Tag::Record(11));
        new.sent(2).unwrap();
        assert_eq!(new.acked(1), Some(Tag::Record(10)));
        assert_eq!(new.acked(2), Some(Tag::Record(11)));
        assert_eq!(old.records(), 2, "the old state is dropped, not reused");
    }

    #[test]
    fn events_out_of_step_are_reported() {
        let mut f = InFlight::default();
        assert_eq!(
            f.sent(1),
            Err(OutOfStep {
                pkid: 1,
                expected: None
            })
        );
        f.submitted(Tag::Fire);
        assert!(f.sent(4).is_err(), "a QoS 0 publish has no packet id");
        f.submitted(Tag::Record(1));
        assert!(f.sent(0).is_err(), "a QoS 1 publish has one");
    }
}
