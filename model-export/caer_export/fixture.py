"""The tiny test fixture: a seeded CLIP-CAER of small widths, its bundle, and parity goldens.

Everything here is deterministic (seeded weights, generated frames), so the tests can write it
again and fail when the committed copy in `tests/golden/` drifts. The tiny checkpoint goes
through the same file format and strict loader as the published one.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .checkpoint import load_model, save_checkpoint, sha256_file
from .export import export_bundle
from .model import LOGIT_SCALE, ClipCaer, ModelDims
from .preprocess import clip_tensors, context_crop, face_crop, sample_indices, to_tensor
from .weights import randomize

SEED = 20261125
FRAME_SIZE = (256, 192)  # body box larger than 224 so the letterbox also downscales
NUM_FRAMES = 20  # more than 16: exercises the test-time sampling
GOLDEN_POSITIONS = [0, 7, 15]
SAMPLING_CASES = [1, 5, 16, 17, 20, 37, 100]


def synthetic_clip(rng: np.random.Generator) -> tuple[list[Image.Image], list, list[float]]:
    """A student-like scene: gradient room, a body block, a moving face ellipse, mild noise."""
    w, h = FRAME_SIZE
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames, boxes = [], []
    for i in range(NUM_FRAMES):
        img = np.stack([40 + 120 * xx / w, 60 + 100 * yy / h, 150 - 80 * xx / w], axis=-1)
        body = (xx > 70) & (xx < 190) & (yy > 95)
        img[body] = [90, 60, 160]
        cx, cy = 128 + 20 * np.sin(i / 3.0), 70 + 6 * np.cos(i / 2.0)
        face = ((xx - cx) / 22) ** 2 + ((yy - cy) / 28) ** 2 < 1
        img[face] = [225, 180, 150]
        img[face & (np.abs(yy - cy + 8) < 3) & (np.abs(np.abs(xx - cx) - 9) < 4)] = [30, 30, 30]
        img += rng.integers(-6, 7, size=img.shape)
        frames.append(Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB"))
        # Detector-like float boxes; one frame without a face exercises the whole-frame path.
        boxes.append(None if i == 11 else [float(cx - 22.6), float(cy - 28.3), float(cx + 21.7), float(cy + 29.4)])
    body_box = [10.4, 8.7, 250.9, 188.2]
    return frames, boxes, body_box


def _floats(t) -> list:
    return np.asarray(t, dtype=np.float32).astype(float).tolist()


def fixture_model() -> tuple[ClipCaer, str]:
    """The fixture's seeded tiny model, through a checkpoint file and the strict loader (the
    path the published checkpoint takes); with the checkpoint's sha256."""
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "tiny-clip-caer.pt"
        save_checkpoint(randomize(ClipCaer(ModelDims.tiny()), SEED), checkpoint, include_dims=True)
        return load_model(checkpoint), sha256_file(checkpoint)


@torch.no_grad()
def write_fixture(out: Path) -> dict:
    """Write `bundle/`, `clip/`, `crops/` and `parity.json` under `out`; returns parity.json."""
    out = Path(out)
    rng = np.random.default_rng(SEED)
    frames, face_boxes, body_box = synthetic_clip(rng)
    model, checkpoint_sha = fixture_model()
    d = model.dims

    face, context = clip_tensors(frames, face_boxes, body_box, d.image_size, d.frames)
    calibration = torch.cat([face, context]).numpy()
    source = {"checkpoint": f"generated tiny checkpoint (seed {SEED})", "checkpoint_sha256": checkpoint_sha}
    if (out / "bundle").exists():
        shutil.rmtree(out / "bundle")
    export_bundle(model, out / "bundle", calibration, "clip-caer-tiny-fixture", source)

    for sub in ("clip", "crops"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
        (out / sub).mkdir(parents=True)
    for i, frame in enumerate(frames):
        frame.save(out / "clip" / f"{i + 1:06d}.png")

    indices = sample_indices(len(frames), d.frames)
    crops, encoder_inputs = [], []
    for p in GOLDEN_POSITIONS:
        i = indices[p]
        face_crop(frames[i], face_boxes[i], d.image_size).save(out / "crops" / f"face_{p}.png")
        context_crop(frames[i], body_box, d.image_size).save(out / "crops" / f"context_{p}.png")
        crops.append({"position": p, "frame_index": i, "face_png": f"crops/face_{p}.png", "context_png": f"crops/context_{p}.png"})
        encoder_inputs += [f"crops/face_{p}.png", f"crops/context_{p}.png"]
    pixels = torch.stack([to_tensor(Image.open(out / name)) for name in encoder_inputs])

    face_features = model.image_encoder(face)
    context_features = model.image_encoder(context)
    logits = model(face[None], context[None])[0]
    g = torch.Generator().manual_seed(SEED)
    head_face, head_context = torch.randn(2, 1, d.frames, d.embed_dim, generator=g)
    head_logits = model.fuse(head_face, head_context) @ model.text_features().t() * LOGIT_SCALE

    parity = {
        "description": "CLIP-CAER tiny fixture: PyTorch reference outputs for the firmware's parity tests",
        "num_frames": len(frames),
        "sampled_indices": indices,
        "face_boxes": face_boxes,
        "body_box": body_box,
        "crops": crops,
        "encoder": {"inputs": encoder_inputs, "embeddings": _floats(model.image_encoder(pixels))},
        "face_features": _floats(face_features),
        "context_features": _floats(context_features),
        "logits": _floats(logits),
        "probabilities": _floats(logits.softmax(-1)),
        "head": {
            "face_features": _floats(head_face[0]),
            "context_features": _floats(head_context[0]),
            "logits": _floats(head_logits[0]),
        },
        "sampling": [{"num_frames": f, "indices": sample_indices(f, d.frames)} for f in SAMPLING_CASES],
    }
    (out / "parity.json").write_text(json.dumps(parity, indent=1) + "\n")
    return parity
