//! One bundle being fetched into `<state_dir>/bundles/<id>.partial/`, file by file and
//! chunk by chunk, then renamed to `<state_dir>/bundles/<id>/` once every file matches the
//! signed manifest. `<id>` is the sha256 of the manifest.
//!
//! What is on disk is the transfer's state: the manifest and its signature, the offer
//! (`offer.json`), finished files under their names and the file being fetched as
//! `<name>.part`. After a restart or a new offer of the same bundle, [`Transfer::start`]
//! checks it all again and goes on from the first missing byte. Every file is opened through
//! [`StateDir`] handles: nothing outside the state directory is ever written.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::{Chunk, FetchRequest, Offer, CHUNK_BYTES, FETCH_SCHEMA, MAX_BUNDLE_BYTES, MAX_FILES};
use crate::daemon::state_dir::StateDir;
use crate::pipeline::model::bundle::{Manifest, MANIFEST_FILE};
use crate::pipeline::model::signature::{self, PublicKey};

/// The directory of delivered bundles, under the state directory.
pub const BUNDLES_DIR: &str = "bundles";
/// Where a transfer keeps its offer, to go on after a restart.
const OFFER_FILE: &str = "offer.json";
/// Suffix of a bundle directory being fetched.
const PARTIAL: &str = ".partial";
/// Chunks asked for ahead of the one that comes next (each at most [`CHUNK_BYTES`]): enough
/// to hide the round trip through the broker, few enough for the control queue.
pub const WINDOW_CHUNKS: u64 = 4;
/// Free disk kept beyond the bundle (the outbox and the state file need room too).
pub const DISK_RESERVE_BYTES: u64 = 64 << 20;

/// One file to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Wanted {
    path: String,
    sha256: String,
    bytes: u64,
}

/// A bundle being fetched.
#[derive(Debug)]
pub struct Transfer {
    /// The operator's job id.
    pub job: String,
    /// The bundle id: sha256 of its manifest.
    pub bundle: String,
    /// The manifest's `model_id`.
    pub model_id: String,
    files: Vec<Wanted>,
    /// The file being fetched, how many of its bytes are on disk, and up to where chunks
    /// were asked for.
    next: usize,
    offset: u64,
    requested: u64,
    dir: StateDir,
    /// Bytes of the whole bundle.
    pub bytes_total: u64,
    /// When the outstanding chunk was asked for.
    pub requested_at: Option<Instant>,
    /// Requests repeated without an answer in between.
    pub retries: u32,
    /// When the transfer started (for the closing figures).
    pub started: Instant,
}

/// What a transfer needs next.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// These chunks (none while the window is full).
    Fetch(Vec<FetchRequest>),
    /// Nothing: the bundle is complete in this directory.
    Complete(PathBuf),
}

/// A failure after the offer was accepted: the partial bundle is removed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// A whole file does not hash to the manifest's sha256.
    #[error("{path}: the received file hashes to {actual}, the signed manifest says {expected}")]
    FileHash {
        /// The file.
        path: String,
        /// The manifest's hash.
        expected: String,
        /// The received file's.
        actual: String,
    },
    /// Something else filled the disk during the transfer: it stops before the outbox and
    /// the state file are left without room.
    #[error(
        "not enough disk left: the rest of the bundle needs {left} bytes and {} spare; {free} \
         are free",
        DISK_RESERVE_BYTES / 2
    )]
    DiskFull {
        /// Bytes of the bundle still to come.
        left: u64,
        /// Free bytes.
        free: u64,
    },
    /// Reading or writing the state directory failed (a full disk among others).
    #[error("cannot write the bundle under {}: {source}", dir.display())]
    Io {
        /// The bundle's directory.
        dir: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Whether `path` may be a delivered file's name: one plain component, none of the names the
/// transfer itself uses.
fn plain_name(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 128
        && !path.starts_with('.')
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && path != MANIFEST_FILE
        && path != OFFER_FILE
        && ![".sig", ".part", ".tmp"].iter().any(|s| path.ends_with(s))
}

impl Transfer {
    /// Checks `offer` (signature by one of `trusted`, files, sizes, free disk) and starts or
    /// resumes its transfer under `bundles`. `Err` is the reason it is rejected; nothing is
    /// written before every check passed.
    pub fn start(
        bundles: &StateDir,
        offer: &Offer,
        trusted: &[PublicKey],
    ) -> Result<Transfer, String> {
        if trusted.is_empty() {
            return Err(
                "model.trusted_keys is empty: this device takes no bundle over the \
                        network (list the operators' public keys to allow updates)"
                    .into(),
            );
        }
        let signature = serde_json::to_vec(&offer.signature).expect("a signature serialises");
        let manifest_bytes = offer.manifest.as_bytes();
        signature::verify_bytes(
            Path::new(MANIFEST_FILE),
            &signature,
            manifest_bytes,
            trusted,
        )
        .map_err(|e| e.to_string())?;
        let manifest = Manifest::parse(manifest_bytes, Path::new(MANIFEST_FILE))
            .map_err(|e| format!("the signed manifest is not valid: {e}"))?;
        let listed = manifest.listed_files();
        if listed.len() > MAX_FILES || offer.files.len() != listed.len() {
            return Err(format!(
                "the offer lists {} files; the manifest {} (at most {MAX_FILES})",
                offer.files.len(),
                listed.len()
            ));
        }
        let mut files = Vec::with_capacity(listed.len());
        for l in &listed {
            if !plain_name(&l.path) {
                return Err(format!(
                    "{}: {:?} is not a plain file name; a delivered bundle holds only files \
                     named with letters, digits, '.', '_' and '-'",
                    l.key, l.path
                ));
            }
            let offered = offer
                .files
                .iter()
                .find(|f| f.path == l.path)
                .ok_or_else(|| format!("the offer does not list {} ({})", l.path, l.key))?;
            if l.bytes.is_some_and(|b| b != offered.bytes) {
                return Err(format!(
                    "{}: the offer says {} bytes, the signed manifest {}",
                    l.path,
                    offered.bytes,
                    l.bytes.unwrap_or_default()
                ));
            }
            files.push(Wanted {
                path: l.path.clone(),
                sha256: l.sha256.clone(),
                bytes: offered.bytes,
            });
        }
        let bytes_total = files
            .iter()
            .try_fold(0u64, |sum, f| sum.checked_add(f.bytes))
            .filter(|&t| t <= MAX_BUNDLE_BYTES)
            .ok_or_else(|| format!("the bundle is larger than {MAX_BUNDLE_BYTES} bytes"))?;
        let bundle = super::sha256_hex(manifest_bytes);
        let name = format!("{bundle}{PARTIAL}");
        let io = |what: &str, e: std::io::Error| {
            format!("{what} {}: {e}", bundles.join(&name).display())
        };
        let partial = bundles
            .existing_subdir(&name)
            .map_err(|e| io("cannot open", e))?;
        // A complete copy from an earlier delivery (the daemon stopped before it switched,
        // or it is the previous bundle) is checked again in place of a transfer.
        let complete = match partial {
            Some(_) => None,
            None => bundles
                .existing_subdir(&bundle)
                .map_err(|e| io("cannot open", e))?,
        };
        let reuse_complete = complete.is_some();
        let existing = partial.or(complete);
        let on_disk = match &existing {
            Some(dir) => files
                .iter()
                .map(|f| {
                    let done = dir.file_len(&f.path).ok().flatten().unwrap_or(0);
                    let part = dir
                        .file_len(&part_name(&f.path))
                        .ok()
                        .flatten()
                        .unwrap_or(0);
                    done.max(part).min(f.bytes)
                })
                .sum(),
            None => 0,
        };
        let free = bundles
            .free_bytes()
            .map_err(|e| io("cannot measure the disk of", e))?;
        let needed = (bytes_total - on_disk).saturating_add(DISK_RESERVE_BYTES);
        if free < needed {
            return Err(format!(
                "not enough disk: the bundle needs {} more bytes and {DISK_RESERVE_BYTES} spare; \
                 {free} are free",
                bytes_total - on_disk
            ));
        }
        drop(existing);
        if reuse_complete {
            bundles
                .rename(&bundle, &name)
                .map_err(|e| io("cannot reuse", e))?;
        }
        let dir = bundles.subdir(&name).map_err(|e| io("cannot create", e))?;
        let offer_json = serde_json::to_vec(offer).expect("an offer serialises");
        for (file, data) in [
            (MANIFEST_FILE.to_string(), manifest_bytes),
            (format!("{MANIFEST_FILE}.sig"), signature.as_slice()),
            (OFFER_FILE.to_string(), offer_json.as_slice()),
        ] {
            dir.replace(&file, data)
                .map_err(|e| io("cannot write", e))?;
        }
        let mut transfer = Transfer {
            job: offer.job.clone(),
            bundle,
            model_id: manifest.model_id.clone(),
            files,
            next: 0,
            offset: 0,
            requested: 0,
            dir,
            bytes_total,
            requested_at: None,
            retries: 0,
            started: Instant::now(),
        };
        transfer.seek().map_err(|e| e.to_string())?;
        Ok(transfer)
    }

    /// The transfer left in `bundles` by an earlier run, if any, checked again from its kept
    /// offer. Partial bundles that cannot go on are removed.
    pub fn resume(bundles: &StateDir, trusted: &[PublicKey]) -> Option<Transfer> {
        let entries = bundles.entries().ok()?;
        let mut found = None;
        for (name, _) in entries.iter().filter(|(n, _)| n.ends_with(PARTIAL)) {
            let offer = bundles
                .existing_subdir(name)
                .ok()
                .flatten()
                .and_then(|d| d.read(OFFER_FILE, super::MAX_OFFER_BYTES as u64 * 2).ok())
                .flatten()
                .and_then(|data| serde_json::from_slice::<Offer>(&data).ok());
            match offer.map(|o| Transfer::start(bundles, &o, trusted)) {
                Some(Ok(t)) if found.is_none() => found = Some(t),
                other => {
                    if let Some(Err(reason)) = other {
                        tracing::warn!(%name, %reason, "a partial bundle cannot go on; removed");
                    }
                    if let Err(e) = bundles.remove_dir_all(name) {
                        tracing::warn!(%name, error = %e, "cannot remove a partial bundle");
                    }
                }
            }
        }
        found
    }

    fn io(&self, source: std::io::Error) -> TransferError {
        TransferError::Io {
            dir: self.dir.path().to_owned(),
            source,
        }
    }

    /// Moves `next` and `offset` to the first byte not on disk, checking each finished file.
    fn seek(&mut self) -> Result<(), TransferError> {
        while let Some(f) = self.files.get(self.next).cloned() {
            if self.dir.file_len(&f.path).map_err(|e| self.io(e))? == Some(f.bytes)
                && self.hash_of(&f.path)? == f.sha256
            {
                self.next += 1;
                continue;
            }
            self.dir
                .remove_if_present(&f.path)
                .map_err(|e| self.io(e))?;
            let part = part_name(&f.path);
            let have = self
                .dir
                .file_len(&part)
                .map_err(|e| self.io(e))?
                .unwrap_or(0);
            if have > f.bytes {
                self.dir.remove(&part).map_err(|e| self.io(e))?;
                self.offset = 0;
            } else {
                self.offset = have;
            }
            if self.offset == f.bytes {
                // An empty file has no chunk: create its `.part` here.
                drop(self.dir.open_append(&part).map_err(|e| self.io(e))?);
                self.finish_file()?;
                continue;
            }
            return Ok(());
        }
        Ok(())
    }

    fn hash_of(&self, name: &str) -> Result<String, TransferError> {
        let mut file = self.dir.open_read(name).map_err(|e| self.io(e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).map_err(|e| self.io(e))?;
            if n == 0 {
                return Ok(format!("{:x}", hasher.finalize()));
            }
            hasher.update(&buf[..n]);
        }
    }

    /// Checks the finished `<name>.part` and renames it; a wrong hash removes it.
    fn finish_file(&mut self) -> Result<(), TransferError> {
        let f = self.files[self.next].clone();
        let part = part_name(&f.path);
        self.dir
            .open_read(&part)
            .and_then(|file| file.sync_all())
            .map_err(|e| self.io(e))?;
        let actual = self.hash_of(&part)?;
        if actual != f.sha256 {
            let _ = self.dir.remove(&part);
            return Err(TransferError::FileHash {
                path: f.path,
                expected: f.sha256,
                actual,
            });
        }
        self.dir.rename(&part, &f.path).map_err(|e| self.io(e))?;
        self.dir.sync().map_err(|e| self.io(e))?;
        self.next += 1;
        self.offset = 0;
        self.requested = 0;
        Ok(())
    }

    /// Bytes of the bundle on disk.
    pub fn bytes_done(&self) -> u64 {
        self.files[..self.next].iter().map(|f| f.bytes).sum::<u64>() + self.offset
    }

    /// The next chunk to ask for, or the finished bundle (renamed to `bundles/<id>`).
    pub fn next(&mut self, bundles: &StateDir) -> Result<Progress, TransferError> {
        if self.offset == 0 && self.requested == 0 {
            // At the start of a file: skip the files already on disk whole (a kept copy),
            // and empty ones, which have no chunk to ask for.
            self.seek()?;
        }
        if let Some(f) = self.files.get(self.next) {
            let end = (self.offset + WINDOW_CHUNKS * CHUNK_BYTES).min(f.bytes);
            let mut at = self.requested.max(self.offset);
            let mut requests = Vec::new();
            while at < end {
                let bytes = CHUNK_BYTES.min(f.bytes - at);
                requests.push(FetchRequest {
                    schema: FETCH_SCHEMA.to_string(),
                    job: self.job.clone(),
                    bundle: self.bundle.clone(),
                    path: f.path.clone(),
                    offset: at,
                    bytes,
                });
                at += bytes;
            }
            self.requested = at;
            return Ok(Progress::Fetch(requests));
        }
        self.dir
            .remove_if_present(OFFER_FILE)
            .map_err(|e| self.io(e))?;
        // A complete copy of the same bundle (an earlier delivery) is replaced.
        bundles
            .remove_dir_all(&self.bundle)
            .map_err(|e| self.io(e))?;
        bundles
            .rename(&format!("{}{PARTIAL}", self.bundle), &self.bundle)
            .map_err(|e| self.io(e))?;
        bundles.sync().map_err(|e| self.io(e))?;
        Ok(Progress::Complete(bundles.join(&self.bundle)))
    }

    /// Goes on under `offer`'s job id (the same bundle offered again), kept for a restart.
    pub fn adopt(&mut self, offer: &Offer) -> Result<(), TransferError> {
        let offer_json = serde_json::to_vec(offer).expect("an offer serialises");
        self.dir
            .replace(OFFER_FILE, &offer_json)
            .map_err(|e| self.io(e))?;
        self.job = offer.job.clone();
        self.rewind();
        Ok(())
    }

    /// Asks again for everything not on disk (after a request went unanswered).
    pub fn rewind(&mut self) {
        self.requested = self.offset;
    }

    /// Writes the chunk that comes next in the file; `Ok(false)` for any other (a late
    /// duplicate after a repeated request, another job's, one out of order), which is ignored.
    pub fn accept(&mut self, chunk: &Chunk) -> Result<bool, TransferError> {
        let Some(f) = self.files.get(self.next).cloned() else {
            return Ok(false);
        };
        let expected_len = CHUNK_BYTES.min(f.bytes - self.offset);
        if chunk.header.job != self.job
            || chunk.header.path != f.path
            || chunk.header.offset != self.offset
            || chunk.data.len() as u64 != expected_len
        {
            return Ok(false);
        }
        // The start checked for the whole bundle and the reserve; half the reserve may go to
        // the small files and block rounding before the disk counts as filled by others.
        let left = self.bytes_total - self.bytes_done();
        let free = self.dir.free_bytes().map_err(|e| self.io(e))?;
        if free < left.saturating_add(DISK_RESERVE_BYTES / 2) {
            return Err(TransferError::DiskFull { left, free });
        }
        let part = part_name(&f.path);
        // Not synced chunk by chunk: whatever a power cut leaves in `.part` is caught by the
        // file's hash, and the file is synced once it is complete.
        let mut file = self.dir.open_append(&part).map_err(|e| self.io(e))?;
        file.write_all(&chunk.data).map_err(|e| self.io(e))?;
        self.offset += expected_len;
        self.requested_at = Some(Instant::now());
        self.retries = 0;
        if self.offset == f.bytes {
            self.finish_file()?;
        }
        Ok(true)
    }

    /// Removes the partial bundle (after a failure).
    pub fn discard(self, bundles: &StateDir) {
        let name = format!("{}{PARTIAL}", self.bundle);
        drop(self.dir);
        if let Err(e) = bundles.remove_dir_all(&name) {
            tracing::warn!(%name, error = %e, "cannot remove a failed bundle");
        }
    }
}

fn part_name(path: &str) -> String {
    format!("{path}.part")
}

/// Removes every delivered bundle but `keep`, and every partial one but `partial`.
pub fn prune(bundles: &StateDir, keep: &[&str], partial: Option<&str>) {
    let Ok(entries) = bundles.entries() else {
        return;
    };
    for (name, _) in entries {
        let kept = keep.contains(&name.as_str())
            || partial.is_some_and(|p| name == format!("{p}{PARTIAL}"));
        if !kept {
            match bundles.remove_dir_all(&name) {
                Ok(()) => tracing::info!(bundle = %name, "old bundle removed"),
                Err(e) => tracing::warn!(bundle = %name, error = %e, "cannot remove an old bundle"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::update::{chunk_payload, parse_chunk, OfferedFile, OFFER_SCHEMA};
    use crate::pipeline::model::bundle::Bundle;

    /// A signed copy of the fixture bundle (its manifest changed by `edit`), its offer and
    /// the signer's key.
    fn signed_bundle(
        root: &Path,
        edit: impl FnOnce(&mut serde_json::Value),
    ) -> (PathBuf, Offer, PublicKey) {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/bundle");
        let dir = root.join("source");
        std::fs::create_dir(&dir).unwrap();
        for entry in std::fs::read_dir(source).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
        let mut manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(MANIFEST_FILE)).unwrap()).unwrap();
        edit(&mut manifest);
        let text = serde_json::to_string_pretty(&manifest).unwrap();
        std::fs::write(dir.join(MANIFEST_FILE), &text).unwrap();
        let (pkcs8, public) = signature::generate_key().unwrap();
        let sig = signature::sign(text.as_bytes(), &pkcs8).unwrap();
        let parsed = Manifest::parse(text.as_bytes(), Path::new("m")).unwrap();
        let files = parsed
            .listed_files()
            .into_iter()
            .map(|l| OfferedFile {
                bytes: std::fs::metadata(dir.join(&l.path))
                    .map(|m| m.len())
                    .unwrap_or(0),
                path: l.path,
            })
            .collect();
        let offer = Offer {
            schema: OFFER_SCHEMA.into(),
            job: "job-1".into(),
            manifest: text,
            signature: sig,
            files,
        };
        (dir, offer, public)
    }

    fn bundles(root: &Path) -> StateDir {
        StateDir::open(&root.join("state"))
            .unwrap()
            .subdir(BUNDLES_DIR)
            .unwrap()
    }

    /// Answers `request` from the source directory, through the wire format.
    fn answer(source: &Path, request: &FetchRequest) -> Chunk {
        let data = std::fs::read(source.join(&request.path)).unwrap();
        let range = request.offset as usize..(request.offset + request.bytes) as usize;
        parse_chunk(&chunk_payload(
            &request.job,
            &request.path,
            request.offset,
            &data[range],
        ))
        .unwrap()
    }

    #[test]
    fn a_bundle_arrives_chunk_by_chunk_survives_a_restart_and_loads() {
        let tmp = tempfile::tempdir().unwrap();
        let (source, offer, key) = signed_bundle(tmp.path(), |m| m["model_id"] = "v2".into());
        let bundles = bundles(tmp.path());
        let mut t = Transfer::start(&bundles, &offer, &[key]).unwrap();
        assert_eq!(t.model_id, "v2");
        let mut chunks = 0;
        let done = loop {
            let Progress::Fetch(requests) = t.next(&bundles).unwrap() else {
                unreachable!()
            };
            assert!(requests.len() as u64 <= WINDOW_CHUNKS);
            for request in requests {
                assert!(request.bytes <= CHUNK_BYTES);
                assert!(t.accept(&answer(&source, &request)).unwrap());
                chunks += 1;
                if chunks == 12 {
                    // A restart: the transfer is found on disk and goes on where it was.
                    let before = t.bytes_done();
                    drop(t);
                    t = Transfer::resume(&bundles, &[key]).expect("resumed");
                    assert_eq!(t.bytes_done(), before);
                    // A late duplicate of the last chunk is ignored.
                    assert!(!t.accept(&answer(&source, &request)).unwrap());
                    break;
                }
            }
            if t.bytes_done() == t.bytes_total {
                match t.next(&bundles).unwrap() {
                    Progress::Complete(dir) => break dir,
                    other => panic!("{other:?}"),
                }
            }
        };
        assert!(chunks > 12, "{chunks}");
        assert_eq!(done, bundles.join(&t.bundle));
        let loaded = Bundle::load_verified(&done, &[key]).unwrap();
        assert_eq!(loaded.manifest().model_id, "v2");
        assert_eq!(bundles.entries().unwrap().len(), 1, "no partial left");
        assert!(bundles
            .existing_subdir(&t.bundle)
            .unwrap()
            .unwrap()
            .file_len(OFFER_FILE)
            .unwrap()
            .is_none());
    }

    /// Fetches the whole bundle of `offer`; returns how many chunks it took.
    fn fetch_all(source: &Path, bundles: &StateDir, t: &mut Transfer) -> (usize, PathBuf) {
        let mut chunks = 0;
        loop {
            match t.next(bundles).unwrap() {
                Progress::Fetch(requests) => {
                    assert!(!requests.is_empty(), "a stall at {}", t.bytes_done());
                    for request in requests {
                        assert!(t.accept(&answer(source, &request)).unwrap());
                        chunks += 1;
                    }
                }
                Progress::Complete(dir) => return (chunks, dir),
            }
        }
    }

    #[test]
    fn a_complete_copy_on_disk_is_checked_again_instead_of_fetched() {
        let tmp = tempfile::tempdir().unwrap();
        let (source, offer, key) = signed_bundle(tmp.path(), |_| {});
        let bundles = bundles(tmp.path());
        let mut t = Transfer::start(&bundles, &offer, &[key]).unwrap();
        let (chunks, _) = fetch_all(&source, &bundles, &mut t);
        assert!(chunks > 0);
        // The daemon stopped before switching; the same bundle is offered again.
        let mut again = Transfer::start(&bundles, &offer, &[key]).unwrap();
        assert_eq!(again.bytes_done(), again.bytes_total);
        let (chunks, dir) = fetch_all(&source, &bundles, &mut again);
        assert_eq!(chunks, 0);
        Bundle::load_verified(&dir, &[key]).unwrap();
        assert_eq!(bundles.entries().unwrap().len(), 1, "no partial left");
        // A damaged file of the copy is fetched again, and only that one.
        let model = offer.files[0].path.clone();
        std::fs::write(dir.join(&model), b"damaged").unwrap();
        let mut again = Transfer::start(&bundles, &offer, &[key]).unwrap();
        assert_eq!(again.bytes_done(), 0);
        let (chunks, dir) = fetch_all(&source, &bundles, &mut again);
        assert_eq!(
            chunks as u64,
            offer.files[0].bytes.div_ceil(CHUNK_BYTES),
            "only {model}"
        );
        Bundle::load_verified(&dir, &[key]).unwrap();
    }

    #[test]
    fn an_empty_file_after_fetched_ones_is_delivered_too() {
        let tmp = tempfile::tempdir().unwrap();
        let empty = crate::daemon::update::sha256_hex(b"");
        let (source, mut offer, key) = signed_bundle(tmp.path(), |m| {
            m["face_detector"]["licence"]["sha256"] = empty.clone().into()
        });
        // The licence is listed last: it comes after every fetched file.
        std::fs::write(source.join("face_detector.LICENSE"), b"").unwrap();
        let last = offer.files.last_mut().unwrap();
        assert_eq!(last.path, "face_detector.LICENSE");
        last.bytes = 0;
        let bundles = bundles(tmp.path());
        let mut t = Transfer::start(&bundles, &offer, &[key]).unwrap();
        let done = loop {
            match t.next(&bundles).unwrap() {
                Progress::Fetch(requests) => {
                    assert!(!requests.is_empty(), "a stall at {}", t.bytes_done());
                    for request in requests {
                        assert!(t.accept(&answer(&source, &request)).unwrap());
                    }
                }
                Progress::Complete(dir) => break dir,
            }
        };
        Bundle::load_verified(&done, &[key]).unwrap();
    }

    #[test]
    fn a_file_that_does_not_match_the_manifest_fails_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let (source, offer, key) = signed_bundle(tmp.path(), |_| {});
        let bundles = bundles(tmp.path());
        let mut t = Transfer::start(&bundles, &offer, &[key]).unwrap();
        let error = 'fetch: loop {
            let Progress::Fetch(requests) = t.next(&bundles).unwrap() else {
                unreachable!()
            };
            for request in requests {
                // Every chunk is consistent with its own header, but one byte of the data is
                // not what was signed.
                let mut chunk = answer(&source, &request);
                if request.offset == 0 {
                    chunk.data[0] ^= 1;
                }
                match t.accept(&chunk) {
                    Ok(advanced) => assert!(advanced),
                    Err(e) => break 'fetch e,
                }
            }
        };
        assert!(matches!(error, TransferError::FileHash { .. }), "{error}");
        t.discard(&bundles);
        assert!(bundles.entries().unwrap().is_empty());
    }

    #[test]
    fn offers_are_refused_with_their_reason_before_anything_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let (_, offer, key) = signed_bundle(tmp.path(), |_| {});
        let bundles = bundles(tmp.path());
        let refuse = |offer: &Offer, trusted: &[PublicKey]| {
            let reason = Transfer::start(&bundles, offer, trusted).unwrap_err();
            assert!(bundles.entries().unwrap().is_empty(), "{reason}");
            reason
        };
        assert!(refuse(&offer, &[]).contains("trusted_keys is empty"));
        let (_, stranger) = signature::generate_key().unwrap();
        assert!(refuse(&offer, &[stranger]).contains("not in model.trusted_keys"));
        let mut changed = offer.clone();
        changed.manifest = changed.manifest.replace("clip-caer-tiny-fixture", "forged");
        assert!(refuse(&changed, &[key]).contains("does not match"));
        let mut short = offer.clone();
        short.files.pop();
        assert!(refuse(&short, &[key]).contains("lists"));
        let mut wrong_size = offer.clone();
        wrong_size.files[0].bytes += 1;
        assert!(refuse(&wrong_size, &[key]).contains("signed manifest"));

        let tmp = tempfile::tempdir().unwrap();
        let (_, offer, key) = signed_bundle(tmp.path(), |m| {
            m["face_detector"]["licence"]["path"] = "../../../etc/cron.d/x".into()
        });
        let mut offer = offer;
        offer.files.last_mut().unwrap().bytes = 10;
        let bundles = self::bundles(tmp.path());
        let reason = Transfer::start(&bundles, &offer, &[key]).unwrap_err();
        assert!(reason.contains("not a plain file name"), "{reason}");
    }

    #[test]
    fn only_plain_names_are_delivered() {
        for ok in ["image_encoder.onnx", "face_detector.LICENSE", "a-b_c.onnx"] {
            assert!(plain_name(ok), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "a/b",
            ".hidden",
            "manifest.json",
            "offer.json",
            "x.sig",
            "x.part",
            "x.tmp",
            "a\0b",
            "é.onnx",
        ] {
            assert!(!plain_name(bad), "{bad:?}");
        }
    }
}
