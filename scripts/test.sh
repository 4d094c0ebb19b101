#!/usr/bin/env bash
# Runs every test of the project. Installs what the tests need first (scripts/setup.sh: Debian
# packages such as mosquitto and strace, the pinned Python environment).
#
#   1. formatting and lints of the Rust workspace (`-D warnings`), the GPU and V4L2 features
#      included (they compile here; they cannot run without a GPU or a camera);
#   2. the Rust tests with the default features (tract, the pure-Rust backend);
#   3. the tests of the crates that run a model (caer-firmware, caer-calibrate) again with
#      ONNX Runtime (`--features caer-firmware/ort`), loading the library from the onnxruntime
#      wheel of the Python environment (the fleet and V4L2 VM tests do not touch the
#      inference backend: they ran in the step before);
#   4. the Python model pipeline's tests, except those marked `slow`;
#   5. the slow ones (the full-size ViT-B/32 export, ~1 GB of files);
#   6. the Jetson build: caerd for aarch64 (scripts/aarch64.sh: Debian's Rust and cross
#      toolchain), its demo and the firmware's parity tests under qemu-user;
#   7. the Debian packages for amd64 and arm64 (scripts/package.sh): built, lintian, installed
#      on this machine (as root), verified, removed and purged.
#
# Time: the CI limit is 90 minutes on 2 cores, and steps 5-7 are cold release builds and
# emulation. Each of them starts only when the time spent so far plus its own cost (below)
# stays under CAER_TIME_LIMIT_S (default 4800 s: the CI limit less a margin); a step left out
# says so, with the numbers. CAER_SLOW, CAER_AARCH64_PARITY and CAER_CROSS (the aarch64 build
# and the packages) override the decisions with always or never; CAER_CROSS=never also suits a
# machine without Debian's arm64 packages. Every step prints the seconds so far.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
venv=${CAER_VENV:-/opt/caer/venv}
export CAER_PYTHON=$venv/bin/python
# The ONNX Runtime shared library that the `ort` feature loads at run time.
if [ -z "${ORT_DYLIB_PATH:-}" ]; then
  ORT_DYLIB_PATH=$(scripts/ort-library.sh)
  export ORT_DYLIB_PATH
fi
# The board tests fail, instead of skipping, when systemd-analyze or shellcheck is missing.
export CAER_REQUIRE_TOOLS=1

step() { printf '\n== %s (%s s so far)\n' "$*" "$SECONDS"; }

# The cost of the optional steps, cold on 2 cores (a fresh clone), rounded up from a run of
# 4,401 s in all: the full-size export test 56 s; the aarch64 release build 1,149 s (more than
# 1,760 s on a busy CI machine) and its demo under qemu 290 s; the parity tests' aarch64 build
# and run 1,020 s; the packages (the amd64 release build, lintian, the install test) estimated
# from the aarch64 build.
limit=${CAER_TIME_LIMIT_S:-4800}
readonly slow_cost=300 aarch64_cost=2100 parity_cost=1200 packages_cost=1500
# decide NAME OVERRIDE COST_S: 1 when the step runs (the time so far plus COST_S stays under
# the limit); says why when it does not.
decide() {
  case "$2" in
    never) echo 0 ;;
    always) echo 1 ;;
    *)
      if ((SECONDS + $3 < limit)); then echo 1; else
        echo "$1: left out: ${SECONDS} s so far + ~$3 s would pass CAER_TIME_LIMIT_S=${limit}" >&2
        echo 0
      fi
      ;;
  esac
}

step "cargo fmt --check"
cargo fmt --all --check
step "cargo clippy (default features; ort, cuda, tensorrt, v4l2, gpio)"
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy --workspace --all-targets --locked \
  --features caer-firmware/tensorrt,caer-firmware/v4l2,caer-firmware/gpio,caer-calibrate/tensorrt -- -D warnings
step "cargo test (tract)"
cargo test --workspace --locked
step "cargo test of the crates that run a model (tract and ONNX Runtime: $ORT_DYLIB_PATH)"
scripts/ort-tests.sh
step "pytest model-export (not slow)"
"$CAER_PYTHON" -m pytest model-export -q -p no:cacheprovider -m "not slow"
# In this order, each only when it fits: the slow test, the Jetson build (the product's first
# target) and its checks, the packages (arm64 only when the Jetson build ran).
if [ "$(decide "pytest -m slow" "${CAER_SLOW:-if-time}" "$slow_cost")" = 1 ]; then
  step "pytest model-export (slow)"
  "$CAER_PYTHON" -m pytest model-export -q -p no:cacheprovider -m slow
fi
arches=(amd64)
if [ "$(decide "aarch64 build" "${CAER_CROSS:-if-time}" "$aarch64_cost")" = 1 ]; then
  step "aarch64: build caerd"
  scripts/aarch64.sh build
  step "aarch64: the demo and the parity tests under qemu-user"
  parity=$(decide "aarch64 parity tests" "${CAER_AARCH64_PARITY:-if-time}" "$parity_cost")
  CAER_AARCH64_PARITY=$parity scripts/aarch64.sh check
  arches+=(arm64)
fi
if [ "$(decide "Debian packages" "${CAER_CROSS:-if-time}" "$packages_cost")" = 1 ]; then
  step "Debian packages: build (${arches[*]}) and check"
  scripts/package.sh build "${arches[@]}"
  scripts/package.sh check "${arches[@]}"
fi
step "done"
