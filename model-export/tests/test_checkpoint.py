"""Strict checkpoint loading: the official key set, and clear errors naming what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from caer_export.checkpoint import CheckpointError, load_model, read_checkpoint
from caer_export.model import ClipCaer, ModelDims

OFFICIAL = Path(__file__).with_name("data") / "official_state_dict.json"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "reference" / "official_state_dict.json"


def official_keys() -> dict[str, list[int]]:
    return {k["name"]: k["shape"] for k in json.loads(OFFICIAL.read_text())["keys"]}


def test_the_repo_copy_of_the_reference_is_the_shared_one():
    if not SHARED.exists():
        pytest.skip("shared/ reference not beside this checkout")
    assert json.loads(SHARED.read_text()) == json.loads(OFFICIAL.read_text())


def test_full_size_state_dict_has_exactly_the_official_keys_and_shapes():
    with torch.device("meta"):  # no memory for 150 M parameters: shapes only
        model = ClipCaer(ModelDims.vit_b_32())
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert len(ours) == 633
    assert ours == official_keys()
    assert list(ours) == list(official_keys()), "key order differs from the official file"


def test_tiny_checkpoint_loads_strictly_and_reproduces_the_model(tiny_checkpoint, tiny_model):
    loaded = load_model(tiny_checkpoint)
    face = torch.rand(1, 16, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(loaded(face, face), tiny_model(face, face))
    assert loaded.eot_positions.tolist() == tiny_model.eot_positions.tolist()


def _rewrite(src: Path, dst: Path, edit) -> Path:
    raw = torch.load(src, weights_only=True)
    edit(raw["state_dict"])
    torch.save(raw, dst)
    return dst


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda sd: sd.pop("project_fc.bias"), "missing keys (1): project_fc.bias"),
        (lambda sd: sd.__setitem__("head.extra", torch.zeros(3)), "unexpected keys (1): head.extra"),
        (lambda sd: sd.__setitem__("temporal_net.cls_token", torch.zeros(1, 2, 32)),
         "key temporal_net.cls_token: shape [1, 2, 32], expected [1, 1, 32]"),
        (lambda sd: sd.__setitem__("image_encoder.proj", sd["image_encoder.proj"] + 1),
         "key image_encoder.proj differs from its copy clip_model_.visual.proj"),
    ],
    ids=["removed key", "extra key", "wrong shape", "copies disagree"],
)
def test_a_bad_key_is_an_error_naming_it(tmp_path, tiny_checkpoint, edit, message):
    bad = _rewrite(tiny_checkpoint, tmp_path / "bad.pt", edit)
    with pytest.raises(CheckpointError) as error:
        load_model(bad)
    assert message in str(error.value)
    assert str(bad) in str(error.value)


def test_a_corrupt_or_foreign_file_is_a_clear_error(tmp_path, tiny_checkpoint):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_model(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {}}, foreign)
    with pytest.raises(CheckpointError, match="expected a dict with a 'state_dict' entry"):
        load_model(foreign)
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_model(tmp_path / "absent.pt")


def test_dataparallel_prefixes_are_accepted(tmp_path, tiny_checkpoint):
    raw = torch.load(tiny_checkpoint, weights_only=True)
    raw["state_dict"] = {f"module.{k}": v for k, v in raw["state_dict"].items()}
    torch.save(raw, tmp_path / "dp.pt")
    state, _ = read_checkpoint(tmp_path / "dp.pt")
    assert "project_fc.bias" in state
