"""The committed fixture bundle and goldens are what the exporter writes today, within the
tolerances of `golden_compare` (float kernels differ between CPUs)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from caer_export.fixture import write_fixture
from golden_compare import compare_fixture, manifest_describes_files

from conftest import REPO

GOLDEN = REPO / "tests" / "golden"


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    out = tmp_path_factory.mktemp("fixture")
    write_fixture(out)
    return out


def test_committed_fixture_does_not_drift(regenerated):
    problems = compare_fixture(regenerated, GOLDEN)
    assert not problems, "regenerate with `caer-export fixture`:\n" + "\n".join(problems[:40])


def test_committed_manifest_describes_the_committed_files():
    problems: list[str] = []
    manifest_describes_files(GOLDEN / "bundle", problems)
    assert not problems, problems


def _copy(regenerated, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(regenerated, out)
    return out


def test_drift_check_sees_a_changed_golden(regenerated, tmp_path):
    changed = _copy(regenerated, tmp_path)
    parity = json.loads((changed / "parity.json").read_text())
    parity["logits"][2] += 1e-3
    parity["sampled_indices"][0] += 1
    (changed / "parity.json").write_text(json.dumps(parity))
    problems = compare_fixture(changed, regenerated)
    assert any("parity.json.logits[2]" in p for p in problems), problems
    assert any("parity.json.sampled_indices[0]" in p for p in problems), problems


def test_drift_check_sees_changed_weights_but_not_last_bits(regenerated, tmp_path):
    changed = _copy(regenerated, tmp_path)
    path = changed / "bundle" / "temporal_head.onnx"
    model = onnx.load(path)
    floats = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and np.prod(t.dims) > 1]
    tensor = floats[0]
    value = numpy_helper.to_array(tensor).copy()
    value.flat[0] = np.nextafter(value.flat[0], np.float32(np.inf))  # one ulp: within tolerance
    tensor.CopyFrom(numpy_helper.from_array(value, tensor.name))
    onnx.save(model, path)
    assert compare_fixture(changed, regenerated) == []

    value.flat[0] += 1e-2  # a real change
    tensor.CopyFrom(numpy_helper.from_array(value, tensor.name))
    onnx.save(model, path)
    problems = compare_fixture(changed, regenerated)
    assert any(f"temporal_head.onnx:{tensor.name}" in p for p in problems), problems


def test_drift_check_allows_one_quantization_step_only(regenerated, tmp_path):
    changed = _copy(regenerated, tmp_path)
    path = changed / "bundle" / "image_encoder.int8.onnx"
    model = onnx.load(path)
    ints = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8 and np.prod(t.dims) > 1]
    tensor = ints[0]
    value = numpy_helper.to_array(tensor).copy()
    value.flat[0] = value.flat[0] - 1 if value.flat[0] > -127 else value.flat[0] + 1
    tensor.CopyFrom(numpy_helper.from_array(value, tensor.name))
    onnx.save(model, path)
    assert compare_fixture(changed, regenerated) == []

    value.flat[1] = value.flat[1] - 2 if value.flat[1] > -126 else value.flat[1] + 2
    tensor.CopyFrom(numpy_helper.from_array(value, tensor.name))
    onnx.save(model, path)
    problems = compare_fixture(changed, regenerated)
    assert any("quantization step" in p for p in problems), problems


def test_fixture_bundle_is_small():
    bundle = GOLDEN / "bundle"
    assert sum(p.stat().st_size for p in bundle.iterdir()) < 5_000_000
