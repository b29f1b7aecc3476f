"""A ControlNet layout read from a file (a diffusers ``config.json``, or FaceSnap's ``ffrnet_config``): its values
checked before anything is built from them, and the parameters it implies (compared with what the file holds)."""

from __future__ import annotations

from ..common.config_values import MAX_WIDTH, ConfigValues
from ..common.layer_counts import conv_parameters, linear_parameters, norm_parameters
from .sdxl_controlnet import ControlNetConfig

DOWN_BLOCKS = ("DownBlock2D", "CrossAttnDownBlock2D")


def controlnet_fields(values: ConfigValues, data: dict, defaults: dict, diffusers: bool = False) -> dict:
    """The checked ``ControlNetConfig`` fields of ``data`` (read through ``values``) plus its other fields, which
    ``from_dict`` keeps in ``extra``. ``defaults``: the config class's fields. With ``diffusers``, a diffusers
    ``config.json`` (``num_attention_heads`` wins over ``attention_head_dim``; an integer stands for every level)."""
    channels = values.integers("block_out_channels", 1, 4096)
    levels = len(channels)
    heads_key = "num_attention_heads" if diffusers and data.get("num_attention_heads") is not None \
        else "attention_head_dim"
    groups = values.integer("norm_num_groups", 1, 128)
    checked = dict(
        in_channels=values.integer("in_channels", 1, 64),
        conditioning_channels=values.integer("conditioning_channels", 1, 16),
        block_out_channels=channels, layers_per_block=values.integer("layers_per_block", 1, 8),
        transformer_layers_per_block=values.integers("transformer_layers_per_block", 0, 32, levels,
                                                     per_level=diffusers),
        cross_attention_dim=values.integer("cross_attention_dim", 1, MAX_WIDTH),
        attention_head_dim=values.integers(heads_key, 1, 256, levels, per_level=diffusers),
        norm_num_groups=groups, norm_eps=values.number("norm_eps", 0.0, 1.0),
        addition_time_embed_dim=values.integer("addition_time_embed_dim", 2, 4096),
        projection_class_embeddings_input_dim=values.integer("projection_class_embeddings_input_dim", 1, 16384),
        conditioning_embedding_out_channels=values.integers("conditioning_embedding_out_channels", 1, 1024))
    types = data.get("down_block_types", defaults["down_block_types"])
    if not isinstance(types, (list, tuple)) or len(types) != levels or any(t not in DOWN_BLOCKS for t in types):
        values.fail("down_block_types", f"a list of {levels} of {', '.join(DOWN_BLOCKS)}")
    for level, (width, heads) in enumerate(zip(channels, checked["attention_head_dim"], strict=True)):
        if width % groups:
            values.refuse(f"block_out_channels[{level}] = {width} does not split into {groups} norm groups")
        if types[level] == "CrossAttnDownBlock2D" and width % heads:
            values.refuse(f"block_out_channels[{level}] = {width} does not split into {heads} attention heads")
    extra = data.get("extra", {})
    if not isinstance(extra, dict):
        values.fail("extra", "an object")
    # other diffusers fields (act_fn, num_attention_heads, ...) are kept, unused, in ``extra``
    rest = {k: v for k, v in data.items() if k not in defaults and not k.startswith("_")}
    return {**rest, **checked, "down_block_types": list(types), "extra": extra}


def checked_controlnet_config(data: dict, file_name: str, fix: str, where: str = "config") -> ControlNetConfig:
    """A diffusers ControlNet ``config.json`` (or ``config`` metadata), checked field by field."""
    defaults = ControlNetConfig().to_dict()
    values = ConfigValues({**defaults, **data}, where, file_name, fix)
    return ControlNetConfig.from_dict(controlnet_fields(values, data, defaults, diffusers=True))


def _resnet(inputs: int, outputs: int, temb: int) -> int:
    shortcut = conv_parameters(inputs, outputs, 1) if inputs != outputs else 0
    return (norm_parameters(inputs) + conv_parameters(inputs, outputs, 3) + linear_parameters(temb, outputs)
            + norm_parameters(outputs) + conv_parameters(outputs, outputs, 3) + shortcut)


def _transformer(channels: int, depth: int, context: int) -> int:
    attention_self = 2 * linear_parameters(channels, channels, False) + linear_parameters(channels, channels, False) \
        + linear_parameters(channels, channels)
    attention_cross = linear_parameters(channels, channels, False) + 2 * linear_parameters(context, channels, False) \
        + linear_parameters(channels, channels)
    feed_forward = linear_parameters(channels, channels * 8) + linear_parameters(channels * 4, channels)
    block = 3 * norm_parameters(channels) + attention_self + attention_cross + feed_forward
    return norm_parameters(channels) + 2 * linear_parameters(channels, channels) + depth * block


def controlnet_parameters(c: ControlNetConfig) -> int:
    """The parameters an ``SDXLControlNet`` of this layout holds (diffusers ``ControlNetModel`` names)."""
    first, last = c.block_out_channels[0], c.block_out_channels[-1]
    temb = 4 * first
    embed = c.conditioning_embedding_out_channels
    total = (conv_parameters(c.in_channels, first, 3) + linear_parameters(first, temb) + linear_parameters(temb, temb)
             + linear_parameters(c.projection_class_embeddings_input_dim, temb) + linear_parameters(temb, temb)
             + conv_parameters(c.conditioning_channels, embed[0], 3) + conv_parameters(embed[-1], first, 3)
             + sum(conv_parameters(a, a, 3) + conv_parameters(a, b, 3)
                   for a, b in zip(embed[:-1], embed[1:], strict=True)))
    inputs = first
    for level, width in enumerate(c.block_out_channels):
        total += sum(_resnet(inputs if i == 0 else width, width, temb) for i in range(c.layers_per_block))
        if c.down_block_types[level] == "CrossAttnDownBlock2D":
            total += c.layers_per_block * _transformer(width, c.transformer_layers_per_block[level],
                                                       c.cross_attention_dim)
        if level != len(c.block_out_channels) - 1:
            total += conv_parameters(width, width, 3)
        inputs = width
    total += sum(conv_parameters(width, width, 1) for width in c.residual_channels())
    total += 2 * _resnet(last, last, temb) + _transformer(last, c.transformer_layers_per_block[-1],
                                                          c.cross_attention_dim)
    return total + conv_parameters(last, last, 1)
