#!/usr/bin/env bash
# Runs every test of the project. Installs what the tests need first (scripts/setup.sh: Debian
# packages such as mosquitto and strace, the pinned Python environment).
#
#   1. formatting and lints of the Rust workspace (`-D warnings`), the GPU and V4L2 features
#      included (they compile here; they cannot run without a GPU or a camera);
#   2. the Rust tests with the default features (tract, the pure-Rust backend);
#   3. the Rust tests again with ONNX Runtime (`--features caer-firmware/ort`), loading the
#      library from the onnxruntime wheel of the Python environment (the fleet tool, which
#      does not use it, is left out);
#   4. the Python model pipeline's tests, except those marked `slow`;
#   5. the slow ones (the full-size ViT-B/32 export, ~1 GB of files): run only when steps 1-4
#      took less than CAER_SLOW_BUDGET_S seconds (default 3600; the CI limit is 90 min), or
#      always with CAER_SLOW=always, never with CAER_SLOW=never. A slow test that runs and
#      fails fails the script;
#   6. the Jetson build: caerd for aarch64 (scripts/aarch64.sh: Debian's Rust and cross
#      toolchain), its demo and the firmware's parity tests under qemu-user. The parity tests
#      (an 11-minute aarch64 build of the test binary) run only when the aarch64 check starts
#      before CAER_PARITY_BUDGET_S seconds (default 3000), or always with
#      CAER_AARCH64_PARITY=always, never with CAER_AARCH64_PARITY=never: on a slow machine
#      they would take the run past the CI limit (a run measured 80 min with them);
#   7. the Debian packages for amd64 and arm64 (scripts/package.sh): built, lintian, installed
#      on this machine (as root), verified, removed and purged.
#      CAER_CROSS=never skips 6 and 7 (e.g. on a machine without Debian's arm64 packages).
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

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all --check
step "cargo clippy (default features; ort, cuda, tensorrt, v4l2, gpio)"
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy --workspace --all-targets --locked \
  --features caer-firmware/tensorrt,caer-firmware/v4l2,caer-firmware/gpio,caer-calibrate/tensorrt -- -D warnings
step "cargo test (tract)"
cargo test --workspace --locked
step "cargo test (tract and ONNX Runtime: $ORT_DYLIB_PATH)"
# The fleet tool does not use ONNX Runtime: its tests ran in the step before.
cargo test --workspace --locked --exclude caer-fleet --features caer-firmware/ort,caer-calibrate/ort
step "pytest model-export (not slow)"
"$CAER_PYTHON" -m pytest model-export -q -p no:cacheprovider -m "not slow"
budget=${CAER_SLOW_BUDGET_S:-3600}
case "${CAER_SLOW:-if-time}" in
  never) run_slow=0 ;;
  always) run_slow=1 ;;
  *) run_slow=$((SECONDS < budget)) ;;
esac
if [ "$run_slow" = 1 ]; then
  step "pytest model-export (slow; ${SECONDS} s so far)"
  "$CAER_PYTHON" -m pytest model-export -q -p no:cacheprovider -m slow
else
  step "pytest model-export (slow): skipped, ${SECONDS} s so far (budget ${budget} s, CAER_SLOW=${CAER_SLOW:-if-time})"
fi

if [ "${CAER_CROSS:-always}" = never ]; then
  step "aarch64 and packages: skipped (CAER_CROSS=never)"
  exit 0
fi
step "aarch64: build caerd (${SECONDS} s so far)"
scripts/aarch64.sh build
step "aarch64: the demo and the parity tests under qemu-user"
parity_budget=${CAER_PARITY_BUDGET_S:-3000}
case "${CAER_AARCH64_PARITY:-if-time}" in
  never) parity=0 ;;
  always) parity=1 ;;
  *) parity=$((SECONDS < parity_budget)) ;;
esac
[ "$parity" = 1 ] || echo "aarch64 parity tests: skipped, ${SECONDS} s so far (budget ${parity_budget} s, CAER_AARCH64_PARITY=${CAER_AARCH64_PARITY:-if-time})"
CAER_AARCH64_PARITY=$parity scripts/aarch64.sh check
step "Debian packages: build (amd64, arm64) and check"
scripts/package.sh build
scripts/package.sh check
step "done in ${SECONDS} s"
