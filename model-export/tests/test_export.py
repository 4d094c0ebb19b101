"""Export checks: ONNX Runtime vs PyTorch, int8 cosine, manifest, and that a bad file fails."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from caer_export.checkpoint import sha256_file
from caer_export.fixture import synthetic_clip
from caer_export.preprocess import clip_tensors
from caer_export.export import ENCODER, HEAD, ExportCheckError, _session, check_fp32, export_bundle, self_check_pixels


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tiny_model):
    out = tmp_path_factory.mktemp("bundle")
    frames, face_boxes, body_box = synthetic_clip(np.random.default_rng(3))
    crops = torch.cat(clip_tensors(frames, face_boxes, body_box)).numpy()  # representative crops
    report = export_bundle(tiny_model, out, crops, "test-model", {"checkpoint": "tiny.pt"})
    return out, report


def test_export_meets_its_tolerances(bundle):
    _, report = bundle
    assert report.fp32_max_logit_diff <= 1e-4
    assert all(c >= 0.99 for c in report.int8_min_cosine.values())
    assert len(report.int8_min_cosine) == 2


def test_manifest_describes_every_file_with_its_hash_and_io(bundle):
    out, _ = bundle
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["classes"] == ["neutrality", "enjoyment", "confusion", "fatigue", "distraction"]
    assert manifest["coarse"][4] == "distracted" and manifest["frames_per_clip"] == 16
    assert manifest["preprocessing"]["mean"] is None and manifest["preprocessing"]["face_margin_px"] == 20
    for entry in manifest["files"].values():
        assert entry["sha256"] == sha256_file(out / entry["path"])
    encoder = manifest["files"]["image_encoder"]
    assert encoder["inputs"] == [{"name": "pixels", "shape": ["batch", 3, 224, 224], "dtype": "float32"}]
    assert encoder["outputs"][0]["shape"] == ["batch", 32]
    head = manifest["files"]["temporal_head"]
    assert [i["name"] for i in head["inputs"]] == ["face_features", "context_features"]
    assert head["outputs"][0]["shape"] == ["batch", 5]
    qdq = onnx.load(str(out / manifest["files"]["image_encoder_int8"]["path"]))
    assert any(n.op_type == "QuantizeLinear" for n in qdq.graph.node)


def test_the_fp32_check_catches_a_wrong_export(bundle, tiny_model, tmp_path):
    out, _ = bundle
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / ENCODER).write_bytes((out / ENCODER).read_bytes())
    head = onnx.load(str(out / HEAD))
    weight = max(head.graph.initializer, key=lambda t: np.prod(t.dims))
    values = onnx.numpy_helper.to_array(weight).copy()
    values *= 1.01  # a 1 % error in the fusion/temporal weights
    weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
    onnx.save(head, str(broken / HEAD))
    with pytest.raises(ExportCheckError, match="max abs logit difference"):
        check_fp32(tiny_model, broken)


def test_self_check_input_gives_the_manifest_embedding_on_onnx_runtime(bundle):
    out, _ = bundle
    manifest = json.loads((out / "manifest.json").read_text())
    pixels = self_check_pixels(manifest["input_size"])
    assert pixels.shape == (1, 3, 224, 224) and pixels[0, 1, 0, 0] == (224 * 224 % 251) / 250
    got = _session(out / ENCODER).run(["embedding"], {"pixels": pixels})[0][0]
    assert np.abs(got - np.array(manifest["self_check"]["embedding"])).max() <= 1e-4
