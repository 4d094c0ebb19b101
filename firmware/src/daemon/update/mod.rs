//! Model updates over MQTT: a signed bundle offered by `caer-fleet model push`, fetched in
//! chunks into the state directory, checked, loaded beside the running model and switched
//! to between two pipelines; the previous bundle kept for `rollback` (see
//! `docs/model-updates.md`).
//!
//! Topics, under the device's `caer/<site>/<device>/`:
//!
//! | topic | direction | payload |
//! | --- | --- | --- |
//! | `model/offer` | in | [`Offer`]: the job, the bundle's `manifest.json` and its signature, each file's size |
//! | `model/fetch` | out | [`FetchRequest`]: one chunk of one file |
//! | `model/chunk` | in | a [`ChunkHeader`] line, `\n`, then the chunk's bytes |
//! | `model/status` | out, retained | [`JobStatus`]: queued, in_progress, succeeded, failed, rejected |
//!
//! Everything received is hostile until checked: the offer's size, JSON and envelope here;
//! its signature against `model.trusted_keys` before anything is written; every path a plain
//! file name the manifest lists; the total size against [`MAX_BUNDLE_BYTES`] and the free
//! disk; each chunk against the request it answers and its own sha256; each file against the
//! manifest's sha256; the finished bundle by [`crate::pipeline::model::bundle::Bundle`]'s own
//! load and the backend's self-check. The device asks for one chunk at a time, so a sender
//! cannot make it hold more than one chunk in memory.

pub mod transfer;

mod apply;

pub(crate) use apply::PendingSwitch;
pub use apply::{FETCH_TIMEOUT, MAX_FETCH_RETRIES, MAX_TRIAL_STARTS, TRIAL_PERIOD};

use serde::{Deserialize, Serialize};

use crate::pipeline::model::signature::SignatureFile;

/// Schema id of `model/offer` payloads.
pub const OFFER_SCHEMA: &str = "caer.model-offer.v1";
/// Schema id of `model/fetch` payloads.
pub const FETCH_SCHEMA: &str = "caer.model-fetch.v1";
/// Schema id of the header of `model/chunk` payloads.
pub const CHUNK_SCHEMA: &str = "caer.model-chunk.v1";
/// Schema id of `model/status` payloads.
pub const JOB_STATUS_SCHEMA: &str = "caer.model-status.v1";
/// Largest accepted offer (the manifest is a few KiB; the bundle loader caps it at 1 MiB).
pub const MAX_OFFER_BYTES: usize = 1 << 20;
/// Largest header line of a chunk.
pub const MAX_CHUNK_HEADER_BYTES: usize = 1024;
/// Bytes asked for in one chunk (the last chunk of a file is shorter).
pub const CHUNK_BYTES: u64 = 128 * 1024;
/// Largest `model/chunk` payload taken off the connection (larger ones are dropped there,
/// before they are hashed or queued).
pub const MAX_CHUNK_PAYLOAD_BYTES: usize = CHUNK_BYTES as usize + MAX_CHUNK_HEADER_BYTES;
/// Largest bundle taken (the full-size fp32 ViT-B/32 bundle with its int8 towers is about
/// 700 MB).
pub const MAX_BUNDLE_BYTES: u64 = 4 << 30;
/// Largest number of files in a bundle.
pub const MAX_FILES: usize = 16;
/// Longest job id.
pub const MAX_JOB_CHARS: usize = 128;

/// One file of an offer: its path in the bundle and its size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfferedFile {
    /// A plain file name, as the manifest lists it.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// A `model/offer` payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offer {
    /// Always [`OFFER_SCHEMA`].
    pub schema: String,
    /// The operator's job id, echoed in every status.
    pub job: String,
    /// The bundle's `manifest.json`, exactly the signed bytes (JSON is UTF-8).
    pub manifest: String,
    /// The contents of `manifest.json.sig`.
    pub signature: SignatureFile,
    /// Every file of the bundle besides the manifest, with its size.
    pub files: Vec<OfferedFile>,
}

/// A `model/fetch` payload: the device asks for `bytes` bytes of `path` from `offset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchRequest {
    /// Always [`FETCH_SCHEMA`].
    pub schema: String,
    /// The job.
    pub job: String,
    /// The bundle id (sha256 of its manifest).
    pub bundle: String,
    /// The file.
    pub path: String,
    /// Where the chunk starts.
    pub offset: u64,
    /// Its length.
    pub bytes: u64,
}

/// The header line of a `model/chunk` payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkHeader {
    /// Always [`CHUNK_SCHEMA`].
    pub schema: String,
    /// The job.
    pub job: String,
    /// The file.
    pub path: String,
    /// Where the chunk starts.
    pub offset: u64,
    /// sha256 of the chunk's bytes, lowercase hex.
    pub sha256: String,
}

/// A received chunk: its header and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The header.
    pub header: ChunkHeader,
    /// The bytes.
    pub data: Vec<u8>,
}

/// Job states, in AWS IoT Jobs' words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted, not started (another job is running).
    Queued,
    /// Fetching, checking or switching.
    InProgress,
    /// The new model runs.
    Succeeded,
    /// Accepted, but it could not be fetched, checked or run: the previous model runs on.
    Failed,
    /// Refused before anything was fetched (unsigned, untrusted, too large, malformed).
    Rejected,
}

impl JobState {
    /// Whether the job is over.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Rejected
        )
    }
}

/// The retained `model/status` payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    /// Always [`JOB_STATUS_SCHEMA`].
    pub schema: String,
    /// The job, if the offer had a readable one.
    pub job: Option<String>,
    /// The bundle id, once the manifest was read.
    pub bundle: Option<String>,
    /// The new bundle's `model_id`, once the manifest was read.
    pub model_id: Option<String>,
    /// The state.
    pub state: JobState,
    /// Why, for `failed` and `rejected`; what is going on otherwise.
    pub reason: Option<String>,
    /// Bytes of the bundle on the device so far.
    pub bytes_done: u64,
    /// Bytes of the bundle.
    pub bytes_total: u64,
    /// Milliseconds without inference while switching (`succeeded` only).
    pub switch_gap_ms: Option<u64>,
    /// When this status was written, RFC 3339 UTC.
    pub at: String,
}

impl JobStatus {
    /// A status of `job` in `state`.
    pub fn new(job: Option<String>, state: JobState, reason: Option<String>) -> Self {
        JobStatus {
            schema: JOB_STATUS_SCHEMA.to_string(),
            job,
            bundle: None,
            model_id: None,
            state,
            reason,
            bytes_done: 0,
            bytes_total: 0,
            switch_gap_ms: None,
            at: crate::pipeline::aggregate::rfc3339(std::time::SystemTime::now()),
        }
    }

    /// The JSON payload.
    pub fn to_payload(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a job status serialises")
    }
}

/// Why an offer or a chunk was refused on arrival: the job id (if readable) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The job, if it could be read.
    pub job: Option<String>,
    /// What is wrong.
    pub reason: String,
}

fn refused(job: Option<String>, reason: impl Into<String>) -> Refused {
    Refused {
        job,
        reason: reason.into(),
    }
}

/// Checks a `model/offer` payload's size, JSON and envelope (the signature and the files are
/// checked by [`transfer::Transfer::start`]).
pub fn parse_offer(payload: &[u8]) -> Result<Offer, Refused> {
    if payload.len() > MAX_OFFER_BYTES {
        return Err(refused(
            None,
            format!(
                "the offer is {} bytes; the limit is {MAX_OFFER_BYTES}",
                payload.len()
            ),
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(payload)
        .map_err(|e| refused(None, format!("the offer is not valid JSON: {e}")))?;
    let job = value
        .get("job")
        .and_then(serde_json::Value::as_str)
        .filter(|j| !j.is_empty() && j.chars().count() <= MAX_JOB_CHARS)
        .map(str::to_string);
    let offer: Offer = serde_path_to_error::deserialize(value)
        .map_err(|e| refused(job.clone(), format!("{}: {}", e.path(), e.inner())))?;
    if job.is_none() {
        return Err(refused(
            None,
            format!("job must be 1 to {MAX_JOB_CHARS} characters"),
        ));
    }
    if offer.schema != OFFER_SCHEMA {
        return Err(refused(
            job,
            format!("schema is {:?}; expected {OFFER_SCHEMA:?}", offer.schema),
        ));
    }
    Ok(offer)
}

/// Splits a `model/chunk` payload into its header line and bytes, and checks the bytes
/// against the header's sha256.
pub fn parse_chunk(payload: &[u8]) -> Result<Chunk, Refused> {
    let end = payload
        .iter()
        .take(MAX_CHUNK_HEADER_BYTES)
        .position(|&b| b == b'\n')
        .ok_or_else(|| {
            refused(
                None,
                format!("no header line within the first {MAX_CHUNK_HEADER_BYTES} bytes"),
            )
        })?;
    let header: ChunkHeader = serde_json::from_slice(&payload[..end])
        .map_err(|e| refused(None, format!("the chunk header is not valid: {e}")))?;
    if header.schema != CHUNK_SCHEMA {
        return Err(refused(
            Some(header.job),
            format!("schema is {:?}; expected {CHUNK_SCHEMA:?}", header.schema),
        ));
    }
    let data = payload[end + 1..].to_vec();
    let digest = sha256_hex(&data);
    if digest != header.sha256 {
        return Err(refused(
            Some(header.job),
            format!(
                "chunk {} at {}: its bytes hash to {digest}, the header says {}",
                header.path, header.offset, header.sha256
            ),
        ));
    }
    Ok(Chunk { header, data })
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(bytes))
}

/// A `model/chunk` payload (what `caer-fleet model push` sends).
pub fn chunk_payload(job: &str, path: &str, offset: u64, data: &[u8]) -> Vec<u8> {
    let header = ChunkHeader {
        schema: CHUNK_SCHEMA.to_string(),
        job: job.to_string(),
        path: path.to_string(),
        offset,
        sha256: sha256_hex(data),
    };
    let mut payload = serde_json::to_vec(&header).expect("a chunk header serialises");
    payload.push(b'\n');
    payload.extend_from_slice(data);
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_and_a_changed_byte_is_refused() {
        let payload = chunk_payload("j", "a.onnx", 128, b"hello\nworld");
        let chunk = parse_chunk(&payload).unwrap();
        assert_eq!(
            (chunk.header.path.as_str(), chunk.header.offset),
            ("a.onnx", 128)
        );
        assert_eq!(chunk.data, b"hello\nworld");
        let mut bad = payload.clone();
        *bad.last_mut().unwrap() ^= 1;
        let r = parse_chunk(&bad).unwrap_err();
        assert_eq!(r.job.as_deref(), Some("j"));
        assert!(r.reason.contains("hash"), "{}", r.reason);
        assert!(parse_chunk(&[b'x'; 2000]).is_err());
    }

    #[test]
    fn offers_are_checked_before_anything_reads_them() {
        let sig = r#"{"schema":"caer.signature.v1","algorithm":"ed25519","public_key":"00","signature":"00"}"#;
        let ok = format!(
            r#"{{"schema":"{OFFER_SCHEMA}","job":"j1","manifest":"{{}}","signature":{sig},"files":[]}}"#
        );
        assert_eq!(parse_offer(ok.as_bytes()).unwrap().job, "j1");
        let r =
            parse_offer(ok.replace("\"files\"", "\"extra\":1,\"files\"").as_bytes()).unwrap_err();
        assert_eq!(r.job.as_deref(), Some("j1"));
        assert!(r.reason.contains("extra"), "{}", r.reason);
        let r = parse_offer(ok.replace("j1", "").as_bytes()).unwrap_err();
        assert!(r.reason.contains("job"), "{}", r.reason);
        let r = parse_offer(ok.replace(OFFER_SCHEMA, "caer.cmd.v1").as_bytes()).unwrap_err();
        assert!(r.reason.contains("schema"), "{}", r.reason);
        assert!(parse_offer(&vec![b' '; MAX_OFFER_BYTES + 1]).is_err());
        assert!(parse_offer(b"{nope").is_err());
    }
}
