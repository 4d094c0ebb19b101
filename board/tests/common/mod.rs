//! Fixtures shared by the integration tests.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;

use embedded_hal::digital::{ErrorKind, ErrorType, InputPin, OutputPin};

/// `board/` (this crate's root).
pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether an external tool is on `PATH`.
pub fn have_tool(name: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name} >/dev/null 2>&1"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Whether a missing tool must fail the test (CI sets `CAER_REQUIRE_TOOLS=1`) rather than skip
/// it with a note.
pub fn tools_required() -> bool {
    std::env::var_os("CAER_REQUIRE_TOOLS").is_some_and(|v| v == "1")
}

/// Skips (returns `false`, with a note) or fails when `tool` is missing.
pub fn require_tool(tool: &str, test: &str) -> bool {
    if have_tool(tool) {
        return true;
    }
    assert!(
        !tools_required(),
        "{test}: `{tool}` is not installed and CAER_REQUIRE_TOOLS=1"
    );
    eprintln!("{test}: skipped, `{tool}` is not installed (set CAER_REQUIRE_TOOLS=1 to fail)");
    false
}

/// Writes `contents` to `root/rel`, creating parent directories.
pub fn write(root: &Path, rel: &str, contents: &str) {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create fixture dir");
    }
    std::fs::write(&path, contents).expect("write fixture file");
}

/// The error of the fake pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FakePinError;

impl embedded_hal::digital::Error for FakePinError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

/// An output pin that tracks its physical level and can be told to fail its next write (the
/// level then stays as it was).
#[derive(Debug, Clone, Default)]
pub struct FakeOutput {
    pub high: Rc<Cell<Option<bool>>>,
    pub fail_next: Rc<Cell<bool>>,
}

impl ErrorType for FakeOutput {
    type Error = FakePinError;
}

impl OutputPin for FakeOutput {
    fn set_low(&mut self) -> Result<(), FakePinError> {
        self.write(false)
    }

    fn set_high(&mut self) -> Result<(), FakePinError> {
        self.write(true)
    }
}

impl FakeOutput {
    fn write(&mut self, high: bool) -> Result<(), FakePinError> {
        if self.fail_next.replace(false) {
            return Err(FakePinError);
        }
        self.high.set(Some(high));
        Ok(())
    }
}

/// An input pin reading a shared physical level; can be told to fail its next read.
#[derive(Debug, Clone, Default)]
pub struct FakeInput {
    pub high: Rc<Cell<bool>>,
    pub fail_next: Rc<Cell<bool>>,
}

impl ErrorType for FakeInput {
    type Error = FakePinError;
}

impl InputPin for FakeInput {
    fn is_high(&mut self) -> Result<bool, FakePinError> {
        if self.fail_next.replace(false) {
            return Err(FakePinError);
        }
        Ok(self.high.get())
    }

    fn is_low(&mut self) -> Result<bool, FakePinError> {
        self.is_high().map(|h| !h)
    }
}

/// A stand-in for the caerd package, built with `dpkg-deb --build` at `dir/caerd_test.deb`:
/// the files `install-jetson.sh` relies on at the package's paths (the real unit, a fake
/// binary, an example config, the GPU drop-in). The real package is built and checked by
/// `scripts/package.sh`.
pub fn fake_package(dir: &Path, config: &str) -> PathBuf {
    let tree = dir.join("caerd-package");
    let read = |rel: &str| {
        std::fs::read_to_string(crate_dir().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    };
    write(
        &tree,
        "DEBIAN/control",
        "Package: caerd\nVersion: 0.1.0-1\nArchitecture: all\nMaintainer: test <t@localhost>\n\
         Description: caerd test package\n",
    );
    write(&tree, "usr/bin/caerd", "#!/bin/sh\necho caerd\n");
    write(
        &tree,
        "usr/lib/systemd/system/caerd.service",
        &read("systemd/caerd.service"),
    );
    write(
        &tree,
        "usr/share/caer/jetson-gpu.conf",
        &read("systemd/caerd.service.d/jetson-gpu.conf"),
    );
    write(
        &tree,
        "usr/lib/sysusers.d/caer.conf",
        &read("systemd/caer.sysusers"),
    );
    write(
        &tree,
        "usr/lib/tmpfiles.d/caer.conf",
        &read("systemd/caer.tmpfiles"),
    );
    write(&tree, "etc/caer/caerd.toml", config);
    for (rel, mode) in [("usr/bin/caerd", 0o755), ("etc/caer/caerd.toml", 0o640)] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tree.join(rel), std::fs::Permissions::from_mode(mode))
            .expect("chmod");
    }
    let deb = dir.join("caerd_test.deb");
    let out = Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&tree)
        .arg(&deb)
        .output()
        .expect("run dpkg-deb");
    assert!(out.status.success(), "dpkg-deb --build: {out:?}");
    deb
}
