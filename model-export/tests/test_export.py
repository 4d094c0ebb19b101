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


def _integer_weights(path) -> list[np.ndarray]:
    """The constant weight operand (input B) of every MatMulInteger of an ONNX file."""
    from onnx import numpy_helper

    model = onnx.load(str(path))
    constants = {t.name: t for t in model.graph.initializer}
    return [numpy_helper.to_array(constants[n.input[1]]) for n in model.graph.node
            if n.op_type == "MatMulInteger" and n.input[1] in constants]


def test_dynamic_int8_is_u8_by_s8_with_7_bit_weights(bundle):
    # s8 weights for the fast integer kernels; 7 bits so that AVX2 without VNNI never
    # saturates its int16 pair sums (see export.quantize_dynamic_cpu).
    out, _ = bundle
    weights = _integer_weights(out / "image_encoder.int8-dynamic.onnx")
    assert weights, "no MatMulInteger with a constant weight"
    for w in weights:
        assert w.dtype == np.int8
        # |w| <= 64: 2 x 255 x 64 = 32,640 fits an int16
        assert int(np.abs(w.astype(np.int32)).max()) <= 64, (w.min(), w.max())


def test_requantize_rewrites_the_dynamic_encoder_and_its_manifest_entry(bundle, tmp_path):
    import shutil

    from caer_export.export import ENCODER_DYNAMIC, requantize_dynamic

    out, _ = bundle
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    # An old-style file: the fp32 encoder under the dynamic name (any other bytes would do).
    shutil.copy(copy / ENCODER, copy / ENCODER_DYNAMIC)
    crops = np.random.default_rng(5).random((4, 3, 224, 224), dtype=np.float32)
    cosine = requantize_dynamic(copy, crops)
    manifest = json.loads((copy / "manifest.json").read_text())
    entry = manifest["files"]["image_encoder_int8_dynamic"]
    assert entry["sha256"] == sha256_file(copy / ENCODER_DYNAMIC)
    assert entry["bytes"] == (copy / ENCODER_DYNAMIC).stat().st_size
    assert manifest["checks"]["int8_min_cosine"][ENCODER_DYNAMIC] == cosine >= 0.99
    assert _integer_weights(copy / ENCODER_DYNAMIC)
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in out.iterdir())


def test_requantize_refuses_a_file_that_misses_the_check_and_changes_nothing(bundle, tmp_path, monkeypatch):
    import shutil

    from caer_export import export
    from caer_export.export import ENCODER_DYNAMIC, requantize_dynamic

    out, _ = bundle
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir()}
    monkeypatch.setattr(export, "INT8_MIN_COSINE", 1.01)  # no int8 file reaches it
    with pytest.raises(ExportCheckError, match=ENCODER_DYNAMIC):
        requantize_dynamic(copy, np.random.default_rng(5).random((2, 3, 224, 224), dtype=np.float32))
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == before
