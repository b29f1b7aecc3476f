"""Architecture values read from a file, checked before anything is built from them.

A weight file names its own layout: InstantID conversions carry ``resampler_config`` and ``unet_config`` in their
metadata, FaceSnap files ``mixer_config`` and ``ffrnet_config``, diffusers ControlNets a ``config.json`` or a
``config`` metadata entry. Every value is checked for its type and a range around the published families (SDXL,
SD1.5, InstantID, FaceSnap, and the tests' tiny models), and products such as heads x width, before any module is
built; then ``parameter_counts`` compares the parameters the layout implies with what the file holds. Errors name the
file, the config and the field.
"""

from __future__ import annotations

import math
from dataclasses import fields

from ..errors import ModelFileError
from .facesnap.attribute_mixer import MixerConfig
from .facesnap.ffrnet import FFRNetConfig
from .instantid.resampler import ResamplerConfig
from .unet_sites import REQUIRED as UNET_FIELDS

MAX_LEVELS = 6  # SDXL has 3 UNet levels, SD1.5 4
MAX_WIDTH = 8192  # widest published layer: SDXL's 2048-wide context, 1280 x 4 channels
DOWN_BLOCKS = ("DownBlock2D", "CrossAttnDownBlock2D")


class ConfigValues:
    """Typed reads of one config dict; every failure is a ModelFileError naming ``file_name`` and ``where.key``."""

    def __init__(self, data: dict, where: str, file_name: str, fix: str):
        self.data, self.where, self.file_name, self.fix = data, where, file_name, fix

    def fail(self, key: str, expected: str):
        value = self.data.get(key)
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise ModelFileError(f"{self.file_name}: {self.where}.{key} = {shown} is not {expected}", self.fix)

    def refuse(self, message: str):
        raise ModelFileError(f"{self.file_name}: {self.where}: {message}", self.fix)

    def unknown(self, known) -> None:
        extra = sorted(set(self.data) - set(known))
        if extra:
            self.refuse(f"unknown field(s) {', '.join(map(repr, extra[:5]))}")

    def integer(self, key: str, low: int, high: int, default=None, value=None) -> int:
        value = self.data.get(key, default) if value is None else value
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(key, f"an integer in {low}..{high}")
        return value

    def integers(self, key: str, low: int, high: int, length: int | None = None, default=None,
                 per_level: bool = False) -> list[int]:
        """A list of integers (``length`` of them, or 1..MAX_LEVELS); with ``per_level`` one integer stands for
        all ``length`` levels, as diffusers allows."""
        value = self.data.get(key, default)
        if per_level and isinstance(value, int) and not isinstance(value, bool) and length is not None:
            value = [value] * length
        sizes = f"{length}" if length is not None else f"1..{MAX_LEVELS}"
        if not isinstance(value, (list, tuple)) or not (len(value) == length if length is not None
                                                        else 1 <= len(value) <= MAX_LEVELS):
            self.fail(key, f"a list of {sizes} integers in {low}..{high}")
        if not all(isinstance(v, int) and not isinstance(v, bool) and low <= v <= high for v in value):
            self.fail(key, f"a list of {sizes} integers in {low}..{high}")
        return list(value)

    def number(self, key: str, low: float, high: float, default=None) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not low < value < high:
            self.fail(key, f"a number between {low} and {high}")
        return float(value)

    def flag(self, key: str, default=None) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            self.fail(key, "true or false")
        return value


def _defaults(config_class) -> dict:
    return {f.name: getattr(config_class(), f.name) for f in fields(config_class)}


def checked_resampler_config(data: dict, file_name: str, fix: str) -> ResamplerConfig:
    """InstantID's Resampler layout (``resampler_config``; missing fields are the published ones)."""
    values = ConfigValues({**_defaults(ResamplerConfig), **data}, "resampler_config", file_name, fix)
    values.unknown(_defaults(ResamplerConfig))
    config = ResamplerConfig(
        dim=values.integer("dim", 1, 4096), depth=values.integer("depth", 1, 16),
        dim_head=values.integer("dim_head", 1, 256), heads=values.integer("heads", 1, 64),
        num_queries=values.integer("num_queries", 1, 256), embedding_dim=values.integer("embedding_dim", 1, 4096),
        output_dim=values.integer("output_dim", 1, 4096), ff_mult=values.integer("ff_mult", 1, 8))
    if config.heads * config.dim_head > MAX_WIDTH:
        values.refuse(f"heads x dim_head = {config.heads * config.dim_head} is above {MAX_WIDTH}")
    return config


def checked_unet_config(data: dict, file_name: str, fix: str) -> dict:
    """The UNet fields ``unet_sites`` reads (ComfyUI's detection names; SDXL: 320, [1, 2, 4], depths up to 10)."""
    values = ConfigValues(data, "unet_config", file_name, fix)
    missing = [key for key in UNET_FIELDS if key not in data]
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


def checked_mixer_config(data: dict, file_name: str, fix: str) -> MixerConfig:
    """FaceSnap's Facial Attribute Mixer layout (``mixer_config``)."""
    values = ConfigValues({**_defaults(MixerConfig), **data}, "mixer_config", file_name, fix)
    values.unknown(_defaults(MixerConfig))
    config = MixerConfig(
        id_dim=values.integer("id_dim", 1, 4096), clip_dim=values.integer("clip_dim", 1, 4096),
        clip_tokens=values.integer("clip_tokens", 1, 1024), dim=values.integer("dim", 1, MAX_WIDTH),
        id_tokens=values.integer("id_tokens", 1, 256), mix_tokens=values.integer("mix_tokens", 1, 256),
        heads=values.integer("heads", 1, 128), decoder_layers=values.integer("decoder_layers", 0, 16),
        ff_mult=values.integer("ff_mult", 1, 8))
    if config.dim % config.heads:
        values.refuse(f"dim {config.dim} does not split into {config.heads} heads")
    return config


def checked_ffrnet_config(data: dict, file_name: str, fix: str, where: str = "ffrnet_config",
                          diffusers: bool = False) -> FFRNetConfig:
    """An FFRNet / diffusers ControlNet layout: FaceSnap's ``ffrnet_config`` (``FFRNetConfig.to_dict``), or with
    ``diffusers`` a diffusers ``config.json`` (``num_attention_heads`` wins over ``attention_head_dim``; an integer
    stands for every level)."""
    defaults = FFRNetConfig().to_dict()
    values = ConfigValues({**defaults, **data}, where, file_name, fix)
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
        conditioning_embedding_out_channels=values.integers("conditioning_embedding_out_channels", 1, 1024),
        id_injector=False if diffusers else values.flag("id_injector"),
        injector_kernel_size=1 if diffusers else values.integer("injector_kernel_size", 1, 7))
    types = data.get("down_block_types", defaults["down_block_types"])
    if not isinstance(types, (list, tuple)) or len(types) != levels or any(t not in DOWN_BLOCKS for t in types):
        values.fail("down_block_types", f"a list of {levels} of {', '.join(DOWN_BLOCKS)}")
    if checked["injector_kernel_size"] % 2 == 0:
        values.fail("injector_kernel_size", "odd (1, 3, 5 or 7)")
    for level, (width, heads) in enumerate(zip(channels, checked["attention_head_dim"])):
        if width % groups:
            values.refuse(f"block_out_channels[{level}] = {width} does not split into {groups} norm groups")
        if types[level] == "CrossAttnDownBlock2D" and width % heads:
            values.refuse(f"block_out_channels[{level}] = {width} does not split into {heads} attention heads")
    extra = data.get("extra", {})
    if not isinstance(extra, dict):
        values.fail("extra", "an object")
    # other diffusers fields (act_fn, num_attention_heads, ...) are kept, unused, in ``extra``
    rest = {k: v for k, v in data.items() if k not in defaults and not k.startswith("_")}
    return FFRNetConfig.from_dict({**rest, **checked, "down_block_types": list(types), "extra": extra})
