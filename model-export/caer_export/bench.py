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
    session = _session(path, threads)
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


QUANT_FILES = ("image_encoder", "image_encoder_int8_dynamic", "image_encoder_int8")


def add_quant_table_parser(sub) -> None:
    p = sub.add_parser("quant-table", help="the int8 table: ms/image, speed-up vs fp32 and min embedding cosine vs fp32 "
                       "of the bundle's encoders, measured in one run (rounds interleaved)")
    p.add_argument("bundle", type=Path)
    p.add_argument("--calibration", type=Path, default=None,
                   help="preprocessed crops for the cosine (default: the bundle's self-check input and random pixels)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=10)
    p.set_defaults(run=run_quant_table)


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_quant_table(args: argparse.Namespace) -> None:
    manifest = json.loads((args.bundle / "manifest.json").read_text())
    size = manifest["input_size"]
    if args.calibration is not None:
        from .__main__ import _load_crops

        crops = _load_crops(args.calibration, size)
    else:
        crops = np.random.default_rng(1).random((8, 3, size, size), dtype=np.float32)
    entries = [manifest["files"][key] for key in QUANT_FILES]
    sessions = [_session(args.bundle / e["path"], args.threads) for e in entries]
    reference = sessions[0].run(["embedding"], {"pixels": crops})[0]
    from .export import min_cosine

    cosines = [min_cosine(s.run(["embedding"], {"pixels": crops})[0], reference) for s in sessions]
    pixels = np.random.default_rng(0).random((args.batch, 3, size, size), dtype=np.float32)
    for s in sessions:
        s.run(None, {"pixels": pixels})  # warm-up
    runs: list[list[float]] = [[] for _ in sessions]
    # Round-robin, so that a busy neighbour or a clock change weighs on every file alike.
    for _ in range(args.rounds):
        for i, s in enumerate(sessions):
            t = time.perf_counter()
            s.run(None, {"pixels": pixels})
            runs[i].append((time.perf_counter() - t) * 1000.0 / args.batch)
    ms = [statistics.median(r) for r in runs]
    print(f"onnxruntime {ort.__version__}, batch {args.batch}, {args.threads} threads, median of {args.rounds} rounds")
    print("| encoder | ms/image | vs fp32 | min cosine vs fp32 |\n| --- | ---: | ---: | ---: |")
    for e, m, c in zip(entries, ms, cosines):
        print(f"| {e['precision']} (`{e['path']}`) | {m:.1f} | {ms[0] / m:.2f} | {c:.5f} |")
    for e, m, c in zip(entries, ms, cosines):
        print(json.dumps({"file": e["path"], "precision": e["precision"], "batch": args.batch, "threads": args.threads,
                          "ms_per_image": round(m, 3), "speedup_vs_fp32": round(ms[0] / m, 3), "min_cosine": round(c, 6)}))
