//! The V4L2 camera source against a real kernel driver: Linux's `vivid` virtual camera in
//! a qemu VM, in software emulation (TCG: KVM is not dependable on CI machines and test
//! hosts; a VM with a usable /dev/kvm that is not nested-capable hangs at boot).
//!
//! The VM boots Debian's kernel (unpacked by scripts/setup.sh under
//! `$CAER_VM_KERNEL_DIR`, default /opt/caer/vm/linux) with an initramfs built by
//! tests/vm/make-initramfs.sh around this package's `caer-vivid-check` binary, which
//! captures YUYV and NV12 at two sizes, loses the camera mid-stream and checks that the same
//! `V4l2Source` reopens it once the module is back (see src/bin/caer-vivid-check.rs). Its
//! `VIVID-CHECK` lines come over the serial console; the result also comes through qemu's
//! isa-debug-exit device (exit status 3: passed, 5: failed). A missing qemu, busybox or
//! kernel fails the test with a message saying to run scripts/setup.sh.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use caer_e2e::{find_program, repo_root};

const CHECK: &str = env!("CARGO_BIN_EXE_caer-vivid-check");
/// Boot (about 5 to 10 s under TCG) plus the check (about 10 s), with room for a busy host.
const TIMEOUT: Duration = Duration::from_secs(300);

fn kernel_dir() -> PathBuf {
    std::env::var_os("CAER_VM_KERNEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/caer/vm/linux"))
}

fn vmlinuz(dir: &Path) -> PathBuf {
    let found = std::fs::read_dir(dir.join("boot"))
        .ok()
        .and_then(|entries| {
            entries.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
            })
        });
    found.unwrap_or_else(|| {
        panic!(
            "no kernel (boot/vmlinuz-*) under {}: run scripts/setup.sh (it unpacks Debian's \
             linux-image package there; CAER_VM_KERNEL_DIR overrides the directory)",
            dir.display()
        )
    })
}

#[test]
fn v4l2_source_streams_from_vivid_and_survives_its_removal() {
    let qemu = find_program("qemu-system-x86_64").unwrap_or_else(|| {
        panic!(
            "qemu-system-x86_64 not found: run scripts/setup.sh (Debian package qemu-system-x86)"
        )
    });
    let kernel_dir = kernel_dir();
    let kernel = vmlinuz(&kernel_dir);
    let tmp = tempfile::tempdir().expect("temporary directory");
    let initrd = tmp.path().join("initramfs.cpio.gz");
    let made = Command::new("bash")
        .arg(repo_root().join("tests/vm/make-initramfs.sh"))
        .args([kernel_dir.as_os_str(), CHECK.as_ref(), initrd.as_os_str()])
        .status()
        .expect("run tests/vm/make-initramfs.sh");
    assert!(
        made.success(),
        "tests/vm/make-initramfs.sh failed ({made}); its message is above (run scripts/setup.sh?)"
    );

    let serial = tmp.path().join("serial.log");
    let log = std::fs::File::create(&serial).expect("serial log");
    let started = Instant::now();
    let mut vm = Command::new(&qemu)
        .args(["-M", "pc", "-accel", "tcg", "-m", "512", "-smp", "1"])
        .args(["-nographic", "-no-reboot", "-net", "none"])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("serial log"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", qemu.display()));
    let status = loop {
        if let Some(status) = vm.try_wait().expect("wait for qemu") {
            break Some(status);
        }
        if started.elapsed() > TIMEOUT {
            let _ = vm.kill();
            let _ = vm.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let elapsed = started.elapsed();
    let output = String::from_utf8_lossy(&std::fs::read(&serial).expect("read serial log"))
        .replace('\r', "");
    let lines: Vec<&str> = output
        .lines()
        .filter(|l| l.contains("VIVID-CHECK") || l.contains("VIVID-VM") || l.contains(" WARN "))
        .collect();
    eprintln!(
        "qemu ran {elapsed:.1?}, exit {status:?}:\n{}",
        lines.join("\n")
    );
    let context = format!("serial console ({}):\n{output}", serial.display());
    let Some(status) = status else {
        panic!("the VM did not finish in {TIMEOUT:?}; {context}");
    };
    let failures: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("VIVID-CHECK fail"))
        .collect();
    assert!(
        failures.is_empty(),
        "checks failed: {failures:#?}\n{context}"
    );
    for want in [
        "VIVID-CHECK ok YUYV 640x360 5 frames",
        "VIVID-CHECK ok NV12 640x360 5 frames",
        "VIVID-CHECK ok NV12 1280x720 5 frames",
        "VIVID-CHECK ok loss reported",
        "VIVID-CHECK ok lost camera closed",
        "VIVID-CHECK ok reopen while the module is gone fails",
        "VIVID-CHECK ok reopened by itself: 5 frames",
        "VIVID-CHECK ok stats",
        "VIVID-CHECK done ok",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(want)),
            "no {want:?} line; {context}"
        );
    }
    // isa-debug-exit: qemu exits with (value << 1) | 1; the init writes 1 on success.
    assert_eq!(
        status.code(),
        Some(3),
        "qemu exit status {status}, expected 3 (the VM's init reports 1 on success); {context}"
    );
}
