"""FaceSnap's layouts read from its weight files (``mixer_config``, ``ffrnet_config``): their values checked before
anything is built from them, and the parameters they imply (compared with what the file holds)."""

from __future__ import annotations

from ...common.config_values import MAX_WIDTH, ConfigValues, config_defaults
from ...common.layer_counts import conv_parameters, linear_parameters, multihead_attention_parameters, norm_parameters
from ..controlnet_checks import controlnet_fields
from .attribute_mixer import MixerConfig
from .ffrnet import FFRNetConfig
from .id_injector import InjectorLayout


def checked_mixer_config(data: dict, file_name: str, fix: str) -> MixerConfig:
    """FaceSnap's Facial Attribute Mixer layout (``mixer_config``)."""
    defaults = config_defaults(MixerConfig)
    values = ConfigValues({**defaults, **data}, "mixer_config", file_name, fix)
    values.unknown(defaults)
    config = MixerConfig(
        id_dim=values.integer("id_dim", 1, 4096), clip_dim=values.integer("clip_dim", 1, 4096),
        clip_tokens=values.integer("clip_tokens", 1, 1024), dim=values.integer("dim", 1, MAX_WIDTH),
        id_tokens=values.integer("id_tokens", 1, 256), mix_tokens=values.integer("mix_tokens", 1, 256),
        heads=values.integer("heads", 1, 128), decoder_layers=values.integer("decoder_layers", 0, 16),
        ff_mult=values.integer("ff_mult", 1, 8))
    if config.dim % config.heads:
        values.refuse(f"dim {config.dim} does not split into {config.heads} heads")
    return config


def checked_ffrnet_config(data: dict, file_name: str, fix: str) -> FFRNetConfig:
    """FaceSnap's ``ffrnet_config`` (``FFRNetConfig.to_dict``): the ControlNet layout and the ID-Injector's."""
    defaults = FFRNetConfig().to_dict()
    values = ConfigValues({**defaults, **data}, "ffrnet_config", file_name, fix)
    fields = controlnet_fields(values, data, defaults)
    id_injector = values.flag("id_injector")
    kernel_size = values.integer("injector_kernel_size", 1, 7)
    if kernel_size % 2 == 0:
        values.fail("injector_kernel_size", "odd (1, 3, 5 or 7)")
    return FFRNetConfig.from_dict({**fields, "id_injector": id_injector, "injector_kernel_size": kernel_size})


def mixer_parameters(c: MixerConfig) -> int:
    """The parameters a ``FacialAttributeMixer`` of this layout holds."""
    d, inner = c.dim, c.dim * c.ff_mult
    decoder_layer = (2 * multihead_attention_parameters(d) + linear_parameters(d, inner) + linear_parameters(inner, d)
                     + 3 * norm_parameters(d))
    return (linear_parameters(c.id_dim, c.id_tokens * d) + linear_parameters(c.clip_dim, d) + 2 * norm_parameters(d)
            + multihead_attention_parameters(d) + c.mix_tokens * d + c.decoder_layers * decoder_layer
            + norm_parameters(d))


def injector_parameters(layout: InjectorLayout) -> int:
    """Diff-PC's ID-Injector heads: phi and mu per injection point."""
    return sum(2 * conv_parameters(s, t, layout.kernel_size)
               for s, t in zip(layout.source_channels, layout.target_channels, strict=True))
