"""The real loading and export path at full ViT-B/32 size, on a generated random checkpoint.

Slow (a 625 MB checkpoint, a 350 MB encoder, int8 calibration): marked `slow`; scripts/test.sh runs it as its last step when time allows.
"""

from __future__ import annotations

import json
import time

import pytest
import torch

from caer_export.__main__ import main
from caer_export.checkpoint import read_checkpoint


@pytest.mark.slow
def test_full_size_random_checkpoint_exports_and_passes_its_checks(tmp_path, capsys):
    checkpoint = tmp_path / "vit-b-32.pt"
    assert main(["random-checkpoint", "--size", "vit-b-32", "--seed", "3", "--out", str(checkpoint)]) == 0
    raw = torch.load(checkpoint, weights_only=True)
    assert set(raw) == {"state_dict"}, "the official format: no extra top-level entries"
    state, _ = read_checkpoint(checkpoint)
    assert len(state) == 633
    del raw, state

    assert main(["calibration-crops", "--out", str(tmp_path / "crops"), "--count", "8"]) == 0
    capsys.readouterr()
    started = time.perf_counter()
    code = main(["export", str(checkpoint), "--calibration", str(tmp_path / "crops"), "--out", str(tmp_path / "bundle")])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    print(f"full-size export took {time.perf_counter() - started:.0f} s: {json.dumps(report)}")
    assert report["fp32_max_logit_diff"] <= 1e-4
    assert min(report["int8_min_cosine"].values()) >= 0.99
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["embed_dim"] == 512 and manifest["input_size"] == 224
    assert manifest["files"]["image_encoder"]["outputs"][0]["shape"] == ["batch", 512]
