"""EVA02-CLIP-L-14-336's vision tower (EVA-02, Fang et al. 2023; EVA-CLIP, Sun et al. 2023), as PuLID reads it.

    x = [cls; patch_embed(image)] + pos_embed          14x14 patches of a 336 px image: 24 x 24 = 576, 1024 wide
    24 blocks:  x = x + attn(norm1(x));  x = x + swiglu(norm2(x))
        attn:    q = q_proj(h) + q_bias, k = k_proj(h), v = v_proj(h) + v_bias       16 heads of 64
                 2-D RoPE on the patch tokens' q and k (the class token is not rotated)
                 out = proj(inner_attn_ln(softmax(q k^T / 8) v))                    sub-LN before the projection
        swiglu:  w3(ffn_ln(silu(w1(h)) * w2(h)))                                    1024 -> 2730 -> 1024, sub-LN
    embedding = head(norm(x)[:, 0])                                                 1024 -> 768

Every LayerNorm has eps 1e-6. RoPE: the first 32 of a head's 64 channels turn with the patch's row, the last 32 with
its column; channels pair up as neighbours (2i, 2i + 1), pair i at the frequency 10000^(-2i/32), and the positions are
the 24-grid indices rescaled to the 16-grid of pre-training (index x 16 / 24).

PuLID reads three things (``EVAOutput``): the embedding, the embedding divided by its L2 norm (``features``), and
``hidden_states``: the residual stream entering blocks 4, 8, 12, 16 and 20 (after 4, 8, ..., 20 blocks), all 577
tokens, without normalisation. Parameter names are those of the published file's ``visual.`` tower, so its tensors
load with ``load_state_dict`` (see ``eva_clip_weights``). The RoPE tables the file also carries are computed here.

Layers come from ``operations`` (``Linear``, ``Conv2d``, ``LayerNorm``; default torch.nn, ComfyUI passes comfy.ops);
the raw parameters (``cls_token``, ``pos_embed``, ``q_bias``, ``v_bias``) are cast to the input at use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ...common.operations import cast_to_input, resolve_operations
from ...errors import InvalidInputError

# OpenAI CLIP's normalisation: eva_clip's default, which PuLID's pipeline reads from the tower.
EVA_MEAN = (0.48145466, 0.4578275, 0.40821073)
EVA_STD = (0.26862954, 0.26130258, 0.27577711)
ROPE_THETA = 10000.0


@dataclass(frozen=True)
class EVAVisionConfig:
    image_size: int = 336
    patch_size: int = 14
    width: int = 1024
    layers: int = 24
    heads: int = 16
    mlp_hidden: int = 2730  # int(1024 * 2.6667), the config's mlp_ratio
    embed_dim: int = 768
    rope_pretrain_grid: int = 16  # pt_hw_seq_len: 224 px / 14
    hidden_layers: tuple[int, ...] = (4, 8, 12, 16, 20)  # blocks whose input PuLID reads
    eps: float = 1e-6

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @classmethod
    def tiny(cls) -> "EVAVisionConfig":
        """Same structure, small sizes (tests)."""
        return cls(image_size=56, patch_size=14, width=64, layers=6, heads=4, mlp_hidden=96, embed_dim=48,
                   hidden_layers=(1, 2, 3, 4, 5))


class EVAOutput(NamedTuple):
    embedding: torch.Tensor  # (B, embed_dim): head(norm(class token))
    features: torch.Tensor  # (B, embed_dim): embedding / its L2 norm
    hidden_states: tuple[torch.Tensor, ...]  # (B, 1 + grid^2, width) each, the blocks' inputs named in hidden_layers


def rope_tables(config: EVAVisionConfig, device=None, dtype=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each (grid^2, head_dim), patch p = row * grid + column. Computed in float32 on the CPU, in the
    reference's operation order, then moved."""
    quarter = config.head_dim // 2  # channels per axis
    inverse = 1.0 / (ROPE_THETA ** (torch.arange(0, quarter, 2)[: quarter // 2].float() / quarter))
    positions = torch.arange(config.grid) / config.grid * config.rope_pretrain_grid
    angles = torch.einsum("i,f->if", positions, inverse).repeat_interleave(2, dim=-1)  # (grid, quarter)
    rows = angles[:, None, :].expand(-1, config.grid, -1)
    columns = angles[None, :, :].expand(config.grid, -1, -1)
    table = torch.cat([rows, columns], dim=-1).reshape(config.grid ** 2, config.head_dim)
    return table.cos().to(device, dtype), table.sin().to(device, dtype)


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE: each neighbouring channel pair (a, b) becomes (a cos - b sin, b cos + a sin)."""
    a, b = x.unflatten(-1, (-1, 2)).unbind(-1)
    turned = torch.stack((-b, a), dim=-1).flatten(-2)
    return x * cos + turned * sin


class Attention(nn.Module):
    def __init__(self, cfg: EVAVisionConfig, ops):
        super().__init__()
        self.heads = cfg.heads
        self.q_proj = ops.Linear(cfg.width, cfg.width, bias=False)
        self.k_proj = ops.Linear(cfg.width, cfg.width, bias=False)
        self.v_proj = ops.Linear(cfg.width, cfg.width, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(cfg.width))
        self.v_bias = nn.Parameter(torch.zeros(cfg.width))
        self.inner_attn_ln = ops.LayerNorm(cfg.width, eps=cfg.eps)
        self.proj = ops.Linear(cfg.width, cfg.width)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        q = self.q_proj(x) + cast_to_input(self.q_bias, x)
        k = self.k_proj(x)
        v = self.v_proj(x) + cast_to_input(self.v_bias, x)
        q, k, v = (t.reshape(batch, tokens, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        q, k = (torch.cat([t[:, :, :1], rotate_pairs(t[:, :, 1:], cos, sin)], dim=2) for t in (q, k))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, tokens, width)
        return self.proj(self.inner_attn_ln(out))


class SwiGLU(nn.Module):
    def __init__(self, cfg: EVAVisionConfig, ops):
        super().__init__()
        self.w1 = ops.Linear(cfg.width, cfg.mlp_hidden)
        self.w2 = ops.Linear(cfg.width, cfg.mlp_hidden)
        self.ffn_ln = ops.LayerNorm(cfg.mlp_hidden, eps=cfg.eps)
        self.w3 = ops.Linear(cfg.mlp_hidden, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(self.ffn_ln(F.silu(self.w1(x)) * self.w2(x)))


class Block(nn.Module):
    def __init__(self, cfg: EVAVisionConfig, ops):
        super().__init__()
        self.norm1 = ops.LayerNorm(cfg.width, eps=cfg.eps)
        self.attn = Attention(cfg, ops)
        self.norm2 = ops.LayerNorm(cfg.width, eps=cfg.eps)
        self.mlp = SwiGLU(cfg, ops)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin)
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, cfg: EVAVisionConfig, ops):
        super().__init__()
        self.proj = ops.Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.proj(pixels).flatten(2).transpose(1, 2)


class EVAVisionTower(nn.Module):
    """``compute_dtype``: what the tower computes in (default: the weights' dtype); set it when the layers cast
    stored weights per call (ComfyUI's manual cast)."""

    def __init__(self, config: EVAVisionConfig = EVAVisionConfig(), operations=None,
                 compute_dtype: torch.dtype | None = None):
        super().__init__()
        ops = resolve_operations(operations)
        self.config = cfg = config
        self.compute_dtype = compute_dtype
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.grid ** 2 + 1, cfg.width))
        self.patch_embed = PatchEmbed(cfg, ops)
        self.blocks = nn.ModuleList([Block(cfg, ops) for _ in range(cfg.layers)])
        self.norm = ops.LayerNorm(cfg.width, eps=cfg.eps)
        self.head = ops.Linear(cfg.width, cfg.embed_dim)

    @property
    def dtype(self) -> torch.dtype:
        return self.compute_dtype or self.patch_embed.proj.weight.dtype

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised pixels -> the token sequence entering block 0."""
        size = self.config.image_size
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, size, size) or pixels.shape[0] == 0:
            raise InvalidInputError(f"the EVA-CLIP tower takes (batch, 3, {size}, {size}) images, got "
                                    f"{list(pixels.shape)}", "prepare the faces with eva_clip_input")
        x = self.patch_embed(pixels.to(self.dtype))
        cls = cast_to_input(self.cls_token, x).expand(x.shape[0], -1, -1)
        return torch.cat([cls, x], dim=1) + cast_to_input(self.pos_embed, x)

    def run_blocks(self, x: torch.Tensor, start: int = 0, stop: int | None = None,
                   keep: tuple[int, ...] = ()) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Blocks ``start`` to ``stop`` (exclusive) on tokens ``x``; also returns the inputs of the blocks in
        ``keep``."""
        cos, sin = rope_tables(self.config, x.device, x.dtype)
        kept = []
        for index in range(start, len(self.blocks) if stop is None else stop):
            if index in keep:
                kept.append(x)
            x = self.blocks[index](x, cos, sin)
        return x, kept

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's output -> the embedding (head of the normalised class token)."""
        return self.head(self.norm(x)[:, 0])

    def forward(self, pixels: torch.Tensor) -> EVAOutput:
        x, hidden = self.run_blocks(self.embed(pixels), keep=self.config.hidden_layers)
        embedding = self.project(x)
        return EVAOutput(embedding, l2_normalise(embedding), tuple(hidden))


def l2_normalise(embedding: torch.Tensor) -> torch.Tensor:
    """PuLID's ``id_cond_vit / torch.norm(id_cond_vit, 2, 1, True)`` (no epsilon, as there)."""
    return embedding / torch.norm(embedding, 2, 1, True)


def eva_clip_input(images: torch.Tensor, size: int = 336, antialias: bool = True) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] (PuLID: the 512 px face with its background whited out) -> the tower's input:
    bicubic resize to ``size`` x ``size``, then the OpenAI CLIP mean/std.

    PuLID resizes with torchvision's ``resize(..., BICUBIC)`` on a tensor, whose antialiasing depends on the
    installed torchvision: on by default since 0.17 (what current installs of the official code and cubiq's node
    compute), off in 0.15.2, the version PuLID's requirements pin. ``antialias`` chooses."""
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        raise InvalidInputError(f"expected (batch, 3, height, width) images, got {list(images.shape)}",
                                "pass RGB images")
    resized = F.interpolate(images, size=(size, size), mode="bicubic", align_corners=False, antialias=antialias)
    mean = torch.tensor(EVA_MEAN, dtype=resized.dtype, device=resized.device)[:, None, None]
    std = torch.tensor(EVA_STD, dtype=resized.dtype, device=resized.device)[:, None, None]
    return (resized - mean) / std
