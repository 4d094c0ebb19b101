#!/usr/bin/env bash
# The main job on built-in defaults, as far as it has landed: the model pipeline. Generates a
# seeded tiny CLIP-CAER checkpoint in the official format, loads it strictly, exports the full
# bundle (fp32, int8 QDQ, int8 dynamic, manifest) with its parity checks, into $1 (default a
# temporary folder), and prints the export report. (caerd, the daemon, has not landed yet.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
py=${CAER_VENV:-/opt/caer/venv}/bin/python
out=${1:-$(mktemp -d)}
mkdir -p "$out"
"$py" -m caer_export random-checkpoint --size tiny --seed 1 --out "$out/checkpoint.pt"
"$py" -m caer_export calibration-crops --out "$out/calibration"
"$py" -m caer_export export "$out/checkpoint.pt" --calibration "$out/calibration" --out "$out/bundle" --model-id clip-caer-tiny-demo
