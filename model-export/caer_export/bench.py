"""ONNX Runtime timing of a bundle's image encoders: the comparison for the firmware's benches.

Prints one JSON line per (file, batch): ms per image, median of `--iterations` runs after a
warm-up, with the thread count pinned so that it matches the Rust side's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def time_encoder(path: Path, batch: int, threads: int, iterations: int, size: int) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
    session.run(None, {"pixels": pixels})  # warm-up
    runs = []
    for _ in range(iterations):
        t = time.perf_counter()
        session.run(None, {"pixels": pixels})
        runs.append((time.perf_counter() - t) * 1000.0 / batch)
    return statistics.median(runs)


def add_bench_parser(sub) -> None:
    p = sub.add_parser("bench-ort", help="ms/image of the bundle's image encoders on ONNX Runtime (CPU)")
    p.add_argument("bundle", type=Path)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: all cores)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--iterations", type=int, default=5)
    p.add_argument("--files", nargs="+", default=["image_encoder", "image_encoder_int8_dynamic", "image_encoder_int8"])
    p.set_defaults(run=run_bench)


def run_bench(args: argparse.Namespace) -> None:
    manifest = json.loads((args.bundle / "manifest.json").read_text())
    for key in args.files:
        entry = manifest["files"][key]
        for batch in args.batches:
            ms = time_encoder(args.bundle / entry["path"], batch, args.threads, args.iterations, manifest["input_size"])
            print(json.dumps({"runtime": f"onnxruntime {ort.__version__}", "file": entry["path"],
                              "precision": entry["precision"], "batch": batch, "threads": args.threads,
                              "ms_per_image": round(ms, 3)}), flush=True)
