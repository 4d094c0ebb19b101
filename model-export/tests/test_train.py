"""Training smoke test: a tiny CLIP-CAER on a generated RAER-layout dataset learns (CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from caer_export.__main__ import main
from caer_export.dataset import DatasetError, read_boxes, read_list

# One face colour per class, so that the task is learnable from the face stream alone.
COLOURS = [(230, 190, 160), (250, 120, 120), (120, 200, 120), (120, 120, 250), (240, 240, 80)]


def make_dataset(root, clips_per_class: int = 2, frames: int = 18):
    rng = np.random.default_rng(0)
    lines, faces, bodies = [], {}, {}
    for label, colour in enumerate(COLOURS, start=1):
        for k in range(clips_per_class):
            name = f"clips/c{label}_{k}"
            (root / name).mkdir(parents=True)
            for f in range(frames):
                a = np.full((72, 96, 3), 60, dtype=np.uint8) + rng.integers(0, 20, (72, 96, 3), dtype=np.uint8)
                x = 30 + f % 5
                a[20:50, x : x + 24] = colour
                Image.fromarray(a).save(root / name / f"{f:05d}.png")
                faces[f"{name}/{f:05d}.png"] = [x, 20, x + 24, 50]
            bodies[name] = [10, 5, 90, 70]
            lines.append(f"{name} {frames} {label}")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    (root / "faces.json").write_text(json.dumps(faces))
    (root / "bodies.json").write_text(json.dumps(bodies))
    return root


def test_training_lowers_the_loss_and_writes_the_best_checkpoint(tmp_path, capsys):
    root = make_dataset(tmp_path / "data", clips_per_class=1, frames=16)
    out = tmp_path / "run"
    code = main([
        "train", "--train-list", str(root / "train.txt"), "--val-list", str(root / "train.txt"),
        "--face-boxes", str(root / "faces.json"), "--body-boxes", str(root / "bodies.json"),
        "--random-init", "--size", "tiny", "--out", str(out), "--epochs", "6", "--batch-size", "5",
        "--quiet", "--seed", "1", "--lr-scale", "0.01",  # logits are scaled by 100: tiny random
        # models diverge at the full-size learning rates
    ])
    assert code == 0
    history = json.loads((out / "history.json").read_text())
    losses = [h["loss"] for h in history]
    print("losses per epoch:", losses)
    assert min(losses[-2:]) < 0.6 * losses[0], losses
    assert (out / "best.pt").is_file()
    assert '"uar"' in capsys.readouterr().out
    # The best checkpoint loads strictly through the export path.
    from caer_export.checkpoint import load_model

    load_model(out / "best.pt")


def test_principal_patch_filters_give_centred_unit_variance_tokens():
    import torch

    from caer_export.model import ClipCaer, ModelDims
    from caer_export.train import principal_patch_filters
    from caer_export.weights import randomize

    model = randomize(ClipCaer(ModelDims.tiny()), 0)
    crops = torch.rand(8, 3, 224, 224) * 0.3 + torch.linspace(0.2, 0.6, 8)[:, None, None, None]
    before = model.image_encoder.positional_embedding.detach().clone()
    principal_patch_filters(model, crops)
    v = model.image_encoder
    tokens = v.conv1(crops).flatten(2).transpose(1, 2) + (v.positional_embedding[1:] - before[1:])
    flat = tokens.reshape(-1, tokens.shape[-1]).detach()
    assert flat.mean(0).abs().max() < 1e-3  # the patches' mean is folded away
    assert torch.allclose(flat.std(0), torch.ones(flat.shape[1]), atol=1e-2)


def test_scratch_recipe_learns_from_random_weights(tmp_path, capsys):
    root = make_dataset(tmp_path / "data", clips_per_class=2, frames=16)
    out = tmp_path / "run"
    code = main([
        "train", "--train-list", str(root / "train.txt"), "--val-list", str(root / "train.txt"),
        "--face-boxes", str(root / "faces.json"), "--body-boxes", str(root / "bodies.json"),
        "--random-init", "--size", "tiny", "--recipe", "scratch", "--pretrain-steps", "150",
        "--out", str(out), "--epochs", "10", "--batch-size", "5", "--quiet", "--seed", "1",
    ])
    assert code == 0
    printed = capsys.readouterr().out
    pretrain = [json.loads(line) for line in printed.splitlines() if line.startswith('{"pretrain_step"')]
    assert pretrain[-1]["loss"] < 0.5 * np.log(5), pretrain  # the encoder learnt the colours
    history = json.loads((out / "history.json").read_text())
    assert max(h["uar"] for h in history) >= 80.0, history


def test_malformed_lists_and_boxes_name_the_line_or_file(tmp_path):
    root = make_dataset(tmp_path / "data", clips_per_class=1, frames=3)
    bad = root / "bad.txt"
    bad.write_text("clips/c1_0 3 1\nclips/c2_0 three 2\n")
    with pytest.raises(DatasetError, match=r"bad.txt:2: num_frames must be a whole number"):
        read_list(bad)
    bad.write_text("clips/missing 3 1\n")
    with pytest.raises(DatasetError, match=r"bad.txt:1: frame folder .*missing does not exist"):
        read_list(bad)
    bad.write_text("clips/c1_0 4 1\n")
    with pytest.raises(DatasetError, match="holds 3 frames, the list says 4"):
        read_list(bad)
    bad.write_text("clips/c1_0 2 1\n")  # fewer than the folder holds: the official loader samples 2
    assert read_list(bad)[0].num_frames == 2 and len(read_list(bad)[0].frames) == 3
    (root / "boxes.json").write_text('{"clips/c1_0/00000.png": [1, 2, 3]}')
    with pytest.raises(DatasetError, match="is not \\[left, top, right, bottom\\]"):
        read_boxes(root / "boxes.json")


def test_official_annotation_formats_are_read_as_the_official_loader_keys_them(tmp_path):
    from caer_export.dataset import body_box, face_box

    first = tmp_path / "a.json"
    second = tmp_path / "b.json"
    first.write_text('{"/d/c1": {"1.jpg": [1, 2, 3, 4]}, "/d/c2": {"1.jpg": [5, 5, 6, 6]}}')
    second.write_text('{"/d/c2": {"2.jpg": [7, 7, 8, 8]}, "c3/1.jpg": [9, 9, 10, 10]}')
    boxes = read_boxes([first, second])
    assert face_box(boxes, "/d/c1/", "1.jpg") == [1, 2, 3, 4]  # dirname drops the trailing slash
    assert face_box(boxes, "/d/c2", "1.jpg") is None  # replaced whole by the second file
    assert face_box(boxes, "/d/c2", "2.jpg") == [7, 7, 8, 8]
    assert face_box(boxes, "c3", "1.jpg") == [9, 9, 10, 10]  # the flat format
    assert body_box({"/d/c1": [0, 0, 9, 9]}, "/d/c1/") == [0, 0, 9, 9]
    (tmp_path / "bad.json").write_text('{"/d/c1": {"1.jpg": [1, 2]}}')
    with pytest.raises(DatasetError, match="'/d/c1/1.jpg' is not"):
        read_boxes(tmp_path / "bad.json")
