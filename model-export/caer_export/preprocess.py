"""The reference preprocessing of CLIP-CAER, with Pillow (what the official code uses).

The firmware reimplements exactly this; the goldens written from here are what it is
checked against. Crops are uint8 RGB until `to_tensor` divides by 255 (no mean/std).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

FACE_MARGIN = 20


def sample_indices(num_frames: int, frames: int = 16) -> list[int]:
    """Test-time sampling: the middle of each of `frames` equal segments, or pad by the last."""
    if num_frames <= 0:
        raise ValueError("a clip needs at least one frame")
    if num_frames > frames:
        tick = num_frames / frames
        return [int(tick / 2.0 + tick * i) for i in range(frames)]
    return list(range(num_frames)) + [num_frames - 1] * (frames - num_frames)


def _int_box(box, width: int, height: int, margin: int) -> tuple[int, int, int, int]:
    left, top, right, bottom = (int(v) for v in box)
    return (
        max(0, left - margin),
        max(0, top - margin),
        min(width, right + margin),
        min(height, bottom + margin),
    )


def face_crop(frame: Image.Image, box, size: int = 224) -> Image.Image:
    """Box cast to int, 20 px margin, clamped, cropped, stretched to size x size (bilinear)."""
    if box is not None:
        frame = frame.crop(_int_box(box, frame.width, frame.height, FACE_MARGIN))
    return frame.resize((size, size), Image.BILINEAR)


def context_crop(frame: Image.Image, box, size: int = 224) -> Image.Image:
    """Cropped to the body box, then letterboxed on black (odd pixel bottom/right)."""
    if box is not None:
        frame = frame.crop(_int_box(box, frame.width, frame.height, 0))
    w, h = frame.size
    r = min(size / w, size / h)
    nw, nh = int(w * r), int(h * r)
    canvas = Image.new("RGB", (size, size), (0, 0, 0))
    canvas.paste(frame.resize((nw, nh), Image.BILINEAR), ((size - nw) // 2, (size - nh) // 2))
    return canvas


def to_tensor(crop: Image.Image) -> torch.Tensor:
    """uint8 HWC RGB -> float CHW in [0, 1]."""
    array = np.asarray(crop.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array.transpose(2, 0, 1).copy())


def clip_tensors(frames: list[Image.Image], face_boxes: list, body_box, size: int = 224, frames_per_clip: int = 16):
    """A whole clip -> (face `[16, 3, S, S]`, context `[16, 3, S, S]`), test-time sampling."""
    indices = sample_indices(len(frames), frames_per_clip)
    face = torch.stack([to_tensor(face_crop(frames[i], face_boxes[i], size)) for i in indices])
    context = torch.stack([to_tensor(context_crop(frames[i], body_box, size)) for i in indices])
    return face, context
