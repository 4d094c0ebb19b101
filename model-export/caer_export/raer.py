"""Writes labelled clips in the official RAER layout (`docs/dataset.md`).

Frame directories of numbered image files, a list file `<frame_dir> <num_frames> <label 1..5>`,
face boxes in the official nested format `{frame_dir: {file_name: [l, t, r, b]}}` keyed as the
official loader looks them up, and body boxes `{frame_dir: [l, t, r, b]}`: what the project's
`train`, `caer-calibrate` and the official code all read.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image


@dataclass
class ClipSpec:
    frame_dir: str  # relative to the dataset root, as the list file writes it
    frames: list[Image.Image]
    label: int  # 0..4
    face_boxes: list  # one [l, t, r, b] or None per frame
    body_box: list | None = None
    extension: str = "png"  # "png" or "jpg"
    jpeg: dict = field(default_factory=lambda: {"quality": 90, "subsampling": "4:2:0"})


@dataclass
class WrittenDataset:
    root: Path
    list_file: Path
    face_boxes: Path
    body_boxes: Path


def write_raer(root: Path, clips: list[ClipSpec], list_name: str = "list.txt") -> WrittenDataset:
    root = Path(root)
    faces: dict = {}
    bodies: dict = {}
    lines = []
    for clip in clips:
        folder = root / clip.frame_dir
        folder.mkdir(parents=True, exist_ok=True)
        # The official key: os.path.dirname(os.path.join(frame_dir, file_name)).
        key = os.path.dirname(os.path.join(clip.frame_dir, "x"))
        per_frame = {}
        for i, (frame, box) in enumerate(zip(clip.frames, clip.face_boxes, strict=True)):
            name = f"{i + 1:06d}.{clip.extension}"
            if clip.extension == "jpg":
                frame.save(folder / name, "JPEG", **clip.jpeg)
            else:
                frame.save(folder / name)
            if box is not None:
                per_frame[name] = [float(v) for v in box]
        faces[key] = per_frame
        if clip.body_box is not None:
            bodies[key] = [float(v) for v in clip.body_box]
        lines.append(f"{clip.frame_dir} {len(clip.frames)} {clip.label + 1}")
    written = WrittenDataset(root, root / list_name, root / "face_boxes.json", root / "body_boxes.json")
    written.list_file.write_text("\n".join(lines) + "\n")
    written.face_boxes.write_text(json.dumps(faces, indent=1) + "\n")
    written.body_boxes.write_text(json.dumps(bodies, indent=1) + "\n")
    return written
