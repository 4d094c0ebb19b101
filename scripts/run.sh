#!/usr/bin/env bash
# The main job on built-in defaults: caerd's demo. A generated classroom (no camera), the
# committed tiny fixture model on tract, no broker: status, engagement and stats payloads are
# printed as JSON lines on stdout for 30 s (pass e.g. `--duration 2m` to change that).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/build-deps.sh
if [ $# -eq 0 ]; then set -- --duration 30s; fi
exec cargo run --release --locked -p caer-firmware --bin caerd -- --demo "$@"
