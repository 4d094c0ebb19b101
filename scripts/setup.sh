#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine (idempotent, quick when done before):
# the Debian packages listed below, the Python environment of model-export (pinned in
# model-export/requirements.lock) at $CAER_VENV, and the face detector's source wheel in
# $CAER_CACHE (default /opt/caer/cache; see docs/bundle.md). The Rust toolchain (cargo with
# clippy and rustfmt, Rust >= 1.85) must already be there.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${CAER_VENV:-/opt/caer/venv}
vm_kernel=${CAER_VM_KERNEL_DIR:-/opt/caer/vm/linux}

# mosquitto: the real broker of the end-to-end tests; strace: the privacy test; systemd
# (systemd-analyze) and shellcheck: the board's unit file and install script tests;
# libclang-dev: the v4l crate's bindings (feature v4l2); python3-venv: the Python environment;
# qemu-system-x86, busybox-static, cpio, xz-utils: the vivid VM test (tests/tests/vivid.rs);
# ffmpeg: the video file source and its tests; postgresql: the fleet tool's database tests
# (the tests start their own server; as root they run it as the `postgres` user the package
# creates). What the build itself needs: build-deps.sh.
apt_packages=(mosquitto strace systemd shellcheck libclang-dev pkg-config python3-venv
  qemu-system-x86 busybox-static cpio xz-utils ffmpeg postgresql)

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found: install Rust >= 1.85 with clippy and rustfmt (https://rustup.rs)" >&2
  exit 1
fi
scripts/build-deps.sh
# The aarch64 (Jetson) build and the Debian packages: Debian's Rust with its arm64 standard
# library, the cross toolchain, qemu-user; cargo-deb and lintian.
scripts/aarch64.sh deps
scripts/package.sh deps
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep "install ok installed" >/dev/null || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The vivid VM test's kernel: Debian's linux-image package (the one linux-image-amd64 depends
# on), unpacked at $vm_kernel, not installed; only boot/ and the media driver modules are kept.
if [ ! -f "$vm_kernel/.package" ]; then
  kernel_pkg=$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[^ ]*\)$/\1/p' | sed -n 1p)
  if [ -z "$kernel_pkg" ]; then
    echo "setup: cannot resolve the kernel package of linux-image-amd64 (apt-get update?)" >&2
    exit 1
  fi
  echo "setup: unpacking $kernel_pkg at $vm_kernel (the vivid VM test's kernel)"
  download=$(mktemp -d)
  (cd "$download" && apt-get download -qq "$kernel_pkg")
  rm -rf "$vm_kernel"
  mkdir -p "$vm_kernel"
  dpkg-deb -x "$download"/*.deb "$vm_kernel"
  rm -rf "$download"
  for dir in "$vm_kernel"/lib/modules/*/kernel; do
    find "$dir" -mindepth 1 -maxdepth 1 ! -name drivers -exec rm -rf {} +
    find "$dir/drivers" -mindepth 1 -maxdepth 1 ! -name media -exec rm -rf {} +
  done
  echo "$kernel_pkg" > "$vm_kernel/.package"
fi

want=$(sha256sum model-export/requirements.lock | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  echo "setup: creating the Python environment at $venv (torch is large: a few minutes)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -r model-export/requirements.lock
  echo "$want" > "$venv/.requirements.sha256"
fi
"$venv/bin/pip" install -q --no-deps --no-build-isolation -e model-export

# Every bundle export converts the face detector from the pinned mediapipe wheel: fetch it once
# into the cache (pip download; reused when there; sha256-checked either way).
"$venv/bin/python" -m caer_export fetch-detector >/dev/null
