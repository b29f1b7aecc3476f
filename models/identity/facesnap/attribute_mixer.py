"""FaceSnap's Facial Attribute Mixer (paper §2.1, Eq. 1-2), extended to several references of one person.

    f'_id   = pi_1(f_id)            (N, 20, d)       ArcFace 512-D -> 20 tokens
    f'_clip = pi_2(f_clip)          (N, 257, d)      CLIP-ViT-H penultimate hidden states
    f_pre   = CrossAttn(q = f'_id, kv = concat(f'_id, f'_clip))          (1)
    f_mix   = Decoder(q = f_l, kv = f_pre)         (16, d)                (2)

Several references: the queries of every reference attend to the keys/values of ALL real references, and the
decoder's learnable queries attend to the f_pre tokens of all real references, so one person with N photos gets
one f_mix. Padded references (``ref_mask`` False) are masked out of every key set. With N = 1 this is exactly
the paper's single-reference path. No per-reference position is added, so the result does not depend on the
order of the references.

The attention blocks are pre-LayerNorm with residuals (standard transformer practice; the paper gives no detail).
Layers come from ``operations`` (see ``operations.py``); the parameter names are those of the original ``torch.nn``
build (``nn.MultiheadAttention``, ``nn.TransformerDecoder``), so its files and training checkpoints load unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ...common.operations import (
    MultiheadAttention,
    TransformerDecoder,
    TransformerDecoderLayer,
    cast_to_input,
    resolve_operations,
)
from ...errors import InvalidInputError


@dataclass
class MixerConfig:
    id_dim: int = 512
    clip_dim: int = 1280
    clip_tokens: int = 257
    dim: int = 2048  # SDXL ControlNet cross-attention width
    id_tokens: int = 20
    mix_tokens: int = 16
    heads: int = 16
    decoder_layers: int = 2
    ff_mult: int = 4

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "MixerConfig":
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown MixerConfig fields: {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def tiny(cls, dim: int = 64) -> "MixerConfig":
        return cls(id_dim=512, clip_dim=32, clip_tokens=5, dim=dim, id_tokens=4, mix_tokens=16, heads=4,
                   decoder_layers=1)


class FacialAttributeMixer(nn.Module):
    """``operations``: layer classes (see ``operations.py``; default ``torch.nn``). ``compute_dtype``: the dtype the
    inputs are cast to (default: the weights' dtype); set it when the weights are stored in another dtype and the
    layers cast them per call (ComfyUI's manual cast)."""

    def __init__(self, config: MixerConfig, operations=None, compute_dtype: torch.dtype | None = None):
        super().__init__()
        ops = resolve_operations(operations)
        self.config = c = config
        self.compute_dtype = compute_dtype
        self.pi1 = ops.Linear(c.id_dim, c.id_tokens * c.dim)
        self.pi2 = ops.Linear(c.clip_dim, c.dim)
        self.norm_q = ops.LayerNorm(c.dim)
        self.norm_kv = ops.LayerNorm(c.dim)
        self.cross_attn = MultiheadAttention(c.dim, c.heads, ops)
        self.queries = nn.Parameter(torch.randn(c.mix_tokens, c.dim) * 0.02)  # f_l
        layer = TransformerDecoderLayer(c.dim, c.heads, c.dim * c.ff_mult, ops)
        self.decoder = TransformerDecoder(layer, c.decoder_layers, norm=ops.LayerNorm(c.dim))

    @property
    def dtype(self) -> torch.dtype:
        return self.compute_dtype or self.pi1.weight.dtype

    def _check(self, id_embeds: torch.Tensor, clip_tokens: torch.Tensor, ref_mask: torch.Tensor | None):
        c = self.config
        if id_embeds.ndim == 2:  # (N, 512): one person
            id_embeds, clip_tokens = id_embeds[None], clip_tokens[None]
            ref_mask = None if ref_mask is None else ref_mask[None]
        b, n = id_embeds.shape[:2]
        if n == 0:
            raise InvalidInputError("the reference batch is empty", "connect at least one reference face")
        if id_embeds.shape != (b, n, c.id_dim):
            raise InvalidInputError(
                f"ID embeddings have shape {tuple(id_embeds.shape)}, expected (B, N, {c.id_dim})",
                "use ArcFace (insightface antelopev2) embeddings",
            )
        if clip_tokens.shape != (b, n, c.clip_tokens, c.clip_dim):
            raise InvalidInputError(
                f"CLIP tokens have shape {tuple(clip_tokens.shape)}, expected (B, N, {c.clip_tokens}, {c.clip_dim})",
                "use the CLIP-ViT-H image encoder (penultimate hidden states, 257x1280)",
            )
        if ref_mask is None:
            ref_mask = torch.ones(b, n, dtype=torch.bool, device=id_embeds.device)
        ref_mask = ref_mask.to(device=id_embeds.device, dtype=torch.bool)
        if not bool(ref_mask.any(dim=1).all()):
            raise InvalidInputError("a sample has no real reference (ref_mask all False)", "give every sample a face")
        return id_embeds, clip_tokens, ref_mask

    def forward(self, id_embeds: torch.Tensor, clip_tokens: torch.Tensor, ref_mask: torch.Tensor | None = None):
        """(B, N, 512), (B, N, 257, 1280), (B, N) bool -> f_mix (B, mix_tokens, dim)."""
        c = self.config
        id_embeds, clip_tokens, ref_mask = self._check(id_embeds, clip_tokens, ref_mask)
        b, n = id_embeds.shape[:2]
        dtype = self.dtype
        f_id = self.pi1(id_embeds.to(dtype)).view(b, n, c.id_tokens, c.dim)
        f_clip = self.pi2(clip_tokens.to(dtype))
        kv = torch.cat([f_id, f_clip], dim=2).view(b, n * (c.id_tokens + c.clip_tokens), c.dim)
        q = f_id.view(b, n * c.id_tokens, c.dim)
        # True = ignore, one flag per key token, repeated over each reference's tokens
        kv_ignore = (~ref_mask).repeat_interleave(c.id_tokens + c.clip_tokens, dim=1)
        attn, _ = self.cross_attn(self.norm_q(q), self.norm_kv(kv), self.norm_kv(kv),
                                  key_padding_mask=kv_ignore, need_weights=False)
        f_pre = q + attn  # Eq. 1
        pre_ignore = (~ref_mask).repeat_interleave(c.id_tokens, dim=1)
        queries = cast_to_input(self.queries, f_pre)[None].expand(b, -1, -1)
        return self.decoder(queries, f_pre, memory_key_padding_mask=pre_ignore)  # Eq. 2

    def uncond_tokens(self, batch: int = 1, device=None) -> torch.Tensor:
        """f_mix of zeroed features: what training's feature dropout shows the model, used for the negative."""
        c = self.config
        device = device or self.pi1.weight.device
        zeros_id = torch.zeros(batch, 1, c.id_dim, device=device)
        zeros_clip = torch.zeros(batch, 1, c.clip_tokens, c.clip_dim, device=device)
        return self.forward(zeros_id, zeros_clip)
