"""IP-Adapter attention (InstantID's, PuLID's, EcomID's): a second attention of every UNet cross-attention's queries
over the identity tokens.

    out = Attention(q, K_text, V_text) + weight * mask * Attention(q, to_k_ip(tokens), to_v_ip(tokens))

and then the layer's own ``to_out``. ``q`` is the layer's projected query, so the term plugs into any attention
implementation that exposes it (ComfyUI's attn2 replace patch does). The weights live in the adapter file's
``ip_adapter`` dict (InstantID's layout) as ``"{n}.to_k_ip.weight"`` / ``"{n}.to_v_ip.weight"``, (channels, 2048)
without biases, n odd (see ``unet_sites``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..common.layer_counts import linear_parameters
from ..common.operations import TORCH_OPS
from ..errors import InvalidInputError
from .unet_sites import CrossAttentionSite, ip_adapter_layer_sites


def ip_attention(q: torch.Tensor, key: torch.Tensor, value: torch.Tensor, heads: int, weight=1.0,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-head attention of q (B, L, C) over projected identity keys/values (B or 1, T, C), times ``weight``
    (a number or a (B, 1, 1) tensor) and an optional token mask (B or 1, L, 1). -> (B, L, C) in q's dtype."""
    batch, length, channels = q.shape
    if channels % heads:
        raise InvalidInputError(f"{channels} query channels do not split into {heads} heads", "check the UNet")
    if key.shape[-1] != channels:
        raise InvalidInputError(f"identity keys are {key.shape[-1]} wide, the queries {channels}",
                                "use IP-attention weights made for this UNet")
    key, value = (t.to(q.dtype).expand(batch, -1, -1) for t in (key, value))
    q, key, value = (t.reshape(batch, t.shape[1], heads, -1).transpose(1, 2) for t in (q, key, value))
    out = F.scaled_dot_product_attention(q, key, value).transpose(1, 2).reshape(batch, length, channels)
    out = out * weight
    return out if mask is None else out * mask.to(out.dtype)


class IPAttentionLayer(nn.Module):
    """``to_k_ip`` / ``to_v_ip`` of one cross-attention layer. ``operations``: layer classes (default torch.nn).
    ``compute_dtype``: what the projections compute in (default: the weights' dtype; set it when the layers cast
    stored weights per call, ComfyUI's manual cast). The attention itself runs in the queries' dtype, the UNet's."""

    def __init__(self, context_dim: int, channels: int, operations=None, compute_dtype: torch.dtype | None = None):
        super().__init__()
        ops = operations or TORCH_OPS
        self.compute_dtype = compute_dtype
        self.to_k_ip = ops.Linear(context_dim, channels, bias=False)
        self.to_v_ip = ops.Linear(context_dim, channels, bias=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.compute_dtype or self.to_k_ip.weight.dtype

    def keys_values(self, tokens: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The identity tokens' keys and values (B or 1, T, channels), computed on ``device`` in ``dtype``."""
        tokens = tokens.to(device, self.dtype)
        return self.to_k_ip(tokens), self.to_v_ip(tokens)

    def forward(self, q: torch.Tensor, tokens: torch.Tensor, heads: int, weight=1.0,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """q (B, L, C) projected queries; tokens (B or 1, T, context_dim) identity tokens."""
        return ip_attention(q, *self.keys_values(tokens, q.device), heads, weight, mask)


class IPAttentionLayers(nn.ModuleDict):
    """An adapter file's ``ip_adapter``: one ``IPAttentionLayer`` per cross-attention, keyed by its number
    (``unet_sites.ip_adapter_layer_sites``), so its state dict reads ``"1.to_k_ip.weight"``, ``"1.to_v_ip.weight"``,
    ``"3.to_k_ip.weight"``, ..."""

    def __init__(self, sites: dict[int, CrossAttentionSite], context_dim: int = 2048, operations=None,
                 compute_dtype: torch.dtype | None = None):
        super().__init__({str(n): IPAttentionLayer(context_dim, site.channels, operations, compute_dtype)
                          for n, site in sites.items()})
        self.sites = dict(sites)
        self.context_dim = context_dim
        self._by_patch_key = {site.patch_key: str(n) for n, site in sites.items()}

    def for_patch_key(self, patch_key: tuple[str, int, int]) -> IPAttentionLayer:
        """The layer of ComfyUI attn2 patch key ``patch_key``."""
        number = self._by_patch_key.get(tuple(patch_key))
        if number is None:
            raise InvalidInputError(f"no IP-attention layer for the UNet's cross-attention {tuple(patch_key)}",
                                    "use IP-attention weights made for this UNet (InstantID's are for SDXL)")
        return self[number]

    @property
    def patch_keys(self) -> list[tuple[str, int, int]]:
        return list(self._by_patch_key)


def attention_grid(seq_len: int, latent_hw: tuple[int, int]) -> tuple[int, int]:
    """The (h, w) of an attention layer with ``seq_len`` queries in a UNet whose latent is ``latent_hw``: each
    downsampler (a stride-2 convolution with padding 1) takes the ceiling of half of each side."""
    h, w = latent_hw
    while h * w > seq_len and (h > 1 or w > 1):
        h, w = (h + 1) // 2, (w + 1) // 2
    if h * w != seq_len:
        raise InvalidInputError(f"{seq_len} attention tokens match no downscale of a {latent_hw[0]}x{latent_hw[1]} "
                                "latent", "the mask needs a UNet that halves its latent at each level")
    return h, w


def mask_to_tokens(mask: torch.Tensor, seq_len: int, latent_hw: tuple[int, int]) -> torch.Tensor:
    """An image-space mask (H, W) or (B, H, W) resized (bilinear) to the layer's grid -> (B, seq_len, 1)."""
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3:
        raise InvalidInputError(f"a mask must be (height, width) or (batch, height, width), got {list(mask.shape)}",
                                "connect a MASK")
    h, w = attention_grid(seq_len, latent_hw)
    resized = F.interpolate(mask[:, None].float(), size=(h, w), mode="bilinear", align_corners=False)
    return resized.reshape(mask.shape[0], seq_len, 1)


def ip_layer_parameters(unet_config: dict, context_dim: int) -> int:
    """The parameters of ``IPAttentionLayers`` for a (checked) UNet config: to_k_ip and to_v_ip per cross-attention."""
    return sum(2 * linear_parameters(context_dim, site.channels, False)
               for site in ip_adapter_layer_sites(unet_config).values())
