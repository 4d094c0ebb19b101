"""The reference preprocessing: sampling, face margin and clamping, letterbox geometry."""

from __future__ import annotations

import numpy as np
from PIL import Image

from caer_export.preprocess import context_crop, face_crop, sample_indices


def test_sampling_takes_segment_middles_or_pads_with_the_last_frame():
    assert sample_indices(32) == [1 + 2 * i for i in range(16)]
    assert sample_indices(20)[:4] == [0, 1, 3, 4]  # tick 1.25: int(0.625 + 1.25 i)
    assert sample_indices(16) == list(range(16))
    assert sample_indices(3) == [0, 1, 2] + [2] * 13


def _marked_frame() -> Image.Image:
    a = np.zeros((100, 200, 3), dtype=np.uint8)
    a[:, :, 0] = np.arange(200)[None, :]  # red encodes x
    a[:, :, 1] = np.arange(100)[:, None]  # green encodes y
    return Image.fromarray(a)


def test_face_box_is_truncated_grown_by_20_px_and_clamped():
    frame = _marked_frame()
    crop = np.asarray(face_crop(frame, [50.9, 30.7, 80.2, 60.9], size=224))
    # int() -> (50, 30, 80, 60); margin -> (30, 10, 100, 80): x 30..99, y 10..79
    assert abs(int(crop[0, 0, 0]) - 30) <= 1 and abs(int(crop[0, 0, 1]) - 10) <= 1
    assert abs(int(crop[-1, -1, 0]) - 99) <= 1 and abs(int(crop[-1, -1, 1]) - 79) <= 1
    clamped = np.asarray(face_crop(frame, [5, 5, 195, 95], size=224))
    assert clamped[0, 0, 0] == 0 and clamped[-1, -1, 0] == 199  # the whole frame


def test_no_face_box_uses_the_whole_frame():
    frame = _marked_frame()
    assert np.array_equal(np.asarray(face_crop(frame, None)), np.asarray(frame.resize((224, 224), Image.BILINEAR)))


def test_letterbox_keeps_aspect_and_pads_black_bottom_right_with_the_odd_pixel():
    frame = _marked_frame().crop((0, 0, 200, 99))  # 200x99 -> r = 1.12, 224x110
    out = np.asarray(context_crop(frame, None))
    rows = np.where(out.any(axis=(1, 2)))[0]
    assert rows[0] == 57 and rows[-1] == 57 + 110 - 1  # (224 - 110) // 2 = 57 on top, 57 below
    body = np.asarray(context_crop(_marked_frame(), [20, 10, 60, 91]))  # 40x81 box
    cols = np.where(body.any(axis=(0, 2)))[0]
    nw = int(40 * 224 / 81)  # 110
    assert cols[0] == (224 - nw) // 2 and cols[-1] == (224 - nw) // 2 + nw - 1
