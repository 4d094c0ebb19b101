//! The on-disk outbox: aggregate records are written here before they are published and
//! removed only when the broker acknowledges them (PUBACK), so that neither a broker outage
//! nor a crash or power cut of the device loses one.
//!
//! Layout, in `<state_dir>/outbox/`:
//!
//! - `<first seq, 20 digits>.seg`: segment files of records, appended in sequence order.
//!   Each record is `len: u32 LE | crc32c: u32 LE | seq: u64 LE | payload (len bytes)`, the
//!   CRC-32C covering `seq` and the payload. A segment is at most `max_bytes / 8` bytes;
//!   appends always go to a segment created by this process (segments found at start are
//!   only read), so a torn record at the end of a crashed segment is never appended after.
//! - `ledger`: `magic | next_seq | acked_below | crc32c`, replaced atomically (written to
//!   `ledger.tmp`, fsynced, renamed). `next_seq` makes the sequence number survive restarts
//!   even when every segment has been deleted; `acked_below` spares re-sending records
//!   acknowledged before a restart.
//!
//! Guarantees and bounds:
//!
//! - **At-least-once**: a record is on disk (fsynced) before [`Outbox::append`] returns and
//!   stays until [`Outbox::ack`]; after a restart every record not known to be acked is
//!   pending again, so a consumer may see duplicates and drops them by `seq`.
//! - **Sequence numbers** start at 0, grow by one per record and never go back, across
//!   restarts: the ledger is fsynced before any segment is deleted.
//! - **Size**: segment files never total more than `max_bytes`; to make room the oldest
//!   segment is deleted, acked or not, and its unacked records are counted in
//!   [`OutboxStats::dropped_total`]. Unacked payloads are also held in memory (same bound).
//! - **Corruption**: a record whose CRC does not match is skipped; a length that runs past
//!   the end of the file ends that segment. Both are counted in
//!   [`OutboxStats::corrupt_total`] and logged; a corrupt ledger is counted and rebuilt
//!   from the segments.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
const SEGMENT_EXT: &str = "seg";

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

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> OutboxError + 'a {
    move |source| OutboxError::Io {
        action,
        path: path.to_path_buf(),
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
    /// Corrupt records (and ledgers) skipped.
    pub corrupt_total: u64,
    /// Unacknowledged records found on disk at open.
    pub recovered: u64,
}

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    path: PathBuf,
    bytes: u64,
    unacked: usize,
}

/// A bounded, crash-safe queue of records awaiting acknowledgement (see the module docs).
#[derive(Debug)]
pub struct Outbox {
    dir: PathBuf,
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
    corrupt: u64,
}

fn parse_segment(data: &[u8]) -> ParsedSegment {
    let mut records = Vec::new();
    let mut corrupt = 0;
    let mut at = 0;
    while at < data.len() {
        let rest = &data[at..];
        if rest.len() < RECORD_HEADER_BYTES {
            corrupt += 1; // torn header at the end
            break;
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        if len > MAX_RECORD_BYTES || RECORD_HEADER_BYTES + len > rest.len() {
            corrupt += 1; // torn or garbled length: the rest of the segment is unreadable
            break;
        }
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        let body = &rest[8..RECORD_HEADER_BYTES + len];
        if crc32c::crc32c(body) == crc {
            let seq = u64::from_le_bytes(body[0..8].try_into().expect("8 bytes"));
            records.push((seq, body[8..].to_vec()));
        } else {
            corrupt += 1;
        }
        at += RECORD_HEADER_BYTES + len;
    }
    ParsedSegment { records, corrupt }
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

fn sync_dir(dir: &Path) -> Result<(), OutboxError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync directory", dir))
}

impl Outbox {
    /// Opens (or creates) the outbox in `dir`, recovering the records not yet acknowledged.
    ///
    /// `max_bytes` must be at least 1 MiB (the configuration enforces it).
    pub fn open(dir: impl Into<PathBuf>, max_bytes: u64) -> Result<Outbox, OutboxError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
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
        outbox.recover()?;
        Ok(outbox)
    }

    fn recover(&mut self) -> Result<(), OutboxError> {
        let ledger_path = self.dir.join(LEDGER_FILE);
        let (mut next_seq, acked_below) = match fs::read(&ledger_path) {
            Ok(data) => decode_ledger(&data).unwrap_or_else(|| {
                tracing::warn!(path = %ledger_path.display(), "outbox ledger is corrupt; rebuilding it from the segments");
                self.stats.corrupt_total += 1;
                (0, 0)
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => (0, 0),
            Err(e) => return Err(io_err("read", &ledger_path)(e)),
        };

        let mut found = Vec::new();
        let entries = fs::read_dir(&self.dir).map_err(io_err("list", &self.dir))?;
        for entry in entries {
            let entry = entry.map_err(io_err("list", &self.dir))?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some(SEGMENT_EXT) {
                continue;
            }
            match path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok())
            {
                Some(first_seq) => found.push((first_seq, path)),
                None => {
                    tracing::warn!(path = %path.display(), "ignoring a file that is not an outbox segment")
                }
            }
        }
        found.sort();

        for (first_seq, path) in found {
            let mut data = Vec::new();
            File::open(&path)
                .and_then(|f| f.take(self.max_bytes).read_to_end(&mut data))
                .map_err(io_err("read", &path))?;
            let parsed = parse_segment(&data);
            if parsed.corrupt > 0 {
                tracing::warn!(path = %path.display(), corrupt = parsed.corrupt, "outbox segment has corrupt records; skipped them");
                self.stats.corrupt_total += parsed.corrupt;
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
                path,
                bytes: data.len() as u64,
                unacked,
            });
        }
        self.next_seq = next_seq;
        self.stats.recovered = self.pending.len() as u64;
        // Persist next_seq before deleting anything, then drop what needs no delivery.
        self.write_ledger()?;
        let mut kept = VecDeque::with_capacity(self.segments.len());
        while let Some(segment) = self.segments.pop_front() {
            if segment.unacked == 0 {
                fs::remove_file(&segment.path).map_err(io_err("delete", &segment.path))?;
            } else {
                kept.push_back(segment);
            }
        }
        self.segments = kept;
        // Stay within the bound even if it was lowered since the segments were written.
        while self.total_bytes() > self.max_bytes {
            self.drop_oldest_segment()?;
        }
        Ok(())
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
        &self.dir
    }

    /// Appends the record that `make(seq)` builds for the next sequence number, fsyncs it
    /// and returns that number. Oldest segments are deleted first if needed to stay within
    /// `max_bytes`. On a write error the record is not pending and its sequence number is
    /// skipped (part of it may be on disk; no other record may ever carry that number).
    pub fn append(&mut self, make: impl FnOnce(u64) -> Vec<u8>) -> Result<u64, OutboxError> {
        let seq = self.next_seq;
        let payload = make(seq);
        if payload.len() > MAX_RECORD_BYTES {
            return Err(OutboxError::RecordTooLarge(payload.len()));
        }
        let record = encode_record(seq, &payload);
        let len = record.len() as u64;
        if self.writer.is_some()
            && self
                .segments
                .back()
                .is_some_and(|s| s.bytes + len > self.segment_bytes)
        {
            self.seal_active()?;
        }
        while self.total_bytes() + len > self.max_bytes {
            if self.writer.is_some() && self.segments.len() == 1 {
                self.seal_active()?;
            }
            if !self.drop_oldest_segment()? {
                break;
            }
        }
        if self.writer.is_none() {
            let path = self.dir.join(format!("{seq:020}.{SEGMENT_EXT}"));
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)
                .map_err(io_err("create", &path))?;
            sync_dir(&self.dir)?;
            self.segments.push_back(Segment {
                first_seq: seq,
                path,
                bytes: 0,
                unacked: 0,
            });
            self.writer = Some(file);
        }
        let (Some(writer), Some(segment)) = (self.writer.as_mut(), self.segments.back_mut()) else {
            unreachable!("an active segment was just ensured");
        };
        let written = writer.write_all(&record).and_then(|()| writer.sync_data());
        if let Err(e) = written {
            // The segment may now end in a torn record: never append to it again.
            let path = segment.path.clone();
            segment.bytes += len; // count the worst case against the bound
            self.writer = None;
            // Part of the record may be on disk: never give its number to another record.
            self.next_seq += 1;
            return Err(io_err("write", &path)(e));
        }
        segment.bytes += len;
        segment.unacked += 1;
        self.pending.insert(seq, payload);
        self.next_seq += 1;
        self.stats.appended_total += 1;
        Ok(seq)
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

    /// Marks `seq` acknowledged; returns whether it was pending. A segment whose records
    /// are all acknowledged is deleted (after the ledger is updated).
    pub fn ack(&mut self, seq: u64) -> Result<bool, OutboxError> {
        if self.pending.remove(&seq).is_none() {
            return Ok(false);
        }
        self.stats.acked_total += 1;
        let index = self.segments.partition_point(|s| s.first_seq <= seq);
        if index == 0 {
            return Ok(true);
        }
        let is_active = self.writer.is_some() && index == self.segments.len();
        let segment = &mut self.segments[index - 1];
        segment.unacked = segment.unacked.saturating_sub(1);
        if segment.unacked == 0 && !is_active {
            self.write_ledger()?;
            let segment = self.segments.remove(index - 1).expect("index is in range");
            fs::remove_file(&segment.path).map_err(io_err("delete", &segment.path))?;
        }
        Ok(true)
    }

    /// Writes the ledger if acknowledgements moved `acked_below` since the last write. Call
    /// it now and then (and before exiting) to spare re-sending acked records after a restart.
    pub fn flush(&mut self) -> Result<(), OutboxError> {
        if self.acked_below() != self.ledger_acked_below {
            self.write_ledger()?;
        }
        Ok(())
    }

    fn acked_below(&self) -> u64 {
        self.pending.keys().next().copied().unwrap_or(self.next_seq)
    }

    fn write_ledger(&mut self) -> Result<(), OutboxError> {
        let acked_below = self.acked_below();
        let tmp = self.dir.join(format!("{LEDGER_FILE}.tmp"));
        let path = self.dir.join(LEDGER_FILE);
        let mut file = File::create(&tmp).map_err(io_err("create", &tmp))?;
        file.write_all(&encode_ledger(self.next_seq, acked_below))
            .and_then(|()| file.sync_all())
            .map_err(io_err("write", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("rename", &tmp))?;
        sync_dir(&self.dir)?;
        self.ledger_acked_below = acked_below;
        Ok(())
    }

    /// Closes the active segment; deletes it if all its records are acknowledged.
    fn seal_active(&mut self) -> Result<(), OutboxError> {
        self.writer = None;
        if self.segments.back().is_some_and(|s| s.unacked == 0) {
            self.write_ledger()?;
            if let Some(segment) = self.segments.pop_back() {
                fs::remove_file(&segment.path).map_err(io_err("delete", &segment.path))?;
            }
        }
        Ok(())
    }

    /// Deletes the oldest sealed segment, counting its unacked records as dropped. Returns
    /// `false` if there is none.
    fn drop_oldest_segment(&mut self) -> Result<bool, OutboxError> {
        let sealed = self.segments.len() - usize::from(self.writer.is_some());
        if sealed == 0 {
            return Ok(false);
        }
        let Some(segment) = self.segments.pop_front() else {
            return Ok(false);
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
        self.write_ledger()?;
        fs::remove_file(&segment.path).map_err(io_err("delete", &segment.path))?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn payload(seq: u64) -> Vec<u8> {
        format!("{{\"seq\":{seq}}}").into_bytes()
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == SEGMENT_EXT))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn records_survive_reopen_until_acked() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path(), MIB).unwrap();
        for expected in 0..5 {
            assert_eq!(outbox.append(payload).unwrap(), expected);
        }
        outbox.ack(1).unwrap();
        outbox.ack(3).unwrap();
        drop(outbox); // like a crash: no flush
        let mut outbox = Outbox::open(dir.path(), MIB).unwrap();
        let seqs: Vec<u64> = outbox
            .pending_after(None, 100)
            .iter()
            .map(|r| r.0)
            .collect();
        // Acks are not persisted per record: only what the ledger says is known acked.
        assert_eq!(seqs, [0, 1, 2, 3, 4]);
        assert_eq!(outbox.pending_after(Some(2), 1), vec![(3, payload(3))]);
        assert_eq!(outbox.next_seq(), 5);
        for seq in 0..5 {
            assert!(outbox.ack(seq).unwrap());
        }
        assert!(!outbox.ack(2).unwrap(), "double ack");
        outbox.flush().unwrap();
        drop(outbox);
        let outbox = Outbox::open(dir.path(), MIB).unwrap();
        assert_eq!(outbox.depth(), 0);
        assert_eq!(outbox.next_seq(), 5);
        assert!(
            segment_files(dir.path()).is_empty(),
            "fully acked segments are deleted at open"
        );
    }

    #[test]
    fn flushed_acks_are_not_resent() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path(), MIB).unwrap();
        for _ in 0..4 {
            outbox.append(payload).unwrap();
        }
        outbox.ack(0).unwrap();
        outbox.ack(1).unwrap();
        outbox.ack(3).unwrap();
        outbox.flush().unwrap();
        drop(outbox);
        let outbox = Outbox::open(dir.path(), MIB).unwrap();
        let seqs: Vec<u64> = outbox
            .pending_after(None, 100)
            .iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(
            seqs,
            [2, 3],
            "3 was acked out of order, after the watermark: resent (at-least-once)"
        );
    }

    #[test]
    fn sequence_survives_when_every_segment_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path(), MIB).unwrap();
        // Enough records to roll several segments (128 KiB each at 1 MiB).
        let big = |_| vec![b'x'; 30_000];
        for _ in 0..20 {
            let seq = outbox.append(big).unwrap();
            outbox.ack(seq).unwrap();
        }
        outbox.flush().unwrap();
        drop(outbox);
        // Reopening deletes the last, fully acknowledged segment: nothing is left but the
        // ledger, which must still know where the sequence is.
        drop(Outbox::open(dir.path(), MIB).unwrap());
        assert!(segment_files(dir.path()).is_empty());
        let mut outbox = Outbox::open(dir.path(), MIB).unwrap();
        assert_eq!(outbox.depth(), 0);
        assert_eq!(outbox.append(payload).unwrap(), 20);
    }

    #[test]
    fn full_outbox_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path(), MIB).unwrap();
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
        assert_eq!(pending.last().unwrap().0, 299);
        assert_eq!(pending.first().unwrap().0, 300 - pending.len() as u64);
        let on_disk: u64 = segment_files(dir.path())
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum();
        assert!(on_disk <= MIB);
    }

    #[test]
    fn corrupt_records_are_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path(), MIB).unwrap();
        for _ in 0..3 {
            outbox.append(payload).unwrap();
        }
        drop(outbox);
        let path = segment_files(dir.path()).pop().unwrap();
        let mut data = fs::read(&path).unwrap();
        // Flip a payload byte of the second record, then add a torn record at the end.
        let first_len = RECORD_HEADER_BYTES + payload(0).len();
        data[first_len + RECORD_HEADER_BYTES] ^= 0xff;
        data.extend_from_slice(&[9, 0, 0]);
        fs::write(&path, data).unwrap();
        let mut outbox = Outbox::open(dir.path(), MIB).unwrap();
        let seqs: Vec<u64> = outbox.pending_after(None, 10).iter().map(|r| r.0).collect();
        assert_eq!(seqs, [0, 2]);
        assert_eq!(outbox.stats().corrupt_total, 2);
        // Appends go to a fresh segment and stay readable.
        assert_eq!(outbox.append(payload).unwrap(), 3);
        drop(outbox);
        let outbox = Outbox::open(dir.path(), MIB).unwrap();
        assert_eq!(outbox.pending_after(Some(2), 10), vec![(3, payload(3))]);
    }

    #[test]
    fn corrupt_ledger_is_rebuilt_from_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path(), MIB).unwrap();
        for _ in 0..3 {
            outbox.append(payload).unwrap();
        }
        drop(outbox);
        fs::write(dir.path().join(LEDGER_FILE), b"garbage").unwrap();
        let outbox = Outbox::open(dir.path(), MIB).unwrap();
        assert_eq!(outbox.stats().corrupt_total, 1);
        assert_eq!(outbox.depth(), 3);
        assert_eq!(outbox.next_seq(), 3);
    }

    #[test]
    fn oversized_records_are_refused_without_using_a_sequence_number() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::open(dir.path(), MIB).unwrap();
        assert!(matches!(
            outbox.append(|_| vec![0; MAX_RECORD_BYTES + 1]),
            Err(OutboxError::RecordTooLarge(_))
        ));
        assert_eq!(outbox.append(payload).unwrap(), 0);
    }

    #[test]
    fn record_encoding_round_trips() {
        let mut data = encode_record(42, b"hello");
        data.extend(encode_record(43, b""));
        let parsed = parse_segment(&data);
        assert_eq!(parsed.records, vec![(42, b"hello".to_vec()), (43, vec![])]);
        assert_eq!(parsed.corrupt, 0);
        assert_eq!(decode_ledger(&encode_ledger(7, 5)), Some((7, 5)));
        assert_eq!(decode_ledger(&encode_ledger(5, 7)), None);
    }
}
