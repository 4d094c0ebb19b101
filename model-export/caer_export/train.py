"""Fine-tune CLIP-CAER on RAER-layout clips with the official recipe.

Recipe (reference file): 20 epochs, batch 8, SGD momentum 0.9, weight decay 1e-4; learning
rates temporal nets 1e-2, image encoder and fusion 1e-5, prompt context 1e-3; MultiStep
milestones 10 and 15, gamma 0.1; cross-entropy; text tower frozen. The best checkpoint by UAR
on the validation list is written in the official format. Nothing is downloaded: the start
weights are a CLIP file the user gives, or an existing CLIP-CAER checkpoint.

`--recipe scratch` is for models trained from random weights (the demo model of
`scripts/train-demo-model.sh`), where no pretrained CLIP exists to fine-tune. Measured on the
synthetic classroom (500 clips): with the official recipe, or AdamW alone, a random tiny ViT
stays at chance, since it gives nearly the same feature for every crop (mean cosine 0.998
between crops) and at 1e-3 it collapses. So the scratch recipe stands in for CLIP's
pretraining in two steps:

1. Pretraining of the image encoder alone on single crops (face and context crops of the
   training clips, each labelled with its clip's class, a temporary linear head that is then
   dropped), after a data-dependent start: the patch filters are the training patches'
   principal components scaled to unit variance, their mean folded into the positional
   embedding, so that crops give different tokens from the first step. AdamW 1e-4.
2. The whole model as the official recipe trains it (same trained parts, text tower frozen),
   with AdamW and a cosine schedule: 1e-3 on the temporal nets, the fusion and the prompts,
   3e-5 on the pretrained image encoder.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from .checkpoint import load_model, save_checkpoint
from .dataset import ClipDataset, read_boxes, read_list
from .model import NUM_CLASSES, ClipCaer, ModelDims
from .weights import load_clip_weights, randomize


def metrics(labels: list[int], predictions: list[int]) -> dict:
    """UAR (mean per-class recall over classes present), WAR and the 5x5 confusion matrix."""
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=int)
    for truth, guess in zip(labels, predictions):
        confusion[truth, guess] += 1
    support = confusion.sum(axis=1)
    recall = [confusion[c, c] / support[c] for c in range(NUM_CLASSES) if support[c] > 0]
    return {
        "uar": 100.0 * float(np.mean(recall)) if recall else 0.0,
        "war": 100.0 * float(np.trace(confusion) / max(1, confusion.sum())),
        "confusion": confusion.tolist(),
    }


def optimizer_groups(model: ClipCaer, lr_scale: float = 1.0) -> list[dict]:
    """The official parameter groups; the text tower is frozen."""
    for p in model.clip_model_.parameters():
        p.requires_grad_(False)
    for p in model.image_encoder.parameters():
        p.requires_grad_(True)
    return [
        {"params": list(model.temporal_net.parameters()) + list(model.temporal_net_body.parameters()), "lr": 1e-2 * lr_scale},
        {"params": list(model.image_encoder.parameters()) + list(model.project_fc.parameters()), "lr": 1e-5 * lr_scale},
        {"params": list(model.prompt_learner.parameters()), "lr": 1e-3 * lr_scale},
    ]


def scratch_groups(model: ClipCaer, lr_scale: float = 1.0) -> list[dict]:
    """The scratch recipe's parameter groups for step 2 (see the module docs)."""
    optimizer_groups(model)  # the same parts trained, the text tower frozen
    head = (list(model.temporal_net.parameters()) + list(model.temporal_net_body.parameters())
            + list(model.project_fc.parameters()) + list(model.prompt_learner.parameters()))
    return [
        {"params": head, "lr": 1e-3 * lr_scale},
        {"params": list(model.image_encoder.parameters()), "lr": 3e-5 * lr_scale},
    ]


@torch.no_grad()
def principal_patch_filters(model: ClipCaer, crops: torch.Tensor) -> None:
    """Patch filters = the principal components of `crops`' patches, scaled so that each
    token channel has unit variance; the patches' mean is folded into the positional
    embedding (the patch embedding has no bias), so a crop's tokens are centred."""
    v = model.image_encoder
    w = v.conv1.weight  # [width, 3, patch, patch]
    patch = w.shape[-1]
    patches = F.unfold(crops, patch, stride=patch).transpose(1, 2).reshape(-1, w[0].numel())
    mean = patches.mean(0)
    centred = patches - mean
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    components = vh[: w.shape[0]]
    filters = components / (centred @ components.t()).std(0).clamp_min(1e-6)[:, None]
    w.copy_(filters.reshape(w.shape))
    v.positional_embedding[1:] -= mean @ filters.t()


def crop_pool(dataset, every: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Every `every`-th face and context crop of each clip (augmented as for training), as
    uint8, with its clip's label: batches drawn from it mix many clips."""
    crops, labels = [], []
    for face, context, label in dataset:
        chosen = torch.cat([face[::every], context[::every]])
        crops.append((chosen * 255).round().to(torch.uint8))
        labels += [label] * chosen.shape[0]
    return torch.cat(crops), torch.tensor(labels)


def pretrain_image_encoder(model: ClipCaer, dataset, steps: int, lr: float, seed: int) -> None:
    """Step 1 of the scratch recipe: the image encoder and a temporary linear head learn the
    clip's class from single face and context crops, 64 crops of many clips per step."""
    crops, labels = crop_pool(dataset)
    v = model.image_encoder
    probe = torch.nn.Linear(v.proj.shape[1], NUM_CLASSES)
    optimizer = torch.optim.AdamW(list(v.parameters()) + list(probe.parameters()), lr=lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    v.train()
    losses = []
    for step in range(1, steps + 1):
        chosen = torch.randint(0, len(labels), (64,), generator=generator)
        loss = F.cross_entropy(probe(v(crops[chosen].float() / 255)), labels[chosen])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == steps:
            print(json.dumps({"pretrain_step": step, "loss": float(np.mean(losses[-50:]))}), flush=True)


@torch.no_grad()
def evaluate(model: ClipCaer, loader) -> dict:
    model.eval()
    labels, predictions = [], []
    for face, context, label in loader:
        predictions += model(face, context).argmax(-1).tolist()
        labels += label.tolist()
    return metrics(labels, predictions)


def build_model(args: argparse.Namespace) -> ClipCaer:
    if args.init_checkpoint:
        return load_model(args.init_checkpoint)
    dims = ModelDims.tiny() if args.size == "tiny" else ModelDims.vit_b_32()
    model = ClipCaer(dims)
    if args.clip_weights:
        randomize(model, args.seed)  # temporal nets and fusion start random, CLIP replaces the rest
        load_clip_weights(model, args.clip_weights)
    elif args.random_init:
        randomize(model, args.seed)
    else:
        raise ValueError("give --clip-weights FILE (CLIP ViT-B/32), --init-checkpoint FILE or --random-init")
    return model


def train(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    model = build_model(args)
    face_boxes, body_boxes = read_boxes(args.face_boxes), read_boxes(args.body_boxes)
    size, frames = model.dims.image_size, model.dims.frames
    train_set = ClipDataset(read_list(args.train_list, args.root), face_boxes, body_boxes, True, size, frames, args.seed)
    val_set = ClipDataset(read_list(args.val_list, args.root), face_boxes, body_boxes, False, size, frames)
    train_loader = torch.utils.data.DataLoader(train_set, batch_size=args.batch_size, shuffle=True, num_workers=args.workers)
    val_loader = torch.utils.data.DataLoader(val_set, batch_size=args.batch_size, num_workers=args.workers)

    groups = optimizer_groups(model, args.lr_scale)
    if args.recipe == "scratch":
        if args.random_init:
            first = [train_set[i] for i in range(min(64, len(train_set)))]
            principal_patch_filters(model, torch.cat([torch.cat([f[::4], c[::4]]) for f, c, _ in first]))
        if args.pretrain_steps:
            pretrain_image_encoder(model, train_set, args.pretrain_steps, 1e-4 * args.lr_scale, args.seed)
        groups = scratch_groups(model, args.lr_scale)
        optimizer = torch.optim.AdamW(groups, weight_decay=1e-4)
        total = args.epochs * (args.max_steps or len(train_loader))
        warmup = min(30, max(1, total // 10))
        schedule = torch.optim.lr_scheduler.LambdaLR(  # linear warm-up, then cosine, per step
            optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    else:
        optimizer = torch.optim.SGD(groups, momentum=0.9, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[10, 15], gamma=0.1)
    loss_fn = torch.nn.CrossEntropyLoss()
    history, best_uar = [], -1.0
    args.out.mkdir(parents=True, exist_ok=True)
    for epoch in range(1, args.epochs + 1):
        model.train()
        losses = []
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{args.epochs}", unit="batch", disable=args.quiet)
        for step, (face, context, label) in enumerate(bar):
            if args.max_steps and step >= args.max_steps:
                break
            loss = loss_fn(model(face, context), label)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if args.recipe == "scratch":
                schedule.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if args.recipe != "scratch":
            schedule.step()
        result = {"epoch": epoch, "loss": float(np.mean(losses)), **evaluate(model, val_loader)}
        history.append(result)
        print(json.dumps({k: result[k] for k in ("epoch", "loss", "uar", "war")}), flush=True)
        print("confusion (rows: truth):", result["confusion"], flush=True)
        if result["uar"] > best_uar:
            best_uar = result["uar"]
            save_checkpoint(model, args.out / "best.pt", include_dims=model.dims != ModelDims.vit_b_32())
    (args.out / "history.json").write_text(json.dumps(history, indent=2) + "\n")
    return {"best_uar": best_uar, "history": history}


def add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="fine-tune CLIP-CAER on RAER-layout clips (official recipe)")
    p.add_argument("--train-list", type=Path, required=True, help="list file: <frame_dir> <num_frames> <label 1..5>")
    p.add_argument("--val-list", type=Path, required=True)
    p.add_argument("--root", type=Path, default=None, help="dataset root (default: the list file's folder)")
    p.add_argument("--face-boxes", type=Path, action="append", default=None,
                   help="JSON: {'<frame_dir>': {'<file>': [l, t, r, b]}} (official) or {'<frame_dir>/<file>': [...]}; repeat to merge")
    p.add_argument("--body-boxes", type=Path, action="append", default=None,
                   help="JSON: {'<frame_dir>': [l, t, r, b]}; repeat to merge")
    p.add_argument("--clip-weights", type=Path, default=None, help="CLIP ViT-B/32 weights (OpenAI ViT-B-32.pt or open_clip)")
    p.add_argument("--init-checkpoint", type=Path, default=None, help="continue from a CLIP-CAER checkpoint")
    p.add_argument("--random-init", action="store_true", help="seeded random weights (tests only)")
    p.add_argument("--size", choices=["vit-b-32", "tiny"], default="vit-b-32")
    p.add_argument("--out", type=Path, required=True, help="folder for best.pt and history.json")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--recipe", choices=["official", "scratch"], default="official",
                   help="official: the paper's SGD recipe (fine-tuning CLIP); scratch: random starting weights (the demo "
                        "model): image-encoder pretraining on single crops, then AdamW with a cosine schedule")
    p.add_argument("--pretrain-steps", type=int, default=300,
                   help="scratch recipe: steps of image-encoder pretraining on single crops (64 a step) before the whole model")
    p.add_argument("--lr-scale", type=float, default=1.0, help="multiplies every learning rate of the recipe")
    p.add_argument("--max-steps", type=int, default=0, help="stop each epoch after this many steps (0: all)")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=lambda args: train(args))
