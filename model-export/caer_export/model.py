"""CLIP-CAER in PyTorch, written for this project from the reference facts.

`shared/reference/clip-caer-model.md` is the specification. Module and parameter names are
chosen so that `state_dict()` has exactly the keys and shapes of the official checkpoint
(`shared/reference/official_state_dict.json`): the published file loads with strict checking.

Attention is written out with plain matmuls (same parameter names as `nn.MultiheadAttention`)
so that the exported ONNX graph holds only MatMul/Softmax/Reshape/Transpose, which every
runtime we target (tract, ONNX Runtime, TensorRT) handles well.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

NUM_CLASSES = 5
CLASS_NAMES = ["neutrality", "enjoyment", "confusion", "fatigue", "distraction"]
COARSE = ["engaged", "engaged", "engaged", "engaged", "distracted"]
FRAMES_PER_CLIP = 16
LOGIT_SCALE = 100.0  # logits = cos / 0.01; CLIP's own logit_scale is not used
EOT_TOKEN_ID = 49407  # CLIP's end-of-text token: the text feature is read at its position


@dataclass(frozen=True)
class ModelDims:
    """Every size of the network. `vit_b_32()` is the published model; tests use tiny ones."""

    image_size: int = 224
    patch_size: int = 32
    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    embed_dim: int = 512  # CLIP joint space: image and text features, temporal tokens
    text_width: int = 512
    text_layers: int = 12
    text_heads: int = 8
    context_length: int = 77
    vocab_size: int = 49408
    n_ctx: int = 8  # learnable prompt context vectors per class
    temporal_heads: int = 8
    temporal_head_dim: int = 64
    temporal_mlp: int = 1024
    frames: int = FRAMES_PER_CLIP

    @staticmethod
    def vit_b_32() -> "ModelDims":
        return ModelDims()

    @staticmethod
    def tiny() -> "ModelDims":
        """Same structure, small widths: a bundle of a few MB for the parity fixtures."""
        return ModelDims(
            vision_width=64,
            vision_layers=2,
            vision_heads=4,
            embed_dim=32,
            text_width=32,
            text_layers=2,
            text_heads=4,
            vocab_size=EOT_TOKEN_ID + 1,
            temporal_heads=2,
            temporal_head_dim=16,
            temporal_mlp=64,
        )

    def to_json(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- CLIP towers


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class SelfAttention(nn.Module):
    """Multi-head self-attention with `nn.MultiheadAttention`'s parameter names, batch first."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, w = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.reshape(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(w // self.heads))
        if mask is not None:
            scores = scores + mask
        out = scores.softmax(dim=-1) @ v
        return self.out_proj(out.transpose(1, 2).reshape(b, n, w))


class Mlp(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.c_fc = nn.Linear(width, 4 * width)
        self.gelu = QuickGELU()
        self.c_proj = nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = SelfAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width, eps=1e-5)
        self.mlp = Mlp(width)
        self.ln_2 = nn.LayerNorm(width, eps=1e-5)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads) for _ in range(layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, mask)
        return x


class VisionTransformer(nn.Module):
    """CLIP's ViT image tower: pixels in [0, 1] (no mean/std, as in the official code) -> 512-d."""

    def __init__(self, d: ModelDims):
        super().__init__()
        grid = d.image_size // d.patch_size
        self.conv1 = nn.Conv2d(3, d.vision_width, d.patch_size, stride=d.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(d.vision_width))
        self.positional_embedding = nn.Parameter(torch.empty(grid * grid + 1, d.vision_width))
        self.ln_pre = nn.LayerNorm(d.vision_width, eps=1e-5)
        self.transformer = Transformer(d.vision_width, d.vision_layers, d.vision_heads)
        self.ln_post = nn.LayerNorm(d.vision_width, eps=1e-5)
        self.proj = nn.Parameter(torch.empty(d.vision_width, d.embed_dim))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.conv1(pixels).flatten(2).transpose(1, 2)  # [b, grid*grid, width]
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0, :]) @ self.proj


class CLIP(nn.Module):
    """The CLIP model as the checkpoint stores it under `clip_model_.`."""

    def __init__(self, d: ModelDims):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.empty(d.context_length, d.text_width))
        self.text_projection = nn.Parameter(torch.empty(d.text_width, d.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.visual = VisionTransformer(d)
        self.transformer = Transformer(d.text_width, d.text_layers, d.text_heads)
        self.token_embedding = nn.Embedding(d.vocab_size, d.text_width)
        self.ln_final = nn.LayerNorm(d.text_width, eps=1e-5)


class TextEncoder(nn.Module):
    """CoOp-style text encoder over prompt embeddings; shares CLIP's text tensors."""

    def __init__(self, clip: CLIP):
        super().__init__()
        self.positional_embedding = clip.positional_embedding
        self.text_projection = clip.text_projection
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final

    def forward(self, prompts: torch.Tensor, eot_positions: torch.Tensor) -> torch.Tensor:
        n = prompts.shape[1]
        causal = torch.full((n, n), float("-inf"), device=prompts.device).triu(1)
        x = self.transformer(prompts + self.positional_embedding, causal)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), eot_positions] @ self.text_projection


class PromptLearner(nn.Module):
    """Class-specific learnable context: [SOT] + ctx (8 vectors) + descriptor tokens."""

    def __init__(self, d: ModelDims):
        super().__init__()
        suffix = d.context_length - 1 - d.n_ctx
        self.ctx = nn.Parameter(torch.empty(NUM_CLASSES, d.n_ctx, d.text_width))
        self.register_buffer("token_prefix", torch.zeros(NUM_CLASSES, 1, d.text_width))
        self.register_buffer("token_suffix", torch.zeros(NUM_CLASSES, suffix, d.text_width))

    def forward(self) -> torch.Tensor:
        return torch.cat([self.token_prefix, self.ctx, self.token_suffix], dim=1)


# --------------------------------------------------------------------------- temporal side


class TemporalAttention(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.scale = head_dim**-0.5
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.to_qkv(x).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, -1)
        return self.to_out(out)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(approximate="tanh"),
            nn.Dropout(0.0),
            nn.Linear(hidden, dim),
            nn.Dropout(0.0),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-5)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class Residual(nn.Module):
    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(x)


class TemporalTransformer(nn.Module):
    def __init__(self, d: ModelDims):
        super().__init__()
        dim = d.embed_dim
        self.layers = nn.ModuleList(
            [
                nn.ModuleList(
                    [
                        Residual(PreNorm(dim, TemporalAttention(dim, d.temporal_heads, d.temporal_head_dim))),
                        Residual(PreNorm(dim, FeedForward(dim, d.temporal_mlp))),
                    ]
                )
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            x = ff(attn(x))
        return x


class TemporalEncoder(nn.Module):
    """Class token + position embedding + one pre-norm block over the 16 frame features."""

    def __init__(self, d: ModelDims):
        super().__init__()
        self.cls_token = nn.Parameter(torch.empty(1, 1, d.embed_dim))
        self.pos_embedding = nn.Parameter(torch.empty(1, d.frames + 1, d.embed_dim))
        self.temporal_transformer = TemporalTransformer(d)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        cls = self.cls_token.expand(features.shape[0], -1, -1)
        x = torch.cat([cls, features], dim=1) + self.pos_embedding
        return self.temporal_transformer(x)[:, 0]


# --------------------------------------------------------------------------- CLIP-CAER


class ClipCaer(nn.Module):
    """The whole model. `forward(face, context)` takes `[b, 16, 3, 224, 224]` clips in [0, 1]."""

    def __init__(self, d: ModelDims | None = None):
        super().__init__()
        d = d or ModelDims.vit_b_32()
        self.dims = d
        clip = CLIP(d)
        # Registration order follows the official checkpoint's key order.
        self.prompt_learner = PromptLearner(d)
        self.text_encoder = TextEncoder(clip)
        self.image_encoder = clip.visual
        self.temporal_net = TemporalEncoder(d)
        self.temporal_net_body = TemporalEncoder(d)
        self.clip_model_ = clip
        self.project_fc = nn.Linear(2 * d.embed_dim, d.embed_dim)
        # Where each class's prompt ends (EOT); not in the checkpoint, derived from it.
        self.register_buffer("eot_positions", torch.zeros(NUM_CLASSES, dtype=torch.long), persistent=False)

    def text_features(self) -> torch.Tensor:
        """The constant `[5, D]` matrix of L2-normalised class text features."""
        text = self.text_encoder(self.prompt_learner(), self.eot_positions)
        return F.normalize(text, dim=-1)

    def fuse(self, face_features: torch.Tensor, context_features: torch.Tensor) -> torch.Tensor:
        """Temporal encoders + fusion: `[b, 16, D]` x 2 -> L2-normalised `[b, D]`."""
        face = self.temporal_net(face_features)
        context = self.temporal_net_body(context_features)
        return F.normalize(self.project_fc(torch.cat([face, context], dim=-1)), dim=-1)

    def forward(self, face: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, t = face.shape[:2]
        face_features = self.image_encoder(face.flatten(0, 1)).reshape(b, t, -1)
        context_features = self.image_encoder(context.flatten(0, 1)).reshape(b, t, -1)
        return self.fuse(face_features, context_features) @ self.text_features().t() * LOGIT_SCALE


class TemporalHead(nn.Module):
    """What `temporal_head.onnx` holds: features -> logits, the text matrix baked in."""

    def __init__(self, model: ClipCaer):
        super().__init__()
        self.model = model
        with torch.no_grad():
            self.register_buffer("text_matrix", model.text_features().detach().clone())

    def forward(self, face_features: torch.Tensor, context_features: torch.Tensor) -> torch.Tensor:
        return self.model.fuse(face_features, context_features) @ self.text_matrix.t() * LOGIT_SCALE
