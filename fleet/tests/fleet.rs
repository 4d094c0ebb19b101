//! The fleet tool against real parts: PostgreSQL and mosquitto started per test, the real
//! `caerd` devices and the real `caer-fleet` binary.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{fleet, stored, wait_until, Broker, Device, Ingester, Postgres};

/// Waits until every device has at least `more` records stored beyond `marks`.
fn wait_for_more(
    db: &mut postgres::Client,
    devices: &[Device],
    marks: &mut BTreeMap<String, i64>,
    more: i64,
    what: &str,
) {
    for d in devices {
        let want = marks.get(&d.id).copied().unwrap_or(0) + more;
        let mut have = 0;
        wait_until(
            Duration::from_secs(60),
            &format!("{} records of {} ({what})", want, d.id),
            || {
                have = stored(db, &d.site, &d.id).0;
                have >= want
            },
        );
        marks.insert(d.id.clone(), have);
    }
}

/// A valid engagement record of the coarse profile: 4 students, 3 engaged.
fn record(site: &str, device: &str, seq: u64, minute: u32, suppressed: bool) -> Value {
    let start = format!("2026-12-01T08:{minute:02}:00Z");
    let end = format!("2026-12-01T08:{:02}:00Z", minute + 1);
    let mut r = json!({
        "schema": "caer.engagement.v2", "seq": seq, "site": site, "room": "r1", "device": device,
        "interval_start": start, "interval_end": end, "profile": "coarse", "model_id": "demo",
        "min_group_size": 2, "suppressed": suppressed,
    });
    if suppressed {
        r["suppression_reason"] = json!("below_min_group_size");
    } else {
        r["students"] = json!(4);
        r["tracks_seen"] = json!(4);
        r["frames_analysed"] = json!(600);
        r["coverage"] = json!(1.0);
        r["assessed"] = json!(4);
        r["engagement"] = json!({"engaged": 3, "distracted": 1, "engaged_ratio": 0.75,
            "distracted_ratio": 0.25, "mean_engaged_probability": 0.7, "confidence": 0.8});
    }
    r
}

/// A test MQTT client that publishes QoS 1 and waits for each PUBACK.
struct Publisher {
    client: rumqttc::Client,
    connection: rumqttc::Connection,
}

impl Publisher {
    fn connect(broker: &Broker) -> Publisher {
        let mut options = rumqttc::MqttOptions::new(
            format!("test-publisher-{}", std::process::id()),
            "127.0.0.1",
            broker.port(),
        );
        options.set_keep_alive(Duration::from_secs(5));
        let (client, connection) = rumqttc::Client::new(options, 64);
        Publisher { client, connection }
    }

    fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload.into())
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "no PUBACK for {topic}");
            if let Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) =
                self.connection.recv_timeout(Duration::from_millis(100))
            {
                return;
            }
        }
    }
}

#[test]
fn every_record_is_stored_once_through_ingester_broker_and_database_restarts() {
    let mut pg = Postgres::start();
    let mut broker = Broker::start();
    let logs = tempfile::tempdir().unwrap();
    let mut i1 = Ingester::start(&broker, &pg.url(), "ingest-1", logs.path());
    let mut i2 = Ingester::start(&broker, &pg.url(), "ingest-2", logs.path());
    // A probe record: once it is stored, the group's subscription is in place.
    let mut probe = Publisher::connect(&broker);
    let mut db = None;
    wait_until(Duration::from_secs(30), "the probe record stored", || {
        probe.publish(
            "caer/probe/p/engagement",
            record("probe", "p", 0, 0, false).to_string(),
        );
        let client = db.get_or_insert_with(|| pg.client());
        stored(client, "probe", "p").0 == 1
    });
    drop(probe);
    let mut db = db.unwrap();

    let mut devices: Vec<Device> = (1..=3)
        .map(|n| Device::start(&broker, "s1", "r1", &format!("dev-{n}"), ""))
        .collect();
    let mut first = BTreeMap::new();
    for d in &devices {
        wait_until(Duration::from_secs(30), "the outbox ledger", || {
            d.ledger().is_some()
        });
        first.insert(d.id.clone(), d.ledger().unwrap().0);
    }
    let mut marks = BTreeMap::new();
    wait_for_more(&mut db, &devices, &mut marks, 3, "running");

    i1.kill();
    wait_for_more(&mut db, &devices, &mut marks, 3, "one ingester killed");
    i1.restart();
    wait_for_more(&mut db, &devices, &mut marks, 2, "the ingester back");

    broker.stop();
    broker.restart();
    wait_for_more(
        &mut db,
        &devices,
        &mut marks,
        3,
        "after the broker's restart",
    );

    drop(db);
    pg.stop();
    // Records keep coming while the database is down: held by the ingesters (unacked) and
    // the broker.
    std::thread::sleep(Duration::from_secs(3));
    pg.restart();
    let mut db = pg.client();
    wait_for_more(
        &mut db,
        &devices,
        &mut marks,
        3,
        "after the database's restart",
    );

    // Stop the devices (each drains its outbox to the broker first), then everything they
    // published must be stored, once.
    let mut published_total = 0;
    let mut expected = BTreeMap::new();
    for d in &mut devices {
        d.stop();
        let (next, acked_below) = d.ledger().unwrap();
        assert_eq!(
            acked_below, next,
            "{}: every record acked by the broker before exit",
            d.id
        );
        let range: Vec<i64> = (first[&d.id]..next).collect();
        published_total += range.len();
        expected.insert(d.id.clone(), range);
    }
    for d in &devices {
        let want = &expected[&d.id];
        let mut have = Vec::new();
        wait_until(
            Duration::from_secs(60),
            &format!("every record of {}", d.id),
            || {
                have = stored(&mut db, &d.site, &d.id).1;
                have.len() >= want.len()
            },
        );
        assert_eq!(
            &have, want,
            "{}: stored seqs are exactly the published ones",
            d.id
        );
    }
    let gaps = fleet(&["gaps", "--database", &pg.url(), "--site", "s1"]);
    assert!(
        gaps.status.success(),
        "gaps: {}",
        String::from_utf8_lossy(&gaps.stdout)
    );
    let dup: i64 = db
        .query_one(
            "SELECT count(*) - count(DISTINCT (site, device, seq)) FROM engagement",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(dup, 0);
    let rejected: i64 = db
        .query_one("SELECT count(*) FROM rejected", &[])
        .unwrap()
        .get(0);
    assert_eq!(rejected, 0, "nothing rejected from real devices");
    i1.stop();
    i2.stop();
    let duplicates: u64 = [&i1, &i2]
        .iter()
        .filter_map(|i| {
            i.log()
                .lines()
                .rev()
                .find_map(|l| serde_json::from_str::<Value>(l).ok())
        })
        .filter_map(|v| v["duplicates"].as_u64())
        .sum();
    println!(
        "kill/restart: published {published_total}, stored {published_total}, duplicates in the \
         table 0, lost 0; redeliveries dropped by the ingesters since their last start: {duplicates}"
    );
}

#[test]
fn bad_input_on_the_fleet_side_is_kept_aside_and_nothing_is_stored_wrongly() {
    let pg = Postgres::start();
    let broker = Broker::start();
    let logs = tempfile::tempdir().unwrap();
    let _ingester = Ingester::start(&broker, &pg.url(), "ingest-bad", logs.path());
    let mut publisher = Publisher::connect(&broker);
    let mut db = pg.client();
    wait_until(
        Duration::from_secs(30),
        "the first good record stored",
        || {
            publisher.publish(
                "caer/s2/good/engagement",
                record("s2", "good", 7, 0, false).to_string(),
            );
            stored(&mut db, "s2", "good").0 == 1
        },
    );
    let mut missing_field = record("s2", "good", 8, 1, false);
    missing_field.as_object_mut().unwrap().remove("students");
    publisher.publish("caer/s2/good/engagement", missing_field.to_string());
    publisher.publish("caer/s2/good/engagement", "{not json");
    publisher.publish(
        "caer/s2/bad%id/engagement",
        record("s2", "bad%id", 1, 1, false).to_string(),
    );
    publisher.publish(
        "caer/s2/other/engagement",
        record("s2", "good", 9, 1, false).to_string(),
    );
    // Then a suppressed record and one more good one, which must still be stored.
    publisher.publish(
        "caer/s2/good/engagement",
        record("s2", "good", 10, 2, true).to_string(),
    );
    publisher.publish(
        "caer/s2/good/engagement",
        record("s2", "good", 11, 3, false).to_string(),
    );
    wait_until(
        Duration::from_secs(30),
        "the records after the bad ones",
        || stored(&mut db, "s2", "good").0 == 3,
    );
    assert_eq!(stored(&mut db, "s2", "good").1, [7, 10, 11]);
    let reasons: Vec<(String, String)> = db
        .query("SELECT topic, reason FROM rejected ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(
        reasons[0].1.contains("schema") && reasons[0].1.contains("students"),
        "{reasons:?}"
    );
    assert!(reasons[1].1.contains("not valid JSON"), "{reasons:?}");
    assert!(
        reasons[2].0.contains("bad%id") && reasons[2].1.contains("device id"),
        "{reasons:?}"
    );
    assert!(
        reasons[3]
            .1
            .contains("\"good\" is not the topic's \"other\""),
        "{reasons:?}"
    );
    let others: i64 = db
        .query_one(
            "SELECT count(*) FROM engagement WHERE device <> 'good'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(others, 0);

    // The report: the suppressed interval is an empty cell and a gap, never a figure.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("r1.csv");
    let svg = dir.path().join("r1.svg");
    let png = dir.path().join("r1.png");
    for out in [&csv, &svg, &png] {
        let run = fleet(&[
            "report",
            "--database",
            &pg.url(),
            "--site",
            "s2",
            "--room",
            "r1",
            "--from",
            "2026-12-01T08:00:00Z",
            "--to",
            "2026-12-01T09:00:00Z",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(
            run.status.success(),
            "report: {}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    let table = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[2].contains(",10,true,,,"), "{table}");
    assert!(lines[1].ends_with(",7,false,4,4,0.7500"), "{table}");
    let plot = std::fs::read_to_string(&svg).unwrap();
    // Two records with a figure, separated by the suppressed one: two lines, not one.
    assert_eq!(plot.matches("<polyline").count(), 2, "{plot}");
    let picture = image::open(&png).unwrap().to_rgb8();
    assert_eq!(picture.dimensions(), (960, 360));
    assert!(
        picture.pixels().any(|p| p.0 == [31, 119, 180]),
        "the device's line is drawn"
    );

    // A database that refuses the connection: a clear error, an exit, nothing received.
    let refused = format!(
        "postgres://caer@127.0.0.1:{}/postgres",
        support::free_port()
    );
    let run = fleet(&["--broker", &broker.url(), "ingest", "--database", &refused]);
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("database"), "{stderr}");
}

#[test]
fn config_set_and_cmd_report_each_device_and_fail_on_offline_and_refused() {
    let broker = Broker::start();
    // dev-b's 1080p frames fit its 128 MiB budget only with a short frame queue: it refuses
    // the change (22 frames of 6.2 MB); dev-a's 160x120 frames fit.
    let a = Device::start(&broker, "s3", "r1", "dev-a", "");
    let b = Device::start_sized(
        &broker,
        "s3",
        "r2",
        "dev-b",
        (1920, 1080, 2.0),
        "[remote]\nmemory_budget_mib = 128\n",
    );
    let mut c = Device::start(&broker, "s3", "r1", "dev-c", "");
    let mut other_site = Device::start(&broker, "s4", "r1", "dev-z", "");
    let devices_json = || -> Vec<Value> {
        let run = fleet(&[
            "--broker",
            &broker.url(),
            "devices",
            "--json",
            "--wait",
            "3s",
        ]);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        serde_json::from_slice(&run.stdout).unwrap()
    };
    let state_of = |rows: &[Value], id: &str| {
        rows.iter()
            .find(|r| r["device"] == id)
            .map(|r| r["state"].clone())
    };
    wait_until(Duration::from_secs(60), "four devices running", || {
        let rows = devices_json();
        ["dev-a", "dev-b", "dev-c", "dev-z"]
            .iter()
            .all(|id| state_of(&rows, id) == Some(json!("running")))
    });
    c.stop();
    other_site.stop();
    let rows = devices_json();
    assert_eq!(state_of(&rows, "dev-c"), Some(json!("offline")));
    let row_a = rows.iter().find(|r| r["device"] == "dev-a").unwrap();
    assert_eq!(row_a["site"], "s3");
    assert_eq!(row_a["room"], "r1");
    assert_eq!(row_a["profile"], "presence");
    // From the latest stats (their values move: a record may be in flight).
    assert!(row_a["outbox_depth"].is_u64(), "{row_a}");
    assert!(row_a["frames_dropped"].is_u64(), "{row_a}");
    let table = fleet(&["--broker", &broker.url(), "devices", "--site", "s3"]);
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert_eq!(
        table.lines().count(),
        4,
        "a header and three devices of s3:\n{table}"
    );

    let run = fleet(&[
        "--broker",
        &broker.url(),
        "config",
        "set",
        "--site",
        "s3",
        "--set",
        "sampling.queue_frames=20",
        "--json",
    ]);
    let results: Vec<Value> = String::from_utf8_lossy(&run.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(run.status.code(), Some(1), "{results:?}");
    let by_device: BTreeMap<String, Value> = results
        .iter()
        .map(|r| (r["device"].as_str().unwrap().to_string(), r.clone()))
        .collect();
    assert_eq!(by_device.len(), 3, "only site s3: {results:?}");
    assert_eq!(by_device["dev-a"]["result"], "ok");
    assert_eq!(by_device["dev-b"]["result"], "refused");
    assert!(
        by_device["dev-b"]["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("sampling.queue_frames"),
        "{results:?}"
    );
    assert_eq!(by_device["dev-c"]["result"], "offline");

    // Checked here first: a local-only key is refused before anything is sent.
    let run = fleet(&[
        "--broker",
        &broker.url(),
        "config",
        "set",
        "--site",
        "s3",
        "--set",
        "source.kind=v4l2",
    ]);
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("source.kind"));

    // A command to one room: both devices there answer; dev-c is offline.
    let run = fleet(&[
        "--broker",
        &broker.url(),
        "cmd",
        "identify",
        "--site",
        "s3",
        "--room",
        "r1",
    ]);
    let out = String::from_utf8_lossy(&run.stdout).into_owned();
    assert_eq!(run.status.code(), Some(1), "{out}");
    assert!(out.contains("s3/dev-a: ok"), "{out}");
    assert!(out.contains("s3/dev-c: offline"), "{out}");
    assert!(!out.contains("dev-b"), "{out}");
    let run = fleet(&[
        "--broker",
        &broker.url(),
        "cmd",
        "identify",
        "--device",
        "dev-a",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stdout)
    );
    drop((a, b));
}

#[test]
fn bundles_signed_by_the_tool_pass_the_devices_check_and_nothing_else_does() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    std::fs::create_dir(&bundle).unwrap();
    for entry in std::fs::read_dir(support::repo_root().join("tests/golden/bundle")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), bundle.join(entry.file_name())).unwrap();
    }
    let key = dir.path().join("signing.key");
    let run = fleet(&["bundle", "keygen", "--out", key.to_str().unwrap()]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let public = String::from_utf8_lossy(&run.stdout).trim().to_string();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Never overwritten.
    assert!(
        !fleet(&["bundle", "keygen", "--out", key.to_str().unwrap()])
            .status
            .success()
    );

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
    // The device's own check accepts it with the key, and refuses it with another.
    let trusted: caer::pipeline::model::signature::PublicKey = public.parse().unwrap();
    caer::pipeline::model::bundle::Bundle::load_verified(&bundle, &[trusted]).unwrap();
    let (_, other) = caer::pipeline::model::signature::generate_key().unwrap();
    let refused = caer::pipeline::model::bundle::Bundle::load_verified(&bundle, &[other]);
    assert!(refused
        .unwrap_err()
        .to_string()
        .contains("not in model.trusted_keys"));
    let run = fleet(&[
        "bundle",
        "verify",
        "--trusted",
        &public,
        bundle.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let run = fleet(&[
        "bundle",
        "verify",
        "--trusted",
        &other.to_string(),
        bundle.to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(2));

    // A bundle whose files no longer match its manifest is not signed at all.
    let head = bundle.join("temporal_head.onnx");
    let mut bytes = std::fs::read(&head).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&head, bytes).unwrap();
    let run = fleet(&[
        "bundle",
        "sign",
        "--key",
        key.to_str().unwrap(),
        bundle.to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("temporal_head"));
}

/// The ingester's unit template passes `systemd-analyze verify` and keeps its exposure score
/// at or below 2.0, in a fake root holding the binary and the environment file.
#[test]
fn the_ingest_unit_verifies_and_is_hardened() {
    let have = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok();
    if !have {
        assert!(
            std::env::var_os("CAER_REQUIRE_TOOLS").is_none(),
            "systemd-analyze is required (CAER_REQUIRE_TOOLS is set)"
        );
        eprintln!("skipped: no systemd-analyze");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let units = root.path().join("usr/lib/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::create_dir_all(root.path().join("usr/bin")).unwrap();
    std::fs::create_dir_all(root.path().join("etc/caer")).unwrap();
    std::fs::copy(support::FLEET, root.path().join("usr/bin/caer-fleet")).unwrap();
    std::fs::write(
        root.path().join("etc/caer/fleet.env"),
        "CAER_FLEET_BROKER=mqtt://b\n",
    )
    .unwrap();
    // The host's own units (sysinit.target, network-online.target, ...), as on a real system.
    let host_units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .find(|d| std::path::Path::new(d).join("sysinit.target").exists())
        .expect("the host's systemd units (package systemd)");
    let copied = std::process::Command::new("cp")
        .arg("-R")
        .arg(format!("{host_units}/."))
        .arg(&units)
        .status()
        .unwrap();
    assert!(copied.success());
    let template = support::repo_root().join("fleet/systemd/caer-fleet-ingest@.service");
    std::fs::copy(&template, units.join("caer-fleet-ingest@.service")).unwrap();
    let unit = "/usr/lib/systemd/system/caer-fleet-ingest@1.service";
    let root_arg = format!("--root={}", root.path().display());
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", &root_arg, unit])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains("Failed to parse system call"))
        .collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "verify: {stderr}"
    );
    let out = std::process::Command::new("systemd-analyze")
        .args([
            "security",
            "--offline=true",
            "--threshold=20",
            "--no-pager",
            &root_arg,
            unit,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let overall = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"));
    assert!(out.status.success(), "exposure above 2.0: {overall:?}");
    eprintln!("systemd-analyze security: {overall:?}");
}
