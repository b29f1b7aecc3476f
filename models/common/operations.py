"""Layer classes ("operations") for the identity networks, and the attention blocks built from them.

Every network here takes ``operations``: a namespace with ``Linear``, ``Conv2d``, ``GroupNorm`` and ``LayerNorm``
classes, as ComfyUI's own model code does (``comfy.cldm.cldm.ControlNet(operations=...)``). The default is plain
``torch.nn``, so training and tests need no ComfyUI; the glue passes ``comfy.ops`` classes, which ComfyUI can cast per
layer (manual cast, fp8 storage) and stream to the GPU layer by layer (low-VRAM partial loading).

``MultiheadAttention`` and ``TransformerDecoder`` stand in for their ``torch.nn`` namesakes, whose linear layers and
norms are not injectable. Parameter names, state-dict keys, initialisation (random-number order included) and
outputs are those of ``torch.nn`` (batch_first, norm_first, no dropout), so files and training runs made with the
``torch.nn`` classes load and continue unchanged. The fused ``in_proj_weight``/``in_proj_bias`` stay raw parameters
(torch's names); they are cast to the input's device and dtype at use, as ComfyUI's own models do with their raw
parameters (``comfy.ops.cast_to_input``, e.g. the CLIP class embedding).
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

TORCH_OPS = SimpleNamespace(Linear=nn.Linear, Conv2d=nn.Conv2d, GroupNorm=nn.GroupNorm, LayerNorm=nn.LayerNorm)
OPERATION_NAMES = tuple(vars(TORCH_OPS))


def resolve_operations(operations=None):
    """``operations`` or ``TORCH_OPS``; a namespace lacking one of the four classes is a wiring bug."""
    if operations is None:
        return TORCH_OPS
    missing = [name for name in OPERATION_NAMES if not hasattr(operations, name)]
    if missing:
        raise TypeError(f"operations {operations!r} lacks {', '.join(missing)}")
    return operations


def cast_to_input(param: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A raw parameter on ``x``'s device in ``x``'s dtype (a no-op when it already is)."""
    return param.to(device=x.device, dtype=x.dtype)


class MultiheadAttention(nn.Module):
    """``torch.nn.MultiheadAttention(dim, heads, batch_first=True)`` with ``out_proj`` from ``operations``."""

    def __init__(self, dim: int, heads: int, operations=None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        ops = resolve_operations(operations)
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = ops.Linear(dim, dim)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # torch.nn.MultiheadAttention's order: out_proj's own init above, then these
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=False):
        """(B, Lq, d), (B, Lk, d), (B, Lk, d), (B, Lk) bool with True = ignore -> (output, None), like torch."""
        if need_weights:
            raise ValueError("attention weights are not computed; call with need_weights=False")
        w_q, w_k, w_v = cast_to_input(self.in_proj_weight, query).chunk(3)
        b_q, b_k, b_v = cast_to_input(self.in_proj_bias, query).chunk(3)
        b, lq, d = query.shape
        q, k, v = (F.linear(x, w, bias).view(b, -1, self.heads, d // self.heads).transpose(1, 2)
                   for x, w, bias in ((query, w_q, b_q), (key, w_k, b_k), (value, w_v, b_v)))
        mask = None if key_padding_mask is None else ~key_padding_mask.to(torch.bool)[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(b, lq, d)), None


class TransformerDecoderLayer(nn.Module):
    """``torch.nn.TransformerDecoderLayer(dim, heads, ff, dropout=0, activation="gelu", batch_first=True,
    norm_first=True)``."""

    def __init__(self, dim: int, heads: int, dim_feedforward: int, operations=None):
        super().__init__()
        ops = resolve_operations(operations)
        self.self_attn = MultiheadAttention(dim, heads, ops)
        self.multihead_attn = MultiheadAttention(dim, heads, ops)
        self.linear1 = ops.Linear(dim, dim_feedforward)
        self.linear2 = ops.Linear(dim_feedforward, dim)
        self.norm1 = ops.LayerNorm(dim)
        self.norm2 = ops.LayerNorm(dim)
        self.norm3 = ops.LayerNorm(dim)

    def forward(self, x, memory, memory_key_padding_mask=None):
        h = self.norm1(x)
        x = x + self.self_attn(h, h, h)[0]
        h = self.norm2(x)
        x = x + self.multihead_attn(h, memory, memory, key_padding_mask=memory_key_padding_mask)[0]
        return x + self.linear2(F.gelu(self.linear1(self.norm3(x))))


class TransformerDecoder(nn.Module):
    """``torch.nn.TransformerDecoder(layer, num_layers, norm=LayerNorm(dim))``. Like torch, the layers start as
    copies of one freshly initialised layer."""

    def __init__(self, layer: TransformerDecoderLayer, num_layers: int, norm: nn.Module):
        super().__init__()
        self.layers = nn.ModuleList([copy.deepcopy(layer) for _ in range(num_layers)])
        self.norm = norm

    def forward(self, tgt, memory, memory_key_padding_mask=None):
        x = tgt
        for layer in self.layers:
            x = layer(x, memory, memory_key_padding_mask=memory_key_padding_mask)
        return self.norm(x)
