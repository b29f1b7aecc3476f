"""PuLID v1.1's IDFormer: a perceiver over ArcFace and EVA-CLIP features -> 32 identity tokens
(``pulid_v1.1.safetensors``; the FLUX releases use the same encoder).

    x = id_embedding_mapping([ArcFace ; EVA CLS normalised]) -> 5 tokens per image            1280 -> 5 x 1024
    latents = [32 learnable queries ; x]
    for i in 0..4:   ctx = [x ; mapping_i(EVA hidden state i)]                                1024 -> 1024
                     two perceiver layers: latents += attention(q = latents, kv = [ctx ; latents]);
                                           latents += feed-forward(latents)
    tokens = latents[:32] @ proj_out                                                           1024 -> 2048

Several images of one person are encoded together, as the official pipeline does: their ID features become 5 tokens
each, and their hidden states are concatenated along the token axis (B, N x 577, 1024), so N photos still give 32
tokens. The perceiver layers are IP-Adapter-Plus's Perceiver blocks, as in InstantID's Resampler (``perceiver.py``:
same names ``layers.{i}.0.{norm1, norm2, to_q, to_kv, to_out}`` / ``layers.{i}.1.{0, 1, 3}``, same attention).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...common.operations import cast_to_input, resolve_operations
from ..identity import ARCFACE_DIM
from ..perceiver import PerceiverConfig, perceiver_layers
from .id_encoder import EVA_CLS_DIM, EVA_LAYERS, check_features, mapping_mlp


@dataclass(frozen=True)
class IDFormerConfig(PerceiverConfig):
    """The Perceiver's fields (``embedding_dim``: the ID features' width, 1280) with IDFormer's values, and its own."""
    dim: int = 1024
    depth: int = 10  # a multiple of the 5 EVA layers: depth // 5 perceiver layers read each of them
    heads: int = 16
    num_queries: int = 32
    embedding_dim: int = ARCFACE_DIM + EVA_CLS_DIM
    num_id_tokens: int = 5
    vit_dim: int = 1024
    hidden_dim: int = 1024

    def __post_init__(self):
        if self.depth % EVA_LAYERS:
            raise ValueError(f"IDFormer depth {self.depth} is not a multiple of {EVA_LAYERS}")

    @classmethod
    def tiny(cls, output_dim: int = 64) -> "IDFormerConfig":
        return cls(dim=32, depth=5, dim_head=8, heads=4, num_queries=8, output_dim=output_dim, vit_dim=32,
                   hidden_dim=48)


class IDFormer(nn.Module):
    """``operations`` / ``compute_dtype`` as in ``IDEncoder``. ``latents`` and ``proj_out`` are raw parameters (the
    file's names), cast to the compute dtype at use."""

    def __init__(self, config: IDFormerConfig = IDFormerConfig(), operations=None,
                 compute_dtype: torch.dtype | None = None):
        super().__init__()
        ops = resolve_operations(operations)
        self.config = cfg = config
        self.compute_dtype = compute_dtype
        scale = cfg.dim ** -0.5
        self.latents = nn.Parameter(torch.randn(1, cfg.num_queries, cfg.dim) * scale)
        self.proj_out = nn.Parameter(torch.randn(cfg.dim, cfg.output_dim) * scale)
        self.layers = perceiver_layers(cfg, ops)
        for i in range(EVA_LAYERS):
            setattr(self, f"mapping_{i}", mapping_mlp(cfg.vit_dim, cfg.hidden_dim, cfg.hidden_dim, cfg.dim, ops))
        self.id_embedding_mapping = mapping_mlp(cfg.embedding_dim, cfg.hidden_dim, cfg.hidden_dim,
                                                cfg.dim * cfg.num_id_tokens, ops)

    @property
    def dtype(self) -> torch.dtype:
        return self.compute_dtype or self.id_embedding_mapping[0].weight.dtype

    def forward(self, id_features: torch.Tensor, hidden_states) -> torch.Tensor:
        """(B, 1280) or (B, N images, 1280) ID features and 5 hidden states (B, N x (1 + patches), 1024)
        -> (B, num_queries, output_dim) tokens."""
        cfg = self.config
        check_features(id_features, hidden_states, cfg.embedding_dim, cfg.vit_dim)
        x = self.id_embedding_mapping(id_features.to(self.dtype))
        x = x.reshape(x.shape[0], -1, cfg.dim)  # 5 tokens per image
        latents = cast_to_input(self.latents, x).expand(x.shape[0], -1, -1)
        latents = torch.cat([latents, x], dim=1)
        per_layer = cfg.depth // EVA_LAYERS
        for i, h in enumerate(hidden_states):
            context = torch.cat([x, getattr(self, f"mapping_{i}")(h.to(self.dtype))], dim=1)
            for attention, ff in self.layers[i * per_layer:(i + 1) * per_layer]:
                latents = latents + attention(context, latents)
                latents = latents + ff(latents)
        return latents[:, :cfg.num_queries] @ cast_to_input(self.proj_out, latents)
