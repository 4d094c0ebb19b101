"""Whole-clip parity data: clips on disk and what the official pipeline makes of them.

`write_parity_clips(out)` renders a few clips as PNG and JPEG frame directories in the official
RAER layout (`raer.write_raer`), chosen to exercise every rule of the official data loader:
fractional face and body boxes (with .5 values, which Pillow rounds half to even), a body box
partly and one wholly outside the frame, no body box, a frame without a face box, clips
shorter than, as long as and longer than 16 frames, an exact 2x downscale (OpenCV's area
path), an upscale, odd frame sizes, and JPEG chroma subsampling 4:2:0, 4:2:2 and 4:4:4.

It then reads them back with `dataset.ClipDataset` (the official listing, sampling, box lookup
and preprocessing: Pillow and OpenCV as the official loader calls them) and runs the fixture's
PyTorch model (the model the committed tiny bundle was exported from), writing the logits to
`reference.json`. The firmware's bench tool must reproduce them from the same files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .dataset import ClipDataset, read_boxes, read_list
from .fixture import fixture_model
from .raer import ClipSpec, write_raer

SEED = 20261201


def _frames(rng: np.random.Generator, size: tuple[int, int], count: int) -> tuple[list[Image.Image], list]:
    """A textured room, a body block and a moving face ellipse with eyes; noisy, so that
    resampling differences show."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([40 + 150 * xx / w, 50 + 120 * yy / h, 170 - 90 * xx / w], axis=-1)
    base += 25 * np.sin(xx / 5.0)[..., None] * np.cos(yy / 7.0)[..., None]  # fine texture
    frames, boxes = [], []
    for i in range(count):
        img = base.copy()
        body = (np.abs(xx - w / 2) < w / 4) & (yy > h / 2)
        img[body] = [90 + i % 7, 60, 150]
        cx = w / 2 + 0.15 * w * np.sin(i / 3.0)
        cy = 0.32 * h + 0.04 * h * np.cos(i / 2.0)
        rx, ry = 0.09 * w, 0.13 * h
        face = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
        img[face] = [225, 180, 150]
        eyes = face & (np.abs(yy - cy + ry / 3) < 0.02 * h + 1) & (np.abs(np.abs(xx - cx) - rx / 2.5) < 0.02 * w + 1)
        img[eyes] = [30, 30, 40]
        img += rng.integers(-12, 13, size=img.shape)
        frames.append(Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB"))
        boxes.append([float(cx - rx - 0.37), float(cy - ry + 0.5), float(cx + rx + 0.61), float(cy + ry - 0.25)])
    return frames, boxes


def parity_clip_specs() -> list[ClipSpec]:
    rng = np.random.default_rng(SEED)
    specs = []

    def add(frame_dir, size, count, label, body_box, extension="png", jpeg=None, drop_face=()):
        frames, boxes = _frames(rng, size, count)
        for k in drop_face:
            boxes[k] = None
        spec = ClipSpec(frame_dir, frames, label, boxes, body_box, extension)
        if jpeg:
            spec.jpeg = jpeg
        specs.append(spec)

    # Longer than 16 frames, fractional boxes, .5 values in the body box, inside the frame.
    add("png/long_fractional", (320, 240), 37, 0, [40.3, 20.5, 290.5, 238.7])
    add("jpg/long_fractional_420", (320, 240), 37, 1, [40.3, 20.5, 290.5, 238.7], "jpg",
        {"quality": 90, "subsampling": "4:2:0"})
    # Shorter than 16, body box partly outside the frame (left and bottom).
    add("png/short_partly_outside", (200, 150), 7, 2, [-30.4, 10.2, 150.6, 180.5])
    # No body box, a frame without a face box, an odd frame size, 4:4:4.
    add("jpg/short_no_body_444", (333, 251), 12, 3, None, "jpg", {"quality": 95, "subsampling": "4:4:4"},
        drop_face=(4,))
    # Exactly 16 frames, small frames: the letterbox upscales by 2.
    add("png/upscale", (112, 84), 16, 4, None)
    # An exact 2x downscale (OpenCV switches to its area path), 4:2:2.
    add("jpg/area_2x_422", (448, 336), 20, 0, [0, 0, 448, 336], "jpg", {"quality": 85, "subsampling": "4:2:2"})
    # A body box wholly outside the frame: the context is black.
    add("png/wholly_outside", (160, 120), 17, 1, [200.5, 10.5, 260.5, 90.5])
    return specs


@torch.no_grad()
def write_parity_clips(out: Path) -> dict:
    out = Path(out)
    written = write_raer(out, parity_clip_specs())
    model, checkpoint_sha = fixture_model()
    d = model.dims
    clips = read_list(written.list_file)
    data = ClipDataset(clips, read_boxes(written.face_boxes), read_boxes(written.body_boxes), False, d.image_size, d.frames)
    results = []
    for i, clip in enumerate(clips):
        face, context, label = data[i]
        logits = model(face[None], context[None])[0]
        results.append({
            "frame_dir": clip.frame_dir,
            "label": label,
            "logits": [float(v) for v in logits.numpy().astype(np.float32)],
            "predicted": int(logits.argmax()),
        })
    reference = {
        "description": "official-faithful logits of the fixture model on clips written as image files",
        "checkpoint_sha256": checkpoint_sha,
        "list": written.list_file.name,
        "face_boxes": written.face_boxes.name,
        "body_boxes": written.body_boxes.name,
        "clips": results,
    }
    (out / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    return reference
