"""Reading and writing CLIP-CAER checkpoints in the official format (`{"state_dict": ...}`).

Loading is strict: every key of the model must be present with its shape, and nothing else.
The official file stores CLIP's tensors twice (`image_encoder.*` = `clip_model_.visual.*`,
`text_encoder.*` = `clip_model_.*`): both copies must agree, or the file is refused.

Our own generated checkpoints may carry a top-level `"caer_dims"` entry (the sizes of a tiny
test model); the official file has none and is read as ViT-B/32.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from .model import EOT_TOKEN_ID, ClipCaer, ModelDims

SOT_TOKEN_ID = 49406


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model; the message names the file and the keys."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _shared_prefixes() -> list[tuple[str, str]]:
    """Pairs of key prefixes that the official checkpoint stores twice."""
    return [
        ("image_encoder.", "clip_model_.visual."),
        ("text_encoder.", "clip_model_."),
    ]


def check_state_dict(model: ClipCaer, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Strict key and shape check, with an error that names every offending key."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems: list[str] = []
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing:
        problems.append(f"missing keys ({len(missing)}): " + ", ".join(missing[:20]))
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): " + ", ".join(unexpected[:20]))
    for key, shape in expected.items():
        if key in state_dict and tuple(state_dict[key].shape) != shape:
            problems.append(f"key {key}: shape {list(state_dict[key].shape)}, expected {list(shape)}")
    if problems:
        raise CheckpointError(f"{source}: checkpoint does not match CLIP-CAER: " + "; ".join(problems))
    for ours, theirs in _shared_prefixes():
        for key, value in state_dict.items():
            if key.startswith(ours):
                twin = theirs + key[len(ours) :]
                if twin in state_dict and not torch.equal(value, state_dict[twin]):
                    raise CheckpointError(f"{source}: key {key} differs from its copy {twin}")


def eot_positions(state_dict: dict[str, torch.Tensor], dims: ModelDims, source: str) -> torch.Tensor:
    """Where each class prompt ends, found from the checkpoint itself.

    The suffix holds the descriptor's token embeddings, then EOT's, then padding; the EOT row
    equals `token_embedding[EOT]`, so no tokenizer is needed to read a published checkpoint.
    """
    eot = state_dict["clip_model_.token_embedding.weight"][EOT_TOKEN_ID]
    suffix = state_dict["prompt_learner.token_suffix"]
    positions = []
    for c in range(suffix.shape[0]):
        hits = (suffix[c] == eot).all(dim=-1).nonzero().flatten()
        if len(hits) == 0:
            raise CheckpointError(f"{source}: prompt_learner.token_suffix[{c}] holds no end-of-text token")
        positions.append(1 + dims.n_ctx + int(hits[0]))
    return torch.tensor(positions, dtype=torch.long)


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], ModelDims]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a corrupt file
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({e})") from e
    if not isinstance(raw, dict) or "state_dict" not in raw:
        raise CheckpointError(f"{path}: expected a dict with a 'state_dict' entry")
    dims = ModelDims(**raw["caer_dims"]) if "caer_dims" in raw else ModelDims.vit_b_32()
    state_dict = {k.removeprefix("module."): v for k, v in raw["state_dict"].items()}
    return state_dict, dims


def load_model(path: Path) -> ClipCaer:
    """Build CLIP-CAER from a checkpoint file, strictly; eval mode, fp32, CPU."""
    state_dict, dims = read_checkpoint(path)
    model = ClipCaer(dims)
    check_state_dict(model, state_dict, str(path))
    model.load_state_dict(state_dict, strict=True)
    model.eot_positions.copy_(eot_positions(state_dict, dims, str(path)))
    return model.float().eval()


def save_checkpoint(model: ClipCaer, path: Path, include_dims: bool) -> None:
    """Write the official format; `include_dims` records non-standard sizes for tiny models."""
    raw: dict = {"state_dict": model.state_dict()}
    if include_dims:
        raw["caer_dims"] = model.dims.to_json()
    torch.save(raw, path)
