//! The remote-configuration policy and the state directory under attack: each finding of the
//! security review (issue 20) replayed against the real daemon and a real broker.
//!
//! 1. A remote change cannot name a program,
//! 2. nor a file to read,
//! 3. nor make the daemon exit,
//! 4. nor exhaust memory.
//! 5. Retained, oversized and floods of control messages are answered, not obeyed.
//! 6. A full disk loses counted intervals, never the daemon.
//! 7. Sequence numbers never repeat, even after state loss.
//! 8. Planted symlinks are refused.
//! 9. A damaged `state.json` fails closed.
//! 10. An unreadable outbox entry is skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::util::{
    config_toml, engagement_seqs, latest_status, request, Broker, Daemon, Subscriber, CAERD, PREFIX,
};
use serde_json::{json, Value};

const SOURCE: &str = "[source]\nkind = \"generated\"\nfps = 10.0\n[source.generated]\nwidth = 160\nheight = 120\nstudents = 4";

fn write_config(dir: &Path, broker: &Broker, extra: &str) -> PathBuf {
    write_config_with(dir, broker, SOURCE, extra)
}

fn write_config_with(dir: &Path, broker: &Broker, source: &str, extra: &str) -> PathBuf {
    let extra = format!(
        "[policy]\nprofile = \"presence\"\nmin_group_size = 2\n\n\
         [report]\ninterval_secs = 1\nstats_interval_secs = 1\n\n{extra}\n"
    );
    let path = dir.join("caerd.toml");
    std::fs::write(
        &path,
        config_toml(&dir.join("state"), Some(&broker.url()), source, &extra),
    )
    .unwrap();
    path
}

fn set(id: &str, config: Value) -> String {
    json!({"schema": "caer.config-set.v1", "id": id, "config": config}).to_string()
}

fn wait_running(subscriber: &Subscriber) {
    subscriber.wait_for(Duration::from_secs(30), "running", |_| {
        latest_status(subscriber)["state"] == "running"
    });
}

fn latest_stats(subscriber: &Subscriber) -> Value {
    subscriber
        .on("/stats")
        .last()
        .map(|m| m.json())
        .unwrap_or(Value::Null)
}

fn refused_keys(ack: &Value) -> Vec<String> {
    assert_eq!(ack["ok"], false, "{ack}");
    ack["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn remote_changes_reach_no_program_file_or_exit_and_fit_the_memory_budget() {
    let broker = Broker::start();
    let subscriber = Subscriber::connect(&broker);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let program = dir.path().join("evil.sh");
    std::fs::write(&program, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(&program)
        .status()
        .unwrap();
    let secret = dir.path().join("secret.json");
    std::fs::write(&secret, r#"{"api_token": "hunter2"}"#).unwrap();
    // A small budget: 640x480 frames (0.9 MB) leave room for a queue of about 130.
    let config = write_config_with(
        dir.path(),
        &broker,
        &SOURCE.replace("width = 160\nheight = 120", "width = 640\nheight = 480"),
        "[remote]\nmemory_budget_mib = 128\nmin_change_interval_secs = 0",
    );
    let mut daemon = Daemon::start(CAERD, dir.path(), &config, &[]);
    wait_running(&subscriber);

    // 1. A program: the decoder paths are local only; nothing runs.
    let ack = request(
        &subscriber,
        "config/set",
        "config/ack",
        set(
            "prog",
            json!({"source": {"kind": "video_file", "video_file": {"path": "/x.mp4", "ffprobe": program, "ffmpeg": program}}}),
        ),
        Some("prog"),
    );
    assert_eq!(
        refused_keys(&ack),
        [
            "source.kind",
            "source.video_file.ffmpeg",
            "source.video_file.ffprobe",
            "source.video_file.path"
        ]
    );
    // 2. A file to read: local only without allowed roots; the ack says nothing of it.
    for (id, patch) in [
        ("calib", json!({"model": {"calibration": secret}})),
        ("zero", json!({"model": {"calibration": "/dev/zero"}})),
        (
            "annot",
            json!({"source": {"frame_dir": {"path": "/tmp", "annotations": secret}}}),
        ),
    ] {
        let ack = request(
            &subscriber,
            "config/set",
            "config/ack",
            set(id, patch),
            Some(id),
        );
        assert!(!refused_keys(&ack).is_empty());
        assert!(!ack.to_string().contains("hunter2"), "{ack}");
    }
    // 3. An exit: finite sources and frame limits are local only.
    let ack = request(
        &subscriber,
        "config/set",
        "config/ack",
        set("stop", json!({"source": {"max_frames": 1}})),
        Some("stop"),
    );
    assert_eq!(refused_keys(&ack), ["source.max_frames"]);
    // 4. Memory: a queue that does not fit the budget at this frame size.
    let ack = request(
        &subscriber,
        "config/set",
        "config/ack",
        set(
            "mem",
            json!({"sampling": {"queue_frames": 256}, "track": {"max_tracks": 1024}}),
        ),
        Some("mem"),
    );
    assert_eq!(refused_keys(&ack), ["sampling.queue_frames"]);
    assert!(ack["errors"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("memory_budget_mib"));
    // A valid change still works, and the daemon is at work after all of it.
    let ack = request(
        &subscriber,
        "config/set",
        "config/ack",
        set("ok", json!({"sampling": {"queue_frames": 8}})),
        Some("ok"),
    );
    assert_eq!(ack["ok"], true, "{ack}");
    wait_running(&subscriber);
    assert!(daemon.is_running(), "{}", daemon.stderr());
    assert!(!marker.exists(), "a remotely named program ran");
    let kept = std::fs::read_to_string(dir.path().join("state/state.json")).unwrap();
    assert!(
        !kept.contains("evil") && !kept.contains("max_frames"),
        "{kept}"
    );
    assert!(daemon.terminate(Duration::from_secs(30)).success());
}

#[test]
fn retained_oversized_and_floods_of_changes_are_answered_not_obeyed() {
    let broker = Broker::start();
    let subscriber = Subscriber::connect(&broker);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &broker,
        "[remote]\nmin_change_interval_secs = 30",
    );
    // A retained change waiting on the broker reaches the daemon when it subscribes (with the
    // retain flag: MQTT sets it only then): refused, and not applied.
    subscriber.publish_with(
        &format!("{PREFIX}/config/set"),
        set("kept", json!({"policy": {"min_group_size": 3}})),
        true,
    );
    let retained_ack = |subscriber: &Subscriber, before: usize| {
        let acks = subscriber.wait_for(Duration::from_secs(30), "the retained change's ack", |m| {
            m.iter()
                .filter(|m| m.topic.ends_with("/config/ack"))
                .count()
                > before
        });
        let ack = acks
            .iter()
            .filter(|m| m.topic.ends_with("/config/ack"))
            .nth(before)
            .unwrap()
            .json();
        assert_eq!(
            (&ack["ok"], &ack["id"]),
            (&json!(false), &json!("kept")),
            "{ack}"
        );
        assert!(ack["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("retained"));
    };
    // A retained command likewise: a pause left on the broker must not pause the device.
    subscriber.publish_with(
        &format!("{PREFIX}/cmd"),
        json!({"schema": "caer.cmd.v1", "id": "kept-pause", "command": "pause"}).to_string(),
        true,
    );
    let mut daemon = Daemon::start(CAERD, dir.path(), &config, &[]);
    retained_ack(&subscriber, 0);
    let acks = subscriber.wait_for(Duration::from_secs(30), "the retained command's ack", |m| {
        m.iter().any(|m| m.topic.ends_with("/cmd/ack"))
    });
    let cmd_ack = acks
        .iter()
        .find(|m| m.topic.ends_with("/cmd/ack"))
        .unwrap()
        .json();
    assert_eq!(
        (&cmd_ack["ok"], &cmd_ack["id"]),
        (&json!(false), &json!("kept-pause")),
        "{cmd_ack}"
    );
    assert!(cmd_ack.to_string().contains("retained"), "{cmd_ack}");
    wait_running(&subscriber);

    // A 10 MB change gets an error ack, and the connection stays.
    let big = set("big", json!({"policy": {"x": "a".repeat(10 << 20)}}));
    let ack = request(&subscriber, "config/set", "config/ack", big, None);
    assert_eq!(ack["ok"], false);

    // A flood: the first change applies, the rest within the interval are refused.
    let first = request(
        &subscriber,
        "config/set",
        "config/ack",
        set("f0", json!({"policy": {"min_group_size": 4}})),
        Some("f0"),
    );
    assert_eq!(first["ok"], true, "{first}");
    let before = subscriber.on("/config/ack").len();
    for k in 1..50 {
        subscriber.publish(
            &format!("{PREFIX}/config/set"),
            set(
                &format!("f{k}"),
                json!({"report": {"interval_secs": 1 + k % 2}}),
            ),
        );
    }
    let acks = subscriber.wait_for(Duration::from_secs(30), "49 acks", |m| {
        m.iter()
            .filter(|m| m.topic.ends_with("/config/ack"))
            .count()
            >= before + 49
    });
    let flood: Vec<Value> = acks
        .iter()
        .filter(|m| m.topic.ends_with("/config/ack"))
        .skip(before)
        .map(|m| m.json())
        .collect();
    assert!(flood.iter().all(|a| a["ok"] == false), "none applied");
    // Each says why: the rate limit, or a full queue when they arrive faster than handled.
    let reasons: Vec<&str> = flood
        .iter()
        .map(|a| a["errors"][0]["reason"].as_str().unwrap())
        .collect();
    assert!(
        reasons
            .iter()
            .all(|r| r.contains("too many changes") || r.contains("busy")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("too many changes")));

    // Through all of it: one connection, the daemon running, the retained change not in
    // force (min_group_size 4 is the one applied change).
    subscriber.wait_for(Duration::from_secs(15), "fresh stats", |_| {
        latest_stats(&subscriber)["mqtt_connects_total"] == 1
            && latest_status(&subscriber)["state"] == "running"
    });
    let records = subscriber.wait_for(Duration::from_secs(15), "a record under the change", |m| {
        m.iter()
            .filter(|m| m.topic.ends_with("/engagement"))
            .any(|m| m.json()["min_group_size"] == 4)
    });
    assert!(
        records
            .iter()
            .filter(|m| m.topic.ends_with("/engagement"))
            .all(|m| m.json()["min_group_size"] != 3),
        "the retained change was applied"
    );
    assert!(daemon.terminate(Duration::from_secs(30)).success());

    // A restart does not apply the retained change either.
    let before = subscriber.on("/config/ack").len();
    let records = subscriber.on("/engagement").len();
    let mut daemon = Daemon::start(CAERD, dir.path(), &config, &[]);
    retained_ack(&subscriber, before);
    subscriber.wait_for(Duration::from_secs(30), "a record after the restart", |m| {
        m.iter()
            .filter(|m| m.topic.ends_with("/engagement"))
            .skip(records)
            .any(|m| m.json()["min_group_size"] == 4)
    });
    assert!(daemon.terminate(Duration::from_secs(30)).success());
}

#[test]
fn sequence_numbers_never_repeat_even_when_the_state_directory_is_wiped() {
    let broker = Broker::start();
    let subscriber = Subscriber::connect(&broker);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &broker, "");
    let mut daemon = Daemon::start(CAERD, dir.path(), &config, &[]);
    subscriber.wait_for(Duration::from_secs(30), "three records", |m| {
        engagement_seqs(m).0.len() >= 3
    });
    daemon.kill9();
    let before = *engagement_seqs(&subscriber.messages()).0.last().unwrap();
    std::fs::remove_dir_all(dir.path().join("state")).unwrap();
    let mut daemon = Daemon::start(CAERD, dir.path(), &config, &[]);
    let messages = subscriber.wait_for(Duration::from_secs(30), "records after the wipe", |m| {
        engagement_seqs(m).0.iter().any(|s| *s > before)
    });
    let (seqs, _) = engagement_seqs(&messages);
    let after: Vec<u64> = seqs.iter().copied().filter(|s| *s > before).collect();
    println!(
        "last seq before the wipe {before}, first after {}",
        after[0]
    );
    assert!(daemon.terminate(Duration::from_secs(30)).success());
}

#[test]
fn planted_links_damaged_state_and_odd_outbox_entries() {
    let broker = Broker::start();
    let subscriber = Subscriber::connect(&broker);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let outbox = state.join("outbox");
    std::fs::create_dir_all(&outbox).unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    // 8. Links where the daemon writes its files.
    for link in [outbox.join("ledger.tmp"), state.join("state.json.tmp")] {
        std::os::unix::fs::symlink(&victim, link).unwrap();
    }
    // 10. A directory named like a segment.
    std::fs::create_dir(outbox.join("00000000000000000007.seg")).unwrap();
    // 9. A damaged state.json (it held presence and a pause).
    std::fs::write(
        state.join("state.json"),
        b"{\"schema\": \"caer.state.v1\", \"paused\": tr",
    )
    .unwrap();
    let config = write_config(dir.path(), &broker, "");
    let mut daemon = Daemon::start(CAERD, dir.path(), &config, &[]);
    // Fails closed: paused, with the reason.
    subscriber.wait_for(Duration::from_secs(30), "paused with a reason", |_| {
        let s = latest_status(&subscriber);
        s["state"] == "paused" && s["reason"].as_str().is_some_and(|r| r.contains("state"))
    });
    assert!(state.join("state.json.damaged").is_file());
    // Resume, change something (state.json written), publish records (ledger written).
    let resume = json!({"schema": "caer.cmd.v1", "id": "go", "command": "resume"}).to_string();
    assert_eq!(
        request(&subscriber, "cmd", "cmd/ack", resume, Some("go"))["ok"],
        true
    );
    let ack = request(
        &subscriber,
        "config/set",
        "config/ack",
        set("k3", json!({"policy": {"min_group_size": 3}})),
        Some("k3"),
    );
    assert_eq!(ack["ok"], true, "{ack}");
    subscriber.wait_for(Duration::from_secs(30), "records", |m| {
        engagement_seqs(m).0.len() >= 2
    });
    assert!(daemon.terminate(Duration::from_secs(30)).success());
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");

    // An outbox that is itself a link: refused at start, nothing written through it.
    std::fs::remove_dir_all(&outbox).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &outbox).unwrap();
    let mut daemon = Daemon::start(CAERD, dir.path(), &config, &[]);
    let status = daemon.wait(Duration::from_secs(30));
    assert!(!status.success(), "a linked outbox must stop the start");
    // The refusal names the path at fault, so an operator can find it.
    let named = outbox.display().to_string();
    assert!(daemon.stderr().contains(&named), "{}", daemon.stderr());
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}

/// Runs caerd in a private mount namespace whose state directory is a tiny tmpfs, filled
/// before the start; a file `release` (outside) frees the space.
#[test]
fn a_full_disk_loses_counted_intervals_and_never_the_daemon() {
    let Some(unshare) = super::util::find_program("unshare") else {
        panic!("this test needs unshare (util-linux)");
    };
    let broker = Broker::start();
    let subscriber = Subscriber::connect(&broker);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &broker, "");
    let state = dir.path().join("state");
    let release = dir.path().join("release");
    std::fs::create_dir_all(&state).unwrap();
    // caerd is exec'd (it is the process the test signals); a background loop frees the
    // space once `release` appears, and gives up after a minute.
    let script = format!(
        "set -e\nmount -t tmpfs -o size=256k tmpfs {state}\nmkdir {state}/outbox\n\
         dd if=/dev/zero of={state}/filler bs=4k 2>/dev/null || true\n\
         (for i in $(seq 600); do [ -e {release} ] && break; sleep 0.1; done; rm -f {state}/filler) &\n\
         exec {caerd} --config {config}\n",
        state = state.display(),
        caerd = CAERD,
        config = config.display(),
        release = release.display(),
    );
    let mut daemon = Daemon::start_with(
        Command::new(unshare).args(["-rm", "sh", "-c", &script]),
        dir.path(),
    );
    // Full from the start: running, every interval counted as lost.
    subscriber.wait_for(
        Duration::from_secs(30),
        "intervals lost to the full disk",
        |_| {
            latest_stats(&subscriber)["outbox"]["lost_total"]
                .as_u64()
                .is_some_and(|n| n >= 3)
                && latest_status(&subscriber)["state"] == "running"
        },
    );
    assert!(subscriber.on("/engagement").is_empty());
    // Space returns: records flow again, their numbers after the lost ones.
    std::fs::write(&release, b"").unwrap();
    let messages = subscriber.wait_for(
        Duration::from_secs(30),
        "records after space returned",
        |m| engagement_seqs(m).0.len() >= 2,
    );
    let lost = latest_stats(&subscriber)["outbox"]["lost_total"]
        .as_u64()
        .unwrap();
    let first = *engagement_seqs(&messages).0.first().unwrap();
    println!("lost {lost} intervals to the full disk; records resumed at seq {first}");
    assert!(daemon.is_running(), "{}", daemon.stderr());
    assert!(daemon.terminate(Duration::from_secs(30)).success());
}
