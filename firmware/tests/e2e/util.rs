#![allow(dead_code)]

//! Helpers of the end-to-end tests (the modules beside this one).
//!
//! Every test starts what it needs and nothing is shared between tests:
//!
//! - [`Broker`] (`broker.rs`, shared with the fleet tool's tests): a real `mosquitto` on a
//!   free loopback port.
//! - [`Subscriber`]: an MQTT client (rumqttc, persistent session) recording every message
//!   under `caer/#`, so that messages published while it is reconnecting are not missed.
//! - [`Daemon`]: the real `caerd` process (this package's binary, [`CAERD`]) with a
//!   temporary configuration, its stdout and stderr in files.
//! - [`Schemas`]: the JSON Schemas of `schemas/`, compiled once per test, to validate real
//!   payloads.
//! - [`write_classroom`]: a directory of synthetic frames with known face boxes.

#[allow(unused_imports)] // Each test binary uses a different part.
pub use super::broker::{
    find_program, free_port, mosquitto_bin, running_as_root, signal, wait_until, Broker,
};
use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::{json, Value};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("firmware/ has a parent")
        .to_path_buf()
}

/// The daemon under test: this package's `caerd` binary.
pub const CAERD: &str = env!("CARGO_BIN_EXE_caerd");

/// The committed tiny fixture bundle.
pub fn fixture_bundle() -> PathBuf {
    repo_root().join("tests/golden/bundle")
}

/// The committed demo model: small, trained on the scripted classroom
/// (`model-export/demo/README.md`).
pub fn demo_bundle() -> PathBuf {
    repo_root().join("model-export/demo/bundle")
}

/// One received MQTT message.
#[derive(Debug, Clone)]
pub struct Message {
    /// The topic.
    pub topic: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// Whether it came as a retained message.
    pub retain: bool,
}

impl Message {
    /// The payload as JSON; panics with the payload if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "{} is not JSON ({e}): {}",
                self.topic,
                String::from_utf8_lossy(&self.payload)
            )
        })
    }
}

/// An MQTT client recording everything under `caer/#`.
pub struct Subscriber {
    client: Client,
    messages: Arc<Mutex<Vec<Message>>>,
    _thread: JoinHandle<()>,
}

impl Subscriber {
    /// Connects to `broker` with a persistent session, subscribes to `caer/#` (QoS 1) and
    /// waits for the subscription to be acknowledged.
    pub fn connect(broker: &Broker) -> Subscriber {
        let mut options = MqttOptions::new(
            format!("e2e-sub-{}", broker.port()),
            "127.0.0.1",
            broker.port(),
        );
        options.set_clean_session(false);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_max_packet_size(16 << 20, 16 << 20);
        let (client, mut connection) = Client::new(options, 64);
        let messages = Arc::new(Mutex::new(Vec::new()));
        let subscribed = Arc::new(Mutex::new(false));
        let thread = {
            let (messages, subscribed, client) =
                (messages.clone(), subscribed.clone(), client.clone());
            std::thread::spawn(move || loop {
                match connection.recv() {
                    Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                        let _ = client.try_subscribe("caer/#", QoS::AtLeastOnce);
                    }
                    Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                        *subscribed.lock().unwrap() = true
                    }
                    Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                        messages.lock().unwrap().push(Message {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        })
                    }
                    Ok(Ok(_)) => {}
                    // The broker is down (outage tests): poll again after a pause.
                    Ok(Err(_)) => std::thread::sleep(Duration::from_millis(100)),
                    Err(_) => return,
                }
            })
        };
        wait_until(
            Duration::from_secs(10),
            "the test subscriber's SUBACK",
            || *subscribed.lock().unwrap(),
        );
        Subscriber {
            client,
            messages,
            _thread: thread,
        }
    }

    /// Everything received so far.
    pub fn messages(&self) -> Vec<Message> {
        self.messages.lock().unwrap().clone()
    }

    /// Messages on topics ending with `suffix` (e.g. `/engagement`).
    pub fn on(&self, suffix: &str) -> Vec<Message> {
        self.messages()
            .into_iter()
            .filter(|m| m.topic.ends_with(suffix))
            .collect()
    }

    /// Waits until `done` holds for the messages received so far; panics after `timeout`
    /// with a summary of what did arrive.
    pub fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        mut done: impl FnMut(&[Message]) -> bool,
    ) -> Vec<Message> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if done(&messages) {
                return messages;
            }
            if Instant::now() >= deadline {
                let summary: Vec<String> = messages
                    .iter()
                    .rev()
                    .take(15)
                    .map(|m| format!("{} {}", m.topic, String::from_utf8_lossy(&m.payload)))
                    .collect();
                panic!(
                    "timed out after {timeout:?} waiting for {what}; last messages:\n{}",
                    summary.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Publishes `payload` on `topic` (QoS 1, not retained).
    pub fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.publish_with(topic, payload, false);
    }

    /// Publishes `payload` on `topic` (QoS 1), retained or not.
    pub fn publish_with(&self, topic: &str, payload: impl Into<Vec<u8>>, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .expect("queue a test publish");
    }
}

/// The topic prefix of the device every test configures (`config_toml`).
pub const PREFIX: &str = "caer/e2e/dev-1";

/// Publishes `payload` on `<prefix>/<on>` and returns the next ack on `<prefix>/<ack_topic>`
/// (acks come in request order), checking that it carries `id`.
pub fn request(
    subscriber: &Subscriber,
    on: &str,
    ack_topic: &str,
    payload: String,
    id: Option<&str>,
) -> Value {
    let topic = format!("{PREFIX}/{ack_topic}");
    let before = subscriber.on(&format!("/{ack_topic}")).len();
    subscriber.publish(&format!("{PREFIX}/{on}"), payload.clone());
    let found = subscriber.wait_for(
        Duration::from_secs(15),
        &format!("{ack_topic} for {payload:.60}"),
        |m| m.iter().filter(|m| m.topic == topic).count() > before,
    );
    let ack = found
        .iter()
        .filter(|m| m.topic == topic)
        .nth(before)
        .map(Message::json)
        .unwrap();
    assert_eq!(ack["id"], json!(id), "ack for {payload:.60}: {ack}");
    ack
}

pub fn latest_status(subscriber: &Subscriber) -> Value {
    subscriber
        .on("/status")
        .last()
        .map(Message::json)
        .unwrap_or(Value::Null)
}

/// The next sequence number the outbox under `state_dir` will give, from its ledger (the
/// file format of `firmware/src/daemon/outbox.rs`: magic, then `next_seq` little-endian); none
/// before the daemon has written it.
pub fn ledger_next_seq(state_dir: &Path) -> Option<u64> {
    let data = fs::read(state_dir.join("outbox/ledger")).ok()?;
    Some(u64::from_le_bytes(data.get(8..16)?.try_into().ok()?))
}

/// The first sequence number of a fresh outbox under `state_dir`: its ledger appears when
/// caerd opens the outbox, before the first record.
pub fn wait_for_ledger(state_dir: &Path) -> u64 {
    wait_until(Duration::from_secs(30), "the outbox ledger", || {
        ledger_next_seq(state_dir).is_some()
    });
    ledger_next_seq(state_dir).expect("just seen")
}

/// Every sequence number the outbox under `state_dir` gave from `first` on (numbers are
/// given one by one, so this is `first..next_seq` of its ledger).
pub fn recorded_seqs(state_dir: &Path, first: u64) -> BTreeSet<u64> {
    (first..ledger_next_seq(state_dir).expect("an outbox ledger")).collect()
}

/// Waits until the outbox under `state_dir` has given `seq` (its next number is above it).
pub fn wait_for_seq(state_dir: &Path, seq: u64, timeout: Duration) {
    wait_until(timeout, &format!("the outbox to reach seq {seq}"), || {
        ledger_next_seq(state_dir).is_some_and(|next| next > seq)
    });
}

/// Sequence numbers of the engagement records among `messages`: (unique, duplicates).
pub fn engagement_seqs(messages: &[Message]) -> (BTreeSet<u64>, usize) {
    let mut seen = BTreeSet::new();
    let mut duplicates = 0;
    for m in messages.iter().filter(|m| m.topic.ends_with("/engagement")) {
        let seq = m.json()["seq"]
            .as_u64()
            .expect("engagement record has a seq");
        if !seen.insert(seq) {
            duplicates += 1;
        }
    }
    (seen, duplicates)
}

/// The caerd process under test.
pub struct Daemon {
    child: Option<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Daemon {
    /// Starts `bin --config <config> <args>`, stdout and stderr going to files in `dir`.
    pub fn start(bin: &str, dir: &Path, config: &Path, args: &[&str]) -> Daemon {
        Daemon::start_with(
            Command::new(bin).arg("--config").arg(config).args(args),
            dir,
        )
    }

    /// Starts a prepared command (for wrappers such as strace), output to files in `dir`.
    pub fn start_with(command: &mut Command, dir: &Path) -> Daemon {
        let n = fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
        let stdout = dir.join(format!("caerd-{n}.stdout"));
        let stderr = dir.join(format!("caerd-{n}.stderr"));
        let child = command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).expect("create stdout file"))
            .stderr(fs::File::create(&stderr).expect("create stderr file"))
            .spawn()
            .expect("start caerd");
        Daemon {
            child: Some(child),
            stdout,
            stderr,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// stderr (the logs) so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// stdout so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Waits for the process to exit; panics (with its logs) after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("daemon was started");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("wait for caerd") {
                self.child = None;
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!(
                    "caerd did not exit within {timeout:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        signal(self.pid(), "TERM");
        self.wait(timeout)
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), "KILL");
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The payload schemas of `schemas/`, by `schema` id.
pub struct Schemas {
    validators: Vec<(String, jsonschema::Validator)>,
}

impl Schemas {
    /// Compiles every `schemas/*.json`.
    pub fn load() -> Schemas {
        let dir = repo_root().join("schemas");
        let mut validators = Vec::new();
        for entry in fs::read_dir(&dir).expect("read schemas/") {
            let path = entry.expect("list schemas/").path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let schema: Value =
                serde_json::from_str(&fs::read_to_string(&path).expect("read schema"))
                    .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            // File `engagement.v2.json` validates payloads with `"schema": "caer.engagement.v2"`.
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .expect("schema file name");
            let id = format!("caer.{stem}");
            let validator = jsonschema::options()
                .should_validate_formats(true)
                .build(&schema)
                .unwrap_or_else(|e| panic!("{} is not a valid JSON Schema: {e}", path.display()));
            validators.push((id, validator));
        }
        assert!(
            validators.len() >= 7,
            "expected the seven payload schemas in {}",
            dir.display()
        );
        Schemas { validators }
    }

    /// Validates `payload` against the schema its `schema` field names; panics with every
    /// error otherwise.
    pub fn check(&self, payload: &Value) {
        let id = payload["schema"]
            .as_str()
            .unwrap_or_else(|| panic!("payload without a schema field: {payload}"));
        let (_, validator) = self
            .validators
            .iter()
            .find(|(name, _)| name == id)
            .unwrap_or_else(|| panic!("no schema file for {id}"));
        let errors: Vec<String> = validator
            .iter_errors(payload)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect();
        assert!(
            errors.is_empty(),
            "{id} payload does not match its schema:\n{}\npayload: {payload}",
            errors.join("\n")
        );
    }

    /// Whether `payload` matches (for tests that expect a mismatch).
    pub fn is_valid(&self, payload: &Value) -> bool {
        let id = payload["schema"].as_str().unwrap_or_default();
        self.validators
            .iter()
            .find(|(name, _)| name == id)
            .is_some_and(|(_, v)| v.is_valid(payload))
    }
}

/// Writes an H.264 video (`path`, 10 frames/s) of `frames` frames that all show the shipped
/// group photograph (`firmware/testdata/faces/solvay.jpg`: 29 faces, of which the BlazeFace
/// detector finds 27). Needs FFmpeg.
pub fn write_group_photo_video(path: &Path, frames: u32) {
    let photo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware/testdata/faces/solvay.jpg");
    let frames = frames.to_string();
    let made = Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-loop",
            "1",
            "-framerate",
            "10",
            "-i",
        ])
        .arg(&photo)
        .args([
            "-frames:v",
            &frames,
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
        ])
        .arg(path)
        .status()
        .expect("ffmpeg runs (apt install ffmpeg)");
    assert!(made.success(), "ffmpeg could not write {}", path.display());
}

/// Writes `frames` PNG frames of `width`x`height` with `students` faces sitting still in a
/// grid, and the face box file; returns (frame directory, annotations file). Every frame
/// shows every student, so the content is known exactly.
pub fn write_classroom(
    dir: &Path,
    students: usize,
    frames: usize,
    width: u32,
    height: u32,
) -> (PathBuf, PathBuf) {
    let frames_dir = dir.join("frames");
    fs::create_dir_all(&frames_dir).expect("create frames dir");
    let cols = students.div_ceil(2).max(1) as u32;
    let (cell_w, cell_h) = (width / cols, height / 2);
    let face = (cell_w / 3).max(8);
    let mut boxes = Vec::new();
    for s in 0..students as u32 {
        let (cx, cy) = (
            (s % cols) * cell_w + cell_w / 2,
            (s / cols) * cell_h + cell_h / 3,
        );
        boxes.push([
            (cx - face / 2) as f32,
            (cy - face / 2) as f32,
            (cx + face / 2) as f32,
            (cy + face / 2) as f32,
        ]);
    }
    let mut annotations = serde_json::Map::new();
    for i in 0..frames {
        let mut image = image::RgbImage::from_pixel(width, height, image::Rgb([90, 110, 130]));
        for (s, b) in boxes.iter().enumerate() {
            // Skin-ish face with a per-student tint and a little per-frame shimmer.
            let tint = (s as u8).wrapping_mul(29);
            let shimmer = (i % 7) as u8;
            for y in b[1] as u32..b[3] as u32 {
                for x in b[0] as u32..b[2] as u32 {
                    image.put_pixel(
                        x,
                        y,
                        image::Rgb([200 - tint / 4, 160u8.wrapping_add(shimmer), 130 + tint / 8]),
                    );
                }
            }
        }
        let name = format!("{i:06}.png");
        image.save(frames_dir.join(&name)).expect("write frame");
        annotations.insert(name, serde_json::to_value(&boxes).expect("boxes"));
    }
    let annotations_path = dir.join("faces.json");
    let mut f = fs::File::create(&annotations_path).expect("create faces.json");
    f.write_all(Value::Object(annotations).to_string().as_bytes())
        .expect("write faces.json");
    (frames_dir, annotations_path)
}

/// A caerd configuration for the tests: fixture bundle, short intervals, fast reconnects.
/// `source` is the `[source]` table (and its sub-tables), `extra` any further sections.
pub fn config_toml(
    state_dir: &Path,
    broker_url: Option<&str>,
    source: &str,
    extra: &str,
) -> String {
    let mqtt = match broker_url {
        Some(url) => format!("[mqtt]\nurl = \"{url}\"\nreconnect_min_ms = 200\nreconnect_max_ms = 1000\nkeep_alive_secs = 5\n"),
        None => String::new(),
    };
    format!(
        "state_dir = \"{}\"\n\n[device]\nsite = \"e2e\"\nroom = \"lab\"\nid = \"dev-1\"\n\n{source}\n\n\
         [model]\nbundle = \"{}\"\nthreads = 1\n\n{mqtt}\n{extra}\n",
        state_dir.display(),
        fixture_bundle().display(),
    )
}
