"""Compares a regenerated fixture with the committed one, within stated tolerances.

Float kernels differ between CPUs (and between ONNX Runtime's code paths on them), so a
fixture written again on another machine differs in the last bits of its floats. This module
says what "the same fixture" means instead of comparing bytes:

- structure exactly: the same files; in JSON the same keys, list lengths and strings; in ONNX
  files the same graph (nodes, their order, names, inputs, outputs and attributes) and the same
  initializer names, dtypes and shapes;
- floats within `FLOAT_RTOL` (1e-5) relative plus `FLOAT_ATOL` (5e-5) absolute (measured between two CPUs:
  1.6e-7 on the baked text matrix, 1.1e-5 on the logit goldens; a real change of the model or
  of its preprocessing moves them by 1e-3 or more);
- integer tensors (int8/uint8 quantized weights, zero points) within one quantization step,
  since a scale that moved by its last bit can move a rounded weight by one;
- images: decoded pixels within one grey level (the generated frames go through float math);
- measured figures in the manifest's `checks` (a max difference, a min cosine) within
  `CHECK_ATOL`: they are measurements, not model outputs; the int8 cosines within
  `INT8_COSINE_ATOL`, since they run ONNX Runtime's int8 kernels, which it picks by the CPU's
  features (AVX2, AVX-512, VNNI) and which do not all saturate and round alike (ONNX Runtime's
  quantization guide warns of u8s8 saturation without VNNI): the QDQ encoder's min cosine is
  0.99946 in the committed fixture and measured 0.99764 on an AMD EPYC with AVX2 and no VNNI,
  where every model file matched within its tolerance.
  The export itself refuses a cosine under its threshold on any CPU;
- `sha256` and `bytes` entries of the manifest are not compared (they follow the files), but
  the committed manifest must describe the committed files.

Every difference is reported with its path, so a failure says what moved and by how much.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from PIL import Image

FLOAT_RTOL = 1e-5
FLOAT_ATOL = 5e-5
# Tensors of the ONNX files (weights, scales, the baked text matrix) are compared more tightly:
# they are computed once, not run through a network.
TENSOR_RTOL = 1e-5
TENSOR_ATOL = 1e-6
INT_STEP = 1
PIXEL_STEP = 1
CHECK_ATOL = 1e-3
INT8_COSINE_ATOL = 1e-2
IGNORED_KEYS = {"sha256", "bytes"}


def _close(a: float, b: float, rtol: float, atol: float) -> bool:
    return math.isclose(a, b, rel_tol=rtol, abs_tol=atol)


def compare_json(ours, theirs, where: str, problems: list[str], rtol=FLOAT_RTOL, atol=FLOAT_ATOL) -> None:
    """Structure and strings exactly, numbers within tolerance; appends to `problems`."""
    if isinstance(theirs, dict):
        if not isinstance(ours, dict) or set(ours) != set(theirs):
            problems.append(f"{where}: keys {sorted(ours) if isinstance(ours, dict) else type(ours).__name__} != {sorted(theirs)}")
            return
        for key in theirs:
            if key in IGNORED_KEYS:
                continue
            # Measured figures of the export checks get their own tolerance.
            sub_atol = {"checks": CHECK_ATOL, "int8_min_cosine": INT8_COSINE_ATOL}.get(key, atol)
            compare_json(ours[key], theirs[key], f"{where}.{key}", problems, rtol, sub_atol)
    elif isinstance(theirs, list):
        if not isinstance(ours, list) or len(ours) != len(theirs):
            problems.append(f"{where}: list of {len(ours) if isinstance(ours, list) else type(ours).__name__}, expected {len(theirs)}")
            return
        for i, (a, b) in enumerate(zip(ours, theirs)):
            compare_json(a, b, f"{where}[{i}]", problems, rtol, atol)
    elif isinstance(theirs, (bool, str, bytes)) or theirs is None:
        if ours != theirs:
            problems.append(f"{where}: {ours!r} != {theirs!r}")
    elif isinstance(theirs, int) and isinstance(ours, int):
        if ours != theirs:
            problems.append(f"{where}: {ours} != {theirs}")
    elif isinstance(theirs, (int, float)) and isinstance(ours, (int, float)) and not isinstance(ours, bool):
        if not _close(float(ours), float(theirs), rtol, atol):
            problems.append(f"{where}: {ours!r} differs from {theirs!r} by {abs(ours - theirs):.3g}")
    else:
        problems.append(f"{where}: {ours!r} != {theirs!r}")


def _attributes(node) -> list:
    out = []
    for attr in node.attribute:
        value = onnx.helper.get_attribute_value(attr)
        if isinstance(value, onnx.TensorProto):
            value = numpy_helper.to_array(value).tolist()
        elif isinstance(value, onnx.GraphProto):
            value = [n.op_type for n in value.node]
        out.append((attr.name, value))
    return out


def compare_tensor(ours: np.ndarray, theirs: np.ndarray, where: str, problems: list[str]) -> None:
    if ours.dtype != theirs.dtype or ours.shape != theirs.shape:
        problems.append(f"{where}: {ours.dtype}{list(ours.shape)} != {theirs.dtype}{list(theirs.shape)}")
        return
    if ours.size == 0:
        return
    if np.issubdtype(theirs.dtype, np.floating):
        bad = ~np.isclose(ours, theirs, rtol=TENSOR_RTOL, atol=TENSOR_ATOL)
        if bad.any():
            diff = float(np.abs(ours.astype(np.float64) - theirs.astype(np.float64)).max())
            problems.append(f"{where}: {int(bad.sum())} of {theirs.size} floats out of tolerance (max diff {diff:.3g})")
    elif np.issubdtype(theirs.dtype, np.integer):
        diff = int(np.abs(ours.astype(np.int64) - theirs.astype(np.int64)).max())
        if diff > INT_STEP:
            problems.append(f"{where}: integers differ by up to {diff} (more than {INT_STEP} quantization step)")
    elif not np.array_equal(ours, theirs):
        problems.append(f"{where}: {theirs.dtype} values differ")


def compare_onnx(ours: Path, theirs: Path, where: str, problems: list[str]) -> None:
    a, b = onnx.load(ours), onnx.load(theirs)
    ga, gb = a.graph, b.graph
    nodes_a = [(n.op_type, n.name, list(n.input), list(n.output), n.domain) for n in ga.node]
    nodes_b = [(n.op_type, n.name, list(n.input), list(n.output), n.domain) for n in gb.node]
    if nodes_a != nodes_b:
        problems.append(f"{where}: graph nodes differ ({len(nodes_a)} vs {len(nodes_b)})")
        return
    for na, nb in zip(ga.node, gb.node):
        attrs_a, attrs_b = _attributes(na), _attributes(nb)
        sub: list[str] = []
        compare_json([list(x) for x in attrs_a], [list(x) for x in attrs_b], f"{where}:{nb.name}", sub, TENSOR_RTOL, TENSOR_ATOL)
        problems.extend(sub)
    for kind in ("input", "output"):
        ia = [onnx.helper.printable_value_info(v) for v in getattr(ga, kind)]
        ib = [onnx.helper.printable_value_info(v) for v in getattr(gb, kind)]
        if ia != ib:
            problems.append(f"{where}: graph {kind}s differ: {ia} != {ib}")
    if [(o.domain, o.version) for o in a.opset_import] != [(o.domain, o.version) for o in b.opset_import]:
        problems.append(f"{where}: opsets differ")
    inits_a = {t.name: t for t in ga.initializer}
    inits_b = {t.name: t for t in gb.initializer}
    if set(inits_a) != set(inits_b):
        problems.append(f"{where}: initializers differ: {sorted(set(inits_a) ^ set(inits_b))[:10]}")
        return
    for name, tb in inits_b.items():
        compare_tensor(numpy_helper.to_array(inits_a[name]), numpy_helper.to_array(tb), f"{where}:{name}", problems)


def compare_image(ours: Path, theirs: Path, where: str, problems: list[str]) -> None:
    a = np.asarray(Image.open(ours).convert("RGB"), dtype=np.int16)
    b = np.asarray(Image.open(theirs).convert("RGB"), dtype=np.int16)
    if a.shape != b.shape:
        problems.append(f"{where}: image {a.shape} != {b.shape}")
    elif int(np.abs(a - b).max()) > PIXEL_STEP:
        problems.append(f"{where}: pixels differ by up to {int(np.abs(a - b).max())} levels")


def manifest_describes_files(bundle: Path, problems: list[str]) -> None:
    """Every file entry of the committed manifest has the sha256 and size of the file beside it."""
    manifest = json.loads((bundle / "manifest.json").read_text())

    def walk(node, where):
        if isinstance(node, dict):
            if "path" in node and "sha256" in node:
                data = (bundle / node["path"]).read_bytes()
                if hashlib.sha256(data).hexdigest() != node["sha256"]:
                    problems.append(f"{where}: sha256 of {node['path']} does not match the file")
                if "bytes" in node and node["bytes"] != len(data):
                    problems.append(f"{where}: {node['path']} has {len(data)} bytes, manifest says {node['bytes']}")
            for key, value in node.items():
                walk(value, f"{where}.{key}")

    walk(manifest, "manifest.json")


def compare_fixture(ours: Path, theirs: Path) -> list[str]:
    """All differences between two fixture folders beyond the tolerances above."""
    problems: list[str] = []
    files_a = sorted(p.relative_to(ours) for p in ours.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(theirs) for p in theirs.rglob("*") if p.is_file())
    if files_a != files_b:
        return [f"file lists differ: {sorted(set(map(str, files_a)) ^ set(map(str, files_b)))}"]
    for rel in files_b:
        a, b, where = ours / rel, theirs / rel, str(rel)
        if rel.suffix == ".onnx":
            compare_onnx(a, b, where, problems)
        elif rel.suffix == ".json":
            compare_json(json.loads(a.read_text()), json.loads(b.read_text()), where, problems)
        elif rel.suffix == ".png":
            compare_image(a, b, where, problems)
        elif a.read_bytes() != b.read_bytes():
            problems.append(f"{where}: contents differ")
    return problems
