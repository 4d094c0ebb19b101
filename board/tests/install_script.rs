//! `board/deploy/install-jetson.sh`: dry runs and real runs into a fake root.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{crate_dir, fake_package, require_tool, write};

/// A fake release (a stand-in caerd package, a model bundle) and an empty fake root.
struct Fixture {
    _dir: tempfile::TempDir,
    release: PathBuf,
    deb: PathBuf,
    root: PathBuf,
    /// Stub commands that record any call: a dry run must not reach them.
    stubs: PathBuf,
}

/// Commands that change the system; under `--dry-run` the script must only print them.
const MUTATING: &[&str] = &[
    "install",
    "cp",
    "mv",
    "rm",
    "chmod",
    "ln",
    "systemctl",
    "systemd-sysusers",
    "systemd-tmpfiles",
    "udevadm",
];

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let release = dir.path().join("release");
        let root = dir.path().join("root");
        let stubs = dir.path().join("stubs");
        let deb = fake_package(dir.path(), "# example config\n");
        write(
            &release,
            "clip-caer/manifest.json",
            "{\"schema_version\": 1}\n",
        );
        write(&release, "clip-caer/image_encoder.onnx", "onnx v1\n");
        fs::create_dir_all(&root).expect("mkdir root");
        for name in MUTATING {
            let stub = format!(
                "#!/bin/sh\necho \"{name} $*\" >> '{}/called'\nexit 1\n",
                stubs.display()
            );
            write(&stubs, name, &stub);
            fs::set_permissions(stubs.join(name), fs::Permissions::from_mode(0o755))
                .expect("chmod");
        }
        Self {
            _dir: dir,
            release,
            deb,
            root,
            stubs,
        }
    }

    fn script_args(&self) -> Vec<String> {
        vec![
            "--deb".into(),
            self.deb.display().to_string(),
            "--models".into(),
            self.release.join("clip-caer").display().to_string(),
        ]
    }

    /// Runs the script; `stubbed` puts the recording stubs first on `PATH`.
    fn run(&self, extra: &[&str], stubbed: bool) -> Output {
        let mut cmd = Command::new("bash");
        cmd.arg(crate_dir().join("deploy/install-jetson.sh"))
            .args(self.script_args())
            .args(extra);
        if stubbed {
            let path = std::env::var("PATH").unwrap_or_default();
            cmd.env("PATH", format!("{}:{path}", self.stubs.display()));
        }
        cmd.output().expect("run bash")
    }

    fn root_arg(&self) -> String {
        self.root.display().to_string()
    }

    /// The stubs' calls, except dpkg-deb removing its own temporary directory (it runs `rm`
    /// from `PATH` when it reads the package's fields).
    fn stub_calls(&self) -> String {
        fs::read_to_string(self.stubs.join("called"))
            .unwrap_or_default()
            .lines()
            .filter(|l| !(l.starts_with("rm -rf -- ") && l.contains("/dpkg-deb.")))
            .map(|l| format!("{l}\n"))
            .collect()
    }
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Every path under `root` with its mode, symlink target or contents.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .display()
                .to_string();
            let meta = fs::symlink_metadata(&path).expect("metadata");
            let mode = meta.permissions().mode() & 0o7777;
            let what = if meta.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&path).expect("link").display())
            } else if meta.is_dir() {
                stack.push(path.clone());
                format!("dir {mode:o}")
            } else {
                let contents = fs::read_to_string(&path).expect("contents");
                format!("file {mode:o} {contents:?}")
            };
            out.insert(rel, what);
        }
    }
    out
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o7777
}

#[test]
fn dry_run_into_a_fake_root_prints_every_step_and_changes_nothing() {
    let fx = Fixture::new();
    let out = fx.run(&["--root", &fx.root_arg(), "--dry-run", "--gpu"], true);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let root = fx.root_arg();
    for expected in [
        format!("+ dpkg-deb -x {} \\<staging\\ dir\\>", fx.deb.display()),
        format!("+ cp -a \\<staging\\ dir\\>/. {root}/"),
        format!("+ install -D -m 0644 {root}/usr/share/caer/jetson-gpu.conf {root}/etc/systemd/system/caerd.service.d/jetson-gpu.conf"),
        format!("+ mv {root}/var/lib/caer/models/clip-caer.new {root}/var/lib/caer/models/clip-caer"),
        format!("+ ln -sfn /usr/lib/systemd/system/caerd.service {root}/etc/systemd/system/multi-user.target.wants/caerd.service"),
        "dry run: nothing is changed".to_owned(),
    ] {
        assert!(stdout.contains(&expected), "missing {expected:?}\n{}", text(&out));
    }
    // A fake root: no live-system steps.
    assert!(!stdout.contains("systemctl"), "{}", text(&out));
    assert!(!stdout.contains("+ systemd-sysusers"), "{}", text(&out));
    assert_eq!(fx.stub_calls(), "", "a dry run ran a command");
    assert!(snapshot(&fx.root).is_empty(), "the dry run wrote files");
}

#[test]
fn dry_run_on_the_live_system_lists_the_system_steps_and_runs_none() {
    let fx = Fixture::new();
    let out = fx.run(&["--dry-run", "--start"], true);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let steps: Vec<&str> = stdout.lines().filter(|l| l.starts_with("+ ")).collect();
    for expected in [
        format!(
            "+ apt-get install -y --no-install-recommends {}",
            fx.deb.display()
        )
        .as_str(),
        "+ systemd-tmpfiles --create caer.conf",
        "+ systemctl daemon-reload",
        "+ systemctl enable caerd.service",
        "+ systemctl restart caerd.service",
    ] {
        assert!(
            steps.iter().any(|s| s.starts_with(expected)),
            "missing {expected:?}\n{}",
            text(&out)
        );
    }
    // The package (its postinst creates the accounts) before anything is chowned to them, and
    // the unit before it is enabled.
    let position = |p: &str| steps.iter().position(|s| s.starts_with(p)).expect(p);
    assert!(position("+ apt-get install") < position("+ systemd-tmpfiles"));
    assert!(position("+ systemctl daemon-reload") < position("+ systemctl enable"));
    assert_eq!(fx.stub_calls(), "", "a dry run ran a command");
}

#[test]
fn real_run_into_a_fake_root_installs_everything_and_a_second_run_changes_nothing() {
    let fx = Fixture::new();
    let root = &fx.root;
    let out = fx.run(&["--root", &fx.root_arg()], false);
    assert!(out.status.success(), "{}", text(&out));

    let unit = root.join("usr/lib/systemd/system/caerd.service");
    assert_eq!(
        fs::read_to_string(&unit).expect("unit"),
        fs::read_to_string(crate_dir().join("systemd/caerd.service")).expect("source unit")
    );
    assert_eq!(mode(&root.join("usr/bin/caerd")), 0o755);
    let config = root.join("etc/caer/caerd.toml");
    assert_eq!(
        fs::read_to_string(&config).expect("config"),
        "# example config\n"
    );
    assert_eq!(mode(&config), 0o640);
    for rel in [
        "usr/lib/sysusers.d/caer.conf",
        "usr/lib/tmpfiles.d/caer.conf",
    ] {
        assert_eq!(mode(&root.join(rel)), 0o644, "{rel}");
    }
    let bundle = root.join("var/lib/caer/models/clip-caer");
    assert!(bundle.join("manifest.json").is_file());
    assert_eq!(mode(&bundle.join("image_encoder.onnx")), 0o640);
    let wants = root.join("etc/systemd/system/multi-user.target.wants/caerd.service");
    assert_eq!(
        fs::read_link(&wants).expect("enable symlink"),
        Path::new("/usr/lib/systemd/system/caerd.service")
    );
    assert!(
        !root.join("etc/systemd/system/caerd.service.d").exists(),
        "no --gpu"
    );

    // Second run: same tree, the edited config kept.
    fs::write(&config, "# edited on the device\n").expect("edit config");
    let before = snapshot(root);
    let out = fx.run(&["--root", &fx.root_arg()], false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("keeping the existing config"),
        "{}",
        text(&out)
    );
    assert_eq!(snapshot(root), before, "a second run changed the tree");

    // A new bundle replaces the old one as a whole (no stale files).
    fs::remove_file(fx.release.join("clip-caer/image_encoder.onnx")).expect("rm");
    write(&fx.release, "clip-caer/temporal_head.onnx", "head v2\n");
    let out = fx.run(&["--root", &fx.root_arg(), "--gpu"], false);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !bundle.join("image_encoder.onnx").exists(),
        "stale model file kept"
    );
    assert!(bundle.join("temporal_head.onnx").is_file());
    let leftovers: Vec<_> = fs::read_dir(root.join("var/lib/caer/models"))
        .expect("models dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(leftovers, ["clip-caer"]);
    assert!(root
        .join("etc/systemd/system/caerd.service.d/jetson-gpu.conf")
        .is_file());
}

#[test]
fn sysusers_file_creates_the_caer_account_in_the_fake_root() {
    if !require_tool("systemd-sysusers", "sysusers_file_creates_the_caer_account") {
        return;
    }
    let fx = Fixture::new();
    let out = fx.run(&["--root", &fx.root_arg()], false);
    assert!(out.status.success(), "{}", text(&out));
    let out = Command::new("systemd-sysusers")
        .arg(format!("--root={}", fx.root.display()))
        .output()
        .expect("run systemd-sysusers");
    assert!(out.status.success(), "{}", text(&out));
    let passwd = fs::read_to_string(fx.root.join("etc/passwd")).expect("passwd");
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("caer:") && l.ends_with(":/var/lib/caer:/usr/sbin/nologin")),
        "{passwd}"
    );
    let group = fs::read_to_string(fx.root.join("etc/group")).expect("group");
    for name in ["gpio", "video"] {
        assert!(
            group
                .lines()
                .any(|l| l.starts_with(&format!("{name}:")) && l.ends_with(":caer")),
            "caer not in {name}: {group}"
        );
    }
}

#[test]
fn bad_inputs_fail_with_a_clear_message() {
    let fx = Fixture::new();
    let root = fx.root_arg();

    let other = fx.release.join("other.deb");
    fs::write(&other, "not a package\n").expect("write");
    let mut cmd = Command::new("bash");
    let out = cmd
        .arg(crate_dir().join("deploy/install-jetson.sh"))
        .args(["--deb", &other.display().to_string(), "--root", &root])
        .args([
            "--models",
            &fx.release.join("clip-caer").display().to_string(),
        ])
        .output()
        .expect("run bash");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a Debian package"),
        "{}",
        text(&out)
    );

    fs::remove_file(fx.release.join("clip-caer/manifest.json")).expect("rm");
    let out = fx.run(&["--root", &root], false);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has no manifest.json"),
        "{}",
        text(&out)
    );
    assert!(snapshot(&fx.root).is_empty());

    let out = fx.run(&["--bogus"], false);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown option --bogus"));

    write(&fx.release, "clip-caer/manifest.json", "{}\n");
    let out = fx.run(&["--root", &root, "--start"], false);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--start works on the live system only"));
}

#[test]
fn shellcheck_finds_nothing_in_the_script() {
    if !require_tool("shellcheck", "shellcheck_finds_nothing_in_the_script") {
        return;
    }
    let out = Command::new("shellcheck")
        .arg(crate_dir().join("deploy/install-jetson.sh"))
        .output()
        .expect("run shellcheck");
    assert!(out.status.success(), "{}", text(&out));
}
