"""RAER-layout labelled clips (`docs/dataset.md`) for training and evaluation."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms import functional as TF

from .preprocess import context_crop, face_crop, sample_indices, to_tensor

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class DatasetError(ValueError):
    """A malformed list line, missing folder or bad box file; the message says where."""


@dataclass(frozen=True)
class Clip:
    frame_dir: str
    frames: list[Path]
    label: int  # 0..4


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
        if not (count.isdigit() and label.isdigit() and 1 <= int(label) <= 5):
            raise DatasetError(f"{where}: num_frames must be a whole number and label 1..5, got {line!r}")
        folder = root / frame_dir
        if not folder.is_dir():
            raise DatasetError(f"{where}: frame folder {folder} does not exist")
        frames = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(frames) != int(count) or not frames:
            raise DatasetError(f"{where}: {folder} holds {len(frames)} frames, the list says {count}")
        clips.append(Clip(frame_dir, frames, int(label) - 1))
    return clips


def read_boxes(path: Path | None) -> dict[str, list[float]]:
    if path is None:
        return {}
    try:
        boxes = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: not a readable JSON box file ({e})") from e
    if not isinstance(boxes, dict):
        raise DatasetError(f"{path}: expected an object mapping paths to [l, t, r, b]")
    for key, box in boxes.items():
        if box is not None and not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
            raise DatasetError(f"{path}: entry {key!r} is not [left, top, right, bottom]")
    return boxes


def train_indices(num_frames: int, frames: int, rng: random.Random) -> list[int]:
    """Training sampling: a random frame inside each of `frames` equal segments."""
    if num_frames < frames:
        return sample_indices(num_frames, frames)
    segment = num_frames / frames
    return [min(num_frames - 1, int(segment * i + rng.random() * segment)) for i in range(frames)]


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
        n = len(clip.frames)
        indices = train_indices(n, self.frames, self.rng) if self.train else sample_indices(n, self.frames)
        body = self.body_boxes.get(clip.frame_dir)
        faces, contexts = [], []
        for j in indices:
            frame = Image.open(clip.frames[j]).convert("RGB")
            box = self.face_boxes.get(f"{clip.frame_dir}/{clip.frames[j].name}")
            faces.append(face_crop(frame, box, self.size))
            contexts.append(context_crop(frame, body, self.size))
        if self.train:
            faces, contexts = self._augment(faces), self._augment(contexts)
        return (
            torch.stack([to_tensor(c) for c in faces]),
            torch.stack([to_tensor(c) for c in contexts]),
            clip.label,
        )
