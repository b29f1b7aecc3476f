"""The ID-Injector's UNet patches: y = (1 + phi) * h + mu after the middle block and after each decoder block.

An output_block_patch sees the middle output (id 0) and the outputs of decoder blocks 0..N-2 (id 1..N-1); the last
decoder block gets a tap layer reached through a forward_timestep_embed_patch. Outside the control's start/end
window nothing is published, so the patches are a no-op.
"""

from __future__ import annotations

import torch

from comfy.ldm.modules.diffusionmodules.openaimodel import TimestepEmbedSequential

from ..models.errors import InvalidInputError
from ..models.identity.ffrnet import FFRNet
from ..models.identity.id_injector import IDInjector
from .control import INJECTOR_KEY


def check_unet_matches(model_patcher, ffrnet: FFRNet, node_id: str = "") -> None:
    """The MODEL must have the UNet layout FFRNet was built for (SDXL: 320/640/1280, 2 res blocks, ADM 2816)."""
    base = model_patcher.model
    unet_cfg = getattr(base.model_config, "unet_config", {}) or {}
    name = type(base.model_config).__name__
    cfg = ffrnet.config
    channels = [unet_cfg.get("model_channels", 0) * m for m in unet_cfg.get("channel_mult", [])]
    res_blocks = unet_cfg.get("num_res_blocks", [])
    if isinstance(res_blocks, int):
        res_blocks = [res_blocks] * len(channels)
    ok = (channels == list(cfg.block_out_channels)
          and all(n == cfg.layers_per_block for n in res_blocks)
          and unet_cfg.get("adm_in_channels") == cfg.projection_class_embeddings_input_dim)
    if not ok:
        raise InvalidInputError(
            f"the MODEL is {name} (UNet channels {channels}, ADM {unet_cfg.get('adm_in_channels')}), but this "
            f"FaceSnap model is for SDXL (channels {list(cfg.block_out_channels)}, ADM "
            f"{cfg.projection_class_embeddings_input_dim})",
            "load an SDXL checkpoint (SD1.5/SD2/Flux models cannot use FaceSnap)")


def apply_at(point: int, h: torch.Tensor, transformer_options: dict) -> torch.Tensor:
    """Eq. 17 at injection point ``point`` (0 = after the middle block), if a control published params."""
    params = transformer_options.get(INJECTOR_KEY)
    if params is None:
        return h
    phi, mu = params[point]
    return IDInjector.apply(h, phi, mu)


class InjectorOutputPatch:
    """output_block_patch: ``h`` entering decoder block ``id`` is the middle output (id 0) or block id-1's output."""

    def __call__(self, h, hsp, transformer_options):
        kind, index = transformer_options["block"]
        if kind == "output":
            h = apply_at(index, h, transformer_options)
        return h, hsp


class InjectorTap(torch.nn.Module):
    """Last layer of the last decoder block; its forward_timestep_embed handler applies the final point."""

    def __init__(self, point: int):
        super().__init__()
        self.point = point

    def forward(self, x):  # only reached without the handler below (a patch-less copy of the model)
        return x


def _tap_handler(layer, x, emb, context, transformer_options, *args):
    return apply_at(layer.point, x, transformer_options)


def patch_model_with_injector(model_patcher, ffrnet: FFRNet):
    """A clone of MODEL with the ID-Injector hooks; the input MODEL is untouched."""
    check_unet_matches(model_patcher, ffrnet)
    m = model_patcher.clone()
    patches = m.model_options.get("transformer_options", {}).get("patches", {})
    if any(isinstance(p, InjectorOutputPatch) for p in patches.get("output_block_patch", [])):
        return m  # already patched upstream: patching twice would apply Eq. 17 twice
    unet = m.get_model_object("diffusion_model")
    last = len(unet.output_blocks) - 1
    if len(unet.output_blocks) + 1 != ffrnet.id_injector.layout.points:
        raise InvalidInputError(
            f"the UNet has {len(unet.output_blocks)} decoder blocks; the ID-Injector expects "
            f"{ffrnet.id_injector.layout.points - 1}", "use the SDXL model the FaceSnap weights were trained for")
    m.set_model_output_block_patch(InjectorOutputPatch())
    block = unet.output_blocks[last]
    m.add_object_patch(f"diffusion_model.output_blocks.{last}",
                       TimestepEmbedSequential(*block, InjectorTap(last + 1)))
    m.set_model_forward_timestep_embed_patch((InjectorTap, _tap_handler))
    return m
