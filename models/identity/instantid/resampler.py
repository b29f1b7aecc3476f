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

from dataclasses import dataclass

import torch
from torch import nn

from ...common.config_values import MAX_WIDTH, ConfigValues, config_defaults
from ...common.layer_counts import linear_parameters, norm_parameters
from ...common.operations import TORCH_OPS
from ...errors import InvalidInputError
from ..perceiver import PerceiverConfig, perceiver_layer_parameters, perceiver_layers


@dataclass(frozen=True)
class ResamplerConfig(PerceiverConfig):
    @classmethod
    def instantid(cls) -> "ResamplerConfig":
        """The published InstantID Resampler (SDXL: 2048-wide tokens)."""
        return cls()

    @classmethod
    def tiny(cls, output_dim: int = 64) -> "ResamplerConfig":
        return cls(dim=32, depth=2, dim_head=8, heads=4, num_queries=16, embedding_dim=512, output_dim=output_dim)


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
        self.layers = perceiver_layers(cfg, ops)

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


def checked_resampler_config(data: dict, file_name: str, fix: str) -> ResamplerConfig:
    """The Resampler layout a file states (``resampler_config``; missing fields are the published ones), checked
    field by field before anything is built from it."""
    defaults = config_defaults(ResamplerConfig)
    values = ConfigValues({**defaults, **data}, "resampler_config", file_name, fix)
    values.unknown(defaults)
    config = ResamplerConfig(
        dim=values.integer("dim", 1, 4096), depth=values.integer("depth", 1, 16),
        dim_head=values.integer("dim_head", 1, 256), heads=values.integer("heads", 1, 64),
        num_queries=values.integer("num_queries", 1, 256), embedding_dim=values.integer("embedding_dim", 1, 4096),
        output_dim=values.integer("output_dim", 1, 4096), ff_mult=values.integer("ff_mult", 1, 8))
    if config.heads * config.dim_head > MAX_WIDTH:
        values.refuse(f"heads x dim_head = {config.heads * config.dim_head} is above {MAX_WIDTH}")
    return config


def resampler_parameters(c: ResamplerConfig) -> int:
    """The parameters a ``Resampler`` of this layout holds (compared with a file's before it is built)."""
    return (c.num_queries * c.dim + linear_parameters(c.embedding_dim, c.dim) + linear_parameters(c.dim, c.output_dim)
            + norm_parameters(c.output_dim) + c.depth * perceiver_layer_parameters(c))
