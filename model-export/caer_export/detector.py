"""The bundle's face detector: MediaPipe's BlazeFace short-range, converted from TFLite to ONNX.

Provenance chain, every link pinned by sha256: the mediapipe wheel on PyPI -> its
`face_detection_short_range.tflite` member -> tflite2onnx -> `face_detector.onnx`, checked
against the TFLite interpreter on a seeded input. The wheel's licence (Apache-2.0) goes into
the bundle next to the model as `face_detector.LICENSE`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime as ort

from .checkpoint import sha256_file

PACKAGE = "mediapipe"
PACKAGE_VERSION = "0.10.21"
# Any of the release's wheels holds the same model; this one is pinned for its hash.
WHEEL = "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl"
WHEEL_SHA256 = "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3"
MEMBER = "mediapipe/modules/face_detection/face_detection_short_range.tflite"
MEMBER_SHA256 = "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"
LICENCE_MEMBER = "mediapipe-0.10.21.dist-info/LICENSE"
LICENCE_SHA256 = "8707eef0533987efc5b155d64761eeb6e20793f50b9bd1a68dad1cf4719d0ed8"
CONVERTER = "tflite2onnx==0.4.1"

ONNX_FILE = "face_detector.onnx"
LICENCE_FILE = "face_detector.LICENSE"
KIND = "blazeface-short-range"
INPUT_SIZE = 128
INPUT_RANGE = [-1.0, 1.0]  # pixel / 127.5 - 1, RGB
OUTPUTS = ["regressors", "classificators"]  # [1, 896, 16] box + keypoints, [1, 896, 1] logits
SOURCE = f"converted by {CONVERTER.replace('==', ' ')} from {PACKAGE} {PACKAGE_VERSION} {Path(MEMBER).name}"
# Max |ONNX - TFLite| per output, relative to that output's largest |value| (measured ~5e-7).
RELATIVE_TOLERANCE = 1e-3
CHECK_SEED = 0


class DetectorSourceError(RuntimeError):
    """A downloaded or extracted file does not have its pinned sha256."""


class DetectorCheckError(RuntimeError):
    """The converted ONNX does not reproduce the TFLite model within its tolerance."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("CAER_CACHE", "/opt/caer/cache"))


def _verify(what: str, got: str, want: str) -> None:
    if got != want:
        raise DetectorSourceError(f"{what}: sha256 {got}, expected {want}")


def fetch_wheel(cache_dir: Path | None = None) -> Path:
    """The pinned mediapipe wheel in `cache_dir` (downloaded by pip when missing), hash-checked."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    wheel = cache_dir / WHEEL
    if not wheel.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        # Download beside the final path, then rename: an interrupted download leaves no wheel.
        with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                   "--python-version", "3.11", "--platform", "manylinux_2_28_x86_64",
                   f"{PACKAGE}=={PACKAGE_VERSION}", "-d", tmp]
            run = subprocess.run(cmd, capture_output=True, text=True)
            if run.returncode != 0 or not (Path(tmp) / WHEEL).exists():
                raise DetectorSourceError(f"pip download of {WHEEL} failed: {run.stderr.strip()[-2000:]}")
            _verify(f"{wheel} (downloaded)", sha256_file(Path(tmp) / WHEEL), WHEEL_SHA256)
            os.replace(Path(tmp) / WHEEL, wheel)
    _verify(str(wheel), sha256_file(wheel), WHEEL_SHA256)
    return wheel


def _convert(tflite: Path, onnx_path: Path) -> None:
    import tflite2onnx

    # tflite2onnx warns once per float16 weight tensor; it folds them into float32 correctly
    # (the check against TFLite below says so).
    log = logging.getLogger("tflite2onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        tflite2onnx.convert(str(tflite), str(onnx_path))
    finally:
        log.setLevel(level)
    model = onnx.load(str(onnx_path))
    # tflite2onnx collects initializers and value_info in sets of objects (ordered by memory
    # address): sort them by name so that the file is the same bytes on every run.
    graph = model.graph
    for field in (graph.initializer, graph.value_info):
        items = sorted(field, key=lambda t: t.name)
        del field[:]
        field.extend(items)
    _symbolic_batch(model)
    onnx.checker.check_model(model, full_check=True)
    onnx_path.write_bytes(model.SerializeToString(deterministic=True))


def _symbolic_batch(model: onnx.ModelProto) -> None:
    """Turn the converted graph's fixed batch of 1 into a symbolic `batch`, so that a runtime
    can take the tiles of a frame in one call (ONNX Runtime runs a batch of 8 about twice as
    fast per tile; on a GPU it saves a launch sequence per tile).

    TFLite graphs are batch 1: the input and outputs say 1, and the Reshapes at the heads
    carry it as their first target dimension. That 1 becomes 0 (ONNX Reshape: keep the
    input's dimension), and the now stale intermediate shapes are dropped."""
    graph = model.graph
    for value in list(graph.input) + list(graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        if dim.dim_value != 1:
            raise DetectorCheckError(f"{value.name}: batch dimension {dim}, expected 1")
        dim.dim_param = "batch"
    shapes = {t.name: t for t in graph.initializer}
    done = set()
    for node in graph.node:
        if node.op_type != "Reshape" or node.input[1] in done:
            continue
        done.add(node.input[1])
        target = shapes[node.input[1]]
        dims = onnx.numpy_helper.to_array(target).copy()
        if dims[0] not in (1, -1):
            raise DetectorCheckError(f"Reshape {node.name}: target {dims.tolist()} does not start with the batch")
        dims[0] = 0
        target.CopyFrom(onnx.numpy_helper.from_array(dims.astype(np.int64), target.name))
    del graph.value_info[:]


def check_against_tflite(tflite: Path, onnx_path: Path, seed: int = CHECK_SEED) -> dict[str, float]:
    """Max |ONNX Runtime - TFLite| per output on a seeded uniform [-1, 1] input."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    x = np.random.default_rng(seed).uniform(-1.0, 1.0, (1, INPUT_SIZE, INPUT_SIZE, 3)).astype(np.float32)
    # TFLite's reference kernels: its definition of each op, and no dependence on the CPU's
    # SIMD features (the recorded differences then vary less between machines).
    interpreter = Interpreter(model_path=str(tflite), experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    expected = {d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = dict(zip(OUTPUTS, session.run(OUTPUTS, {"input": x.transpose(0, 3, 1, 2)})))  # NHWC -> NCHW
    # The symbolic batch: the same input four times in one call gives the same outputs.
    batched = session.run(OUTPUTS, {"input": np.repeat(x.transpose(0, 3, 1, 2), 4, axis=0)})
    for name, out in zip(OUTPUTS, batched):
        single = np.repeat(got[name], 4, axis=0)
        if out.shape != single.shape or np.abs(out - single).max() > 1e-5 * np.abs(single).max():
            raise DetectorCheckError(f"{ONNX_FILE}: {name} of a batch of 4 differs from batch 1")
    diffs = {}
    for name in OUTPUTS:
        if got[name].shape != expected[name].shape:
            raise DetectorCheckError(f"{name}: ONNX shape {got[name].shape}, TFLite {expected[name].shape}")
        diffs[name] = float(np.abs(got[name] - expected[name]).max())
        bound = RELATIVE_TOLERANCE * float(np.abs(expected[name]).max())
        if not diffs[name] <= bound:
            raise DetectorCheckError(f"{ONNX_FILE}: {name} max abs difference to TFLite {diffs[name]:.3g} > {bound:.3g}")
    return diffs


def export_face_detector(wheel: Path, out_dir: Path) -> dict:
    """Write `face_detector.onnx` and `face_detector.LICENSE` into `out_dir`, checked; returns
    the manifest's `face_detector` block."""
    wheel, out_dir = Path(wheel), Path(out_dir)
    _verify(str(wheel), sha256_file(wheel), WHEEL_SHA256)
    with zipfile.ZipFile(wheel) as z:
        model_bytes, licence = z.read(MEMBER), z.read(LICENCE_MEMBER)
    _verify(f"{wheel}:{MEMBER}", hashlib.sha256(model_bytes).hexdigest(), MEMBER_SHA256)
    _verify(f"{wheel}:{LICENCE_MEMBER}", hashlib.sha256(licence).hexdigest(), LICENCE_SHA256)
    with tempfile.TemporaryDirectory() as tmp:
        tflite = Path(tmp) / Path(MEMBER).name
        tflite.write_bytes(model_bytes)
        converted = Path(tmp) / ONNX_FILE
        _convert(tflite, converted)
        diffs = check_against_tflite(tflite, converted)
        shutil.copyfile(converted, out_dir / ONNX_FILE)
    (out_dir / LICENCE_FILE).write_bytes(licence)
    return {
        "kind": KIND,
        "input_size": INPUT_SIZE,
        "input_range": INPUT_RANGE,
        "licence": {"path": LICENCE_FILE, "sha256": sha256_file(out_dir / LICENCE_FILE), "spdx": "Apache-2.0"},
        "provenance": {
            "package": f"{PACKAGE}=={PACKAGE_VERSION}",
            "wheel": WHEEL,
            "wheel_sha256": WHEEL_SHA256,
            "member": MEMBER,
            "member_sha256": MEMBER_SHA256,
            "converter": CONVERTER,
            "tflite_max_abs_diff": diffs,
        },
    }
