//! The thermal guard on fake sysfs trees.

use std::path::Path;

use caer_board::thermal::{SkipReason, ThermalConfig, ThermalGuard, ThrottleChange};
use caer_board::ThermalError;

use crate::common::write;

fn zone(root: &Path, n: u32, kind: &str, temp: &str) {
    write(root, &format!("thermal_zone{n}/type"), &format!("{kind}\n"));
    write(root, &format!("thermal_zone{n}/temp"), temp);
}

fn guard(root: &Path) -> ThermalGuard {
    ThermalGuard::new(ThermalConfig {
        root: root.to_path_buf(),
        ..ThermalConfig::default()
    })
    .expect("default thresholds are valid")
}

#[test]
fn reports_the_hottest_zone_with_its_type_and_ignores_pmic_die() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    // A Jetson Nano's zones, numbered so that 10 sorts after 2.
    zone(root, 0, "AO-therm", "41500\n");
    zone(root, 1, "CPU-therm", "45500\n");
    zone(root, 2, "GPU-therm", "52000\n");
    zone(root, 3, "PMIC-Die", "100000\n");
    zone(root, 10, "thermal-fan-est", "44100\n");
    write(root, "cooling_device0/type", "pwm-fan\n");

    let reading = guard(root).poll().expect("poll");
    assert_eq!(reading.max_celsius, 52.0);
    assert_eq!(reading.zone.zone, "thermal_zone2");
    assert_eq!(reading.zone.kind.as_deref(), Some("GPU-therm"));
    assert!(!reading.throttled);
    assert_eq!(reading.sampling_factor, 1.0);
    assert_eq!(reading.change, None);
    let names: Vec<&str> = reading.zones.iter().map(|z| z.zone.as_str()).collect();
    assert_eq!(
        names,
        [
            "thermal_zone0",
            "thermal_zone1",
            "thermal_zone2",
            "thermal_zone10"
        ]
    );
    assert_eq!(reading.skipped.len(), 1);
    assert_eq!(reading.skipped[0].zone, "thermal_zone3");
    assert_eq!(reading.skipped[0].reason, SkipReason::Ignored);
}

#[test]
fn unreadable_garbage_and_implausible_zones_are_skipped_with_a_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    zone(root, 0, "CPU-therm", "not a number\n");
    // `temp` is a directory: reading it fails (an unreadable file would not be, as root).
    write(root, "thermal_zone1/type", "GPU-therm\n");
    std::fs::create_dir_all(root.join("thermal_zone1/temp")).expect("mkdir");
    // No `temp` and no `type` at all.
    std::fs::create_dir_all(root.join("thermal_zone2")).expect("mkdir");
    zone(root, 3, "bogus-sensor", "-274000\n");
    zone(root, 4, "SOC-therm", "61250\n");

    let reading = guard(root).poll().expect("one zone is usable");
    assert_eq!(reading.max_celsius, 61.25);
    assert_eq!(reading.zone.zone, "thermal_zone4");

    let reasons: Vec<(&str, &SkipReason)> = reading
        .skipped
        .iter()
        .map(|s| (s.zone.as_str(), &s.reason))
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert_eq!(
        reasons[0],
        (
            "thermal_zone0",
            &SkipReason::Garbage {
                content: "not a number".to_owned()
            }
        )
    );
    assert!(matches!(
        reasons[1],
        ("thermal_zone1", SkipReason::Unreadable { .. })
    ));
    assert!(matches!(
        reasons[2],
        ("thermal_zone2", SkipReason::Unreadable { .. })
    ));
    assert_eq!(reading.skipped[2].kind, None);
    assert_eq!(
        reasons[3],
        (
            "thermal_zone3",
            &SkipReason::Implausible {
                millidegrees: -274_000
            }
        )
    );
    let shown = reading.skipped[0].to_string();
    assert_eq!(
        shown,
        "thermal_zone0 (CPU-therm) holds no temperature: \"not a number\""
    );
}

#[test]
fn no_usable_zone_is_an_error_listing_each_zone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    zone(root, 0, "CPU-therm", "\u{fffd}garbage");
    zone(root, 1, "PMIC-Die", "100000");
    let err = guard(root).poll().expect_err("nothing usable");
    let ThermalError::NoUsableZone { skipped, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(skipped.len(), 2);
    let message = err.to_string();
    assert!(message.contains(&root.display().to_string()), "{message}");
    assert!(
        message.contains("thermal_zone0 (CPU-therm) holds no temperature"),
        "{message}"
    );
    assert!(
        message.contains("thermal_zone1 (PMIC-Die) ignored by config"),
        "{message}"
    );
}

#[test]
fn missing_root_and_empty_root_are_clear_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-such-dir");
    let err = guard(&missing).poll().expect_err("missing root");
    assert!(matches!(err, ThermalError::ListZones { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-dir"), "{err}");

    write(dir.path(), "cooling_device0/type", "pwm-fan\n");
    let err = guard(dir.path()).poll().expect_err("no zones");
    assert!(matches!(err, ThermalError::NoZones { .. }), "{err:?}");
    assert!(
        err.to_string().contains("no thermal_zone* directories"),
        "{err}"
    );
}

#[test]
fn throttles_above_the_threshold_and_restores_below_it_with_hysteresis() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    let mut guard = ThermalGuard::new(ThermalConfig {
        root: root.to_path_buf(),
        throttle_above_celsius: 80.0,
        hysteresis_celsius: 5.0,
        throttled_sampling_factor: 0.25,
        ..ThermalConfig::default()
    })
    .expect("valid");
    zone(root, 1, "CPU-therm", "40000");

    let mut poll_at = |millidegrees: i32| {
        zone(root, 0, "GPU-therm", &format!("{millidegrees}\n"));
        guard.poll().expect("poll")
    };
    let r = poll_at(79_999);
    assert!(!r.throttled && r.sampling_factor == 1.0 && r.change.is_none());
    let r = poll_at(80_000);
    assert_eq!(r.change, Some(ThrottleChange::Throttled));
    assert!(r.throttled && r.sampling_factor == 0.25);
    // Inside the hysteresis band: stays throttled.
    let r = poll_at(76_000);
    assert!(r.throttled && r.change.is_none());
    let r = poll_at(75_000);
    assert!(r.throttled, "75.0 is not below the restore point");
    let r = poll_at(74_999);
    assert_eq!(r.change, Some(ThrottleChange::Restored));
    assert!(!r.throttled && r.sampling_factor == 1.0);
    let r = poll_at(79_000);
    assert!(
        !r.throttled,
        "inside the band after restoring: stays restored"
    );
    let r = poll_at(90_000);
    assert!(r.throttled);

    // A failed poll leaves the state as it was.
    zone(root, 0, "GPU-therm", "garbage");
    zone(root, 1, "CPU-therm", "garbage");
    assert!(guard.poll().is_err());
    assert!(guard.is_throttled());
    assert_eq!(guard.sampling_factor(), 0.25);
}

#[test]
fn reading_serializes_for_the_stats_payload() {
    let dir = tempfile::tempdir().expect("temp dir");
    zone(dir.path(), 0, "CPU-therm", "48000");
    let reading = guard(dir.path()).poll().expect("poll");
    let json = serde_json::to_value(&reading).expect("serialize");
    assert_eq!(json["max_celsius"], 48.0);
    assert_eq!(json["zone"]["kind"], "CPU-therm");
    assert_eq!(json["throttled"], false);
    assert_eq!(json["sampling_factor"], 1.0);
}

#[test]
fn config_defaults_apply_and_unknown_fields_are_refused() {
    let config: ThermalConfig =
        serde_json::from_str(r#"{"throttle_above_celsius": 90}"#).expect("partial config");
    assert_eq!(config.throttle_above_celsius, 90.0);
    assert_eq!(config.root, Path::new("/sys/class/thermal"));
    assert_eq!(config.ignore_zone_types, ["PMIC-Die"]);
    let err = serde_json::from_str::<ThermalConfig>(r#"{"throttle_above": 90}"#)
        .expect_err("unknown field");
    assert!(err.to_string().contains("unknown field"), "{err}");
}
