"""An identity's attention on a MODEL (InstantID's IP-attention, and any method whose identity tokens join the UNet's
cross-attentions through IP-adapter layers), through ComfyUI's attn2 replace patches only.

``patch_model_with_ip_attention`` returns a clone of the MODEL with one ``IPAttentionPatch`` at every cross-attention
the method's file has layers for (SDXL: 70, the 10 of the middle block under ComfyUI's ``("middle", 0, t)``; the
numbering is ``models/identity/unet_sites.py``). Each patch computes the layer's text attention as ComfyUI does
without a patch, or calls the replace patch that was at its key before (another pack's, or an earlier identity's),
then adds the method's term; by default InstantID's

    weight * mask * Attention(q, to_k_ip(tokens), to_v_ip(tokens))        (models/identity/ip_attention.py)

with, per batch chunk, the identity's cond tokens where ``transformer_options["cond_or_uncond"]`` says 0 and its uncond
tokens otherwise (InstantID's pipeline: the Resampler of the face for the positive, of zeros for the negative). Only
while the sampling sigma lies in the start/end window. Two identities therefore stack: the second patch calls the
first, each adds its own term under its own mask.

The mask covers the whole image, like the control's (``control.py``): it is resized to the latent, cropped to the area
of each chunk's cond (ConditioningSetArea), then resized to the attention layer's token grid. The areas reach the patch
through a calc_cond_batch wrapper that puts them into that call's transformer_options (nothing is stored anywhere).
It applies to cond and uncond chunks alike, as in InstantID and cubiq's node, so CFG acts outside the mask as before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import comfy.patcher_extension
import comfy.utils
from comfy.ldm.modules.attention import optimized_attention

from ..models.errors import InvalidInputError
from ..models.identity.ip_attention import IPAttentionLayer, IPAttentionLayers, mask_to_tokens
from ..models.identity.unet_sites import ip_adapter_layer_sites
from .unet_layout import unet_layout

AREAS_KEY = "facesnap_cond_areas"  # transformer_options entry: ({cond uuid: area or None}, full latent (h, w))
WRAPPER_KEY = "facesnap_ip_attention_areas"
CALC_COND_BATCH = comfy.patcher_extension.WrappersMP.CALC_COND_BATCH
SDXL_ADM = 2816  # SDXL base's ADM width (pooled text + size and crop embeddings); the refiner's is 2560


def _pass_areas(executor, model, conds, x_in, timestep, model_options):
    """calc_cond_batch wrapper: this call's cond areas and latent size, into its transformer_options."""
    areas = {cond["uuid"]: cond.get("area") for cond_list in conds for cond in cond_list or () if "uuid" in cond}
    options = dict(model_options)
    options["transformer_options"] = {**model_options.get("transformer_options", {}),
                                      AREAS_KEY: (areas, tuple(x_in.shape[2:]))}
    return executor(model, conds, x_in, timestep, options)


def token_mask(mask: torch.Tensor, seq_len: int, options: dict, batch: int) -> torch.Tensor:
    """The whole-image ``mask`` (N, H, W) for each chunk of this attention call: (batch, seq_len, 1)."""
    kinds = options.get("cond_or_uncond") or [0]
    uuids = options.get("uuids") or [None] * len(kinds)
    areas, dims = options.get(AREAS_KEY, ({}, None))
    latent_hw = tuple(options["original_shape"][2:])  # this call's latent: the area crop when there is one
    per = batch // len(uuids)
    chunks = []
    for uuid in uuids:
        area = areas.get(uuid)
        part = mask
        if area is not None and dims is not None and len(area) == 4:
            h, w, y, x = area
            part = F.interpolate(mask[:, None], size=dims, mode="bilinear")[:, 0, y:y + h, x:x + w]
        chunks.append(comfy.utils.repeat_to_batch_size(mask_to_tokens(part, seq_len, latent_hw), per))
    return torch.cat(chunks)


class IPAttentionPatch:
    """One cross-attention's attn2 replace patch (see the module docstring). Immutable after construction."""

    def __init__(self, layer: IPAttentionLayer, cond: torch.Tensor, uncond: torch.Tensor, weight: float,
                 sigma_range: tuple[float, float], mask: torch.Tensor | None = None, inner=None, term=None):
        self.term = term or ip_attention_term
        self.layer = layer
        self.cond, self.uncond = cond, uncond
        self.weight = float(weight)
        self.sigma_start, self.sigma_end = sigma_range
        self.mask = mask
        self.inner = inner

    def __deepcopy__(self, memo):  # ModelPatcher.clone deep-copies model_options: share, never copy the layers
        return self

    def active(self, options: dict) -> bool:
        sigmas = options.get("sigmas")
        if sigmas is None:
            return True
        sigma = float(sigmas.detach().flatten()[0])
        return self.sigma_end <= sigma <= self.sigma_start

    def __call__(self, q, k, v, extra_options):
        if self.inner is not None:
            out = self.inner(q, k, v, extra_options)
        else:  # what CrossAttention computes without a patch
            out = optimized_attention(q, k, v, extra_options["n_heads"],
                                      attn_precision=extra_options.get("attn_precision"))
        if not self.active(extra_options):
            return out
        kinds = extra_options.get("cond_or_uncond") or [0]
        per = q.shape[0] // len(kinds)
        tokens = torch.cat([(self.cond if kind == 0 else self.uncond).expand(per, -1, -1) for kind in kinds])
        mask = None
        if self.mask is not None:
            mask = token_mask(self.mask.to(q.device, torch.float32), q.shape[1], extra_options, q.shape[0])
        ip = self.term(self.layer, q, tokens.to(q.device), extra_options["n_heads"], self.weight, mask, out)
        return out + ip.to(out.dtype)


def ip_attention_term(layer: IPAttentionLayer, q, tokens, heads: int, weight: float, mask, text_out):
    """InstantID's term: the identity tokens' attention, weighted and masked (``text_out`` is not used)."""
    return layer(q, tokens, heads, weight, mask)


def check_model_fits(model_patcher, layers: IPAttentionLayers, method: str) -> None:
    """The MODEL's cross-attentions must be the ones the file has layers for (SDXL for ``method``'s file)."""
    base = model_patcher.model
    unet_config = getattr(base.model_config, "unet_config", {}) or {}
    try:
        sites = ip_adapter_layer_sites(unet_config)
    except InvalidInputError:
        sites = {}
    wanted = {n: (s.patch_key, s.channels) for n, s in layers.sites.items()}
    name, channels, _, adm = unet_layout(base)
    if {n: (s.patch_key, s.channels) for n, s in sites.items()} != wanted or adm != SDXL_ADM:
        raise InvalidInputError(
            f"{method}'s attention has layers for {len(wanted)} cross-attentions of an SDXL UNet; the MODEL is "
            f"{name} (UNet channels {channels}, ADM {adm}) with {len(sites)}: {method} needs SDXL",
            "load an SDXL checkpoint (not SD1.5/SD2, the SDXL refiner or Flux)")


def patch_model_with_ip_attention(model_patcher, *, layers: IPAttentionLayers, layers_patcher, layers_key: str,
                                  cond: torch.Tensor, uncond: torch.Tensor, weight: float, start: float = 0.0,
                                  end: float = 1.0, mask: torch.Tensor | None = None, method: str = "InstantID",
                                  term=None):
    """A clone of MODEL with the attention of one identity (cond / uncond tokens (1, T, D)) at every layer of
    ``layers``. ``layers_patcher`` (the layers' ModelPatcher) is loaded with the MODEL; ``mask`` (H, W) or (N, H, W)
    over the whole image, None = everywhere; ``term`` the method's term (``ip_attention_term``'s signature). The input
    MODEL is untouched."""
    check_model_fits(model_patcher, layers, method)
    if mask is not None and mask.ndim == 2:
        mask = mask[None]
    m = model_patcher.clone()
    sampling = m.get_model_object("model_sampling")
    sigma_range = (float(sampling.percent_to_sigma(start)), float(sampling.percent_to_sigma(end)))
    existing = m.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn2", {})
    for key in layers.patch_keys:
        inner = existing.get(key) or existing.get(key[:2])  # ComfyUI falls back to a per-block patch
        patch = IPAttentionPatch(layers.for_patch_key(key), cond, uncond, weight, sigma_range, mask, inner, term)
        m.set_model_attn2_replace(patch, *key)
    m.set_additional_models(layers_key, [layers_patcher])
    if mask is not None:
        m.remove_wrappers_with_key(CALC_COND_BATCH, WRAPPER_KEY)
        m.add_wrapper_with_key(CALC_COND_BATCH, WRAPPER_KEY, _pass_areas)
    return m
