//! Signed bundles (`model.trusted_keys`): a device that trusts a key runs only bundles whose
//! manifest that key signed. Each refusal is a `config/ack` with its reason while the running
//! model goes on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use caer::pipeline::model::signature::{generate_key, sign, signature_path};
use serde_json::json;

use super::util::{
    config_toml, fixture_bundle, latest_status, request, Broker, Daemon, Subscriber, CAERD,
};

/// A copy of the fixture bundle under `root/name`, its manifest signed with `pkcs8` if given.
fn bundle_copy(root: &Path, name: &str, pkcs8: Option<&[u8]>) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(fixture_bundle()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    if let Some(pkcs8) = pkcs8 {
        let manifest = dir.join("manifest.json");
        let sig = sign(&std::fs::read(&manifest).unwrap(), pkcs8).unwrap();
        std::fs::write(signature_path(&manifest), serde_json::to_vec(&sig).unwrap()).unwrap();
    }
    dir
}

#[test]
fn only_bundles_signed_by_a_trusted_key_run() {
    let broker = Broker::start();
    let subscriber = Subscriber::connect(&broker);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("bundles");
    let (trusted_key, trusted) = generate_key().unwrap();
    let (other_key, _) = generate_key().unwrap();
    let good = bundle_copy(&root, "good", Some(&trusted_key));
    let foreign = bundle_copy(&root, "foreign", Some(&other_key));
    let unsigned = bundle_copy(&root, "unsigned", None);
    // Signed, then changed: the manifest names another model id.
    let edited = bundle_copy(&root, "edited", Some(&trusted_key));
    let manifest = edited.join("manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replacen("\"model_id\": \"", "\"model_id\": \"x", 1),
    )
    .unwrap();
    // Signed, then a weights file changed: the manifest's sha256 catches it.
    let swapped = bundle_copy(&root, "swapped", Some(&trusted_key));
    let head = swapped.join("temporal_head.onnx");
    let mut bytes = std::fs::read(&head).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&head, bytes).unwrap();

    let source = "[source]\nkind = \"generated\"\nfps = 10.0\n[source.generated]\nwidth = 160\nheight = 120\nstudents = 4";
    let extra = format!(
        "[policy]\nprofile = \"coarse\"\nmin_group_size = 2\n\n[report]\ninterval_secs = 1\n\n\
         [remote]\nallowed_roots = [{:?}]\nmin_change_interval_secs = 0\n",
        root.display().to_string()
    );
    let text = config_toml(
        &dir.path().join("state"),
        Some(&broker.url()),
        source,
        &extra,
    )
    .replace(
        &fixture_bundle().display().to_string(),
        &good.display().to_string(),
    )
    .replace(
        "threads = 1\n",
        &format!("threads = 1\ntrusted_keys = [\"{trusted}\"]\n"),
    );
    let path = dir.path().join("caerd.toml");
    std::fs::write(&path, text).unwrap();
    let _daemon = Daemon::start(CAERD, dir.path(), &path, &[]);
    subscriber.wait_for(
        Duration::from_secs(60),
        "running on the signed bundle",
        |_| latest_status(&subscriber)["state"] == "running",
    );

    for (bundle, expected) in [
        (&foreign, "not in model.trusted_keys"),
        (&unsigned, "manifest.json.sig is missing"),
        (&edited, "does not match its contents"),
        (&swapped, "temporal_head"),
    ] {
        let id = bundle.file_name().unwrap().to_str().unwrap();
        let change = json!({"schema": "caer.config-set.v1", "id": id,
                            "config": {"model": {"bundle": bundle}}});
        let ack = request(
            &subscriber,
            "config/set",
            "config/ack",
            change.to_string(),
            Some(id),
        );
        assert_eq!(ack["ok"], false, "{id}: {ack}");
        let reason = ack["errors"][0]["reason"].as_str().unwrap();
        assert!(reason.contains(expected), "{id}: {reason}");
        let status = latest_status(&subscriber);
        assert_eq!(
            status["state"], "running",
            "{id}: the signed model runs on: {status}"
        );
    }
}
