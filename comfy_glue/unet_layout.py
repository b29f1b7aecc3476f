"""Does an FFRNet-style ControlNet config fit the UNet being sampled? (SDXL: 320/640/1280, 2 res blocks, ADM 2816)"""

from __future__ import annotations


def unet_layout(base_model) -> tuple[str, list[int], list[int], int | None]:
    """(model family, channels per level, res blocks per level, ADM width) of a ComfyUI BaseModel."""
    unet_cfg = getattr(base_model.model_config, "unet_config", {}) or {}
    channels = [unet_cfg.get("model_channels", 0) * m for m in unet_cfg.get("channel_mult", [])]
    res_blocks = unet_cfg.get("num_res_blocks", [])
    if isinstance(res_blocks, int):
        res_blocks = [res_blocks] * len(channels)
    return type(base_model.model_config).__name__, channels, list(res_blocks), unet_cfg.get("adm_in_channels")


def unet_layout_error(base_model, config) -> str | None:
    """None if a ControlNet with this diffusers-style ``config`` (``FFRNetConfig``) fits ``base_model``'s UNet,
    else what differs. Configs without these fields are not checked."""
    wanted = getattr(config, "block_out_channels", None)
    if wanted is None:
        return None
    name, channels, res_blocks, adm = unet_layout(base_model)
    ok = (channels == list(wanted) and all(n == config.layers_per_block for n in res_blocks)
          and adm == config.projection_class_embeddings_input_dim)
    if ok:
        return None
    return (f"the MODEL is {name} (UNet channels {channels}, {res_blocks} res blocks, ADM {adm}), the ControlNet is "
            f"built for channels {list(wanted)}, {config.layers_per_block} res blocks per level, ADM "
            f"{config.projection_class_embeddings_input_dim} (SDXL)")
