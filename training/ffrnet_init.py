"""FFRNet's starting point: a copy of the SDXL UNet encoder (as ControlNets are made), or an existing SDXL
ControlNet."""

from __future__ import annotations

import logging

import torch

from ..models.errors import ModelFileError
from ..models.identity.facesnap.ffrnet import FFRNet, FFRNetConfig

log = logging.getLogger("facesnap.train")


def ffrnet_config_from_unet(unet_config: dict, id_injector: bool) -> FFRNetConfig:
    """The FFRNet whose encoder has exactly the shapes of this (ComfyUI-format) UNet config's encoder."""
    mc, mult = unet_config["model_channels"], unet_config["channel_mult"]
    nrb = unet_config["num_res_blocks"]
    per_block = unet_config["transformer_depth"]
    depths = [per_block[level * nrb[level]] if level * nrb[level] < len(per_block) else 0 for level in range(len(mult))]
    head_channels = unet_config.get("num_head_channels", 64)
    channels = [mc * m for m in mult]
    return FFRNetConfig(
        in_channels=unet_config["in_channels"],
        down_block_types=tuple("CrossAttnDownBlock2D" if d > 0 else "DownBlock2D" for d in depths),
        block_out_channels=tuple(channels),
        layers_per_block=nrb[0],
        transformer_layers_per_block=tuple(max(d, 1) for d in depths),  # FFRNet's mid block reuses the last depth
        cross_attention_dim=unet_config["context_dim"],
        attention_head_dim=tuple(c // head_channels for c in channels),
        projection_class_embeddings_input_dim=unet_config["adm_in_channels"],
        id_injector=id_injector,
    )


def ffrnet_config_for_base(unet_config: dict, id_injector: bool, preset: str = "",
                           overrides: dict | None = None) -> FFRNetConfig:
    """The FFRNet to train on this base: a full copy of its encoder, or the named preset's lighter transformer
    depths (``sdxl_light``), then ``overrides`` (FFRNetConfig fields) on top."""
    config = ffrnet_config_from_unet(unet_config, id_injector)
    fields = {}
    if preset:
        wanted = FFRNetConfig.preset(preset, id_injector)
        if (wanted.block_out_channels != config.block_out_channels
                or wanted.cross_attention_dim != config.cross_attention_dim):
            raise ValueError(f"model.ffrnet_preset {preset!r} is an SDXL layout; this base has channels "
                             f"{list(config.block_out_channels)} and context width {config.cross_attention_dim}. "
                             "Leave model.ffrnet_preset empty, or set model.ffrnet_overrides instead")
        fields["transformer_layers_per_block"] = wanted.transformer_layers_per_block
    return FFRNetConfig.from_dict({**config.to_dict(), **fields, **(overrides or {})})


def init_from_unet(ffrnet: FFRNet, unet: torch.nn.Module, unet_config: dict) -> int:
    """Copy every encoder/middle weight of the UNet into the FFRNet; returns how many tensors were copied.

    The control-only parts (hint embedding, zero convs, ID-Injector heads) keep their zero/random init.
    """
    from ..comfy_glue.encoder_copy import copy_unet_encoder

    total = len(ffrnet.state_dict())
    copied = total - len(copy_unet_encoder(ffrnet, unet, unet_config))
    log.info("FFRNet initialised from the UNet encoder: %d of %d tensors copied", copied, total)
    return copied


# What a ControlNet must share with the base UNet for its residuals to fit: (FFRNetConfig field, what it is).
LAYOUT_FIELDS = (("in_channels", "latent channels"), ("block_out_channels", "encoder channels"),
                 ("layers_per_block", "res blocks per level"), ("down_block_types", "down blocks"),
                 ("projection_class_embeddings_input_dim", "ADM width"))


def init_from_controlnet(path: str, id_injector: bool, unet_config: dict, setting: str = "model.ffrnet_init") -> FFRNet:
    """Start from a diffusers SDXL ControlNet (folder or .safetensors), e.g. InstantID's IdentityNet; the ID-Injector
    heads start at zero. It must attend to tokens as wide as the base's text context (the mixer's width) and have
    the base UNet's encoder layout; errors name the config ``setting`` that gave the path."""
    from ..models.identity.facesnap.checkpoint import load_controlnet_as_ffrnet

    try:
        ffrnet = load_controlnet_as_ffrnet(path, id_injector=id_injector)
    except ModelFileError as err:
        raise ModelFileError(f"{setting}: {err.message}", err.fix) from err
    width = unet_config["context_dim"]
    if ffrnet.config.cross_attention_dim != width:
        raise ModelFileError(
            f"{setting}: {path} attends to {ffrnet.config.cross_attention_dim}-wide tokens; the base UNet and the "
            f"mixer use {width}-wide ones",
            "use an SDXL ControlNet (2048-wide cross-attention) such as InstantID's IdentityNet",
        )
    expected = ffrnet_config_from_unet(unet_config, id_injector)
    for name, what in LAYOUT_FIELDS:
        got, want = (_plain(getattr(c, name)) for c in (ffrnet.config, expected))
        if got != want:
            raise ModelFileError(f"{setting}: {path} has {what} {got}, the base UNet {want}: it is a ControlNet for "
                                 "another base model", "use a ControlNet made for this base (SDXL)")
    log.info("FFRNet initialised from the ControlNet %s (ID-Injector heads at zero)", path)
    return ffrnet.float()


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value
