"""Copy the SDXL UNet's encoder, middle block and embeddings into FFRNet (how ControlNets start training)."""

from __future__ import annotations

import torch

import comfy.utils

from ..models.errors import ModelFileError
from ..models.identity.facesnap.ffrnet import FFRNet
from .id_injector_patch import check_unet_matches


def init_ffrnet_from_unet(ffrnet: FFRNet, model_patcher) -> list[str]:
    """Copy the SDXL UNet's encoder, middle block and embeddings into FFRNet (ControlNet's usual start for
    training). A shallower FFRNet (``FFRNetConfig.sdxl_light()``) gets the first layers of each transformer block.
    Returns the FFRNet keys left as they were: zero convs, hint embedding, injector heads."""
    check_unet_matches(model_patcher, ffrnet)
    base = model_patcher.model
    return copy_unet_encoder(ffrnet, base.diffusion_model, base.model_config.unet_config)


def copy_unet_encoder(ffrnet: FFRNet, unet: torch.nn.Module, unet_config: dict) -> list[str]:
    """Load every FFRNet tensor that has a same-named (diffusers -> ComfyUI) UNet counterpart; returns the rest."""
    mapping = comfy.utils.unet_to_diffusers(unet_config)  # diffusers name -> ComfyUI name
    unet_sd = unet.state_dict()
    own = ffrnet.state_dict()
    update, mismatched = {}, []
    for name, source in mapping.items():
        if name not in own or source not in unet_sd:
            continue
        if unet_sd[source].shape != own[name].shape:
            mismatched.append(f"{name} {tuple(own[name].shape)} <- {source} {tuple(unet_sd[source].shape)}")
            continue
        update[name] = unet_sd[source].to(own[name].dtype)
    if mismatched:
        raise ModelFileError(
            "the FFRNet does not match the base UNet's encoder: " + "; ".join(mismatched[:3]),
            "build the FFRNet config from the base (the trainer does this unless model.ffrnet overrides it)",
        )
    ffrnet.load_state_dict(update, strict=False)
    return sorted(set(own) - set(update))
