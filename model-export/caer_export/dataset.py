"""RAER-layout labelled clips (`docs/dataset.md`), read as the official CLIP-CAER loader reads them.

- List file: `<frame_dir> <num_frames> <label 1..5>` a line; `frame_dir` relative to the root
  (the list file's folder by default) unless absolute.
- Frames: `sorted(glob(frame_dir/*))`, every entry not starting with `.`; the sampling uses the
  list's `num_frames` and indexes that listing (which must be at least that long).
- Face boxes: the official `{frame_dir: {file_name: box}}`, keyed by
  `os.path.dirname(os.path.join(frame_dir, file_name))`, or the project's flat
  `{"frame_dir/file_name": box}`; body boxes `{frame_dir: box}`. Several files of a kind are
  merged with `dict.update`, as the official loader merges its two.
"""

from __future__ import annotations

import glob
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms import functional as TF

from .preprocess import context_crop, face_crop, sample_indices, to_tensor

# The largest box file read (RAER's are a few MB).
MAX_BOX_FILE_BYTES = 256 << 20


class DatasetError(ValueError):
    """A malformed list line, missing folder or bad box file; the message says where."""


@dataclass(frozen=True)
class Clip:
    frame_dir: str  # as the list file writes it: the key of its boxes
    num_frames: int  # as the list file writes it: what the sampling uses
    frames: list[Path]  # the folder's sorted listing
    label: int  # 0..4


def list_frames(folder: Path) -> list[Path]:
    """The official listing: `sorted(glob(join(folder, '*')))`."""
    return [Path(p) for p in sorted(glob.glob(os.path.join(glob.escape(str(folder)), "*")))]


def read_list(list_file: Path, root: Path | None = None) -> list[Clip]:
    list_file = Path(list_file)
    root = Path(root) if root else list_file.parent
    clips = []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{list_file}:{number}"
        parts = line.split()
        if len(parts) != 3:
            raise DatasetError(f"{where}: expected '<frame_dir> <num_frames> <label 1..5>', got {line!r}")
        frame_dir, count, label = parts
        if not (count.isdigit() and int(count) > 0 and label.isdigit() and 1 <= int(label) <= 5):
            raise DatasetError(f"{where}: num_frames must be a whole number and label 1..5, got {line!r}")
        folder = root / frame_dir
        if not folder.is_dir():
            raise DatasetError(f"{where}: frame folder {folder} does not exist")
        frames = list_frames(folder)
        if len(frames) < int(count):
            raise DatasetError(f"{where}: {folder} holds {len(frames)} frames, the list says {count}")
        clips.append(Clip(frame_dir, int(count), frames, int(label) - 1))
    return clips


def _is_box(box) -> bool:
    return box is None or (
        isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
    )


def read_boxes(paths) -> dict:
    """One box file, or several merged in order (a later file's top-level entry wins)."""
    if paths is None:
        return {}
    if isinstance(paths, (str, Path)):
        paths = [paths]
    merged: dict = {}
    for path in paths:
        path = Path(path)
        try:
            if path.stat().st_size > MAX_BOX_FILE_BYTES:
                raise DatasetError(f"{path}: box file larger than {MAX_BOX_FILE_BYTES} bytes")
            boxes = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DatasetError(f"{path}: not a readable JSON box file ({e})") from e
        if not isinstance(boxes, dict):
            raise DatasetError(f"{path}: expected an object mapping paths to [l, t, r, b]")
        for key, entry in boxes.items():
            nested = entry.items() if isinstance(entry, dict) else [(None, entry)]
            for name, box in nested:
                if not _is_box(box):
                    where = key if name is None else f"{key}/{name}"
                    raise DatasetError(f"{path}: entry {where!r} is not [left, top, right, bottom]")
        merged.update(boxes)
    return merged


def face_box(face_boxes: dict, frame_dir: str, file_name: str):
    """The official nested entry if the directory has one, else the flat one; None: whole frame."""
    key = os.path.dirname(os.path.join(frame_dir, file_name))
    entry = face_boxes.get(key)
    if isinstance(entry, dict):
        return entry.get(file_name)
    return face_boxes.get(f"{frame_dir}/{file_name}")


def body_box(body_boxes: dict, frame_dir: str):
    """The clip's body box, keyed as written or as the official loader keys it."""
    if frame_dir in body_boxes:
        return body_boxes[frame_dir]
    return body_boxes.get(os.path.dirname(os.path.join(frame_dir, "x")))


def train_indices(num_frames: int, frames: int, rng: random.Random) -> list[int]:
    """Official training sampling: a random frame inside each of `frames` segments of
    `num_frames // frames` frames; padded by the last frame when the clip is shorter."""
    segment = num_frames // frames
    if segment > 0:
        return [i * segment + rng.randrange(segment) for i in range(frames)]
    return sample_indices(num_frames, frames)


class ClipDataset(torch.utils.data.Dataset):
    """Clips -> (face `[16,3,S,S]`, context `[16,3,S,S]`, label); augmentation when training."""

    def __init__(self, clips: list[Clip], face_boxes: dict, body_boxes: dict, train: bool,
                 size: int = 224, frames: int = 16, seed: int = 0):
        self.clips, self.face_boxes, self.body_boxes = clips, face_boxes, body_boxes
        self.train, self.size, self.frames = train, size, frames
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.clips)

    def _augment(self, crops: list[Image.Image]) -> list[Image.Image]:
        """Official augmentation: rotation up to 4 degrees, horizontal flip p=0.5, one draw per
        sequence (face and context sequences are transformed independently)."""
        angle = self.rng.uniform(-4.0, 4.0)
        flip = self.rng.random() < 0.5
        out = [c.rotate(angle, resample=Image.BILINEAR) for c in crops]
        return [TF.hflip(c) for c in out] if flip else out

    def __getitem__(self, i: int):
        clip = self.clips[i]
        n = clip.num_frames
        indices = train_indices(n, self.frames, self.rng) if self.train else sample_indices(n, self.frames)
        body = body_box(self.body_boxes, clip.frame_dir)
        faces, contexts = [], []
        for j in indices:
            frame = Image.open(clip.frames[j]).convert("RGB")
            box = face_box(self.face_boxes, clip.frame_dir, clip.frames[j].name)
            faces.append(face_crop(frame, box, self.size))
            contexts.append(context_crop(frame, body, self.size))
        if self.train:
            faces, contexts = self._augment(faces), self._augment(contexts)
        return (
            torch.stack([to_tensor(c) for c in faces]),
            torch.stack([to_tensor(c) for c in contexts]),
            clip.label,
        )
