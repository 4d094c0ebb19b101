//! Frames → caerd → mosquitto → subscriber: payloads match their schemas and the counts
//! match what the frames show.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use super::util::{
    config_toml, engagement_seqs, recorded_seqs, wait_for_ledger, write_classroom,
    write_group_photo_video, Broker, Daemon, Message, Schemas, Subscriber, CAERD,
};

/// `students` faces sitting still in every one of `frames` frames, at 20 frames per
/// second, every frame sampled, results every 4 samples, 1 s intervals.
fn classroom_config(
    dir: &std::path::Path,
    broker: &Broker,
    students: usize,
    frames: usize,
    policy: &str,
) -> std::path::PathBuf {
    let (frames_dir, faces) = write_classroom(dir, students, frames, 192, 128);
    let source = format!(
        "[source]\nkind = \"frame_dir\"\nfps = 20.0\n[source.frame_dir]\npath = \"{}\"\nannotations = \"{}\"",
        frames_dir.display(),
        faces.display()
    );
    let extra = format!(
        "[sampling]\nrate_hz = 20.0\nwindow_stride = 4\nqueue_frames = 64\n\n{policy}\n\n[report]\ninterval_secs = 1\nstats_interval_secs = 1\n"
    );
    let path = dir.join("caerd.toml");
    std::fs::write(
        &path,
        config_toml(&dir.join("state"), Some(&broker.url()), &source, &extra),
    )
    .unwrap();
    path
}

/// Runs caerd on `config` (a finite source) until it exits on its own, within `timeout`,
/// then waits for every engagement record it gave a number to: returns those numbers and
/// all the subscriber's messages.
fn run_to_the_end(
    dir: &std::path::Path,
    config: &std::path::Path,
    subscriber: &Subscriber,
    timeout: Duration,
) -> (BTreeSet<u64>, Vec<Message>) {
    let state = dir.join("state");
    let mut daemon = Daemon::start(CAERD, dir, config, &[]);
    let first = wait_for_ledger(&state);
    let status = daemon.wait(timeout);
    assert!(
        status.success(),
        "caerd failed: {status}\n{}",
        daemon.stderr()
    );
    let recorded = recorded_seqs(&state, first);
    let messages = subscriber.wait_for(Duration::from_secs(10), "every recorded interval", |m| {
        engagement_seqs(m).0 == recorded
    });
    (recorded, messages)
}

#[test]
fn frames_to_subscriber_counts_match_the_frames_and_payloads_match_the_schemas() {
    let schemas = Schemas::load();
    let broker = Broker::start();
    let subscriber = Subscriber::connect(&broker);
    let dir = tempfile::tempdir().unwrap();
    let students = 6;
    let config = classroom_config(
        dir.path(),
        &broker,
        students,
        120,
        "[policy]\nprofile = \"fine\"\nmin_group_size = 5",
    );
    // A finite frame directory: caerd records the last interval, delivers, and exits 0.
    let (_, messages) = run_to_the_end(dir.path(), &config, &subscriber, Duration::from_secs(90));

    // Every payload on every topic matches its schema.
    for m in &messages {
        schemas.check(&m.json());
    }
    let engagement: Vec<_> = messages
        .iter()
        .filter(|m| m.topic == "caer/e2e/dev-1/engagement")
        .map(|m| m.json())
        .collect();
    assert!(
        engagement.len() >= 4,
        "expected several 1 s intervals, got {}: {engagement:?}",
        engagement.len()
    );
    let seqs: Vec<u64> = engagement
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    // A fresh outbox numbers from the wall clock in ms, then one per record.
    let first = seqs[0];
    assert!(first > 1_700_000_000_000, "a wall-clock floor: {first}");
    assert_eq!(
        seqs,
        (first..first + seqs.len() as u64).collect::<Vec<_>>(),
        "sequence numbers are consecutive, in order"
    );

    // Counts against the frames: 6 faces in every frame, each a stable track.
    let mut full = 0;
    for r in engagement.iter().filter(|r| r["suppressed"] == false) {
        assert_eq!(r["students"], students as u64, "the headcount: {r}");
        let n = r["assessed"].as_u64().unwrap();
        assert!(
            n <= students as u64 && n >= 5,
            "assessed {n} with {students} faces and k = 5: {r}"
        );
        assert_eq!(
            r["tracks_seen"], students as u64,
            "every face is one track: {r}"
        );
        assert!(r["frames_analysed"].as_u64().unwrap() > 0, "{r}");
        let counts: u64 = r["classes"]["counts"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(counts, n, "the class counts split the assessed: {r}");
        let e = &r["engagement"];
        assert_eq!(
            e["engaged"].as_u64().unwrap() + e["distracted"].as_u64().unwrap(),
            n,
            "{r}"
        );
        let p: f64 = r["classes"]["mean_probabilities"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_f64().unwrap())
            .sum();
        assert!((p - 1.0).abs() < 2e-3, "mean probabilities sum to 1: {p}");
        if n == students as u64 {
            full += 1;
        }
    }
    assert!(
        full >= 2,
        "in steady state every student has a full window each interval: {engagement:?}"
    );
    // Status: retained, running with the fixture model, then offline at the clean exit.
    let status: Vec<_> = messages
        .iter()
        .filter(|m| m.topic == "caer/e2e/dev-1/status")
        .map(|m| m.json())
        .collect();
    assert!(
        status
            .iter()
            .any(|s| s["state"] == "running" && s["model"]["id"] == "clip-caer-tiny-fixture"),
        "{status:?}"
    );
    assert_eq!(status.last().unwrap()["state"], "offline");
    let stats: Vec<_> = messages
        .iter()
        .filter(|m| m.topic == "caer/e2e/dev-1/stats")
        .map(|m| m.json())
        .collect();
    assert!(!stats.is_empty(), "stats published");
    let last = stats.last().unwrap();
    assert!(
        last["frames_processed_total"].as_u64().unwrap() > 0,
        "{last}"
    );
    // Nothing per student on any topic.
    for m in &messages {
        let text = String::from_utf8_lossy(&m.payload);
        assert!(
            !text.contains("track_id") && !text.contains("logits"),
            "per-student data leaked on {}: {text}",
            m.topic
        );
    }
    println!(
        "e2e: {} engagement records, {full} with all {students} students",
        engagement.len()
    );
}

#[test]
fn fewer_students_than_k_publish_only_suppressed_records() {
    let schemas = Schemas::load();
    let broker = Broker::start();
    let subscriber = Subscriber::connect(&broker);
    let dir = tempfile::tempdir().unwrap();
    let config = classroom_config(
        dir.path(),
        &broker,
        3,
        60,
        "[policy]\nprofile = \"coarse\"\nmin_group_size = 4",
    );
    let (recorded, messages) =
        run_to_the_end(dir.path(), &config, &subscriber, Duration::from_secs(90));
    assert!(!recorded.is_empty());
    for m in messages.iter().filter(|m| m.topic.ends_with("/engagement")) {
        let r = m.json();
        schemas.check(&r);
        assert_eq!(r["suppressed"], true, "3 students < k = 4: {r}");
        assert_eq!(r["suppression_reason"], "below_min_group_size");
        for key in [
            "students",
            "assessed",
            "tracks_seen",
            "frames_analysed",
            "coverage",
            "engagement",
            "classes",
        ] {
            assert!(r.get(key).is_none(), "{key} must be withheld: {r}");
        }
    }
}

#[test]
fn coarse_and_presence_profiles_publish_only_what_they_allow() {
    let schemas = Schemas::load();
    let broker = Broker::start();
    let subscriber = Subscriber::connect(&broker);
    for (profile, min_group) in [("coarse", 2), ("presence", 2)] {
        let dir = tempfile::tempdir().unwrap();
        let policy = format!("[policy]\nprofile = \"{profile}\"\nmin_group_size = {min_group}");
        let config = classroom_config(dir.path(), &broker, 4, 60, &policy);
        let mut daemon = Daemon::start(CAERD, dir.path(), &config, &[]);
        let first = wait_for_ledger(&dir.path().join("state"));
        assert!(
            daemon.wait(Duration::from_secs(90)).success(),
            "{}",
            daemon.stderr()
        );
        let recorded = recorded_seqs(&dir.path().join("state"), first).len();
        let records: Vec<_> = subscriber
            .wait_for(Duration::from_secs(10), "the run's records", |m| {
                m.iter()
                    .filter(|m| m.topic.ends_with("/engagement") && m.json()["profile"] == profile)
                    .count()
                    >= recorded
            })
            .iter()
            .filter(|m| m.topic.ends_with("/engagement"))
            .map(|m| m.json())
            .filter(|r| r["profile"] == profile)
            .collect();
        assert!(
            records.iter().any(|r| r["suppressed"] == false),
            "{profile}: some interval published: {records:?}"
        );
        for r in &records {
            schemas.check(r);
            assert!(
                r.get("classes").is_none(),
                "{profile} never publishes the five classes: {r}"
            );
            if profile == "presence" {
                assert!(
                    r.get("engagement").is_none() && r.get("model_id").is_none(),
                    "{r}"
                );
                if r["suppressed"] == false {
                    assert_eq!(r["students"], 4, "presence counts the students: {r}");
                    assert!(r.get("assessed").is_none(), "{r}");
                }
            }
        }
        if profile == "presence" {
            // No model was loaded at all: the run's status names none.
            let statuses: Vec<Value> = subscriber
                .on("/status")
                .iter()
                .map(|m| m.json())
                .filter(|s| s["profile"] == "presence" && s["state"] == "running")
                .collect();
            assert!(!statuses.is_empty());
            for s in statuses {
                assert_eq!(
                    (&s["model"], &s["backend"]),
                    (&Value::Null, &Value::Null),
                    "{s}"
                );
            }
        }
    }
}

/// A recording of the group photograph (29 faces; `firmware/testdata/faces/solvay.jpg`) →
/// caerd with the video file source and the bundle's BlazeFace detector → the subscriber:
/// the presence profile counts the faces the video shows (frames through FFmpeg's pipe,
/// the detector network on the model's backend).
#[test]
fn a_video_file_through_the_blaze_detector_counts_the_faces_it_shows() {
    let schemas = Schemas::load();
    let broker = Broker::start();
    let subscriber = Subscriber::connect(&broker);
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("lesson.mp4");
    write_group_photo_video(&video, 24);
    let source = format!(
        "[source]\nkind = \"video_file\"\nfps = 10.0\n[source.video_file]\npath = \"{}\"",
        video.display()
    );
    // One interval for the whole video (caerd records it when the file ends), every frame
    // sampled: each face gets the 16 samples that presence counts. The photograph's faces
    // never move, so the motion check (which rightly refuses still faces) is off: this test
    // counts what the detector finds.
    let extra = "[detect]\nkind = \"blaze\"\n\n[track]\nmin_motion = 0.0\n\n[sampling]\nrate_hz = 10.0\nwindow_stride = 4\nqueue_frames = 64\n\n\
                 [policy]\nprofile = \"presence\"\n\n[report]\ninterval_secs = 600\nstats_interval_secs = 1\n";
    let config = dir.path().join("caerd.toml");
    std::fs::write(
        &config,
        config_toml(
            &dir.path().join("state"),
            Some(&broker.url()),
            &source,
            extra,
        ),
    )
    .unwrap();
    let (_, messages) = run_to_the_end(dir.path(), &config, &subscriber, Duration::from_secs(180));
    let mut most = 0;
    for m in messages.iter().filter(|m| m.topic.ends_with("/engagement")) {
        let r = m.json();
        schemas.check(&r);
        if let Some(n) = r["students"].as_u64() {
            most = most.max(n);
        }
    }
    // The detector finds 27 of the 29 faces with no false positive on the photograph.
    if !(27..=29).contains(&most) {
        for m in &messages {
            eprintln!("{} {}", m.topic, String::from_utf8_lossy(&m.payload));
        }
    }
    println!("video e2e: at most {most} students in an interval");
    assert!((27..=29).contains(&most), "students counted: {most}");
}

/// The engagement records `caerd --demo --lockstep --frames N` prints on stdout.
fn lockstep_demo_records(frames: u32) -> Vec<Value> {
    let out = std::process::Command::new(CAERD)
        .args(["--demo", "--lockstep", "--frames", &frames.to_string()])
        .output()
        .expect("run caerd --demo");
    assert!(out.status.success(), "caerd --demo: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["schema"] == "caer.engagement.v2")
        .collect()
}

/// Lockstep: the demo (10 fps, 5 s intervals) is slower than real time in a debug build, yet
/// every frame is analysed, the intervals follow the frames' times (50 frames each, exactly
/// 5 s long), and a second run publishes the same figures (what the aarch64 check relies on).
#[test]
fn lockstep_analyses_every_frame_and_two_runs_publish_the_same_figures() {
    let first = lockstep_demo_records(60);
    assert_eq!(first.len(), 2, "{first:?}");
    assert_eq!(first[0]["frames_analysed"], 50);
    assert_eq!(first[1]["frames_analysed"], 10);
    for r in &first {
        assert_eq!(r["coverage"], 1.0, "{r}");
    }
    let time = |r: &Value, key: &str| {
        humantime::parse_rfc3339(r[key].as_str().expect("a time")).expect("RFC 3339")
    };
    let length = time(&first[0], "interval_end")
        .duration_since(time(&first[0], "interval_start"))
        .expect("end after start");
    assert_eq!(length, Duration::from_secs(5));
    assert_eq!(
        time(&first[0], "interval_end"),
        time(&first[1], "interval_start")
    );
    let figures = |records: Vec<Value>| -> Vec<Value> {
        records
            .into_iter()
            .map(|mut r| {
                let o = r.as_object_mut().expect("an object");
                for wall_clock in ["seq", "interval_start", "interval_end"] {
                    o.remove(wall_clock);
                }
                r
            })
            .collect()
    };
    assert_eq!(figures(first), figures(lockstep_demo_records(60)));
}

/// The generated classroom (960x540, 6 students, seed 5) with 3 still portraits on the wall,
/// through caerd with the BlazeFace detector, every frame in lockstep, 50-frame intervals:
/// with the default settings (second look, motion check, full looks every few frames) no
/// interval counts more students than the scene's script shows in it, so no portrait is
/// ever counted; and with both checks off and a full look every frame (the settings before
/// they existed) the portraits are counted, so the scene does put them in front of the
/// detector. The script, not caerd, gives the expected headcounts.
#[test]
fn still_portraits_on_the_wall_are_never_counted_as_students() {
    use caer::pipeline::source::generated::{GeneratedConfig, GeneratedSource};
    use caer::pipeline::source::FrameSource;

    const FRAMES: u64 = 200;
    const INTERVAL_FRAMES: u64 = 50;
    let generated = GeneratedConfig {
        width: 960,
        height: 540,
        students: std::num::NonZeroUsize::new(6).unwrap(),
        seed: 5,
        posters: 3,
        frames: Some(FRAMES),
        ..GeneratedConfig::default()
    };
    // Most students the script shows in a frame of each interval.
    let mut script = GeneratedSource::new(generated.clone()).unwrap();
    let mut shown = vec![0u64; (FRAMES / INTERVAL_FRAMES) as usize];
    while let Some(frame) = script.next_frame().unwrap() {
        let i = (frame.sequence / INTERVAL_FRAMES) as usize;
        shown[i] = shown[i].max(frame.annotations.unwrap().len() as u64);
    }
    let headcounts = |detect: &str| -> Vec<u64> {
        let broker = Broker::start();
        let subscriber = Subscriber::connect(&broker);
        let dir = tempfile::tempdir().unwrap();
        let source = format!(
            "[source]\nkind = \"generated\"\nfps = 10.0\nlockstep = true\nmax_frames = {FRAMES}\n\
             [source.generated]\nwidth = 960\nheight = 540\nstudents = 6\nseed = 5\nposters = 3\n"
        );
        let extra = format!(
            "{detect}\n[sampling]\nrate_hz = 10.0\nwindow_stride = 4\nqueue_frames = 64\n\n\
             [policy]\nprofile = \"presence\"\nmin_group_size = 2\n\n\
             [report]\ninterval_secs = 5\nstats_interval_secs = 1\n"
        );
        let config = dir.path().join("caerd.toml");
        let toml = config_toml(
            &dir.path().join("state"),
            Some(&broker.url()),
            &source,
            &extra,
        );
        std::fs::write(&config, toml).unwrap();
        let (_, messages) =
            run_to_the_end(dir.path(), &config, &subscriber, Duration::from_secs(600));
        let mut records: Vec<Value> = messages
            .iter()
            .filter(|m| m.topic.ends_with("/engagement"))
            .map(Message::json)
            .collect();
        records.sort_by_key(|r| r["seq"].as_u64());
        records
            .iter()
            .map(|r| r["students"].as_u64().expect("a headcount"))
            .collect()
    };

    let defaults = headcounts("[detect]\nkind = \"blaze\"\n");
    println!("portraits e2e: scripted {shown:?}, counted with the defaults {defaults:?}");
    assert_eq!(defaults.len(), shown.len(), "{defaults:?}");
    for (i, (&counted, &most)) in defaults.iter().zip(&shown).enumerate() {
        assert!(
            counted <= most,
            "interval {i}: {counted} students counted, the script shows at most {most}"
        );
    }
    // The students themselves are counted once they have been seen moving.
    assert!(defaults[1..].iter().all(|&n| n >= 3), "{defaults:?}");

    let unchecked = headcounts(
        "[detect]\nkind = \"blaze\"\nfull_every = 1\n[detect.blaze]\ntile_sizes = [224, 448, 896]\n\
         second_look_threshold = 0.0\n\n[track]\nmin_motion = 0.0\n",
    );
    println!("portraits e2e: counted without the checks {unchecked:?}");
    assert!(
        unchecked
            .iter()
            .zip(&shown)
            .any(|(&counted, &most)| counted > most),
        "without the checks the portraits should be counted: {unchecked:?} against {shown:?}"
    );
}
