"""The reference preprocessing: sampling, face margin and clamping, letterbox geometry."""

from __future__ import annotations

import numpy as np
from PIL import Image

import cv2

from caer_export.preprocess import body_crop, context_crop, face_crop, sample_indices


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


def test_body_box_is_rounded_half_to_even_not_clamped_and_black_outside():
    frame = _marked_frame()  # 200x100, red = x, green = y
    # Pillow rounds each coordinate with round(): -10.5 -> -10, 20.5 -> 20, 60.5 -> 60, 91.5 -> 92.
    crop = np.asarray(body_crop(frame, [-10.5, 20.5, 60.5, 91.5]))
    assert crop.shape == (72, 70, 3)
    assert not crop[:, :10].any()  # the 10 columns left of the frame are black
    assert crop[0, 10, 0] == 0 and crop[0, 10, 1] == 20 and crop[0, 69, 0] == 59
    wholly_outside = np.asarray(body_crop(frame, [300.2, 10, 340.7, 50]))
    assert wholly_outside.shape == (40, 41, 3) and not wholly_outside.any()


def test_letterbox_is_opencv_linear_without_antialiasing():
    rng = np.random.default_rng(3)
    noisy = Image.fromarray(rng.integers(0, 256, size=(300, 500, 3), dtype=np.uint8))
    out = np.asarray(context_crop(noisy, None))
    nw, nh = 224, int(300 * 224 / 500)  # 134
    top = (224 - nh) // 2
    expected = cv2.resize(np.asarray(noisy), (nw, nh), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(out[top : top + nh], expected)
    assert not out[:top].any() and not out[top + nh :].any()
    # Pillow's antialiased bilinear gives other pixels on a noisy downscale.
    pillow = np.asarray(noisy.resize((nw, nh), Image.BILINEAR))
    assert (pillow != expected).mean() > 0.5


def test_context_of_a_box_partly_outside_the_frame_letterboxes_the_black_part_too():
    frame = _marked_frame()
    out = np.asarray(context_crop(frame, [100.0, -50.0, 300.0, 150.0]))  # 200x200 -> 224x224
    assert out.shape == (224, 224, 3)
    assert not out[:, 120:].any() and not out[:50].any()  # right half and top quarter are outside
    assert out[100, 50].any()
