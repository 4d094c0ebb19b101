"""The reference preprocessing of CLIP-CAER, with the libraries the official loader uses.

The official data loader (`dataloader/video_dataloader.py` of the CLIP-CAER release) computes:

- the face stream with Pillow: the box cast with `int()`, grown by 20 px, clamped, cropped,
  and stretched to S x S with Pillow's (antialiased) bilinear resize;
- the context stream with Pillow then OpenCV: `Image.crop` on the raw body box (Pillow rounds
  fractional coordinates half to even, does not clamp, and fills what lies outside the frame
  with black), then a letterbox made by `cv2.resize` with its default INTER_LINEAR (8-bit
  fixed point, no antialiasing) and `cv2.copyMakeBorder` in black, the odd pixel bottom/right.

This module makes the same library calls in the same order, so the goldens written from here
are official-faithful; the firmware reimplements them bit for bit. Crops are uint8 RGB until
`to_tensor` divides by 255 (no mean/std).
"""

from __future__ import annotations

import cv2
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


def body_crop(frame: Image.Image, box) -> Image.Image:
    """`Image.crop` on the raw box, as the official loader does: no cast, no clamp."""
    return frame if box is None else frame.crop(tuple(box))


def letterbox(image: Image.Image, size: int = 224) -> Image.Image:
    """The official `_resize_image`: cv2.resize to (int(w*r), int(h*r)), black border around.

    The RGB->BGR->RGB conversions around it are kept as the official code has them (they
    cancel; OpenCV's resize treats the channels alike).
    """
    bgr = cv2.cvtColor(np.array(image), cv2.COLOR_RGB2BGR)
    h, w = bgr.shape[0], bgr.shape[1]
    r = min(size / w, size / h)
    nw, nh = int(w * r), int(h * r)
    if nw == 0 or nh == 0:
        raise ValueError(f"a {w}x{h} body crop letterboxes to zero pixels on one side")
    bgr = cv2.resize(bgr, (nw, nh))
    pw, ph = (size - nw) // 2, (size - nh) // 2
    top, bottom, left, right = ph, ph, pw, pw
    if top + bottom + nh < size:
        bottom += 1
    if left + right + nw < size:
        right += 1
    bgr = cv2.copyMakeBorder(bgr, top, bottom, left, right, borderType=cv2.BORDER_CONSTANT, value=[0, 0, 0])
    return Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype("uint8"))


def context_crop(frame: Image.Image, box, size: int = 224) -> Image.Image:
    """Cropped to the body box (Pillow semantics), then letterboxed on black with OpenCV."""
    crop = body_crop(frame, box)
    if crop.width == 0 or crop.height == 0:
        raise ValueError(f"body box {list(box)} crops an empty image")
    return letterbox(crop, size)


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
