#!/usr/bin/env python3
"""Compares the engagement records of two caerd runs (JSON lines on stdout, e.g. `caerd --demo
--lockstep --frames N` built for x86-64 and for aarch64): the same number of records, every
count, flag and string identical, every other number within TOL. The payload rounds shares
and probabilities to 4 decimals, so two builds whose floats differ by 1e-7 may print values
one rounding step apart: TOL is that step plus 1e-6. Wall-clock fields (seq, interval times)
are not compared. Prints the largest difference seen; exits 1 on any mismatch.

Usage: compare-payloads.py A.jsonl B.jsonl
"""
import json
import sys

TOL = 1e-4 + 1e-6
WALL_CLOCK = {"seq", "interval_start", "interval_end"}


def records(path):
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{n}: not JSON: {e}")
            if str(value.get("schema", "")).startswith("caer.engagement."):
                out.append(value)
    return out


def compare(a, b, where, problems, worst):
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            problems.append(f"{where}: keys {sorted(a)} vs {sorted(b)}")
            return
        for k in a:
            if k not in WALL_CLOCK:
                compare(a[k], b[k], f"{where}.{k}", problems, worst)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            problems.append(f"{where}: {len(a)} vs {len(b)} items")
            return
        for i, (x, y) in enumerate(zip(a, b)):
            compare(x, y, f"{where}[{i}]", problems, worst)
    elif isinstance(a, bool) or isinstance(b, bool) or isinstance(a, int) and isinstance(b, int):
        if a != b:
            problems.append(f"{where}: {a} vs {b}")
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)):
        d = abs(a - b)
        if d > worst[0]:
            worst[0], worst[1] = d, where
        if d > TOL:
            problems.append(f"{where}: {a} vs {b} (differ by {d:.3g} > {TOL:.3g})")
    elif a != b:
        problems.append(f"{where}: {a!r} vs {b!r}")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    a, b = records(sys.argv[1]), records(sys.argv[2])
    if not a:
        sys.exit(f"{sys.argv[1]}: no engagement record")
    problems, worst = [], [0.0, "-"]
    if len(a) != len(b):
        problems.append(f"{len(a)} vs {len(b)} engagement records")
    for i, (x, y) in enumerate(zip(a, b)):
        compare(x, y, f"record {i}", problems, worst)
    print(f"{len(a)} records compared; largest float difference {worst[0]:.3g} at {worst[1]}")
    for p in problems:
        print("mismatch:", p)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
