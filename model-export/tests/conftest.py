"""Shared fixtures: a tiny seeded model and its checkpoint file."""

from __future__ import annotations

from pathlib import Path

import pytest

from caer_export.checkpoint import save_checkpoint
from caer_export.model import ClipCaer, ModelDims
from caer_export.weights import randomize

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_model() -> ClipCaer:
    return randomize(ClipCaer(ModelDims.tiny()), seed=7).eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_model) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(tiny_model, path, include_dims=True)
    return path
