//! The on-disk outbox: aggregate records are written here before they are published and
//! removed only when the broker acknowledges them (PUBACK), so that neither a broker outage
//! nor a crash or power cut of the device loses one.
//!
//! Layout, in `<state_dir>/outbox/` (used only through a directory handle with `O_NOFOLLOW`,
//! [`StateDir`]: a planted symlink is refused, never followed):
//!
//! - `<first seq, 20 digits>.seg`: segment files of records, appended in sequence order.
//!   Each record is `len: u32 LE | crc32c: u32 LE | seq: u64 LE | payload (len bytes)`, the
//!   CRC-32C covering `seq` and the payload. A segment is at most `max_bytes / 8` bytes and
//!   holds consecutive sequence numbers; appends always go to a segment created by this
//!   process, and a failed append closes it, so a torn record is never appended after.
//! - `ledger`: `magic | next_seq | acked_below | crc32c`, replaced atomically. It is written
//!   **before** each record: a record with sequence number `s` is on disk only once a ledger
//!   with `next_seq > s` is, so a number is never given twice, even when the end of a segment
//!   is torn by a crash. `acked_below` spares re-sending records acknowledged before a
//!   restart.
//!
//! Guarantees and bounds:
//!
//! - **At-least-once**: a record is on disk (fsynced) before [`Outbox::append`] returns and
//!   stays until [`Outbox::ack`]; after a restart every record not known to be acked is
//!   pending again, so a consumer may see duplicates and drops them by `seq`.
//! - **Sequence numbers** grow by one per record and never go back or repeat. When the
//!   ledger is missing or damaged (a wiped or corrupted state directory), numbering resumes
//!   at the larger of the segments' next number and the wall clock in milliseconds since the
//!   Unix epoch: records are written at most a few per second, far slower than that clock
//!   advances, so the floor is above every number given before (given a clock that is set:
//!   on a board without a real-time clock, start `caerd` after the time is synchronised).
//!   A fresh outbox starts at that floor too.
//! - **Size**: segment files never total more than `max_bytes`; to make room the oldest
//!   segment is deleted, acked or not, and its unacked records are counted in
//!   [`OutboxStats::dropped_total`]. Unacked payloads are also held in memory (same bound).
//! - **Disk full and other write failures** never stop the daemon: a record that cannot be
//!   written is counted in [`OutboxStats::lost_total`] and its number skipped; a ledger
//!   update after an ack is retried later; an outbox that cannot write at start still opens.
//! - **Corruption**: a damaged record is skipped and reading resumes at the next intact one
//!   (found by its CRC and a sequence number in the segment's range); every number missing
//!   from a segment's range is counted, exactly, in [`OutboxStats::corrupt_total`]. A damaged
//!   ledger is counted too and rebuilt. Entries that are not readable segment files (a
//!   directory named like one, a link) are skipped with a warning.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{self, Write};
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::daemon::state_dir::StateDir;
use crate::pipeline::settings::Issues;

/// The on-disk outbox of aggregate records: the `[outbox]` section of `caerd`'s
/// configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxConfig {
    /// Most bytes the outbox keeps on disk, 1 MiB to 1 GiB; when full the oldest records are
    /// dropped (and counted). The default holds weeks of one-minute records.
    pub max_bytes: NonZeroU64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            max_bytes: NonZeroU64::new(16 * 1024 * 1024).expect("16 MiB is not zero"),
        }
    }
}

impl OutboxConfig {
    /// Every setting out of range, keyed relative to the section.
    pub fn issues(&self, v: &mut Issues) {
        v.range("max_bytes", self.max_bytes.get(), 1 << 20, 1 << 30);
    }
}

/// Largest payload of one record.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;
/// Bytes before the payload of each record.
pub const RECORD_HEADER_BYTES: usize = 16;
const LEDGER_MAGIC: &[u8; 8] = b"CAEROBX1";
const LEDGER_BYTES: usize = 8 + 8 + 8 + 4;
const LEDGER_FILE: &str = "ledger";
const SEGMENT_EXT: &str = ".seg";

/// A failure of the outbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// A file or directory operation failed.
    #[error("outbox: cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done (`create`, `write`, `read`, ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A payload larger than [`MAX_RECORD_BYTES`].
    #[error("outbox: record of {0} bytes exceeds the {MAX_RECORD_BYTES}-byte limit")]
    RecordTooLarge(usize),
}

fn io_err(action: &'static str, path: PathBuf) -> impl FnOnce(io::Error) -> OutboxError {
    move |source| OutboxError::Io {
        action,
        path,
        source,
    }
}

/// Counters of one outbox, since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OutboxStats {
    /// Records appended.
    pub appended_total: u64,
    /// Records acknowledged and removed.
    pub acked_total: u64,
    /// Unacknowledged records deleted to stay within `max_bytes`.
    pub dropped_total: u64,
    /// Records that could not be written (disk full, I/O error): intervals lost.
    pub lost_total: u64,
    /// Records found damaged or missing in the segments at open, and damaged ledgers.
    pub corrupt_total: u64,
    /// Unacknowledged records found on disk at open.
    pub recovered: u64,
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    name: String,
    bytes: u64,
    unacked: usize,
}

/// A bounded, crash-safe queue of records awaiting acknowledgement (see the module docs).
#[derive(Debug)]
pub struct Outbox {
    dir: StateDir,
    max_bytes: u64,
    segment_bytes: u64,
    /// Oldest first; the last one is the active segment when `writer` is set.
    segments: VecDeque<Segment>,
    writer: Option<File>,
    /// Unacked records by sequence number.
    pending: BTreeMap<u64, Vec<u8>>,
    next_seq: u64,
    /// `acked_below` last written to the ledger.
    ledger_acked_below: u64,
    stats: OutboxStats,
}

/// Outcome of parsing one segment file.
struct ParsedSegment {
    records: Vec<(u64, Vec<u8>)>,
    /// Bytes that belong to no intact record.
    damaged_bytes: usize,
    /// Whether damaged bytes follow the last intact record (a torn end).
    damaged_tail: bool,
}

/// The record at the start of `data`, if it is intact and its sequence number lies in
/// `seqs`: `(seq, payload, length on disk)`.
fn record_at(data: &[u8], seqs: &std::ops::Range<u64>) -> Option<(u64, Vec<u8>, usize)> {
    let header = data.get(..RECORD_HEADER_BYTES)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    if len > MAX_RECORD_BYTES {
        return None;
    }
    let body = data.get(8..RECORD_HEADER_BYTES + len)?;
    let seq = u64::from_le_bytes(body[0..8].try_into().ok()?);
    if !seqs.contains(&seq) {
        return None;
    }
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    (crc32c::crc32c(body) == crc).then(|| (seq, body[8..].to_vec(), RECORD_HEADER_BYTES + len))
}

/// The intact records of a segment whose numbers lie in `seqs`; after a damaged record the
/// reading resumes at the next offset where an intact one starts.
fn parse_segment(data: &[u8], seqs: std::ops::Range<u64>) -> ParsedSegment {
    let mut records = Vec::new();
    let mut damaged_bytes = 0;
    let mut damaged_tail = false;
    let mut at = 0;
    while at < data.len() {
        match record_at(&data[at..], &seqs) {
            Some((seq, payload, len)) => {
                records.push((seq, payload));
                damaged_tail = false;
                at += len;
            }
            None => {
                damaged_bytes += 1;
                damaged_tail = true;
                at += 1;
            }
        }
    }
    ParsedSegment {
        records,
        damaged_bytes,
        damaged_tail,
    }
}

fn encode_record(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER_BYTES + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out[8..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

fn encode_ledger(next_seq: u64, acked_below: u64) -> [u8; LEDGER_BYTES] {
    let mut out = [0u8; LEDGER_BYTES];
    out[0..8].copy_from_slice(LEDGER_MAGIC);
    out[8..16].copy_from_slice(&next_seq.to_le_bytes());
    out[16..24].copy_from_slice(&acked_below.to_le_bytes());
    let crc = crc32c::crc32c(&out[..24]);
    out[24..28].copy_from_slice(&crc.to_le_bytes());
    out
}

/// `(next_seq, acked_below)`, or `None` if the bytes are not a valid ledger.
fn decode_ledger(data: &[u8]) -> Option<(u64, u64)> {
    if data.len() != LEDGER_BYTES || &data[0..8] != LEDGER_MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(data[24..28].try_into().ok()?);
    if crc32c::crc32c(&data[..24]) != crc {
        return None;
    }
    let next_seq = u64::from_le_bytes(data[8..16].try_into().ok()?);
    let acked_below = u64::from_le_bytes(data[16..24].try_into().ok()?);
    (acked_below <= next_seq).then_some((next_seq, acked_below))
}

/// Where numbering resumes without a ledger: the wall clock in milliseconds since the Unix
/// epoch (see the module docs).
fn clock_floor() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SEGMENT_EXT}")
}

impl Outbox {
    /// Opens (or creates) the outbox `outbox` under the state directory `parent`,
    /// recovering the records not yet acknowledged. Fails only if the directory cannot be
    /// opened (missing permissions, a link in its place); a full disk is not an error.
    ///
    /// `max_bytes` must be at least 1 MiB (the configuration enforces it).
    pub fn open(parent: &StateDir, name: &str, max_bytes: u64) -> Result<Outbox, OutboxError> {
        let dir = parent
            .subdir(name)
            .map_err(io_err("open directory", parent.join(name)))?;
        let max_bytes = max_bytes.max(16 * MAX_RECORD_BYTES as u64);
        let mut outbox = Outbox {
            segment_bytes: max_bytes / 8,
            max_bytes,
            segments: VecDeque::new(),
            writer: None,
            pending: BTreeMap::new(),
            next_seq: 0,
            ledger_acked_below: 0,
            stats: OutboxStats::default(),
            dir,
        };
        outbox.recover();
        Ok(outbox)
    }

    /// Opens an outbox at `path` (its parent is the state directory); for tests and tools.
    pub fn open_path(path: &Path, max_bytes: u64) -> Result<Outbox, OutboxError> {
        let (parent, name) = match (path.parent(), path.file_name().and_then(|n| n.to_str())) {
            (Some(parent), Some(name)) => (parent, name),
            _ => {
                return Err(io_err("open directory", path.to_owned())(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a directory path with a parent",
                )))
            }
        };
        let parent = StateDir::open(parent).map_err(io_err("open directory", parent.to_owned()))?;
        Outbox::open(&parent, name, max_bytes)
    }

    fn recover(&mut self) {
        let ledger = match self.dir.read(LEDGER_FILE, LEDGER_BYTES as u64) {
            Ok(Some(data)) => decode_ledger(&data),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(path = %self.dir.join(LEDGER_FILE).display(), error = %e, "cannot read the outbox ledger");
                None
            }
        };
        if ledger.is_none() && self.dir.join(LEDGER_FILE).exists() {
            tracing::warn!(path = %self.dir.join(LEDGER_FILE).display(), "outbox ledger is damaged; rebuilding it");
            self.stats.corrupt_total += 1;
        }
        let (mut next_seq, acked_below) = ledger.unwrap_or((clock_floor(), 0));

        let mut found = Vec::new();
        match self.dir.entries() {
            Ok(entries) => {
                for (name, regular) in entries {
                    let Some(stem) = name.strip_suffix(SEGMENT_EXT) else {
                        continue;
                    };
                    match stem.parse::<u64>() {
                        Ok(first_seq) if regular => found.push((first_seq, name)),
                        _ => {
                            tracing::warn!(path = %self.dir.join(&name).display(), "ignoring an entry that is not an outbox segment file")
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(path = %self.dir.path().display(), error = %e, "cannot list the outbox")
            }
        }
        found.sort();
        let ends: Vec<u64> = found.iter().skip(1).map(|(s, _)| *s).collect();
        for (i, (first_seq, name)) in found.into_iter().enumerate() {
            let data = match self.dir.read(&name, self.max_bytes) {
                Ok(Some(data)) => data,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(path = %self.dir.join(&name).display(), error = %e, "ignoring an unreadable outbox segment");
                    continue;
                }
            };
            // A segment holds consecutive numbers, up to the next segment's first one; the
            // last one up to the ledger's next number (or, without a ledger, its last intact
            // record, plus one for a torn end).
            let next_first = ends.get(i).copied();
            let parsed = parse_segment(&data, first_seq..next_first.unwrap_or(u64::MAX));
            let unique: std::collections::BTreeSet<u64> =
                parsed.records.iter().map(|r| r.0).collect();
            let after_last = unique.last().map_or(first_seq, |l| l + 1);
            let expected_end = match (next_first, ledger) {
                (Some(next), _) => next,
                (None, Some((ledger_next, _))) => ledger_next.max(after_last),
                (None, None) => after_last + u64::from(parsed.damaged_tail),
            };
            let missing = (expected_end - first_seq).saturating_sub(unique.len() as u64);
            if missing > 0 || parsed.damaged_bytes > 0 {
                tracing::warn!(path = %self.dir.join(&name).display(), missing, damaged_bytes = parsed.damaged_bytes, "outbox segment has damaged or missing records; skipped them");
                self.stats.corrupt_total += missing;
            }
            let mut unacked = 0;
            for (seq, payload) in parsed.records {
                next_seq = next_seq.max(seq.saturating_add(1));
                if seq >= acked_below && self.pending.insert(seq, payload).is_none() {
                    unacked += 1;
                }
            }
            self.segments.push_back(Segment {
                first_seq,
                name,
                bytes: data.len() as u64,
                unacked,
            });
        }
        self.next_seq = next_seq;
        self.stats.recovered = self.pending.len() as u64;
        if let Err(e) = self.write_ledger() {
            tracing::warn!(error = %e, "cannot write the outbox ledger at open; the next record will try again");
        }
        self.tidy();
        // Stay within the bound even if it was lowered since the segments were written.
        while self.total_bytes() > self.max_bytes && self.drop_oldest_segment() {}
    }

    /// The sequence number the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Unacknowledged records.
    pub fn depth(&self) -> usize {
        self.pending.len()
    }

    /// Bytes of segment files on disk.
    pub fn total_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// The counters.
    pub fn stats(&self) -> OutboxStats {
        self.stats
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Appends the record that `make(seq)` builds for the next sequence number and returns
    /// that number once the record is fsynced. The ledger is advanced first (see the module
    /// docs); oldest segments are deleted if needed to stay within `max_bytes`. On any write
    /// error the record is lost (counted in [`OutboxStats::lost_total`]) and its number is
    /// never given to another record.
    pub fn append(&mut self, make: impl FnOnce(u64) -> Vec<u8>) -> Result<u64, OutboxError> {
        let seq = self.next_seq;
        let payload = make(seq);
        if payload.len() > MAX_RECORD_BYTES {
            return Err(OutboxError::RecordTooLarge(payload.len()));
        }
        // From here on the number is spent, whatever happens.
        self.next_seq += 1;
        let written = self.write_record(seq, &payload);
        match written {
            Ok(()) => {
                self.pending.insert(seq, payload);
                self.stats.appended_total += 1;
                Ok(seq)
            }
            Err(e) => {
                self.stats.lost_total += 1;
                Err(e)
            }
        }
    }

    fn write_record(&mut self, seq: u64, payload: &[u8]) -> Result<(), OutboxError> {
        // The record is not pending yet: the watermark must not pass it.
        self.write_ledger_at(self.acked_below().min(seq))?;
        let record = encode_record(seq, payload);
        let len = record.len() as u64;
        if self.writer.is_some()
            && self
                .segments
                .back()
                .is_some_and(|s| s.bytes + len > self.segment_bytes)
        {
            self.seal_active();
        }
        while self.total_bytes() + len > self.max_bytes {
            if self.writer.is_some() && self.segments.len() == 1 {
                self.seal_active();
            }
            if !self.drop_oldest_segment() {
                break;
            }
        }
        if self.writer.is_none() {
            let name = segment_name(seq);
            let file = self
                .dir
                .create_new(&name)
                .map_err(io_err("create", self.dir.join(&name)))?;
            self.dir
                .sync()
                .map_err(io_err("sync directory", self.dir.path().to_owned()))?;
            self.segments.push_back(Segment {
                first_seq: seq,
                name,
                bytes: 0,
                unacked: 0,
            });
            self.writer = Some(file);
        }
        let (Some(writer), Some(segment)) = (self.writer.as_mut(), self.segments.back_mut()) else {
            unreachable!("an active segment was just ensured");
        };
        let written = writer.write_all(&record).and_then(|()| writer.sync_data());
        // Count the worst case against the bound, written or not.
        segment.bytes += len;
        if let Err(e) = written {
            // The segment may now end in a torn record: never append to it again.
            let path = self.dir.join(&segment.name);
            self.writer = None;
            return Err(io_err("write", path)(e));
        }
        segment.unacked += 1;
        Ok(())
    }

    /// Up to `limit` unacknowledged records with a sequence number above `after` (all of
    /// them if `None`), oldest first.
    pub fn pending_after(&self, after: Option<u64>, limit: usize) -> Vec<(u64, Vec<u8>)> {
        let start = after.map_or(0, |a| a.saturating_add(1));
        self.pending
            .range(start..)
            .take(limit)
            .map(|(s, p)| (*s, p.clone()))
            .collect()
    }

    /// Marks `seq` acknowledged; returns whether it was pending. Sealed segments whose
    /// records are all acknowledged are deleted once the ledger says so (retried later if
    /// the ledger cannot be written now).
    pub fn ack(&mut self, seq: u64) -> bool {
        if self.pending.remove(&seq).is_none() {
            return false;
        }
        self.stats.acked_total += 1;
        let index = self.segments.partition_point(|s| s.first_seq <= seq);
        if let Some(segment) = index.checked_sub(1).and_then(|i| self.segments.get_mut(i)) {
            segment.unacked = segment.unacked.saturating_sub(1);
        }
        self.tidy();
        true
    }

    /// Writes the ledger if acknowledgements moved `acked_below` since the last write, then
    /// deletes what needs no delivery. Call it now and then (and before exiting) to spare
    /// re-sending acked records after a restart.
    pub fn flush(&mut self) {
        if self.acked_below() != self.ledger_acked_below {
            if let Err(e) = self.write_ledger() {
                tracing::warn!(error = %e, "cannot update the outbox ledger; will retry");
            }
        }
        self.tidy();
    }

    fn acked_below(&self) -> u64 {
        self.pending.keys().next().copied().unwrap_or(self.next_seq)
    }

    fn write_ledger(&mut self) -> Result<(), OutboxError> {
        self.write_ledger_at(self.acked_below())
    }

    fn write_ledger_at(&mut self, acked_below: u64) -> Result<(), OutboxError> {
        self.dir
            .replace(LEDGER_FILE, &encode_ledger(self.next_seq, acked_below))
            .map_err(io_err("write", self.dir.join(LEDGER_FILE)))?;
        self.ledger_acked_below = acked_below;
        Ok(())
    }

    /// Deletes the sealed segments whose records are all acknowledged, once the ledger's
    /// `acked_below` covers them (so that a restart does not resend what they held).
    fn tidy(&mut self) {
        let sealed = self.segments.len() - usize::from(self.writer.is_some());
        let done: Vec<usize> = (0..sealed)
            .filter(|&i| self.segments[i].unacked == 0)
            .collect();
        if done.is_empty() {
            return;
        }
        if self.acked_below() != self.ledger_acked_below {
            if let Err(e) = self.write_ledger() {
                tracing::debug!(error = %e, "ledger not updated; acknowledged segments stay for now");
                return;
            }
        }
        for i in done.into_iter().rev() {
            let segment = self.segments.remove(i).expect("index is in range");
            if let Err(e) = self.dir.remove(&segment.name) {
                tracing::warn!(path = %self.dir.join(&segment.name).display(), error = %e, "cannot delete an acknowledged outbox segment");
            }
        }
    }

    /// Closes the active segment (deleted by [`Outbox::tidy`] once fully acknowledged).
    fn seal_active(&mut self) {
        self.writer = None;
        self.tidy();
    }

    /// Deletes the oldest sealed segment, counting its unacked records as dropped. Returns
    /// `false` if there is none. Deleting never risks a sequence number: the ledger was
    /// advanced before each of its records was written.
    fn drop_oldest_segment(&mut self) -> bool {
        let sealed = self.segments.len() - usize::from(self.writer.is_some());
        if sealed == 0 {
            return false;
        }
        let Some(segment) = self.segments.pop_front() else {
            return false;
        };
        let end = self.segments.front().map_or(self.next_seq, |s| s.first_seq);
        let dropped: Vec<u64> = self
            .pending
            .range(segment.first_seq..end)
            .map(|(s, _)| *s)
            .collect();
        for seq in &dropped {
            self.pending.remove(seq);
        }
        self.stats.dropped_total += dropped.len() as u64;
        if !dropped.is_empty() {
            tracing::warn!(
                dropped = dropped.len(),
                first = dropped[0],
                "outbox full: dropped the oldest unacknowledged records"
            );
        }
        if let Err(e) = self.dir.remove(&segment.name) {
            tracing::warn!(path = %self.dir.join(&segment.name).display(), error = %e, "cannot delete the oldest outbox segment");
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    const MIB: u64 = 1 << 20;

    fn payload(seq: u64) -> Vec<u8> {
        format!("{{\"seq\":{seq}}}").into_bytes()
    }

    struct Fixture {
        _tmp: tempfile::TempDir,
        dir: PathBuf,
    }

    impl Fixture {
        fn new() -> Fixture {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("outbox");
            Fixture { _tmp: tmp, dir }
        }

        fn open(&self) -> Outbox {
            Outbox::open_path(&self.dir, MIB).unwrap()
        }

        fn segments(&self) -> Vec<PathBuf> {
            let mut v: Vec<_> = fs::read_dir(&self.dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.to_string_lossy().ends_with(SEGMENT_EXT))
                .collect();
            v.sort();
            v
        }
    }

    fn pending(outbox: &Outbox) -> Vec<u64> {
        outbox
            .pending_after(None, 1000)
            .iter()
            .map(|r| r.0)
            .collect()
    }

    #[test]
    fn a_fresh_outbox_numbers_from_the_wall_clock() {
        let f = Fixture::new();
        let before = clock_floor();
        let mut outbox = f.open();
        let first = outbox.append(payload).unwrap();
        assert!(first >= before && first <= clock_floor(), "{first}");
        assert_eq!(outbox.append(payload).unwrap(), first + 1);
    }

    #[test]
    fn records_survive_reopen_until_acked() {
        let f = Fixture::new();
        let mut outbox = f.open();
        let base = outbox.next_seq();
        for k in 0..5 {
            assert_eq!(outbox.append(payload).unwrap(), base + k);
        }
        outbox.ack(base + 1);
        outbox.ack(base + 3);
        drop(outbox); // like a crash: no flush
        let mut outbox = f.open();
        // Acks are not persisted per record: only what the ledger says is known acked.
        assert_eq!(pending(&outbox), (base..base + 5).collect::<Vec<_>>());
        assert_eq!(
            outbox.pending_after(Some(base + 2), 1),
            vec![(base + 3, payload(base + 3))]
        );
        assert_eq!(outbox.next_seq(), base + 5);
        for seq in base..base + 5 {
            assert!(outbox.ack(seq));
        }
        assert!(!outbox.ack(base + 2), "double ack");
        outbox.flush();
        drop(outbox);
        let outbox = f.open();
        assert_eq!(outbox.depth(), 0);
        assert_eq!(outbox.next_seq(), base + 5);
        assert!(f.segments().is_empty(), "fully acked segments are deleted");
    }

    #[test]
    fn flushed_acks_are_not_resent() {
        let f = Fixture::new();
        let mut outbox = f.open();
        let base = outbox.next_seq();
        for _ in 0..4 {
            outbox.append(payload).unwrap();
        }
        for k in [0, 1, 3] {
            outbox.ack(base + k);
        }
        outbox.flush();
        drop(outbox);
        // 3 was acked out of order, after the watermark: resent (at-least-once).
        assert_eq!(pending(&f.open()), [base + 2, base + 3]);
    }

    #[test]
    fn sequence_survives_when_every_segment_is_gone() {
        let f = Fixture::new();
        let mut outbox = f.open();
        let base = outbox.next_seq();
        // Enough records to roll several segments (128 KiB each at 1 MiB).
        let big = |_| vec![b'x'; 30_000];
        for _ in 0..20 {
            let seq = outbox.append(big).unwrap();
            outbox.ack(seq);
        }
        outbox.flush();
        drop(outbox);
        drop(f.open());
        assert!(f.segments().is_empty());
        let mut outbox = f.open();
        assert_eq!(outbox.depth(), 0);
        assert_eq!(outbox.append(payload).unwrap(), base + 20);
    }

    #[test]
    fn a_lost_ledger_never_lowers_the_sequence() {
        let f = Fixture::new();
        let mut outbox = f.open();
        for _ in 0..3 {
            let seq = outbox.append(payload).unwrap();
            outbox.ack(seq);
        }
        outbox.flush();
        let last = outbox.next_seq() - 1;
        drop(outbox);
        // Every state file gone: numbering resumes above everything given before.
        fs::remove_dir_all(&f.dir).unwrap();
        let mut outbox = f.open();
        assert!(outbox.append(payload).unwrap() > last);
        // A damaged ledger with no segments left: the same.
        let next = outbox.next_seq();
        let seq = next - 1;
        outbox.ack(seq);
        outbox.flush();
        drop(outbox);
        fs::write(f.dir.join(LEDGER_FILE), b"garbage").unwrap();
        let outbox = f.open();
        assert!(outbox.next_seq() >= next);
        assert_eq!(outbox.stats().corrupt_total, 1);
    }

    #[test]
    fn records_torn_off_the_end_keep_their_numbers() {
        let f = Fixture::new();
        let mut outbox = f.open();
        let base = outbox.next_seq();
        for _ in 0..3 {
            outbox.append(payload).unwrap();
        }
        drop(outbox);
        // A crash tore off the last record (after the ledger had counted it).
        let path = f.segments().pop().unwrap();
        let data = fs::read(&path).unwrap();
        let one = RECORD_HEADER_BYTES + payload(base).len();
        fs::write(&path, &data[..data.len() - one / 2]).unwrap();
        let mut outbox = f.open();
        assert_eq!(pending(&outbox), [base, base + 1]);
        assert_eq!(outbox.stats().corrupt_total, 1, "exactly the torn record");
        assert_eq!(outbox.append(payload).unwrap(), base + 3, "not reused");
    }

    #[test]
    fn a_flipped_bit_loses_only_the_damaged_record() {
        let f = Fixture::new();
        let mut outbox = f.open();
        let base = outbox.next_seq();
        for _ in 0..5 {
            outbox.append(payload).unwrap();
        }
        drop(outbox);
        let path = f.segments().pop().unwrap();
        let mut data = fs::read(&path).unwrap();
        let one = RECORD_HEADER_BYTES + payload(base).len();
        // One bit of the second record's length field, one of the fourth's payload.
        data[one] ^= 0x40;
        data[3 * one + RECORD_HEADER_BYTES] ^= 0x01;
        fs::write(&path, data).unwrap();
        let outbox = f.open();
        assert_eq!(pending(&outbox), [base, base + 2, base + 4]);
        assert_eq!(outbox.stats().corrupt_total, 2);
    }

    #[test]
    fn entries_that_are_not_segment_files_are_skipped() {
        let f = Fixture::new();
        let mut outbox = f.open();
        let base = outbox.next_seq();
        outbox.append(payload).unwrap();
        drop(outbox);
        fs::create_dir(f.dir.join(segment_name(base + 100))).unwrap();
        fs::write(f.dir.join("notes.txt"), b"x").unwrap();
        let outbox = f.open();
        assert_eq!(pending(&outbox), [base]);
    }

    #[test]
    fn links_in_the_outbox_are_never_written_through() {
        let f = Fixture::new();
        let outbox = f.open();
        drop(outbox);
        let target = f._tmp.path().join("victim");
        fs::write(&target, b"precious").unwrap();
        std::os::unix::fs::symlink(&target, f.dir.join("ledger.tmp")).unwrap();
        fs::remove_file(f.dir.join(LEDGER_FILE)).unwrap();
        std::os::unix::fs::symlink(&target, f.dir.join(LEDGER_FILE)).unwrap();
        let mut outbox = f.open();
        outbox.append(payload).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"precious");
        // An outbox directory that is a link is refused.
        let g = Fixture::new();
        fs::create_dir(g._tmp.path().join("real")).unwrap();
        std::os::unix::fs::symlink(g._tmp.path().join("real"), &g.dir).unwrap();
        assert!(Outbox::open_path(&g.dir, MIB).is_err());
    }

    #[test]
    fn full_outbox_drops_the_oldest_and_counts_them() {
        let f = Fixture::new();
        let mut outbox = f.open();
        let base = outbox.next_seq();
        let record = |_| vec![b'y'; 10_000];
        for _ in 0..300 {
            outbox.append(record).unwrap();
            assert!(outbox.total_bytes() <= MIB, "{}", outbox.total_bytes());
        }
        let stats = outbox.stats();
        assert!(stats.dropped_total > 0);
        assert_eq!(stats.dropped_total + outbox.depth() as u64, 300);
        let pending = outbox.pending_after(None, 1000);
        // The newest are kept, contiguous up to the last one.
        assert_eq!(pending.last().unwrap().0, base + 299);
        assert_eq!(
            pending.first().unwrap().0,
            base + 300 - pending.len() as u64
        );
        let on_disk: u64 = f
            .segments()
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum();
        assert!(on_disk <= MIB);
    }

    #[test]
    fn oversized_records_are_refused_without_using_a_sequence_number() {
        let f = Fixture::new();
        let mut outbox = f.open();
        let base = outbox.next_seq();
        assert!(matches!(
            outbox.append(|_| vec![0; MAX_RECORD_BYTES + 1]),
            Err(OutboxError::RecordTooLarge(_))
        ));
        assert_eq!(outbox.append(payload).unwrap(), base);
        assert_eq!(outbox.stats().lost_total, 0);
    }

    #[test]
    fn record_encoding_round_trips() {
        let mut data = encode_record(42, b"hello");
        data.extend(encode_record(43, b""));
        let parsed = parse_segment(&data, 0..100);
        assert_eq!(parsed.records, vec![(42, b"hello".to_vec()), (43, vec![])]);
        assert_eq!(parsed.damaged_bytes, 0);
        assert!(
            parse_segment(&data, 43..100).records.len() == 1,
            "out of range"
        );
        assert_eq!(decode_ledger(&encode_ledger(7, 5)), Some((7, 5)));
        assert_eq!(decode_ledger(&encode_ledger(5, 7)), None);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Whatever bytes a segment holds, reading it never panics, finds only records in
        /// its range, and finds every record that no damage touched.
        #[test]
        fn damaged_segments_yield_only_intact_records(
            payloads in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), 1..12),
            flips in proptest::collection::vec((proptest::prelude::any::<usize>(), 1u8..=255), 0..4),
            garbage in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
        ) {
            let first = 1_000u64;
            let mut data = Vec::new();
            let mut spans = Vec::new();
            for (k, payload) in payloads.iter().enumerate() {
                let start = data.len();
                data.extend(encode_record(first + k as u64, payload));
                spans.push(start..data.len());
            }
            let mut touched = vec![false; payloads.len()];
            for (at, mask) in &flips {
                let at = at % data.len();
                data[at] ^= mask;
                if let Some(k) = spans.iter().position(|r| r.contains(&at)) {
                    touched[k] = true;
                }
            }
            data.extend(&garbage);
            let parsed = parse_segment(&data, first..first + payloads.len() as u64);
            for (seq, payload) in &parsed.records {
                let k = (seq - first) as usize;
                proptest::prop_assert_eq!(payload, &payloads[k]);
            }
            for (k, hit) in touched.iter().enumerate() {
                if !hit {
                    proptest::prop_assert!(
                        parsed.records.iter().any(|(seq, _)| *seq == first + k as u64),
                        "intact record {} not found", k
                    );
                }
            }
        }
    }
}
