"""The Perceiver resampler blocks of IP-Adapter-Plus, as InstantID's Resampler and PuLID v1.1's IDFormer use them.

One layer: ``latents += to_out(attention(q = to_q(norm2(latents)), kv = to_kv([norm1(x); norm2(latents)])))``, then
``latents += Linear(GELU(Linear(LayerNorm(latents))))`` (no biases). Parameter names are the published files'
(``layers.{i}.0.{norm1, norm2, to_q, to_kv, to_out}``, ``layers.{i}.1.{0, 1, 3}``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..common.layer_counts import linear_parameters, norm_parameters


@dataclass(frozen=True)
class PerceiverConfig:
    """A Perceiver resampler's layout; the defaults are InstantID's published SDXL Resampler."""

    dim: int = 1280
    depth: int = 4
    dim_head: int = 64
    heads: int = 20
    num_queries: int = 16
    embedding_dim: int = 512
    output_dim: int = 2048
    ff_mult: int = 4

    def to_dict(self) -> dict:
        return asdict(self)


class PerceiverAttention(nn.Module):
    def __init__(self, cfg: PerceiverConfig, ops):
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
        q, k, v = (t.reshape(batch, t.shape[1], self.heads, -1).transpose(1, 2)
                   for t in (self.to_q(latents), key, value))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(batch, latents.shape[1], -1))


def feed_forward(cfg: PerceiverConfig, ops) -> nn.Sequential:
    """LayerNorm, Linear, GELU, Linear: indices 0, 1, 3 hold the weights, as in the published files."""
    inner = cfg.dim * cfg.ff_mult
    return nn.Sequential(ops.LayerNorm(cfg.dim), ops.Linear(cfg.dim, inner, bias=False), nn.GELU(),
                         ops.Linear(inner, cfg.dim, bias=False))


def perceiver_layers(cfg: PerceiverConfig, ops) -> nn.ModuleList:
    """``cfg.depth`` layers, each ``[PerceiverAttention, feed_forward]``."""
    return nn.ModuleList([nn.ModuleList([PerceiverAttention(cfg, ops), feed_forward(cfg, ops)])
                          for _ in range(cfg.depth)])


def perceiver_layer_parameters(cfg: PerceiverConfig) -> int:
    """The parameters of one ``perceiver_layers`` layer."""
    inner = cfg.dim_head * cfg.heads
    attention = 2 * norm_parameters(cfg.dim) + linear_parameters(cfg.dim, inner, False) \
        + linear_parameters(cfg.dim, 2 * inner, False) + linear_parameters(inner, cfg.dim, False)
    return attention + norm_parameters(cfg.dim) + 2 * linear_parameters(cfg.dim, cfg.dim * cfg.ff_mult, False)
