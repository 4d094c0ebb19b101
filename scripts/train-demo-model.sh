#!/usr/bin/env bash
# Trains the demo model (model-export/demo/bundle, used by `caerd --demo`) from scratch on CPU:
# 1. `caer-calibrate synth`: 500/100/150 clips of the synthetic classroom in the RAER layout;
# 2. `caer_export train --recipe scratch` on it, and the face-only variant the same way (the
#    context stream fed the face box instead of the context box, as DFER-CLIP);
# 3. `caer_export export` of the full model (int8 calibrated on crops of the training clips);
# 4. `caer-calibrate eval` of both on the held-out test clips (fp32 on tract; int8 too when
#    ONNX Runtime is found).
# About 15 minutes on 2 cores. Usage: scripts/train-demo-model.sh [WORK_DIR] (default a temp dir).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${CAER_VENV:-/opt/caer/venv}
work=${1:-$(mktemp -d)}
seed=1
mkdir -p "$work"
cargo build --release --locked -p caer-calibrate --features ort
calibrate=target/release/caer-calibrate
data="$work/synth"
[ -f "$data/test.txt" ] || "$calibrate" synth --out "$data" --train 500 --val 100 --test 150 --frames 20 --seed "$seed"

train() { # OUT BODIES
  "$venv/bin/python" -m caer_export train --train-list "$data/train.txt" --val-list "$data/val.txt" \
    --face-boxes "$data/faces.json" --body-boxes "$data/$2" --random-init --size tiny \
    --recipe scratch --epochs 5 --seed 0 --out "$1" --quiet
}
[ -f "$work/full/best.pt" ] || train "$work/full" bodies.json
[ -f "$work/face-only/best.pt" ] || train "$work/face-only" bodies-face-only.json

# Static int8 calibration: 64 preprocessed face and context crops of training clips.
"$venv/bin/python" - "$data" "$work/calibration" <<'PY'
import sys
from pathlib import Path
from caer_export.dataset import ClipDataset, read_boxes, read_list
data, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
clips = read_list(data / "train.txt", data)[::16]
ds = ClipDataset(clips, read_boxes(data / "faces.json"), read_boxes(data / "bodies.json"), False)
for i in range(len(ds)):
    face, context, _ = ds[i]
    for kind, t in (("face", face[0]), ("context", context[0])):
        array = (t.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        __import__("PIL.Image").Image.fromarray(array).save(out / f"{i:03d}-{kind}.png")
PY
rm -rf "$work/full/bundle"
"$venv/bin/python" -m caer_export export "$work/full/best.pt" --out "$work/full/bundle" \
  --calibration "$work/calibration" --model-id clip-caer-tiny-demo-full

# Held-out test clips: the exported bundle with caer-calibrate (tract fp32; ONNX Runtime int8)...
ort=$(scripts/ort-library.sh 2>/dev/null || true)
backends=(tract)
[ -n "$ort" ] && backends+=(ort-cpu-int8)
for backend in "${backends[@]}"; do
  "$calibrate" eval --bundle "$work/full/bundle" --list "$data/test.txt" --face-boxes "$data/faces.json" \
    --body-boxes "$data/bodies.json" --backend "$backend" --ort-library "${ort:-none}" --no-progress \
    --out "$work/eval-full-$backend" > "$work/eval-full-$backend.log"
  echo "full model, $backend: $(grep -o '"uar": [0-9.]*' "$work/eval-full-$backend/report.json" | head -1)"
done
# ...and both checkpoints with the training code's evaluation (PyTorch fp32): the face-only
# variant is not exported (its int8 encoder misses the export's 0.99 embedding-cosine check).
for model in full face-only; do
  bodies=bodies.json
  [ "$model" = face-only ] && bodies="bodies-face-only.json"
  echo "$model (PyTorch): $("$venv/bin/python" - "$work/$model/best.pt" "$data" "$bodies" <<'PY'
import json, sys
from pathlib import Path
import torch
from caer_export.checkpoint import load_model
from caer_export.dataset import ClipDataset, read_boxes, read_list
from caer_export.train import evaluate
checkpoint, data, bodies = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
clips = ClipDataset(read_list(data / "test.txt", data), read_boxes(data / "faces.json"), read_boxes(data / bodies), False)
r = evaluate(load_model(checkpoint), torch.utils.data.DataLoader(clips, batch_size=8))
c = r["confusion"]
r["recall"] = [round(100.0 * c[i][i] / max(1, sum(c[i])), 1) for i in range(5)]
print(json.dumps({k: r[k] for k in ("uar", "recall", "confusion")}))
PY
)"
done
echo "bundle: $work/full/bundle (copy to model-export/demo/bundle to publish it)"
