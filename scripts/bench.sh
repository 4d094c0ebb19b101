#!/usr/bin/env bash
# Benchmarks of the image encoder on the full-size ViT-B/32 bundle (random weights; make it
# once with scripts/full-size-bundle.sh), all in one run so that the figures compare:
#   tract fp32, ONNX Runtime fp32 and dynamic int8 through the Rust backends (batch 1 and 8),
#   ONNX Runtime's Python package on the same files and thread count,
#   SeetaFace face detection on a 1920x1080 frame,
#   the classroom benchmark: the real caerd on a generated classroom of 30 students, per
#   backend and detector, the highest per-student sampling rate it sustains.
# Environment: CAER_BENCH_BUNDLE (default build/vit-b-32-random/bundle), CAER_BENCH_THREADS
# (default: every core), ORT_DYLIB_PATH (default: the library of the onnxruntime wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${CAER_VENV:-/opt/caer/venv}
# Absolute: cargo runs benches in the package folder.
CAER_BENCH_BUNDLE=$(realpath -m "${CAER_BENCH_BUNDLE:-build/vit-b-32-random/bundle}")
export CAER_BENCH_BUNDLE
export CAER_BENCH_THREADS=${CAER_BENCH_THREADS:-$(nproc)}
if [ ! -f "$CAER_BENCH_BUNDLE/manifest.json" ]; then
  echo "bench: no bundle at $CAER_BENCH_BUNDLE; run scripts/full-size-bundle.sh first" >&2
  exit 2
fi
if [ -z "${ORT_DYLIB_PATH:-}" ]; then
  ORT_DYLIB_PATH=$(scripts/ort-library.sh)
  export ORT_DYLIB_PATH
fi
echo "== $(date -u +%FT%TZ) $(nproc) cores, $CAER_BENCH_THREADS threads, bundle $CAER_BENCH_BUNDLE"
echo "== Rust: tract fp32, ONNX Runtime fp32 and int8 (caer backends)"
cargo bench --locked -p caer-firmware --features ort --bench backends
echo "== Python: onnxruntime $("$venv/bin/python" -c 'import onnxruntime; print(onnxruntime.__version__)') on the same files"
"$venv/bin/python" -m caer_export bench-ort "$CAER_BENCH_BUNDLE" --threads "$CAER_BENCH_THREADS"
echo "== the int8 table (ONNX Runtime, batch 8)"
# The crops scripts/full-size-bundle.sh wrote beside the bundle, when there.
crops=()
[ -d "$(dirname "$CAER_BENCH_BUNDLE")/calibration" ] && crops=(--calibration "$(dirname "$CAER_BENCH_BUNDLE")/calibration")
"$venv/bin/python" -m caer_export quant-table "$CAER_BENCH_BUNDLE" --threads "$CAER_BENCH_THREADS" "${crops[@]}"
echo "== face detection"
cargo bench --locked -p caer-firmware --features ort --bench detect
echo "== the classroom benchmark (caerd, 30 students, 1920x1080)"
cargo bench --locked -p caer-firmware --features ort --bench classroom
