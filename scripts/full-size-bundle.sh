#!/usr/bin/env bash
# Writes a full-size ViT-B/32 CLIP-CAER bundle with seeded random weights (never committed:
# about 1 GB with its checkpoint) for benchmarks and the full-size export check.
#   scripts/full-size-bundle.sh [OUT_DIR]      (default: build/vit-b-32-random)
# Needs the model-export environment (see .ci/run or README: /opt/caer/venv).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build/vit-b-32-random}
py=${CAER_PYTHON:-/opt/caer/venv/bin/python}
mkdir -p "$out"
if [ -f "$out/bundle/manifest.json" ]; then
  echo "full-size bundle already at $out/bundle"; exit 0
fi
"$py" -m caer_export random-checkpoint --size vit-b-32 --seed 1 --out "$out/checkpoint.pt"
"$py" -m caer_export calibration-crops --out "$out/calibration" --count 16
"$py" -m caer_export export "$out/checkpoint.pt" --calibration "$out/calibration" \
  --out "$out/bundle" --model-id clip-caer-vit-b-32-random | tee "$out/export-report.json"
