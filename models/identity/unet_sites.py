"""Where a UNet's cross-attention layers are: ComfyUI's attn2 patch keys, and the IP-Adapter layer numbering.

ComfyUI names a cross-attention by ``(block, block id, transformer index)``: ``("input", i, t)`` for
``input_blocks[i]``, ``("middle", 0, t)`` for the whole middle block, ``("output", i, t)`` for ``output_blocks[i]``
(``openaimodel.UNetModel._forward`` sets ``transformer_options["block"]``; ``SpatialTransformer`` sets the index).
The layout follows from the UNet config as ComfyUI's model detection reports it (``SDXL_UNET_CONFIG``).

An IP-Adapter's ``ip_adapter`` dict (InstantID's, PuLID's, EcomID's) numbers the modules of diffusers'
``unet.attn_processors`` (self-attention at even positions, cross-attention at odd ones) in the order diffusers
registers the blocks: down blocks, then up blocks, then the mid block (``UNet2DConditionModel`` creates
``up_blocks`` before assigning ``mid_block``). So the k-th cross-attention in input, output, middle order is the
adapter's module ``2k + 1``: 70 layers, numbers 1..139, on SDXL.

``checked_unet_config`` checks the UNet fields a weight file states (its ``unet_config`` metadata) before anything is
built from them.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..common.config_values import MAX_WIDTH, ConfigValues
from ..errors import InvalidInputError

# SDXL base as ComfyUI's model detection reports it (the fields this module reads).
SDXL_UNET_CONFIG = {
    "model_channels": 320,
    "channel_mult": [1, 2, 4],
    "num_res_blocks": [2, 2, 2],
    "transformer_depth": [0, 0, 2, 2, 10, 10],
    "transformer_depth_middle": 10,
    "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
    "context_dim": 2048,
}
REQUIRED = ("model_channels", "channel_mult", "num_res_blocks", "transformer_depth", "transformer_depth_middle",
            "transformer_depth_output")
CONTEXT_BASES = {768: "SD1.5", 1024: "SD2.x", 2048: "SDXL"}  # cross-attention width -> base model family


def context_base(width: int) -> str:
    """The base model family whose UNet's cross-attention is ``width`` wide."""
    return CONTEXT_BASES.get(width, f"a {width}-wide base model")


@dataclass(frozen=True)
class CrossAttentionSite:
    patch_key: tuple[str, int, int]  # ComfyUI attn2 patch key
    channels: int  # width of the layer's queries (and of its IP-attention keys/values)


def _per_level(value, levels: int) -> list[int]:
    return [value] * levels if isinstance(value, int) else list(value)


def cross_attention_sites(unet_config: dict) -> tuple[list[CrossAttentionSite], list[CrossAttentionSite],
                                                        list[CrossAttentionSite]]:
    """(input, middle, output) sites of a ComfyUI ``UNetModel`` config, each list in ComfyUI's block order."""
    missing = [k for k in REQUIRED if k not in unet_config]
    if missing:
        raise InvalidInputError(f"the UNet config lacks {', '.join(missing)}", "use a UNet loaded by ComfyUI")
    mult = list(unet_config["channel_mult"])
    width = unet_config["model_channels"]
    res_blocks = _per_level(unet_config["num_res_blocks"], len(mult))
    attention_blocks = unet_config.get("num_attention_blocks")
    depth_in = list(unet_config["transformer_depth"])
    depth_out = list(unet_config["transformer_depth_output"])
    if len(depth_in) != sum(res_blocks) or len(depth_out) != sum(n + 1 for n in res_blocks):
        raise InvalidInputError("the UNet config's transformer depths do not match its blocks",
                                "use a UNet loaded by ComfyUI")

    def attends(level: int, index: int) -> bool:
        return attention_blocks is None or index < attention_blocks[level]

    inputs, block = [], 1  # input_blocks[0] is the stem convolution
    for level, m in enumerate(mult):
        for nr in range(res_blocks[level]):
            depth = depth_in.pop(0)
            if depth > 0 and attends(level, nr):
                inputs += [CrossAttentionSite(("input", block, t), width * m) for t in range(depth)]
            block += 1
        block += level != len(mult) - 1  # the downsampler
    middle_depth = max(int(unet_config["transformer_depth_middle"]), 0)
    middle = [CrossAttentionSite(("middle", 0, t), width * mult[-1]) for t in range(middle_depth)]
    outputs, block = [], 0
    for level in reversed(range(len(mult))):
        for i in range(res_blocks[level] + 1):
            depth = depth_out.pop()
            if depth > 0 and attends(level, i):
                outputs += [CrossAttentionSite(("output", block, t), width * mult[level]) for t in range(depth)]
            block += 1
    return inputs, middle, outputs


def ip_adapter_layer_sites(unet_config: dict = SDXL_UNET_CONFIG) -> dict[int, CrossAttentionSite]:
    """An IP-Adapter's ``ip_adapter`` module number (1, 3, ..., 139 on SDXL) -> the cross-attention it belongs to."""
    inputs, middle, outputs = cross_attention_sites(unet_config)
    return {2 * k + 1: site for k, site in enumerate(inputs + outputs + middle)}


def checked_unet_config(data: dict, file_name: str, fix: str) -> dict:
    """The UNet fields this module reads (ComfyUI's detection names; SDXL: 320, [1, 2, 4], depths up to 10), as a
    file's ``unet_config`` states them, checked field by field."""
    values = ConfigValues(data, "unet_config", file_name, fix)
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        values.refuse(f"missing field(s) {', '.join(missing)}")
    mult = values.integers("channel_mult", 1, 16)
    levels = len(mult)
    res = values.integers("num_res_blocks", 1, 8, levels, per_level=True)
    checked = {"model_channels": values.integer("model_channels", 1, 1024), "channel_mult": mult,
               "num_res_blocks": res,
               "transformer_depth": values.integers("transformer_depth", 0, 32, sum(res)),
               "transformer_depth_middle": values.integer("transformer_depth_middle", -2, 32),
               "transformer_depth_output": values.integers("transformer_depth_output", 0, 32,
                                                           sum(n + 1 for n in res))}
    if data.get("num_attention_blocks") is not None:
        checked["num_attention_blocks"] = values.integers("num_attention_blocks", 0, 8, levels)
    if data.get("context_dim") is not None:
        checked["context_dim"] = values.integer("context_dim", 1, MAX_WIDTH)
    if checked["model_channels"] * max(mult) > MAX_WIDTH:
        values.refuse(f"model_channels x channel_mult = {checked['model_channels'] * max(mult)} is above {MAX_WIDTH}")
    return checked
