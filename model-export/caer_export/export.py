"""Checkpoint -> model bundle: ONNX files, int8 variants, manifest, and the export checks.

The checks run at export time and fail the export loudly (`ExportCheckError`):
- fp32: ONNX Runtime (encoder then head) vs the PyTorch forward on the same clip,
  max abs logit difference <= 1e-4;
- int8 (static QDQ and dynamic): cosine of image embeddings vs fp32 PyTorch >= 0.99 on every
  calibration crop;
- the face detector (see detector.py): ONNX Runtime vs the TFLite interpreter.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from . import __version__, detector
from .checkpoint import sha256_file
from .model import CLASS_NAMES, COARSE, LOGIT_SCALE, ClipCaer, TemporalHead
from .preprocess import FACE_MARGIN

OPSET = 17
MANIFEST_SCHEMA = 1
FP32_LOGIT_TOLERANCE = 1e-4
INT8_MIN_COSINE = 0.99
ENCODER = "image_encoder.onnx"
ENCODER_QDQ = "image_encoder.int8.onnx"
ENCODER_DYNAMIC = "image_encoder.int8-dynamic.onnx"
HEAD = "temporal_head.onnx"


class ExportCheckError(RuntimeError):
    """An exported file does not reproduce the PyTorch model within its tolerance."""


@dataclass
class ExportReport:
    """What the checks measured, printed by the CLI and kept in the manifest."""

    fp32_max_logit_diff: float = 0.0
    int8_min_cosine: dict[str, float] = field(default_factory=dict)
    face_detector: dict = field(default_factory=dict)  # the manifest's `face_detector` block
    seconds: dict[str, float] = field(default_factory=dict)


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def min_cosine(got: np.ndarray, expected: np.ndarray) -> float:
    """The smallest cosine between matching rows of two `[n, d]` embedding arrays."""
    return float(((got * expected).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(expected, axis=-1))).min())


def _export(module: torch.nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], dynamic: dict) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=dynamic,
            opset_version=OPSET,
            do_constant_folding=True,
        )
    onnx.checker.check_model(str(path), full_check=True)


def export_fp32(model: ClipCaer, out: Path) -> None:
    d = model.dims
    pixels = torch.rand(2, 3, d.image_size, d.image_size)
    _export(model.image_encoder, (pixels,), out / ENCODER, ["pixels"], ["embedding"],
            {"pixels": {0: "batch"}, "embedding": {0: "batch"}})
    features = torch.randn(2, d.frames, d.embed_dim)
    _export(TemporalHead(model), (features, features), out / HEAD, ["face_features", "context_features"], ["logits"],
            {"face_features": {0: "batch"}, "context_features": {0: "batch"}, "logits": {0: "batch"}})


@torch.no_grad()
def check_fp32(model: ClipCaer, out: Path, seed: int = 0) -> float:
    """Whole clip through ONNX Runtime (encoder, then head) vs PyTorch; returns max |diff|."""
    d = model.dims
    g = torch.Generator().manual_seed(seed)
    face = torch.rand(2, d.frames, 3, d.image_size, d.image_size, generator=g)
    context = torch.rand(2, d.frames, 3, d.image_size, d.image_size, generator=g)
    expected = model(face, context).numpy()
    encoder, head = _session(out / ENCODER), _session(out / HEAD)

    def encode(x: torch.Tensor) -> np.ndarray:
        flat = x.flatten(0, 1).numpy()
        return encoder.run(["embedding"], {"pixels": flat})[0].reshape(2, d.frames, -1)

    logits = head.run(["logits"], {"face_features": encode(face), "context_features": encode(context)})[0]
    diff = float(np.abs(logits - expected).max())
    if not diff <= FP32_LOGIT_TOLERANCE:
        raise ExportCheckError(f"fp32 export: max abs logit difference {diff:.3g} > {FP32_LOGIT_TOLERANCE}")
    return diff


class _Crops(CalibrationDataReader):
    def __init__(self, crops: np.ndarray, batch: int = 8):
        self.batches = iter([crops[i : i + batch] for i in range(0, len(crops), batch)])

    def get_next(self):
        batch = next(self.batches, None)
        return None if batch is None else {"pixels": batch}


def _prepare_for_quantization(encoder: Path, tmp: Path) -> tuple[Path, list[str]]:
    """The fp32 encoder with ONNX Runtime's pre-processing, and the nodes that stay float (the
    output projection, see `quantize`)."""
    prepared = tmp / "prepared.onnx"
    quant_pre_process(str(encoder), str(prepared), skip_symbolic_shape=True)
    keep_float = [n.name for n in onnx.load(str(prepared)).graph.node if "embedding" in n.output]
    return prepared, keep_float


def quantize(out: Path, crops: np.ndarray) -> None:
    """Static QDQ int8 (symmetric, per-channel weights: TensorRT's explicit quantization) and
    dynamic int8 (for CPU runtimes). Only MatMul/Conv/Gemm are quantized: LayerNorm and
    softmax stay in float, where int8 would cost accuracy for no speed. The output projection
    (one token times a 768x512 matrix) stays in float too: it costs nothing and was measured to
    carry most of the int8 error of the whole tower."""
    with tempfile.TemporaryDirectory() as tmp:
        prepared, keep_float = _prepare_for_quantization(out / ENCODER, Path(tmp))
        quantize_static(
            str(prepared),
            str(out / ENCODER_QDQ),
            _Crops(crops),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul", "Conv", "Gemm"],
            per_channel=True,
            nodes_to_exclude=keep_float,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        )
        quantize_dynamic_cpu(prepared, out / ENCODER_DYNAMIC, keep_float)


def quantize_dynamic_cpu(prepared: Path, target: Path, keep_float: list[str]) -> None:
    """Dynamic int8 for CPU runtimes: u8 activations x s8 weights, per channel, 7-bit weights.

    u8 x s8 is the integer kernel x86 (VNNI, and AVX2's vpmaddubsw) and Arm (sdot) run fast;
    u8 x u8 takes a slow path (ViT-B/32, batch 8, 2 threads, one run: 1.1x fp32 with uint8
    weights, 3.8x with int8 weights). Without VNNI, vpmaddubsw adds two u8 x s8 products into
    an int16 that saturates: on an emulated AVX2 CPU (qemu -cpu Haswell) 8-bit weights fell to
    cosine 0.9988 on the tiny fixture (0.99994 with VNNI). `reduce_range` (7-bit weights)
    keeps every sum inside int16: 0.99975 on both, at the same speed."""
    quantize_dynamic(
        str(prepared),
        str(target),
        op_types_to_quantize=["MatMul", "Gemm"],
        per_channel=True,
        reduce_range=True,
        nodes_to_exclude=keep_float,
        weight_type=QuantType.QInt8,
    )


@torch.no_grad()
def check_int8(model: ClipCaer, out: Path, crops: np.ndarray) -> dict[str, float]:
    """Minimum cosine between int8 and fp32 embeddings over the calibration crops, per file."""
    expected = model.image_encoder(torch.from_numpy(crops)).numpy()
    result = {}
    for name in (ENCODER_QDQ, ENCODER_DYNAMIC):
        got = _session(out / name).run(["embedding"], {"pixels": crops})[0]
        result[name] = min_cosine(got, expected)
        if not result[name] >= INT8_MIN_COSINE:
            raise ExportCheckError(f"{name}: embedding cosine {result[name]:.4f} < {INT8_MIN_COSINE} on the calibration crops")
    return result


SELF_CHECK_PATTERN = "((c * S + y) * S + x) % 251 / 250"


def self_check_pixels(size: int) -> np.ndarray:
    """A known `[1, 3, S, S]` input that any runtime can make without a file (see manifest)."""
    c, y, x = np.meshgrid(np.arange(3), np.arange(size), np.arange(size), indexing="ij")
    return (((c * size + y) * size + x) % 251 / 250.0).astype(np.float32)[None]


@torch.no_grad()
def self_check(model: ClipCaer) -> dict:
    """The device's start-up check: this input through the image encoder gives this embedding."""
    pixels = torch.from_numpy(self_check_pixels(model.dims.image_size))
    return {"pattern": SELF_CHECK_PATTERN, "embedding": model.image_encoder(pixels)[0].numpy().astype(float).tolist()}


def _io(model_path: Path) -> tuple[list[dict], list[dict]]:
    """Inputs and outputs as the ONNX file declares them (symbolic dims as strings)."""
    graph = onnx.load(str(model_path), load_external_data=False).graph

    def describe(values) -> list[dict]:
        return [
            {
                "name": v.name,
                "shape": [dim.dim_param or dim.dim_value for dim in v.type.tensor_type.shape.dim],
                "dtype": "float32",
            }
            for v in values
        ]

    return describe(graph.input), describe(graph.output)


def _file_entry(out: Path, name: str, opset: int, precision: str, source: str) -> dict:
    inputs, outputs = _io(out / name)
    return {
        "path": name,
        "sha256": sha256_file(out / name),
        "bytes": (out / name).stat().st_size,
        "opset": opset,
        "precision": precision,
        "inputs": inputs,
        "outputs": outputs,
        "source": source,
    }


def write_manifest(model: ClipCaer, out: Path, model_id: str, source: dict, report: ExportReport) -> dict:
    d = model.dims
    files = {}
    for key, name, precision in (
        ("image_encoder", ENCODER, "fp32"),
        ("image_encoder_int8", ENCODER_QDQ, "int8-qdq-static"),
        ("image_encoder_int8_dynamic", ENCODER_DYNAMIC, "int8-dynamic"),
        ("temporal_head", HEAD, "fp32"),
    ):
        files[key] = _file_entry(
            out, name, OPSET, precision,
            f"exported from {source['checkpoint']} by caer_export {__version__}"
            + ("" if precision == "fp32" else ", quantized by onnxruntime on the calibration crops"),
        )
    # The detector keeps the opset that tflite2onnx wrote.
    detector_opset = {o.domain: o.version for o in onnx.load(str(out / detector.ONNX_FILE)).opset_import}[""]
    files["face_detector"] = _file_entry(out, detector.ONNX_FILE, detector_opset, "fp32", detector.SOURCE)
    manifest = {
        "schema_version": MANIFEST_SCHEMA,
        "model_id": model_id,
        "classes": CLASS_NAMES,
        "coarse": COARSE,
        "frames_per_clip": d.frames,
        "embed_dim": d.embed_dim,
        "input_size": d.image_size,
        "logit_scale": LOGIT_SCALE,
        "preprocessing": {
            "color": "RGB",
            "layout": "NCHW",
            "scale": 1.0 / 255.0,
            "mean": None,
            "std": None,
            "face_margin_px": FACE_MARGIN,
            "face_resize": "bilinear-stretch",
            "context_crop": "pillow-crop-unclamped",
            "context_resize": "opencv-linear-letterbox-black",
            "resampler": "pillow-bilinear",
        },
        "files": files,
        "face_detector": report.face_detector,
        "self_check": self_check(model),
        "checks": {
            "fp32_max_logit_diff": report.fp32_max_logit_diff,
            "int8_min_cosine": report.int8_min_cosine,
        },
        "source": source,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def export_bundle(model: ClipCaer, out: Path, crops: np.ndarray, model_id: str, source: dict,
                  cache_dir: Path | None = None) -> ExportReport:
    """Every file of the bundle, checked; raises ExportCheckError (or the detector's errors) on a
    failed check. The detector's source wheel comes from `cache_dir` (default: $CAER_CACHE or
    /opt/caer/cache), downloaded there when missing."""
    import time

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = ExportReport()
    t = time.perf_counter()
    export_fp32(model, out)
    report.seconds["onnx_export"] = time.perf_counter() - t
    report.fp32_max_logit_diff = check_fp32(model, out)
    t = time.perf_counter()
    quantize(out, crops.astype(np.float32))
    report.seconds["quantize"] = time.perf_counter() - t
    report.int8_min_cosine = check_int8(model, out, crops.astype(np.float32))
    t = time.perf_counter()
    report.face_detector = detector.export_face_detector(detector.fetch_wheel(cache_dir), out)
    report.seconds["face_detector"] = time.perf_counter() - t
    source = {
        **source,
        "exporter": f"caer_export {__version__}",
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
    }
    write_manifest(model, out, model_id, source, report)
    return report


def requantize_dynamic(bundle: Path, crops: np.ndarray) -> float:
    """Rewrites a bundle's dynamic int8 encoder from its fp32 encoder with today's
    `quantize_dynamic_cpu` (no checkpoint needed), checks it against the fp32 file on `crops`
    (cosine >= INT8_MIN_COSINE, else nothing is changed) and updates the manifest's entry and
    check. Returns the minimum cosine."""
    bundle = Path(bundle)
    manifest_path = bundle / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    with tempfile.TemporaryDirectory(dir=bundle) as tmp:
        prepared, keep_float = _prepare_for_quantization(bundle / ENCODER, Path(tmp))
        candidate = Path(tmp) / ENCODER_DYNAMIC
        quantize_dynamic_cpu(prepared, candidate, keep_float)
        expected = _session(bundle / ENCODER).run(["embedding"], {"pixels": crops})[0]
        got = _session(candidate).run(["embedding"], {"pixels": crops})[0]
        cosine = min_cosine(got, expected)
        if not cosine >= INT8_MIN_COSINE:
            raise ExportCheckError(f"{ENCODER_DYNAMIC}: embedding cosine {cosine:.4f} < {INT8_MIN_COSINE} vs {ENCODER}")
        candidate.replace(bundle / ENCODER_DYNAMIC)
    entry = manifest["files"]["image_encoder_int8_dynamic"]
    entry["sha256"] = sha256_file(bundle / ENCODER_DYNAMIC)
    entry["bytes"] = (bundle / ENCODER_DYNAMIC).stat().st_size
    entry["source"] = (f"requantized from {ENCODER} by caer_export {__version__} "
                       f"(onnxruntime {ort.__version__}, u8 x s8, 7-bit weights)")
    manifest["checks"]["int8_min_cosine"][ENCODER_DYNAMIC] = cosine
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return cosine
