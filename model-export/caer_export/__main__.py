"""Command line: `python -m caer_export {export,fixture,parity-clips,fetch-detector,random-checkpoint,calibration-crops,train,bench-ort} --help`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _load_crops(directory: Path, size: int) -> np.ndarray:
    """Calibration crops: the user's preprocessed 224x224 crops (PNG or JPEG) in a folder."""
    from PIL import Image

    from .preprocess import to_tensor

    files = sorted(p for p in Path(directory).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise SystemExit(f"error: {directory}: no PNG or JPEG calibration crops")
    crops = []
    for f in files:
        img = Image.open(f)
        if img.size != (size, size):
            raise SystemExit(f"error: {f}: calibration crop is {img.size[0]}x{img.size[1]}, expected {size}x{size}")
        crops.append(to_tensor(img).numpy())
    return np.stack(crops)


def cmd_export(args: argparse.Namespace) -> None:
    from .checkpoint import load_model, sha256_file
    from .export import export_bundle

    t = time.perf_counter()
    model = load_model(args.checkpoint)
    crops = _load_crops(args.calibration, model.dims.image_size)
    source = {"checkpoint": Path(args.checkpoint).name, "checkpoint_sha256": sha256_file(args.checkpoint)}
    report = export_bundle(model, args.out, crops, args.model_id, source)
    print(json.dumps({
        "bundle": str(args.out),
        "fp32_max_logit_diff": report.fp32_max_logit_diff,
        "int8_min_cosine": report.int8_min_cosine,
        "seconds": {**report.seconds, "total": time.perf_counter() - t},
        "bytes": {p.name: p.stat().st_size for p in sorted(Path(args.out).iterdir())},
    }, indent=2))


def cmd_fixture(args: argparse.Namespace) -> None:
    from .fixture import write_fixture

    write_fixture(args.out)
    print(f"wrote the tiny fixture bundle and goldens to {args.out}")


def cmd_parity_clips(args: argparse.Namespace) -> None:
    from .parity_clips import write_parity_clips

    reference = write_parity_clips(args.out)
    print(f"wrote {len(reference['clips'])} clips and reference.json to {args.out}")


def cmd_fetch_detector(args: argparse.Namespace) -> None:
    from .detector import fetch_wheel

    print(f"face detector source: {fetch_wheel(args.cache)} (sha256 checked)")


def cmd_random_checkpoint(args: argparse.Namespace) -> None:
    from .checkpoint import save_checkpoint
    from .model import ClipCaer, ModelDims
    from .weights import randomize

    tiny = args.size == "tiny"
    model = randomize(ClipCaer(ModelDims.tiny() if tiny else ModelDims.vit_b_32()), args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, args.out, include_dims=tiny)
    print(f"wrote a {args.size} random CLIP-CAER checkpoint (seed {args.seed}) to {args.out}")


def cmd_calibration_crops(args: argparse.Namespace) -> None:
    from .fixture import synthetic_clip
    from .preprocess import context_crop, face_crop

    rng = np.random.default_rng(args.seed)
    frames, boxes, body = synthetic_clip(rng)
    args.out.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames[: args.count]):
        face_crop(frame, boxes[i]).save(args.out / f"face_{i:03d}.png")
        context_crop(frame, body).save(args.out / f"context_{i:03d}.png")
    print(f"wrote {2 * min(args.count, len(frames))} synthetic calibration crops to {args.out}")


def cmd_requantize(args: argparse.Namespace) -> None:
    from .export import requantize_dynamic

    manifest = json.loads((args.bundle / "manifest.json").read_text())
    crops = _load_crops(args.calibration, manifest["input_size"])
    cosine = requantize_dynamic(args.bundle, crops)
    print(json.dumps({"bundle": str(args.bundle), "int8_dynamic_min_cosine_vs_fp32": cosine}))
    if (args.bundle / "manifest.json.sig").exists():
        print("note: the manifest changed; sign it again (caer-fleet bundle sign)", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="caer_export", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("export", help="checkpoint -> model bundle (ONNX fp32, int8 QDQ, int8 dynamic, manifest)")
    p.add_argument("checkpoint", type=Path, help="CLIP-CAER checkpoint: as the official main.py saves it, {'state_dict': ...}, or a bare state dict (633 keys; loaded without running code)")
    p.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    p.add_argument("--calibration", type=Path, required=True,
                   help="folder of representative preprocessed 224x224 crops (PNG/JPEG) for static int8")
    p.add_argument("--model-id", default="clip-caer-vit-b-32", help="model id written to the manifest")
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("fixture", help="write the tiny test bundle and parity goldens")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[2] / "tests" / "golden")
    p.set_defaults(run=cmd_fixture)

    p = sub.add_parser("parity-clips", help="write clips as image files in the RAER layout, with the fixture model's "
                       "official-faithful logits (reference.json) for the bench tool's whole-clip parity test")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(run=cmd_parity_clips)

    p = sub.add_parser("fetch-detector", help="download the face detector's pinned source wheel into the cache (hash-checked)")
    p.add_argument("--cache", type=Path, default=None, help="cache directory (default: $CAER_CACHE or /opt/caer/cache)")
    p.set_defaults(run=cmd_fetch_detector)

    p = sub.add_parser("random-checkpoint", help="write a checkpoint in the official format with seeded random weights")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--size", choices=["vit-b-32", "tiny"], default="vit-b-32")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=cmd_random_checkpoint)

    p = sub.add_parser("calibration-crops", help="write synthetic preprocessed crops (for tests and demos only)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--count", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=cmd_calibration_crops)

    p = sub.add_parser("requantize", help="rewrite a bundle's dynamic int8 encoder from its fp32 encoder with this "
                       "version's quantization (checked against fp32 on the crops; no checkpoint needed)")
    p.add_argument("bundle", type=Path)
    p.add_argument("--calibration", type=Path, required=True, help="folder of preprocessed crops for the cosine check")
    p.set_defaults(run=cmd_requantize)

    from .bench import add_bench_parser, add_quant_table_parser
    from .train import add_train_parser

    add_train_parser(sub)
    add_bench_parser(sub)
    add_quant_table_parser(sub)

    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (ValueError, RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
