//! `caer-fleet model push` against real parts: mosquitto, real `caerd` devices (each with
//! its own state directory) and the real tool. The expected answers are known beforehand:
//! the pushed bundle's `model_id` is one the test wrote into its manifest.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::push::{
    assert_one_switch, bundles_of, devices, keygen, push, results, signed_copy, signed_edit,
    Records, FIXTURE_MODEL,
};
use support::{fleet, wait_until, Broker, Device, FLEET};

#[test]
fn a_pushed_bundle_switches_two_devices_through_a_crash_and_bad_ones_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("operator.key");
    let public = keygen(&key);
    let stranger = tmp.path().join("stranger.key");
    keygen(&stranger);
    // The devices' own bundle must be signed too once they trust a key.
    let v1 = signed_copy(tmp.path(), "v1", &key, FIXTURE_MODEL);
    let v2 = signed_copy(tmp.path(), "v2", &key, "fixture-v2");
    let foreign = signed_copy(tmp.path(), "foreign", &stranger, "fixture-foreign");
    // Signed, complete and valid, but its model does not give the embedding its manifest
    // promises: the backend's self-check fails on the device.
    let unrunnable = signed_edit(tmp.path(), "unrunnable", &key, |m| {
        m["model_id"] = "fixture-unrunnable".into();
        for x in m["self_check"]["embedding"].as_array_mut().unwrap() {
            *x = (-x.as_f64().unwrap() - 1.0).into();
        }
    });
    let v2_id = caer::daemon::update::sha256_hex(&std::fs::read(v2.join("manifest.json")).unwrap());

    let broker = Broker::start();
    let records = Records::subscribe(&broker);
    let keys = format!("trusted_keys = [\"{public}\"]");
    let start = |id: &str, keys: &str| {
        Device::start_full(
            &broker,
            ("s5", "r1", id),
            (160, 120, 10.0),
            "coarse",
            (v1.as_path(), keys),
            "",
        )
    };
    let mut a = start("dev-a", &keys);
    let b = start("dev-b", &keys);
    let c = start("dev-c", "");
    wait_until(
        Duration::from_secs(90),
        "records of the first model",
        || {
            ["dev-a", "dev-b"]
                .iter()
                .all(|d| records.has_model(d, FIXTURE_MODEL))
        },
    );

    // The push, slowed to 512 KiB/s so that dev-a can be killed in the middle of its
    // transfer (3 MB to each device).
    let pushing = Command::new(FLEET)
        .args(["--broker", &broker.url(), "model", "push"])
        .arg(&v2)
        .args(["--site", "s5", "--device", "dev-a", "--device", "dev-b"])
        .args(["--rate-kib", "512", "--timeout", "120s", "--json"])
        .env("CAER_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let partial = a.dir.path().join(format!("state/bundles/{v2_id}.partial"));
    wait_until(Duration::from_secs(60), "dev-a half way through", || {
        let part = |name: &str| {
            std::fs::metadata(partial.join(name))
                .map(|m| m.len())
                .unwrap_or(0)
        };
        // The first file done, the second under way.
        part("image_encoder.onnx") > 0 && part("image_encoder.int8.onnx.part") > 0
    });
    a.kill();
    a.restart();
    let out = pushing.wait_with_output().unwrap();
    let pushed = results(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{pushed:?}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        a.log()
    );
    for d in ["dev-a", "dev-b"] {
        assert_eq!(pushed[d]["result"], "succeeded", "{pushed:?}");
        assert!(pushed[d]["switch_gap_ms"].is_u64(), "{pushed:?}");
    }
    assert!(!pushed.contains_key("dev-c"), "not a target: {pushed:?}");
    eprintln!("push: {pushed:?}");

    wait_until(Duration::from_secs(60), "records of the new model", || {
        ["dev-a", "dev-b"]
            .iter()
            .all(|d| records.has_model(d, "fixture-v2"))
    });
    let fleet_view = devices(&broker);
    for d in ["dev-a", "dev-b"] {
        assert_eq!(
            fleet_view[d]["model_id"], "fixture-v2",
            "{:?}",
            fleet_view[d]
        );
        assert_eq!(fleet_view[d]["model_job_state"], "succeeded");
        // No seq lost, and the model changes once: old records, then new ones.
        assert_one_switch(&records, d, FIXTURE_MODEL, "fixture-v2");
    }
    assert_eq!(
        bundles_of(&a),
        vec![v2_id.clone()],
        "only the new bundle is kept"
    );
    assert_eq!(fleet_view["dev-c"]["model_id"], FIXTURE_MODEL);

    // Refused before anything is fetched, each with its reason; the model runs on.
    let (code, r) = push(&broker, &foreign, &["--device", "dev-a"]);
    assert_eq!(code, Some(1));
    assert_eq!(r["dev-a"]["state"], "rejected", "{r:?}");
    assert!(
        r["dev-a"]["reason"]
            .as_str()
            .unwrap()
            .contains("not in model.trusted_keys"),
        "{r:?}"
    );
    let (code, r) = push(&broker, &v2, &["--device", "dev-c"]);
    assert_eq!(code, Some(1));
    assert!(
        r["dev-c"]["reason"]
            .as_str()
            .unwrap()
            .contains("model.trusted_keys is empty"),
        "{r:?}"
    );
    // Fetched and checked, but it cannot run: failed, and removed.
    let (code, r) = push(&broker, &unrunnable, &["--device", "dev-a"]);
    assert_eq!(code, Some(1));
    assert_eq!(r["dev-a"]["state"], "failed", "{r:?}");
    let reason = r["dev-a"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("self-check") && reason.contains("previous model runs on"),
        "{reason}"
    );
    let fleet_view = devices(&broker);
    assert_eq!(fleet_view["dev-a"]["model_id"], "fixture-v2");
    assert_eq!(fleet_view["dev-c"]["model_id"], FIXTURE_MODEL);
    assert_eq!(
        bundles_of(&a),
        vec![v2_id.clone()],
        "nothing left of the refused bundle"
    );
    assert!(bundles_of(&c).is_empty());

    let counts = records.check_model_messages();
    assert!(
        counts.len() == 3 && counts.values().all(|&n| n > 0),
        "{counts:?}"
    );

    // Back to the bundle that ran before, and the two swap places.
    for expected in [FIXTURE_MODEL, "fixture-v2"] {
        let run = fleet(&[
            "--broker",
            &broker.url(),
            "cmd",
            "rollback",
            "--device",
            "dev-a",
            "--timeout",
            "60s",
        ]);
        let out = String::from_utf8_lossy(&run.stdout).into_owned();
        assert!(run.status.success(), "{out}");
        assert_eq!(devices(&broker)["dev-a"]["model_id"], expected, "{out}");
    }

    // A crash loop on the new bundle: the third start within its trial goes back to the
    // previous one on its own.
    let mut b = b;
    let state_of_b = |b: &Device| -> Value {
        std::fs::read(b.dir.path().join("state/state.json"))
            .ok()
            .and_then(|d| serde_json::from_slice(&d).ok())
            .unwrap_or(Value::Null)
    };
    assert_eq!(state_of_b(&b)["trial_starts"], 0);
    for start in 1..=2 {
        b.kill();
        b.restart();
        wait_until(
            Duration::from_secs(30),
            &format!("start {start} counted"),
            || state_of_b(&b)["trial_starts"] == start,
        );
    }
    b.kill();
    b.restart();
    wait_until(
        Duration::from_secs(30),
        "the third start rolled back",
        || state_of_b(&b)["bundle"] == "configured",
    );
    wait_until(
        Duration::from_secs(60),
        "dev-b on its first model again",
        || devices(&broker)["dev-b"]["model_id"] == FIXTURE_MODEL,
    );
    assert_eq!(state_of_b(&b)["trial_starts"], Value::Null);
    drop((a, b, c));
}
