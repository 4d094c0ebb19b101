//! Model pushes that go wrong, against real parts (mosquitto, real `caerd`, the real tool):
//! a canary that fails, a daemon killed while it switches, a push cut off half way, a
//! manifest changed after signing, a disk that fills up during the transfer; and, under strace, a device that takes a push writes
//! nothing outside its state directory.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::push::{
    assert_one_switch, bundles_of, devices, keygen, push, results, signed_copy, Records,
    FIXTURE_MODEL,
};
use support::{wait_until, Broker, Device, FLEET};

/// `caer-fleet model push` started in the background.
fn spawn_push(broker: &Broker, bundle: &Path, args: &[&str]) -> Child {
    Command::new(FLEET)
        .args(["--broker", &broker.url(), "model", "push"])
        .arg(bundle)
        .args(args)
        .args(["--timeout", "120s", "--json"])
        .env("CAER_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn show(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Bytes of `name` (or of `name.part`) in the device's partial bundle `id`.
fn partial_bytes(device: &Device, id: &str, name: &str) -> u64 {
    let dir = device
        .dir
        .path()
        .join(format!("state/bundles/{id}.partial"));
    [name.to_string(), format!("{name}.part")]
        .iter()
        .filter_map(|n| std::fs::metadata(dir.join(n)).ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0)
}

fn bundle_id(bundle: &Path) -> String {
    caer::daemon::update::sha256_hex(&std::fs::read(bundle.join("manifest.json")).unwrap())
}

#[test]
fn a_failed_canary_stops_the_push_a_kill_during_the_switch_ends_on_a_whole_model_and_nothing_is_written_outside(
) {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("operator.key");
    let public = keygen(&key);
    let v1 = signed_copy(tmp.path(), "v1", &key, FIXTURE_MODEL);
    let v2 = signed_copy(tmp.path(), "v2", &key, "fixture-v2");
    let v3 = signed_copy(tmp.path(), "v3", &key, "fixture-v3");
    let (v2_id, v3_id) = (bundle_id(&v2), bundle_id(&v3));

    let broker = Broker::start();
    let records = Records::subscribe(&broker);
    let keys = format!("trusted_keys = [\"{public}\"]");
    let configure = |id: &str, keys: &str| {
        Device::configure(
            &broker,
            ("s6", "r1", id),
            (160, 120, 10.0),
            "coarse",
            (v1.as_path(), keys),
            "",
        )
    };
    // dev-0 trusts no key: as the canary (targets go in order of their names) it fails.
    let mut d0 = configure("dev-0", "");
    d0.restart();
    let mut d1 = configure("dev-1", &keys);
    let trace = tmp.path().join("dev-1.strace");
    d1.strace = Some(trace.clone());
    d1.restart();
    let mut d2 = configure("dev-2", &keys);
    d2.restart();
    wait_until(
        Duration::from_secs(120),
        "records of the first model",
        || {
            ["dev-0", "dev-1", "dev-2"]
                .iter()
                .all(|d| records.has_model(d, FIXTURE_MODEL))
        },
    );

    // The canary fails: the others are never offered the bundle.
    let (code, r) = push(
        &broker,
        &v2,
        &["--site", "s6", "--canary", "1", "--max-failures", "0"],
    );
    assert_eq!(code, Some(1), "{r:?}");
    assert_eq!(r["dev-0"]["state"], "rejected", "{r:?}");
    for d in ["dev-1", "dev-2"] {
        assert_eq!(r[d]["result"], "not_sent", "{r:?}");
        assert!(records.model_messages(d, "model/status").is_empty());
        assert!(records.model_messages(d, "model/fetch").is_empty());
    }

    // dev-1 first, then dev-2; dev-2 is killed once its bundle is complete, while its new
    // pipeline is being built, and started again.
    let pushing = spawn_push(
        &broker,
        &v2,
        &["--device", "dev-1", "--device", "dev-2", "--canary", "1"],
    );
    let complete = d2.dir.path().join(format!("state/bundles/{v2_id}"));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !complete.is_dir() {
        assert!(
            Instant::now() < deadline,
            "dev-2 never completed the transfer"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    d2.kill();
    let succeeded_before_kill = records
        .model_messages("dev-2", "model/status")
        .iter()
        .any(|m| m.json["state"] == "succeeded");
    let state_at_kill =
        std::fs::read_to_string(d2.dir.path().join("state/state.json")).unwrap_or_default();
    assert!(!succeeded_before_kill, "the kill came after the switch");
    eprintln!("dev-2 killed during the switch; its state.json then: {state_at_kill}");
    d2.restart();
    let out = pushing.wait_with_output().unwrap();
    let pushed = results(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}\n{}", show(&out), d2.log());
    for d in ["dev-1", "dev-2"] {
        assert_eq!(pushed[d]["result"], "succeeded", "{pushed:?}");
    }
    // The canary ended before dev-2 was offered anything.
    let dev1_done = records
        .model_messages("dev-1", "model/status")
        .into_iter()
        .find(|m| m.json["state"] == "succeeded")
        .expect("dev-1 succeeded")
        .at;
    let dev2_first_fetch = records.model_messages("dev-2", "model/fetch")[0].at;
    assert!(dev1_done < dev2_first_fetch);
    wait_until(Duration::from_secs(60), "records of the new model", || {
        ["dev-1", "dev-2"]
            .iter()
            .all(|d| records.has_model(d, "fixture-v2"))
    });
    for d in ["dev-1", "dev-2"] {
        assert_one_switch(&records, d, FIXTURE_MODEL, "fixture-v2");
    }
    assert_eq!(bundles_of(&d2), vec![v2_id.clone()]);

    // A push cut off half way (the tool killed), then offered again: the device goes on
    // from what it has.
    let mut cut = spawn_push(&broker, &v3, &["--device", "dev-2", "--rate-kib", "512"]);
    wait_until(Duration::from_secs(60), "dev-2 half way through", || {
        partial_bytes(&d2, &v3_id, "image_encoder.onnx") > 0
            && partial_bytes(&d2, &v3_id, "image_encoder.int8.onnx") > 0
    });
    cut.kill().unwrap();
    cut.wait().unwrap();
    let kept: u64 = ["image_encoder.onnx", "image_encoder.int8.onnx"]
        .iter()
        .map(|f| partial_bytes(&d2, &v3_id, f))
        .sum();
    let before = records.model_messages("dev-2", "model/fetch").len();
    let (code, r) = push(&broker, &v3, &["--device", "dev-2"]);
    assert_eq!(code, Some(0), "{r:?}");
    let total: u64 = std::fs::read_dir(&v3)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.ends_with("manifest.json") && !p.ends_with("manifest.json.sig"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let fetched_again: u64 = records.model_messages("dev-2", "model/fetch")[before..]
        .iter()
        .map(|m| m.json["bytes"].as_u64().unwrap())
        .sum();
    eprintln!("the second push fetched {fetched_again} of {total} bytes; {kept} were kept");
    assert!(
        fetched_again <= total - kept + 4 * 128 * 1024,
        "fetched {fetched_again} of {total} again; {kept} were kept"
    );
    wait_until(Duration::from_secs(60), "dev-2 on fixture-v3", || {
        records.has_model("dev-2", "fixture-v3")
    });
    assert_eq!(bundles_of(&d2), {
        let mut kept = vec![v2_id.clone(), v3_id.clone()];
        kept.sort();
        kept
    });

    // dev-1 took a whole push under strace: every write inside its state directory, and
    // the state directory holds the outbox, state.json and the bundle, nothing else.
    d1.stop();
    let state = d1.dir.path().join("state").canonicalize().unwrap();
    let traced = std::fs::read_to_string(&trace).unwrap();
    let (outside, inside) = support::strace::writes_outside(&traced, &state);
    assert!(inside > 0, "no write traced");
    assert!(
        outside.is_empty(),
        "written outside {}:\n{}",
        state.display(),
        outside.join("\n")
    );
    let bundle_files: Vec<String> = std::fs::read_dir(&v2)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for path in support::strace::files_under(&state) {
        let rel = path
            .strip_prefix(&state)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let allowed = rel == "state.json"
            || rel.starts_with("outbox/")
            || rel
                .strip_prefix(&format!("bundles/{v2_id}/"))
                .is_some_and(|f| bundle_files.iter().any(|b| b == f));
        assert!(allowed, "unexpected file in the state directory: {rel}");
    }
    eprintln!("privacy during a push: {inside} writes inside the state directory, 0 outside");
    drop((d0, d1, d2));
}

/// A small tmpfs mounted over a directory for one test (root only), unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, mib: u64) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a {mib} MiB tmpfs as the state directory and needs root (CAP_SYS_ADMIN) \
             for it: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk(dir.to_path_buf())
    }

    fn free_bytes(&self) -> u64 {
        let out = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&self.0)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df's figure")
    }

    /// Takes all but `leave` bytes of the free space with a file of its own.
    fn fill(&self, leave: u64) -> PathBuf {
        let filler = self.0.join("filler");
        let size = self.free_bytes().saturating_sub(leave);
        let status = Command::new("fallocate")
            .args(["-l", &size.to_string()])
            .arg(&filler)
            .status()
            .unwrap();
        assert!(status.success());
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_forged_manifest_is_rejected_and_a_disk_that_fills_up_fails_the_job_the_old_model_running_on() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("operator.key");
    let public = keygen(&key);
    let v1 = signed_copy(tmp.path(), "v1", &key, FIXTURE_MODEL);
    let v2 = signed_copy(tmp.path(), "v2", &key, "fixture-v2");
    let v2_id = bundle_id(&v2);
    let broker = Broker::start();
    let records = Records::subscribe(&broker);
    let keys = format!("trusted_keys = [\"{public}\"]");
    let mut device = Device::configure(
        &broker,
        ("s7", "r1", "dev-d"),
        (160, 120, 10.0),
        "coarse",
        (v1.as_path(), &keys),
        "",
    );
    // 80 MiB: room for the 3 MB bundle and the 64 MiB reserve when the push starts.
    let disk = SmallDisk::mount(&device.dir.path().join("state"), 80);
    device.restart();
    wait_until(
        Duration::from_secs(120),
        "records of the first model",
        || records.has_model("dev-d", FIXTURE_MODEL),
    );

    // A manifest changed after it was signed: rejected, nothing written.
    let forged = signed_copy(tmp.path(), "forged", &key, "fixture-forged");
    let manifest = forged.join("manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("fixture-forged", "fixture-v9")).unwrap();
    let (code, r) = push(&broker, &forged, &["--device", "dev-d"]);
    assert_eq!(code, Some(1));
    assert_eq!(r["dev-d"]["state"], "rejected", "{r:?}");
    assert!(
        r["dev-d"]["reason"]
            .as_str()
            .unwrap()
            .contains("does not match its contents"),
        "{r:?}"
    );
    assert!(bundles_of(&device).is_empty());

    let pushing = spawn_push(&broker, &v2, &["--device", "dev-d", "--rate-kib", "256"]);
    wait_until(Duration::from_secs(60), "the transfer under way", || {
        partial_bytes(&device, &v2_id, "image_encoder.onnx") > 0
    });
    // Something else takes the disk: 16 MiB are left, less than the rest of the bundle and
    // the reserve.
    let filler = disk.fill(16 << 20);
    let out = pushing.wait_with_output().unwrap();
    let r = results(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(r["dev-d"]["state"], "failed", "{r:?}");
    let reason = r["dev-d"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("not enough disk left") && reason.contains("previous model runs on"),
        "{reason}"
    );
    assert!(
        bundles_of(&device).is_empty(),
        "the partial bundle is removed"
    );

    // Offered again while the disk is still full: refused before anything is written.
    let (code, r) = push(&broker, &v2, &["--device", "dev-d"]);
    assert_eq!(code, Some(1));
    assert_eq!(r["dev-d"]["state"], "rejected", "{r:?}");
    assert!(
        r["dev-d"]["reason"]
            .as_str()
            .unwrap()
            .contains("not enough disk"),
        "{r:?}"
    );
    assert!(bundles_of(&device).is_empty());

    // The old model ran on throughout, every interval recorded.
    std::fs::remove_file(filler).unwrap();
    let seen = records.of("dev-d").len();
    wait_until(Duration::from_secs(30), "more records", || {
        records.of("dev-d").len() > seen + 2
    });
    assert_one_switch(&records, "dev-d", FIXTURE_MODEL, "fixture-v2");
    assert!(!records.has_model("dev-d", "fixture-v2"));
    assert_eq!(devices(&broker)["dev-d"]["model_id"], FIXTURE_MODEL);
    device.kill();
    drop(disk);
}
