"""PuLID's ID attention: at every UNet cross-attention, a second attention of the layer's queries over the identity
tokens, added to the text attention's output before the layer's ``to_out``:

    id_out = Attention(q, id_to_k(tokens), id_to_v(tokens))                     tokens: identity + num_zero zeros
    out    = text_out + weight * mask * term(id_out)

``term`` is the projection mode (``projection``):
- ``"none"``:     id_out
- ``"ortho"``:    id_out - P,                 P = <text_out, id_out> / <text_out, text_out> * text_out
- ``"ortho_v2"``: id_out + (share - 1) * P,  share = the attention the first 5 identity tokens receive
with the inner products <a, b> taken per channel over the layer's query positions (the sequence axis), as both the
official processor and cubiq's ComfyUI node do, and computed in float32.

``share`` (ortho_v2) is measured two ways:
- ``SHARE_OFFICIAL`` (ToTheBeginning/PuLID ``IDAttnProcessor2_0``): per head, softmax over the identity keys of the
  unscaled products q_h . k_h, averaged over the heads: one share per query position (B, L, 1);
- ``SHARE_CUBIQ`` (cubiq/PuLID_ComfyUI and EcomID's ComfyUI node): softmax of the unscaled full-width products
  q . k (all heads at once), averaged over the query positions: one share per sample (B, 1, 1).

Zero tokens (``num_zero``) are appended to the identity tokens before the projections; ``id_to_k`` / ``id_to_v``
have no bias, so they become zero keys and values that dilute the identity attention (more zeros: more
editability, less likeness). The modes below are the official demos' and cubiq's presets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import InvalidInputError
from ..ip_attention import IPAttentionLayer, ip_attention

PROJECTIONS = ("none", "ortho", "ortho_v2")
SHARE_OFFICIAL = "official"
SHARE_CUBIQ = "cubiq"
SHARES = (SHARE_OFFICIAL, SHARE_CUBIQ)
SHARE_TOKENS = 5  # ortho_v2 measures the attention of the first 5 tokens (v1: the ArcFace/CLS tokens)


@dataclass(frozen=True)
class IDAttentionMode:
    num_zero: int
    projection: str

    def __post_init__(self):
        if self.projection not in PROJECTIONS:
            raise InvalidInputError(f"unknown projection {self.projection!r}", f"use one of {', '.join(PROJECTIONS)}")
        if not isinstance(self.num_zero, int) or not 0 <= self.num_zero <= 256:
            raise InvalidInputError(f"num_zero must be a whole number from 0 to 256, got {self.num_zero!r}",
                                    "use 8 (fidelity), 16 (style) or 0 (neutral)")


# cubiq's Apply PuLID methods; the official v1 demo's "fidelity" and "extremely style" are the first two
METHODS = {"fidelity": IDAttentionMode(8, "ortho_v2"), "style": IDAttentionMode(16, "ortho"),
           "neutral": IDAttentionMode(0, "none")}
V1_1_DEFAULT = IDAttentionMode(20, "ortho_v2")  # the official v1.1 demo (num zero slider 20, ortho v2)


def append_zero_tokens(tokens: torch.Tensor, count: int, noise: float = 0.0,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, T, D) tokens followed by ``count`` zero tokens, or uniform [0, noise) ones when ``noise`` != 0 (cubiq's
    Advanced ``noise``, which pads cond and uncond with the same draws: pass generators seeded alike)."""
    if count <= 0:
        return tokens
    shape = (tokens.shape[0], count, tokens.shape[2])
    if noise:
        pad = torch.rand(shape, generator=generator, dtype=torch.float32).to(tokens) * noise
    else:
        pad = tokens.new_zeros(shape)
    return torch.cat([tokens, pad], dim=1)


def _share(q: torch.Tensor, key: torch.Tensor, heads: int, kind: str) -> torch.Tensor:
    """The attention the first ``SHARE_TOKENS`` keys receive: (B, L, 1) official, (B, 1, 1) cubiq."""
    if kind == SHARE_CUBIQ:
        probs = (q @ key.transpose(-2, -1)).softmax(dim=-1).mean(dim=1, keepdim=True)
    elif kind == SHARE_OFFICIAL:
        batch, length, channels = q.shape
        q_h = q.reshape(batch, length, heads, -1).transpose(1, 2)
        k_h = key.reshape(key.shape[0], key.shape[1], heads, -1).transpose(1, 2)
        probs = (q_h @ k_h.transpose(-2, -1)).softmax(dim=-1).mean(dim=1)
    else:
        raise InvalidInputError(f"unknown ortho_v2 share {kind!r}", f"use one of {', '.join(SHARES)}")
    return probs[..., :SHARE_TOKENS].sum(dim=-1, keepdim=True)


def _projection_on_text(text_out: torch.Tensor, id_out: torch.Tensor) -> torch.Tensor:
    """<text, id> / <text, text> * text per channel over the sequence; 0 where a text channel is all zero."""
    dot = (text_out * id_out).sum(dim=-2, keepdim=True)
    norm = (text_out * text_out).sum(dim=-2, keepdim=True)
    ratio = torch.where(norm > 0, dot / norm.clamp_min(torch.finfo(norm.dtype).tiny), torch.zeros_like(dot))
    return ratio * text_out


def id_attention(q: torch.Tensor, text_out: torch.Tensor, key: torch.Tensor, value: torch.Tensor, heads: int,
                 weight=1.0, projection: str = "none", share: str = SHARE_OFFICIAL,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """The term PuLID adds to a cross-attention's text output (see the module docstring).

    q, text_out: (B, L, C) the layer's projected queries and its text attention output (before ``to_out``);
    key, value: (B or 1, T, C) the identity tokens' ``id_to_k`` / ``id_to_v``; weight: a number or (B, 1, 1);
    mask: (B or 1, L, 1) or None. -> (B, L, C) in q's dtype."""
    if projection not in PROJECTIONS:
        raise InvalidInputError(f"unknown projection {projection!r}", f"use one of {', '.join(PROJECTIONS)}")
    if text_out.shape != q.shape:
        raise InvalidInputError(f"the text attention output {list(text_out.shape)} does not match the queries "
                                f"{list(q.shape)}", "pass the same layer's text attention output")
    id_out = ip_attention(q, key, value, heads)
    if projection == "none":
        term = id_out.float()
    else:
        text32, id32 = text_out.float(), id_out.float()
        projected = _projection_on_text(text32, id32)
        if projection == "ortho":
            term = id32 - projected
        else:
            key32 = key.float().expand(q.shape[0], -1, -1)
            term = id32 + (_share(q.float(), key32, heads, share) - 1) * projected
    term = term * weight
    if mask is not None:
        term = term * mask.to(term.dtype)
    return term.to(q.dtype)


def check_tokens(tokens: torch.Tensor, width: int) -> None:
    if tokens.ndim != 3 or tokens.shape[-1] != width or tokens.shape[1] < SHARE_TOKENS:
        raise InvalidInputError(f"PuLID's identity tokens must be (batch, >= {SHARE_TOKENS}, {width}), got "
                                f"{list(tokens.shape)}", "encode the identity with a PuLID encoder")


def id_attention_layer(layer: IPAttentionLayer, q: torch.Tensor, text_out: torch.Tensor, tokens: torch.Tensor,
                       heads: int, weight=1.0, projection: str = "none", share: str = SHARE_OFFICIAL,
                       mask: torch.Tensor | None = None) -> torch.Tensor:
    """``id_attention`` with the keys and values of ``tokens`` (B or 1, T, 2048; zero tokens already appended)
    from the layer's ``id_to_k`` / ``id_to_v`` (stored under InstantID's names ``to_k_ip`` / ``to_v_ip``)."""
    check_tokens(tokens, layer.to_k_ip.in_features)
    key, value = layer.keys_values(tokens, q.device)
    return id_attention(q, text_out, key.to(q.dtype), value.to(q.dtype), heads, weight, projection, share, mask)

