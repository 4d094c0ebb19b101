"""The face detector: pinned source, ONNX vs TFLite, deterministic file, and its manifest block.

Needs the pinned mediapipe wheel in $CAER_CACHE (default /opt/caer/cache; scripts/setup.sh
fetches it), or network access for pip to download it.
"""

from __future__ import annotations

import json
import zipfile

import numpy as np
import onnx
import pytest

from caer_export import detector
from caer_export.checkpoint import sha256_file

from conftest import REPO


@pytest.fixture(scope="module")
def wheel():
    return detector.fetch_wheel()


@pytest.fixture(scope="module")
def exported(wheel, tmp_path_factory):
    out = tmp_path_factory.mktemp("detector")
    return out, detector.export_face_detector(wheel, out)


def test_onnx_matches_tflite_and_declares_its_io(exported):
    out, block = exported
    diffs = block["provenance"]["tflite_max_abs_diff"]
    assert set(diffs) == {"regressors", "classificators"}
    assert all(0 <= d <= 1e-3 for d in diffs.values()), diffs  # measured ~3e-5
    graph = onnx.load(str(out / detector.ONNX_FILE)).graph
    shape = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert [(v.name, shape(v)) for v in graph.input] == [("input", ["batch", 3, 128, 128])]
    assert [(v.name, shape(v)) for v in graph.output] == [
        ("regressors", ["batch", 896, 16]),
        ("classificators", ["batch", 896, 1]),
    ]


def test_the_check_catches_a_wrong_conversion(wheel, exported, tmp_path):
    out, _ = exported
    model = onnx.load(str(out / detector.ONNX_FILE))
    weight = max((t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT), key=lambda t: np.prod(t.dims))
    values = onnx.numpy_helper.to_array(weight) * 1.05  # a 5 % error in one convolution
    weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    tflite = tmp_path / "model.tflite"
    with zipfile.ZipFile(wheel) as z:
        tflite.write_bytes(z.read(detector.MEMBER))
    assert detector.check_against_tflite(tflite, out / detector.ONNX_FILE)  # the good file passes
    with pytest.raises(detector.DetectorCheckError, match="max abs difference to TFLite"):
        detector.check_against_tflite(tflite, broken)


def test_the_conversion_is_deterministic(wheel, exported, tmp_path):
    out, block = exported
    again = detector.export_face_detector(wheel, tmp_path)
    assert (tmp_path / detector.ONNX_FILE).read_bytes() == (out / detector.ONNX_FILE).read_bytes()
    assert again == block


def test_a_wheel_with_the_wrong_hash_is_refused_with_both_hashes(tmp_path):
    fake = tmp_path / detector.WHEEL
    fake.write_bytes(b"not the mediapipe wheel")
    with pytest.raises(detector.DetectorSourceError) as e:
        detector.fetch_wheel(tmp_path)
    message = str(e.value)
    assert str(fake) in message and detector.WHEEL_SHA256 in message and sha256_file(fake) in message
    with pytest.raises(detector.DetectorSourceError, match=detector.WHEEL_SHA256):
        detector.export_face_detector(fake, tmp_path)


def test_the_fixture_manifest_describes_the_detector_with_its_hashes():
    bundle = REPO / "tests" / "golden" / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    entry = manifest["files"]["face_detector"]
    assert set(entry) == set(manifest["files"]["image_encoder"])  # the same format as the others
    assert entry["path"] == detector.ONNX_FILE
    assert entry["sha256"] == sha256_file(bundle / entry["path"])
    assert entry["bytes"] == (bundle / entry["path"]).stat().st_size
    assert entry["precision"] == "fp32" and entry["opset"] == 11
    assert entry["inputs"] == [{"name": "input", "shape": ["batch", 3, 128, 128], "dtype": "float32"}]
    assert entry["outputs"] == [
        {"name": "regressors", "shape": ["batch", 896, 16], "dtype": "float32"},
        {"name": "classificators", "shape": ["batch", 896, 1], "dtype": "float32"},
    ]
    assert entry["source"] == "converted by tflite2onnx 0.4.1 from mediapipe 0.10.21 face_detection_short_range.tflite"

    block = manifest["face_detector"]
    assert set(block) == {"kind", "input_size", "input_range", "licence", "provenance"}
    assert block["kind"] == "blazeface-short-range" and block["input_size"] == 128
    assert block["input_range"] == [-1.0, 1.0]
    licence = block["licence"]
    assert set(licence) == {"path", "sha256", "spdx"} and licence["spdx"] == "Apache-2.0"
    assert licence["sha256"] == sha256_file(bundle / licence["path"]) == detector.LICENCE_SHA256
    assert (bundle / licence["path"]).read_text().lstrip().startswith("Apache License")
    provenance = block["provenance"]
    assert provenance["package"] == "mediapipe==0.10.21" and provenance["converter"] == "tflite2onnx==0.4.1"
    assert provenance["wheel"] == detector.WHEEL and provenance["wheel_sha256"] == detector.WHEEL_SHA256
    assert provenance["member"] == detector.MEMBER and provenance["member_sha256"] == detector.MEMBER_SHA256
    assert all(d <= 1e-3 for d in provenance["tflite_max_abs_diff"].values())
