"""Where the weights of a new CLIP-CAER come from: seeded random values, or CLIP's.

- `randomize`: seeded random weights of the right scale, for fixtures and full-size tests
  (the real CLIP weights cannot be downloaded on our machines).
- `load_clip_weights`: CLIP ViT-B/32 from a file the user gives (OpenAI's TorchScript
  `ViT-B-32.pt` or an open_clip state dict); nothing is downloaded.
- `init_prompts`: the class prompts ([SOT] + 8 context vectors + descriptor + [EOT]) from the
  class descriptors, tokenised with CLIP's BPE tokenizer (shipped inside open_clip's wheel).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from .checkpoint import SOT_TOKEN_ID, CheckpointError
from .model import EOT_TOKEN_ID, ClipCaer

DESCRIPTORS = Path(__file__).with_name("class_descriptors.json")


def class_descriptors() -> list[str]:
    classes = json.loads(DESCRIPTORS.read_text())["classes"]
    return [c["descriptor"] for c in sorted(classes, key=lambda c: c["index"])]


def prompt_token_ids(context_length: int, n_ctx: int) -> list[list[int]]:
    """Token ids of "X X X X X X X X <descriptor>" per class, padded to the context length."""
    from open_clip.tokenizer import SimpleTokenizer

    tokenizer = SimpleTokenizer()
    placeholder = tokenizer.encode(" ".join(["X"] * n_ctx))
    rows = []
    for descriptor in class_descriptors():
        ids = [SOT_TOKEN_ID] + placeholder + tokenizer.encode(descriptor) + [EOT_TOKEN_ID]
        if len(ids) > context_length:
            raise ValueError(f"class prompt is {len(ids)} tokens, more than {context_length}")
        rows.append(ids + [0] * (context_length - len(ids)))
    return rows


@torch.no_grad()
def init_prompts(model: ClipCaer) -> None:
    """Fill token_prefix / token_suffix from CLIP's token embedding, and the EOT positions."""
    d = model.dims
    ids = torch.tensor(prompt_token_ids(d.context_length, d.n_ctx))
    embedded = model.clip_model_.token_embedding(ids)
    model.prompt_learner.token_prefix.copy_(embedded[:, :1])
    model.prompt_learner.token_suffix.copy_(embedded[:, 1 + d.n_ctx :])
    model.eot_positions.copy_((ids == EOT_TOKEN_ID).int().argmax(dim=-1))


@torch.no_grad()
def randomize(model: ClipCaer, seed: int) -> ClipCaer:
    """Seeded random weights with the usual scales, then prompts built from them."""
    g = torch.Generator().manual_seed(seed)

    def normal(t: torch.Tensor, std: float, mean: float = 0.0) -> None:
        t.copy_(torch.randn(t.shape, generator=g) * std + mean)

    for name, p in model.named_parameters():  # shared tensors are listed once
        if isinstance(p, nn.Parameter) and name.endswith("logit_scale"):
            p.fill_(4.6052)  # log(100), as CLIP trains it
        elif "ln" in name.split(".")[-2] or ".norm." in name:
            normal(p, 0.05, 1.0 if name.endswith("weight") else 0.0)
        elif name.endswith("bias"):
            normal(p, 0.02)
        elif p.dim() >= 2 and "embedding" not in name and name.split(".")[-1] not in ("ctx", "proj", "text_projection"):
            normal(p, p[0].numel() ** -0.5)  # fan-in scaling for weight matrices and conv
        else:
            normal(p, 0.02 if "token_embedding" in name or name.endswith("ctx") else p.shape[0] ** -0.5)
    init_prompts(model)
    return model


def load_clip_weights(model: ClipCaer, path: Path) -> None:
    """Load CLIP ViT-B/32 weights (OpenAI TorchScript archive or open_clip state dict)."""
    path = Path(path)
    try:
        state = torch.jit.load(path, map_location="cpu").state_dict()
    except Exception:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a CLIP state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    for extra in ("input_resolution", "context_length", "vocab_size"):
        state.pop(extra, None)
    missing, unexpected = model.clip_model_.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: not CLIP ViT-B/32: missing {missing[:10]}, unexpected {unexpected[:10]}")
    with torch.no_grad():
        model.clip_model_.float()
        for p in list(model.prompt_learner.parameters()):
            p.copy_(torch.randn(p.shape) * 0.02)
    init_prompts(model)
