#!/usr/bin/env bash
# Runs every test of the project: formatting and lints, the Rust workspace (parity with the
# Python reference, the daemon against a real mosquitto), and the Python model pipeline,
# including the full-size ViT-B/32 export. Installs what it needs first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CAER_PYTHON=${CAER_VENV:-/opt/caer/venv}/bin/python

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
"$CAER_PYTHON" -m pytest model-export -q -p no:cacheprovider
