"""SDXL base's UNet as diffusers builds it (``UNet2DConditionModel``, the fields of its ``unet/config.json`` that
shape the network), for tests and reference scripts that compare the pack's layer layout with diffusers'."""

from __future__ import annotations

SDXL_UNET_KWARGS = dict(
    sample_size=128, block_out_channels=(320, 640, 1280), layers_per_block=2, cross_attention_dim=2048,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), use_linear_projection=True,
    addition_embed_type="text_time", addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816)


def sdxl_unet_on_meta():
    """diffusers' SDXL UNet with no storage (the meta device): its module names, order and shapes."""
    import diffusers
    import torch

    with torch.device("meta"):
        return diffusers.UNet2DConditionModel(**SDXL_UNET_KWARGS)
