//! Nothing derived from pixels is written anywhere: caerd runs under `strace -f` and every
//! file it opens for writing, creates, renames or deletes must be inside its state
//! directory, which in the end holds only the outbox (aggregate records) and `state.json`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::strace::{files_under, strace_args, writes_outside, written_paths};
use super::util::{
    config_toml, engagement_seqs, find_program, write_classroom, write_group_photo_video, Broker,
    Daemon, Subscriber, CAERD,
};
use serde_json::json;

#[test]
fn nothing_derived_from_pixels_is_written_outside_the_state_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let (frames, faces) = write_classroom(&root, 6, 100, 192, 128);
    let source = format!(
        "[source]\nkind = \"frame_dir\"\nfps = 20.0\n[source.frame_dir]\npath = \"{}\"\nannotations = \"{}\"",
        frames.display(),
        faces.display()
    );
    let extra = "[sampling]\nrate_hz = 20.0\nwindow_stride = 4\nqueue_frames = 64\n\n[policy]\nprofile = \"fine\"\n\
                 min_group_size = 2\n\n[report]\ninterval_secs = 1\nstats_interval_secs = 1\n";
    check_writes_stay_in_the_state_directory(&root, &source, extra);
}

/// The same with a video file decoded by FFmpeg (a child process, traced too) and the
/// bundle's face detector network: the video is read through a pipe, nothing is written.
/// (The presence profile keeps it short; the test above runs the affect model.)
#[test]
fn a_video_file_source_and_its_decoder_write_nothing_outside_the_state_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let video = root.join("lesson.mp4");
    write_group_photo_video(&video, 12);
    let source = format!(
        "[source]\nkind = \"video_file\"\nfps = 10.0\n[source.video_file]\npath = \"{}\"",
        video.display()
    );
    // Still faces: the motion check off, so that students are counted and records made.
    let extra = "[detect]\nkind = \"blaze\"\n\n[track]\nmin_motion = 0.0\n\n[sampling]\nrate_hz = 10.0\nwindow_stride = 4\nqueue_frames = 64\n\n\
                 [policy]\nprofile = \"presence\"\nmin_group_size = 2\n\n[report]\ninterval_secs = 1\nstats_interval_secs = 1\n";
    check_writes_stay_in_the_state_directory(&root, &source, extra);
}

/// Runs caerd under strace with `source` and `extra` config, changes a setting remotely (so
/// that state.json is written), and checks every write of the run and the state directory.
fn check_writes_stay_in_the_state_directory(root: &Path, source: &str, extra: &str) {
    let strace = find_program("strace").unwrap_or_else(|| {
        panic!("this test needs strace (Debian/Ubuntu: `apt-get install -y strace`) and permission to ptrace")
    });
    let broker = Broker::start();
    let subscriber = Subscriber::connect(&broker);
    let state = root.join("state");
    let config = root.join("caerd.toml");
    std::fs::write(
        &config,
        config_toml(&state, Some(&broker.url()), source, extra),
    )
    .unwrap();
    let trace = root.join("strace.txt");
    let mut daemon = Daemon::start_with(
        Command::new(&strace)
            .args(strace_args(&trace))
            .arg(CAERD)
            .arg("--config")
            .arg(&config),
        root,
    );
    // A remote change during the run, so that state.json is written too.
    subscriber.wait_for(Duration::from_secs(60), "the first record", |m| {
        !engagement_seqs(m).0.is_empty()
    });
    subscriber.publish(
        "caer/e2e/dev-1/config/set",
        json!({"schema": "caer.config-set.v1", "id": "k3", "config": {"policy": {"min_group_size": 3}}}).to_string(),
    );
    let status = daemon.wait(Duration::from_secs(240));
    let traced = std::fs::read_to_string(&trace).unwrap_or_default();
    assert!(
        status.success(),
        "caerd under strace failed ({status}); is ptrace allowed here?\nstderr:\n{}\ntrace head:\n{:.2000}",
        daemon.stderr(),
        traced
    );
    assert!(
        traced.lines().count() > 10,
        "strace recorded nothing:\n{traced}"
    );
    assert!(
        subscriber
            .on("/config/ack")
            .iter()
            .any(|m| m.json()["ok"] == true),
        "the remote change was accepted"
    );

    let (outside, inside) = writes_outside(&traced, &state);
    assert!(
        inside > 0,
        "the outbox writes must show up in the trace; file syscalls traced:\n{}",
        traced
            .lines()
            .filter(|l| l.contains("state") || l.contains("outbox"))
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        outside.is_empty(),
        "files written outside {}:\n{}",
        state.display(),
        outside.join("\n")
    );

    // The state directory holds the outbox and state.json, nothing else; every outbox
    // record is an aggregate.
    let mut records = 0;
    for path in files_under(&state) {
        let rel = path
            .strip_prefix(&state)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        match rel.as_str() {
            "state.json" | "outbox/ledger" => {}
            r if r.starts_with("outbox/") && r.ends_with(".seg") => {
                let data = std::fs::read(&path).unwrap();
                let mut at = 0;
                while at + 16 <= data.len() {
                    let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
                    let payload: serde_json::Value =
                        serde_json::from_slice(&data[at + 16..at + 16 + len]).unwrap();
                    assert_eq!(
                        payload["schema"], "caer.engagement.v2",
                        "outbox holds aggregates only: {payload}"
                    );
                    records += 1;
                    at += 16 + len;
                }
            }
            other => panic!("unexpected file in the state directory: {other}"),
        }
    }
    println!("privacy: {inside} writes inside the state directory, 0 outside; {records} records left in the outbox");
}

#[test]
fn strace_line_parsing() {
    assert_eq!(
        written_paths(
            r#"123 openat(AT_FDCWD, "/s/outbox/ledger.tmp", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0666) = 5"#
        ),
        ["/s/outbox/ledger.tmp"]
    );
    assert!(
        written_paths(r#"123 openat(AT_FDCWD, "/etc/ld.so.cache", O_RDONLY|O_CLOEXEC) = 3"#)
            .is_empty()
    );
    assert_eq!(
        written_paths(r#"9 rename("/s/a.tmp", "/s/a") = 0"#),
        ["/s/a.tmp", "/s/a"]
    );
    assert!(written_paths(
        r#"7 mkdir("/dev/null/caer-no-runtime-cache", 0700) = -1 ENOTDIR (Not a directory)"#
    )
    .is_empty());
    assert_eq!(
        written_paths(r#"9 unlink("/s/outbox/0.seg") = 0"#),
        ["/s/outbox/0.seg"]
    );
    assert_eq!(
        written_paths(r#"9 openat(AT_FDCWD, "/tmp/frame.png", O_RDWR|O_CREAT <unfinished ...>"#),
        ["/tmp/frame.png"]
    );
    // strace -y: names relative to a directory fd, and failures however aligned.
    assert_eq!(
        written_paths(
            r#"9 openat(4</s/outbox>, "ledger.tmp", O_WRONLY|O_CREAT|O_EXCL|O_NOFOLLOW, 0640) = 5</s/outbox/ledger.tmp>"#
        ),
        ["/s/outbox/ledger.tmp"]
    );
    assert_eq!(
        written_paths(r#"9 renameat(4</s/outbox>, "ledger.tmp", 4</s/outbox>, "ledger") = 0"#),
        ["/s/outbox/ledger.tmp", "/s/outbox/ledger"]
    );
    assert!(written_paths(r#"9 mkdir("/tmp/x", 0777)    = -1 EEXIST (File exists)"#).is_empty());
    assert_eq!(
        written_paths(r#"9 mkdirat(AT_FDCWD, "relative", 0750) = 0"#),
        ["relative"]
    );
}
