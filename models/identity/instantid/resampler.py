"""InstantID's ``image_proj`` model: a Perceiver resampler from ArcFace embeddings to identity tokens.

    latents (16, 1280) learnable; x = proj_in(arcface)                       512 -> 1280
    per layer:  latents += to_out(attn(q = to_q(ln2(latents)), kv = to_kv([ln1(x); ln2(latents)])))
                latents += Linear(GELU(Linear(LayerNorm(latents))))          1280 -> 5120 -> 1280, no biases
    tokens = norm_out(proj_out(latents))                                     1280 -> 2048

Parameter names are those of InstantID's ``ip-adapter.bin`` ``image_proj`` dict (``latents``, ``proj_in``,
``proj_out``, ``norm_out``, ``layers.{i}.0.{norm1,norm2,to_q,to_kv,to_out}``, ``layers.{i}.1.{0,1,3}``), so the
published weights load with ``load_state_dict``. Each ArcFace embedding is one key/value token: InstantID's pipeline
reshapes its embeddings to (1, N, 512), so N embeddings of one person become N tokens of one sample.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import InvalidInputError
from ...common.operations import TORCH_OPS


@dataclass(frozen=True)
class ResamplerConfig:
    dim: int = 1280
    depth: int = 4
    dim_head: int = 64
    heads: int = 20
    num_queries: int = 16
    embedding_dim: int = 512
    output_dim: int = 2048
    ff_mult: int = 4

    @classmethod
    def instantid(cls) -> "ResamplerConfig":
        """The published InstantID Resampler (SDXL: 2048-wide tokens)."""
        return cls()

    @classmethod
    def tiny(cls, output_dim: int = 64) -> "ResamplerConfig":
        return cls(dim=32, depth=2, dim_head=8, heads=4, num_queries=16, embedding_dim=512, output_dim=output_dim)

    def to_dict(self) -> dict:
        return asdict(self)


class PerceiverAttention(nn.Module):
    def __init__(self, cfg: ResamplerConfig, ops):
        super().__init__()
        inner = cfg.dim_head * cfg.heads
        self.heads = cfg.heads
        self.norm1 = ops.LayerNorm(cfg.dim)
        self.norm2 = ops.LayerNorm(cfg.dim)
        self.to_q = ops.Linear(cfg.dim, inner, bias=False)
        self.to_kv = ops.Linear(cfg.dim, 2 * inner, bias=False)
        self.to_out = ops.Linear(inner, cfg.dim, bias=False)

    def forward(self, features: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        latents = self.norm2(latents)
        context = torch.cat([self.norm1(features), latents], dim=1)
        key, value = self.to_kv(context).chunk(2, dim=-1)
        batch = latents.shape[0]
        q, k, v = (t.reshape(batch, t.shape[1], self.heads, -1).transpose(1, 2) for t in (self.to_q(latents), key, value))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(batch, latents.shape[1], -1))


def feed_forward(cfg: ResamplerConfig, ops) -> nn.Sequential:
    """LayerNorm, Linear, GELU, Linear: indices 0, 1, 3 hold the weights, as in the published file."""
    inner = cfg.dim * cfg.ff_mult
    return nn.Sequential(ops.LayerNorm(cfg.dim), ops.Linear(cfg.dim, inner, bias=False), nn.GELU(),
                         ops.Linear(inner, cfg.dim, bias=False))


class Resampler(nn.Module):
    """``operations`` supplies ``Linear`` and ``LayerNorm`` (default torch.nn; ComfyUI passes ``comfy.ops``).
    ``compute_dtype``: the dtype the embeddings are cast to (default: the weights'); set it when the weights are
    stored in another dtype and the layers cast them per call (ComfyUI's manual cast)."""

    def __init__(self, config: ResamplerConfig = ResamplerConfig(), operations=None,
                 compute_dtype: torch.dtype | None = None):
        super().__init__()
        ops = operations or TORCH_OPS
        self.config = cfg = config
        self.compute_dtype = compute_dtype
        self.latents = nn.Parameter(torch.randn(1, cfg.num_queries, cfg.dim) / cfg.dim ** 0.5)
        self.proj_in = ops.Linear(cfg.embedding_dim, cfg.dim)
        self.proj_out = ops.Linear(cfg.dim, cfg.output_dim)
        self.norm_out = ops.LayerNorm(cfg.output_dim)
        self.layers = nn.ModuleList(
            [nn.ModuleList([PerceiverAttention(cfg, ops), feed_forward(cfg, ops)]) for _ in range(cfg.depth)])

    @property
    def dtype(self) -> torch.dtype:
        return self.compute_dtype or self.proj_in.weight.dtype

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, 512) or (B, N, 512) ArcFace embeddings -> (B, num_queries, output_dim) tokens in ``dtype``."""
        x = embeddings[:, None] if embeddings.ndim == 2 else embeddings
        if x.ndim != 3 or x.shape[-1] != self.config.embedding_dim or 0 in x.shape:
            raise InvalidInputError(f"the Resampler takes (batch, {self.config.embedding_dim}) ArcFace embeddings, "
                                    f"got {list(embeddings.shape)}", "feed it insightface's ArcFace embeddings")
        x = self.proj_in(x.to(self.dtype))
        latents = self.latents.to(device=x.device, dtype=x.dtype).expand(x.shape[0], -1, -1)
        for attention, ff in self.layers:
            latents = latents + attention(x, latents)
            latents = latents + ff(latents)
        return self.norm_out(self.proj_out(latents))
