#!/usr/bin/env bash
# The ONNX Runtime test pass, in one place: scripts/test.sh runs it, scripts/aarch64.sh check
# builds it (`--no-run`) for the x86-64 caerd it compares against, and the two must be the same
# build or the second rebuilds. The whole workspace is selected, so that dependencies'
# features unify as in the tract pass and only what links ONNX Runtime is built again
# (selecting two packages rebuilt half the dependencies: 10 min); the targets are the unit
# tests and the `tests` and `known_answer` binaries, which leaves out the fleet and V4L2 VM
# tests (they do not touch the inference backend). Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --workspace --locked --features caer-firmware/ort,caer-calibrate/ort \
  --lib --test tests --test known_answer "$@"
