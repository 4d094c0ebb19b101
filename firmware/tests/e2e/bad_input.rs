//! Bad input: malformed or invalid control messages are answered with an error and change
//! nothing; a broker that refuses the credentials is retried with backoff; a configuration
//! that cannot run keeps the device reachable (safe mode); an invalid file stops the start.

use std::path::Path;
use std::time::Duration;

use super::util::{
    config_toml, latest_status, request, Broker, Daemon, Schemas, Subscriber, CAERD,
};
use serde_json::{json, Value};

fn write_config(dir: &Path, broker_url: Option<&str>, model_policy: &str) -> std::path::PathBuf {
    let source = "[source]\nkind = \"generated\"\nfps = 10.0\n[source.generated]\nwidth = 160\nheight = 120\nstudents = 4";
    let extra = format!("{model_policy}\n\n[report]\ninterval_secs = 1\nstats_interval_secs = 2\n");
    let path = dir.join("caerd.toml");
    std::fs::write(
        &path,
        config_toml(&dir.join("state"), broker_url, source, &extra),
    )
    .unwrap();
    path
}

#[test]
fn invalid_control_messages_get_error_acks_and_change_nothing() {
    let schemas = Schemas::load();
    let broker = Broker::start();
    let subscriber = Subscriber::connect(&broker);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        Some(&broker.url()),
        "[policy]\nprofile = \"presence\"\nmin_group_size = 2",
    );
    let mut daemon = Daemon::start(CAERD, dir.path(), &config, &[]);
    subscriber.wait_for(Duration::from_secs(30), "running", |_| {
        latest_status(&subscriber)["state"] == "running"
    });

    // (payload, expected id in the ack, a key that the error must name)
    let wrap = |id: &str, config: Value| {
        json!({"schema": "caer.config-set.v1", "id": id, "config": config}).to_string()
    };
    let bad_config: Vec<(String, Option<&str>, &str)> = vec![
        (
            "{\"schema\": \"caer.config-set.v1\", \"config\": {".to_string(),
            None,
            "",
        ),
        ("[1, 2, 3]".to_string(), None, ""),
        (
            json!({"schema": "caer.config-set.v1", "id": "no-config"}).to_string(),
            Some("no-config"),
            "",
        ),
        (
            json!({"schema": "caer.cmd.v1", "id": "wrong-schema", "config": {}}).to_string(),
            Some("wrong-schema"),
            "schema",
        ),
        (
            json!({"schema": "caer.config-set.v1", "id": "extra", "config": {}, "force": true})
                .to_string(),
            Some("extra"),
            "",
        ),
        (
            wrap("type", json!({"policy": {"min_group_size": "five"}})),
            Some("type"),
            "policy.min_group_size",
        ),
        (
            wrap("unknown", json!({"policy": {"colour": "red"}})),
            Some("unknown"),
            "policy.colour",
        ),
        (
            wrap("range", json!({"policy": {"min_group_size": 1}})),
            Some("range"),
            "policy.min_group_size",
        ),
        (
            wrap("zero", json!({"report": {"interval_secs": 0}})),
            Some("zero"),
            "report.interval_secs",
        ),
        (
            wrap("enum", json!({"policy": {"profile": "ultra"}})),
            Some("enum"),
            "policy.profile",
        ),
        (
            wrap("forbidden", json!({"mqtt": {"url": "mqtt://elsewhere"}})),
            Some("forbidden"),
            "mqtt.url",
        ),
        (
            wrap(
                "unrunnable",
                json!({"policy": {"profile": "fine"}, "model": {"bundle": "/nonexistent/bundle"}}),
            ),
            Some("unrunnable"),
            "",
        ),
        (
            wrap("big", json!({"policy": {"x": "a".repeat(20_000)}})),
            None,
            "",
        ),
    ];
    for (payload, id, key) in &bad_config {
        let a = request(
            &subscriber,
            "config/set",
            "config/ack",
            payload.clone(),
            *id,
        );
        schemas.check(&a);
        assert_eq!(a["ok"], false, "{payload:.80} must be rejected: {a}");
        let errors = a["errors"].as_array().unwrap();
        assert!(!errors.is_empty());
        if !key.is_empty() {
            assert!(
                errors.iter().any(|e| e["key"] == *key),
                "error should name {key}: {a}"
            );
        }
    }
    let bad_cmd: Vec<(String, Option<&str>)> = vec![
        ("not json".to_string(), None),
        (
            json!({"schema": "caer.cmd.v1", "id": "reboot", "command": "reboot"}).to_string(),
            Some("reboot"),
        ),
        (
            json!({"schema": "caer.cmd.v1", "id": "typed", "command": 3}).to_string(),
            Some("typed"),
        ),
        (
            json!({"schema": "caer.cmd.v1", "id": "extra", "command": "pause", "now": true})
                .to_string(),
            Some("extra"),
        ),
        (
            format!(
                "{{\"schema\":\"caer.cmd.v1\",\"command\":\"pause\",\"pad\":\"{}\"}}",
                "x".repeat(20_000)
            ),
            None,
        ),
    ];
    for (payload, id) in &bad_cmd {
        let a = request(&subscriber, "cmd", "cmd/ack", payload.clone(), *id);
        schemas.check(&a);
        assert_eq!(a["ok"], false, "{payload:.80} must be rejected: {a}");
    }
    // Nothing changed, and the daemon is still at work.
    assert!(daemon.is_running(), "{}", daemon.stderr());
    let status = latest_status(&subscriber);
    assert_eq!(
        (status["state"].as_str(), status["profile"].as_str()),
        (Some("running"), Some("presence")),
        "{status}"
    );
    let records_before = subscriber.on("/engagement").len();
    subscriber.wait_for(Duration::from_secs(10), "more records", |m| {
        m.iter()
            .filter(|m| m.topic.ends_with("/engagement"))
            .count()
            >= records_before + 2
    });

    // A valid change is applied and acknowledged...
    let good = wrap(
        "good",
        json!({"policy": {"min_group_size": 3}, "report": {"interval_secs": 2}}),
    );
    let a = request(&subscriber, "config/set", "config/ack", good, Some("good"));
    schemas.check(&a);
    assert_eq!(a["ok"], true, "{a}");
    subscriber.wait_for(
        Duration::from_secs(15),
        "a record under the new policy",
        |m| {
            m.iter()
                .any(|m| m.topic.ends_with("/engagement") && m.json()["min_group_size"] == 3)
        },
    );
    // ...and commands work.
    for (id, command, state) in [
        ("p", "pause", Some("paused")),
        ("r", "resume", Some("running")),
        ("i", "identify", None),
    ] {
        let payload = json!({"schema": "caer.cmd.v1", "id": id, "command": command}).to_string();
        let a = request(&subscriber, "cmd", "cmd/ack", payload, Some(id));
        schemas.check(&a);
        assert_eq!(
            (a["ok"].as_bool(), a["command"].as_str()),
            (Some(true), Some(command)),
            "{a}"
        );
        if let Some(state) = state {
            subscriber.wait_for(Duration::from_secs(10), state, |_| {
                latest_status(&subscriber)["state"] == state
            });
        }
    }

    // The accepted change survives a restart (kept in the state directory).
    assert!(daemon.terminate(Duration::from_secs(30)).success());
    let mut daemon = Daemon::start(CAERD, dir.path(), &config, &[]);
    subscriber.wait_for(
        Duration::from_secs(30),
        "running again with the remote change",
        |_| {
            let s = latest_status(&subscriber);
            s["state"] == "running" && s["remote_config"] == true
        },
    );
    let n = subscriber.on("/engagement").len();
    let after = subscriber.wait_for(Duration::from_secs(15), "a record after the restart", |m| {
        m.iter()
            .filter(|m| m.topic.ends_with("/engagement"))
            .count()
            > n
    });
    let last = after
        .iter()
        .rev()
        .find(|m| m.topic.ends_with("/engagement"))
        .unwrap()
        .json();
    assert_eq!(last["min_group_size"], 3, "{last}");
    assert!(daemon.terminate(Duration::from_secs(30)).success());
    // Everything caerd published matches its schema (the requests this test sent, some of
    // them malformed on purpose, are skipped).
    for m in subscriber.messages() {
        if !(m.topic.ends_with("/config/set") || m.topic.ends_with("/cmd")) {
            schemas.check(&m.json());
        }
    }
}

#[test]
fn refused_credentials_are_reported_and_retried_with_backoff() {
    // An empty password file: every user is refused.
    let mut broker = Broker::prepare("allow_anonymous false\npassword_file {dir}/passwords\n");
    std::fs::write(broker.dir().join("passwords"), "").unwrap();
    broker.restart();

    let dir = tempfile::tempdir().unwrap();
    let secret = "s3cr3t-never-logged";
    let extra = format!(
        "[policy]\nprofile = \"presence\"\n\n[mqtt]\nurl = \"{}\"\nusername = \"caer\"\npassword_env = \"CAER_TEST_PASSWORD\"\nreconnect_min_ms = 200\nreconnect_max_ms = 1600\n",
        broker.url()
    );
    let source =
        "[source]\nkind = \"generated\"\nfps = 5.0\n[source.generated]\nwidth = 160\nheight = 120";
    let path = dir.path().join("caerd.toml");
    std::fs::write(
        &path,
        config_toml(&dir.path().join("state"), None, source, &extra),
    )
    .unwrap();
    let mut daemon = Daemon::start_with(
        std::process::Command::new(CAERD)
            .arg("--config")
            .arg(&path)
            .env("CAER_TEST_PASSWORD", secret),
        dir.path(),
    );
    // The broker's own record of the attempts (its log, one line per refused client):
    // retried, and the gaps grow. Backoff from 200 ms doubling (jitter: each delay in
    // [d/2, d]) puts attempts 1 to 4 at least 100 + 200 + 400 ms apart; without it they
    // would come every 200 ms or faster.
    let refusals = |broker: &Broker| {
        broker
            .log()
            .lines()
            .filter(|l| l.contains("not authorised"))
            .count()
    };
    let wait_refusals = |n: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while refusals(&broker) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "{n} refused attempts:\n{}",
                broker.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        std::time::Instant::now()
    };
    let first = wait_refusals(1);
    let fourth = wait_refusals(4);
    let gap = fourth - first;
    println!("attempts 1 to 4 took {gap:?}");
    assert!(gap >= Duration::from_millis(600), "no backoff: {gap:?}");
    assert!(
        daemon.is_running(),
        "caerd keeps running:\n{}",
        daemon.stderr()
    );
    assert!(daemon.terminate(Duration::from_secs(30)).success());
    let log = daemon.stderr();
    assert!(
        !log.contains(secret) && !daemon.stdout().contains(secret),
        "the password must never be logged"
    );
}

#[test]
fn unrunnable_configuration_enters_safe_mode_and_stays_reachable() {
    let schemas = Schemas::load();
    let broker = Broker::start();
    let subscriber = Subscriber::connect(&broker);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-bundle");
    let source = "[source]\nkind = \"generated\"\nfps = 10.0\n[source.generated]\nwidth = 160\nheight = 120\nstudents = 4";
    // A remote fix may point model.bundle only below an allowed root: the fixture's folder.
    let root = super::util::fixture_bundle()
        .parent()
        .unwrap()
        .display()
        .to_string();
    let extra = format!(
        "[policy]\nprofile = \"coarse\"\nmin_group_size = 2\n\n[report]\ninterval_secs = 1\n\n\
         [remote]\nallowed_roots = [{root:?}]\n"
    );
    // The configuration is valid (no I/O in validation), but its bundle does not exist.
    let text = config_toml(
        &dir.path().join("state"),
        Some(&broker.url()),
        source,
        &extra,
    )
    .replace(
        &super::util::fixture_bundle().display().to_string(),
        &missing.display().to_string(),
    );
    let path = dir.path().join("caerd.toml");
    std::fs::write(&path, text).unwrap();
    let mut daemon = Daemon::start(CAERD, dir.path(), &path, &[]);

    let messages = subscriber.wait_for(Duration::from_secs(30), "safe mode", |_| {
        latest_status(&subscriber)["state"] == "safe_mode"
    });
    let status = messages
        .iter()
        .rev()
        .find(|m| m.topic.ends_with("/status"))
        .unwrap()
        .json();
    schemas.check(&status);
    assert!(
        status["reason"]
            .as_str()
            .unwrap()
            .contains("no-such-bundle"),
        "the reason names the bundle: {status}"
    );
    // Control still works: identify, then a fix.
    let identify = json!({"schema": "caer.cmd.v1", "id": "who", "command": "identify"}).to_string();
    assert_eq!(
        request(&subscriber, "cmd", "cmd/ack", identify, Some("who"))["ok"],
        true
    );
    let fix = json!({"schema": "caer.config-set.v1", "id": "fix", "config": {"model": {"bundle": super::util::fixture_bundle()}}});
    let a = request(
        &subscriber,
        "config/set",
        "config/ack",
        fix.to_string(),
        Some("fix"),
    );
    assert_eq!(a["ok"], true, "{a}");
    subscriber.wait_for(Duration::from_secs(30), "running after the fix", |_| {
        latest_status(&subscriber)["state"] == "running"
    });
    assert!(daemon.terminate(Duration::from_secs(30)).success());
}

#[test]
fn invalid_file_stops_the_start_naming_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("caerd.toml");
    let text = config_toml(
        &dir.path().join("state"),
        Some("http://nope"),
        "[source]\nkind = \"generated\"\nfps = 0.0",
        "[policy]\nmin_group_size = 1\n",
    );
    std::fs::write(&path, text).unwrap();
    let output = std::process::Command::new(CAERD)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let err = String::from_utf8_lossy(&output.stderr);
    for key in ["source.fps", "policy.min_group_size", "mqtt.url"] {
        assert!(err.contains(key), "{key} not named in: {err}");
    }
    assert!(output.stdout.is_empty());
    // Unknown key.
    std::fs::write(&path, "[device]\nsite = \"a\"\nroom = \"b\"\nid = \"c\"\ncolour = 1\n[source]\nkind = \"generated\"\n").unwrap();
    let output = std::process::Command::new(CAERD)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("unknown field `colour`"),
        "{output:?}"
    );
    // No file at all.
    let output = std::process::Command::new(CAERD)
        .arg("--config")
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}
