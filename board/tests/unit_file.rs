//! `board/systemd/caerd.service`: required directives, and `systemd-analyze verify`.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use caer_board::systemd::Watchdog;

use crate::common::{crate_dir, require_tool};

/// `(section, key, value)` for every assignment, in order.
fn parse_unit(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else if let Some((key, value)) = line.split_once('=') {
            out.push((
                section.clone(),
                key.trim().to_owned(),
                value.trim().to_owned(),
            ));
        }
    }
    out
}

fn values<'a>(unit: &'a [(String, String, String)], section: &str, key: &str) -> Vec<&'a str> {
    unit.iter()
        .filter(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v.as_str())
        .collect()
}

fn unit() -> Vec<(String, String, String)> {
    parse_unit(&fs::read_to_string(crate_dir().join("systemd/caerd.service")).expect("unit"))
}

#[test]
fn unit_has_the_required_service_settings_and_hardening() {
    let unit = unit();
    for (key, value) in [
        ("Type", "notify"),
        ("WatchdogSec", "30"),
        ("Restart", "on-failure"),
        ("RestartSec", "5"),
        ("User", "caer"),
        ("Group", "caer"),
        ("SupplementaryGroups", "video gpio"),
        ("StateDirectory", "caer"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "true"),
        ("PrivateTmp", "true"),
        ("NoNewPrivileges", "true"),
        ("DevicePolicy", "closed"),
        ("ExecStart", "/usr/bin/caerd --config /etc/caer/caerd.toml"),
    ] {
        assert_eq!(values(&unit, "Service", key), [value], "{key}");
    }
    let devices = values(&unit, "Service", "DeviceAllow");
    assert_eq!(devices, ["char-video4linux rw", "char-gpiochip rw"]);
    // Nothing else writable: no ReadWritePaths beyond the state directory.
    assert!(values(&unit, "Service", "ReadWritePaths").is_empty());
    assert_eq!(values(&unit, "Install", "WantedBy"), ["multi-user.target"]);
}

#[test]
fn the_watchdog_pings_at_half_the_units_watchdog_sec() {
    let unit = unit();
    let secs: u64 = values(&unit, "Service", "WatchdogSec")[0]
        .parse()
        .expect("WatchdogSec in seconds");
    let wd = Watchdog::with_timeout(Some(Duration::from_secs(secs)));
    assert_eq!(wd.interval(), Some(Duration::from_secs(15)));
}

/// Installs into a fake root (with `--gpu`) and copies the host's system units in, so that
/// `systemd-analyze verify --root` finds the binary, the drop-in and the targets.
fn installed_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    let release = dir.path().join("release");
    let deb = crate::common::fake_package(dir.path(), "\n");
    crate::common::write(&release, "bundle/manifest.json", "{}\n");
    fs::create_dir_all(&root).expect("mkdir");
    let out = Command::new("bash")
        .arg(crate_dir().join("deploy/install-jetson.sh"))
        .arg("--root")
        .arg(&root)
        .arg("--deb")
        .arg(&deb)
        .arg("--models")
        .arg(release.join("bundle"))
        .arg("--gpu")
        .output()
        .expect("run install script");
    assert!(out.status.success(), "{out:?}");
    let host_units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .find(|d| Path::new(d).join("sysinit.target").exists())
        .expect("the host's systemd units (package systemd)");
    fs::create_dir_all(root.join("usr/lib/systemd")).expect("mkdir");
    let out = Command::new("cp")
        .arg("-R")
        .arg(format!("{host_units}/."))
        .arg(root.join("usr/lib/systemd/system"))
        .output()
        .expect("cp");
    assert!(out.status.success(), "{out:?}");
    dir
}

#[test]
fn systemd_analyze_verifies_the_installed_unit_and_drop_in() {
    if !require_tool(
        "systemd-analyze",
        "systemd_analyze_verifies_the_installed_unit",
    ) {
        return;
    }
    let dir = installed_root();
    let root = dir.path().join("root");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("/usr/lib/systemd/system/caerd.service")
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Lines about system-call names this host's libseccomp does not know are not ours.
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains("Failed to parse system call"))
        .collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "systemd-analyze verify: {:?}\n{stderr}",
        out.status.code()
    );

    // The hardening keeps the exposure score at or below 2.0 ("OK").
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20", "--no-pager"])
        .arg(format!("--root={}", root.display()))
        .arg("/usr/lib/systemd/system/caerd.service")
        .output()
        .expect("run systemd-analyze security");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let overall = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or("(no overall line)");
    assert!(out.status.success(), "exposure above 2.0: {overall}");
    eprintln!("systemd-analyze security: {overall}");
}
