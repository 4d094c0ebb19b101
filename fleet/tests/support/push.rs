//! Helpers of the model push tests: signed copies of the fixture bundle, the tool's runs
//! and results, and a subscriber that keeps every engagement record and update message.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{fleet, Broker, Device};

pub const FIXTURE_MODEL: &str = "clip-caer-tiny-fixture";

/// Every engagement record published, by device, as JSON; and every model update message
/// (`model/offer`, `model/fetch`, `model/status`), by topic leaf.
#[derive(Clone, Default)]
pub struct Records(
    Arc<Mutex<BTreeMap<String, Vec<Value>>>>,
    Arc<Mutex<Vec<ModelMessage>>>,
);

/// One model update message as received.
#[derive(Clone, Debug)]
pub struct ModelMessage {
    pub device: String,
    /// `model/offer`, `model/fetch`, `model/status`.
    pub leaf: String,
    pub json: Value,
    pub at: Instant,
}

impl Records {
    pub fn subscribe(broker: &Broker) -> Records {
        let records = Records::default();
        let mut options = rumqttc::MqttOptions::new(
            format!("test-records-{}", std::process::id()),
            "127.0.0.1",
            broker.port(),
        );
        options.set_keep_alive(Duration::from_secs(5));
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut connection) = rumqttc::Client::new(options, 64);
        for topic in ["caer/+/+/engagement", "caer/+/+/model/+"] {
            client.subscribe(topic, rumqttc::QoS::AtLeastOnce).unwrap();
        }
        let seen = records.clone();
        std::thread::spawn(move || {
            let _client = client;
            for event in connection.iter() {
                if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) = event {
                    let device = p.topic.split('/').nth(2).unwrap_or("").to_string();
                    let leaf = p.topic.splitn(4, '/').nth(3).unwrap_or("").to_string();
                    if leaf.starts_with("model/") {
                        // Chunks are a JSON line and bytes; the rest is JSON.
                        if let Ok(json) = serde_json::from_slice::<Value>(&p.payload) {
                            seen.1.lock().unwrap().push(ModelMessage {
                                device: device.clone(),
                                leaf,
                                json,
                                at: Instant::now(),
                            });
                        }
                        continue;
                    }
                    if let Ok(json) = serde_json::from_slice::<Value>(&p.payload) {
                        seen.0.lock().unwrap().entry(device).or_default().push(json);
                    }
                }
            }
        });
        records
    }

    /// The device's records, by seq (duplicates of at-least-once delivery dropped).
    pub fn of(&self, device: &str) -> BTreeMap<u64, Value> {
        let all = self.0.lock().unwrap();
        all.get(device)
            .into_iter()
            .flatten()
            .map(|r| (r["seq"].as_u64().unwrap(), r.clone()))
            .collect()
    }

    /// Checks every model update message against its JSON Schema; returns how many of each.
    pub fn check_model_messages(&self) -> BTreeMap<String, usize> {
        let schema = |name: &str| {
            let path = super::repo_root().join("schemas").join(name);
            let schema: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
            jsonschema::options()
                .should_validate_formats(true)
                .build(&schema)
                .unwrap()
        };
        let validators = [
            ("model/offer", schema("model-offer.v1.json")),
            ("model/fetch", schema("model-fetch.v1.json")),
            ("model/status", schema("model-status.v1.json")),
        ];
        let mut counts = BTreeMap::new();
        for ModelMessage { leaf, json, .. } in self.1.lock().unwrap().iter() {
            let (_, validator) = validators
                .iter()
                .find(|(l, _)| l == leaf)
                .unwrap_or_else(|| panic!("an unexpected topic {leaf}"));
            let errors: Vec<String> = validator.iter_errors(json).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{leaf}: {errors:?}\n{json}");
            *counts.entry(leaf.clone()).or_default() += 1;
        }
        counts
    }

    /// The model update messages of `device` on `leaf`, in order.
    pub fn model_messages(&self, device: &str, leaf: &str) -> Vec<ModelMessage> {
        let all = self.1.lock().unwrap();
        all.iter()
            .filter(|m| m.device == device && m.leaf == leaf)
            .cloned()
            .collect()
    }

    pub fn has_model(&self, device: &str, model: &str) -> bool {
        self.of(device).values().any(|r| r["model_id"] == model)
    }
}

/// A copy of the fixture bundle with `model_id` set, signed with `key`.
pub fn signed_copy(dir: &Path, name: &str, key: &Path, model_id: &str) -> PathBuf {
    signed_edit(dir, name, key, |m| {
        m["model_id"] = Value::String(model_id.into())
    })
}

/// A copy of the fixture bundle with its manifest changed by `edit`, signed with `key`.
pub fn signed_edit(dir: &Path, name: &str, key: &Path, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let bundle = dir.join(name);
    std::fs::create_dir(&bundle).unwrap();
    for entry in std::fs::read_dir(super::repo_root().join("tests/golden/bundle")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), bundle.join(entry.file_name())).unwrap();
    }
    let manifest = bundle.join("manifest.json");
    let mut json: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    edit(&mut json);
    std::fs::write(&manifest, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    let run = fleet(&[
        "bundle",
        "sign",
        "--key",
        key.to_str().unwrap(),
        bundle.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    bundle
}

pub fn keygen(path: &Path) -> String {
    let run = fleet(&["bundle", "keygen", "--out", path.to_str().unwrap()]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    String::from_utf8_lossy(&run.stdout).trim().to_string()
}

pub fn devices(broker: &Broker) -> BTreeMap<String, Value> {
    let run = fleet(&[
        "--broker",
        &broker.url(),
        "devices",
        "--json",
        "--wait",
        "1s",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&run.stdout).unwrap();
    rows.into_iter()
        .map(|r| (r["device"].as_str().unwrap().to_string(), r))
        .collect()
}

/// `caer-fleet model push` to completion: its exit code and one result per device.
pub fn push(
    broker: &Broker,
    bundle: &Path,
    targets: &[&str],
) -> (Option<i32>, BTreeMap<String, Value>) {
    let mut args = vec![
        "--broker".to_string(),
        broker.url(),
        "model".into(),
        "push".into(),
    ];
    args.push(bundle.to_str().unwrap().into());
    args.extend(targets.iter().map(|s| s.to_string()));
    args.extend(["--json".into(), "--timeout".into(), "60s".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = fleet(&args);
    (run.status.code(), results(&run.stdout))
}

pub fn results(stdout: &[u8]) -> BTreeMap<String, Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|r| (r["device"].as_str().unwrap().to_string(), r))
        .collect()
}

/// What is under a device's `state/bundles`.
pub fn bundles_of(device: &Device) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(device.dir.path().join("state/bundles"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Sequence numbers are contiguous and the model changes at most once, from `before` to
/// `after`, every record naming one of them.
pub fn assert_one_switch(records: &Records, device: &str, before: &str, after: &str) {
    let seen = records.of(device);
    let seqs: Vec<u64> = seen.keys().copied().collect();
    let first = seqs[0];
    assert_eq!(
        seqs,
        (first..first + seqs.len() as u64).collect::<Vec<_>>(),
        "{device}: a seq lost"
    );
    let models: Vec<&str> = seen
        .values()
        .map(|r| r["model_id"].as_str().unwrap())
        .collect();
    let switch = models
        .iter()
        .position(|m| *m == after)
        .unwrap_or(models.len());
    assert!(
        models[..switch].iter().all(|m| *m == before)
            && models[switch..].iter().all(|m| *m == after),
        "{device}: {models:?}"
    );
}
