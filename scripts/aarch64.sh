#!/usr/bin/env bash
# The Jetson (aarch64) build, offline, and its checks under qemu-user.
#
#   scripts/aarch64.sh deps    installs the Debian packages below (root; quick when done before)
#   scripts/aarch64.sh build   caerd for aarch64, release, with the Jetson's features (V4L2
#                              camera, GPIO privacy pins, ONNX Runtime with TensorRT and CUDA;
#                              $CAER_AARCH64_FEATURES) -> $CAER_AARCH64_TARGET_DIR/
#                              aarch64-unknown-linux-gnu/release/caerd
#   scripts/aarch64.sh check   under qemu-user: `caerd --demo --lockstep` publishes the same
#                              figures as the x86-64 build (tract; ONNX Runtime with
#                              CAER_AARCH64_ORT=1), and the firmware's parity and face
#                              detection tests pass
#
# rustup cannot fetch another target's standard library here, Debian can: Debian 12's Rust 1.96
# (rustc-web, cargo-web) with its arm64 standard library (libstd-rust-web-dev:arm64, multiarch),
# the GNU cross toolchain (gcc-aarch64-linux-gnu: the linker, and the C parts of ring and of the
# bundled libjpeg-turbo) and qemu-user-static. Debian's cargo builds into a target directory of
# its own ($CAER_AARCH64_TARGET_DIR, default target/aarch64) so that it never invalidates the
# host toolchain's build.
#
# qemu: the binary runs on the multiarch arm64 glibc (libc6:arm64, pulled in by the standard
# library package) found through the host's root, NOT with `-L /usr/aarch64-linux-gnu`: that
# mixes the cross package's ld.so (glibc 2.36-8cross1) with the multiarch libc.so.6 (2.36-9+deb12uN),
# two builds whose internal structures differ, and the first pthread_create then loops forever
# in the stack cache (the 100 % CPU "hang" right after rt_sigaction(33), glibc's setxid
# handler that pthread_create installs first; SIGTERM then only sets the stop flag that the
# stuck main thread never reads). The CPU model is
# cortex-a76 (ARMv8.2-A with fp16 and dot product, as the Orin's Cortex-A78AE): qemu's default
# `max` model runs this binary about ten times slower.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly TARGET=aarch64-unknown-linux-gnu
target_dir=${CAER_AARCH64_TARGET_DIR:-target/aarch64}
features=${CAER_AARCH64_FEATURES:-v4l2,gpio,tensorrt}
qemu=(qemu-aarch64-static -cpu cortex-a76)
packages=(rustc-web cargo-web libstd-rust-web-dev:arm64 gcc-aarch64-linux-gnu
  libc6-dev-arm64-cross binutils-aarch64-linux-gnu qemu-user-static libstdc++6:arm64)

# Debian's toolchain, never rustup's (its standard library has no aarch64 target here).
debian_cargo() {
  env -u RUSTUP_TOOLCHAIN RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc \
    CARGO_TARGET_DIR="$target_dir" \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="${qemu[*]}" \
    /usr/bin/cargo "$@"
}

deps() {
  local missing=()
  dpkg --print-foreign-architectures | grep -qx arm64 || missing+=(arm64-architecture)
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "aarch64: as root, install: dpkg --add-architecture arm64; apt-get install ${packages[*]}" >&2
    exit 1
  fi
  echo "aarch64: installing ${missing[*]}"
  dpkg --add-architecture arm64
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
}

build() {
  deps
  /usr/bin/rustc --version
  debian_cargo build --release --locked --target "$TARGET" -p caer-firmware --bin caerd \
    --features "$features"
  file "$target_dir/$TARGET/release/caerd"
}

# The aarch64 libonnxruntime of the pinned onnxruntime wheel (manylinux aarch64, from PyPI with
# the venv's pip), unpacked once into the cache; prints its path.
ort_library() {
  local version cache py
  version=$(sed -n 's/^onnxruntime==//p' model-export/requirements.lock)
  cache=${CAER_CACHE:-/opt/caer/cache}/onnxruntime-$version-aarch64
  if ! compgen -G "$cache/libonnxruntime.so.*" >/dev/null; then
    local venv=${CAER_VENV:-/opt/caer/venv}
    py=$("$venv/bin/python" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
    mkdir -p "$cache/wheel"
    "$venv/bin/pip" download -q --no-deps --only-binary=:all: --python-version "$py" \
      --platform manylinux_2_28_aarch64 -d "$cache/wheel" "onnxruntime==$version" >&2
    "$venv/bin/python" - "$cache" <<'PY'
import glob, os, sys, zipfile
cache = sys.argv[1]
(wheel,) = glob.glob(os.path.join(cache, "wheel", "*.whl"))
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if os.path.basename(name).startswith("libonnxruntime"):
            with open(os.path.join(cache, os.path.basename(name)), "wb") as f:
                f.write(z.read(name))
PY
  fi
  compgen -G "$cache/libonnxruntime.so.*" | sort | tail -1
}

check() {
  deps
  local bin=$target_dir/$TARGET/release/caerd
  [ -x "$bin" ] || { echo "aarch64: no $bin: run scripts/aarch64.sh build first" >&2; exit 1; }
  local frames=${CAER_AARCH64_DEMO_FRAMES:-100} work
  work=$(mktemp -d)
  trap 'rm -rf -- "$work"' RETURN

  # One x86-64 build with ONNX Runtime compiled in: without ORT_DYLIB_PATH the demo's backend
  # choice (auto) falls back to tract, with it ONNX Runtime runs (the demo bundle's int8). The
  # test profile's build (dependencies optimised): in lockstep the figures do not depend on
  # speed. The build of scripts/test.sh's ONNX Runtime pass, so that after it this builds
  # nothing (a plain `cargo build` unifies other features and took 6.5 min in CI).
  scripts/ort-tests.sh --no-run
  # ONNX Runtime too, with CAER_AARCH64_ORT=1: the aarch64 libonnxruntime of the pinned wheel.
  # Off by default: under qemu-user 7.2 it dies at start (SIGSEGV, address 0) in its CPU
  # detection (cpuinfo), which reads the host's x86 /proc/cpuinfo that qemu-user passes through.
  local backends=(tract) host_ort='' aarch64_ort=''
  if [ "${CAER_AARCH64_ORT:-0}" = 1 ]; then
    backends+=(ort-cpu)
    host_ort=$(scripts/ort-library.sh)
    aarch64_ort=$(ort_library)
  fi
  for backend in "${backends[@]}"; do
    echo "== the demo on $backend, $frames frames in lockstep: x86-64, then aarch64 (qemu ${qemu[*]:1})"
    local host_env=(env -u ORT_DYLIB_PATH) arm_env=(env -u ORT_DYLIB_PATH)
    if [ "$backend" = ort-cpu ]; then
      host_env=(env "ORT_DYLIB_PATH=$host_ort")
      arm_env=(env "ORT_DYLIB_PATH=$aarch64_ort")
    fi
    local start=$SECONDS
    "${host_env[@]}" target/debug/caerd --demo --lockstep --frames "$frames" >"$work/x86_64-$backend.jsonl"
    echo "x86-64: $((SECONDS - start)) s"
    start=$SECONDS
    "${arm_env[@]}" "${qemu[@]}" "$bin" --demo --lockstep --frames "$frames" >"$work/aarch64-$backend.jsonl"
    echo "aarch64 under qemu: $((SECONDS - start)) s"
    for run in x86_64 aarch64; do
      grep -q "\"backend\":\"$backend\"" "$work/$run-$backend.jsonl" ||
        { echo "aarch64: the $run run did not run on $backend" >&2; exit 1; }
    done
    python3 scripts/compare-payloads.py "$work/x86_64-$backend.jsonl" "$work/aarch64-$backend.jsonl"
  done

  # scripts/test.sh sets CAER_AARCH64_PARITY=0 when it runs late (its time budget).
  if [ "${CAER_AARCH64_PARITY:-1}" = 0 ]; then
    echo "== the firmware's parity tests on aarch64: skipped (CAER_AARCH64_PARITY=0)"
    return 0
  fi
  echo "== the firmware's parity and face detection tests on aarch64 (tract), under qemu"
  start=$SECONDS
  debian_cargo test --release --locked --target "$TARGET" -p caer-firmware --test tests \
    -- parity:: detect:: --skip portraits_on_the_wall --skip the_default_detector_finds --nocapture
  echo "parity tests (build and run): $((SECONDS - start)) s"
}

case "${1:-}" in
  deps) deps ;;
  build) build ;;
  check) check ;;
  *)
    echo "usage: scripts/aarch64.sh deps|build|check" >&2
    exit 2
    ;;
esac
