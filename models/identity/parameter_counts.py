"""How many parameters a layout implies, by arithmetic alone (no module is built): compared with what a file holds
before anything is built from the file's config (``file_checks.check_parameter_budget``). Each count equals the
parameter count of the module the loaders build (tests/test_hostile_files.py checks them against meta-device builds).
"""

from __future__ import annotations

from .facesnap.attribute_mixer import MixerConfig
from .facesnap.ffrnet import FFRNetConfig
from .facesnap.id_injector import InjectorLayout
from .instantid.resampler import ResamplerConfig
from .unet_sites import instantid_layer_sites


def _linear(inputs: int, outputs: int, bias: bool = True) -> int:
    return inputs * outputs + (outputs if bias else 0)


def _conv(inputs: int, outputs: int, kernel: int) -> int:
    return inputs * outputs * kernel * kernel + outputs


def _norm(channels: int) -> int:
    return 2 * channels


def resampler_parameters(c: ResamplerConfig) -> int:
    inner = c.dim_head * c.heads
    attention = 2 * _norm(c.dim) + _linear(c.dim, inner, False) + _linear(c.dim, 2 * inner, False) \
        + _linear(inner, c.dim, False)
    feed_forward = _norm(c.dim) + 2 * _linear(c.dim, c.dim * c.ff_mult, False)
    return (c.num_queries * c.dim + _linear(c.embedding_dim, c.dim) + _linear(c.dim, c.output_dim)
            + _norm(c.output_dim) + c.depth * (attention + feed_forward))


def ip_layer_parameters(unet_config: dict, context_dim: int) -> int:
    """InstantID's ``ip_adapter`` layers for a (checked) UNet config: to_k_ip and to_v_ip per cross-attention."""
    return sum(2 * _linear(context_dim, site.channels, False) for site in instantid_layer_sites(unet_config).values())


def _attention(dim: int) -> int:
    """``operations.MultiheadAttention``: the fused input projection and ``out_proj``."""
    return 3 * dim * dim + 3 * dim + _linear(dim, dim)


def mixer_parameters(c: MixerConfig) -> int:
    d, inner = c.dim, c.dim * c.ff_mult
    decoder_layer = 2 * _attention(d) + _linear(d, inner) + _linear(inner, d) + 3 * _norm(d)
    return (_linear(c.id_dim, c.id_tokens * d) + _linear(c.clip_dim, d) + 2 * _norm(d) + _attention(d)
            + c.mix_tokens * d + c.decoder_layers * decoder_layer + _norm(d))


def _resnet(inputs: int, outputs: int, temb: int) -> int:
    shortcut = _conv(inputs, outputs, 1) if inputs != outputs else 0
    return (_norm(inputs) + _conv(inputs, outputs, 3) + _linear(temb, outputs) + _norm(outputs)
            + _conv(outputs, outputs, 3) + shortcut)


def _transformer(channels: int, depth: int, context: int) -> int:
    attention_self = 2 * _linear(channels, channels, False) + _linear(channels, channels, False) \
        + _linear(channels, channels)
    attention_cross = _linear(channels, channels, False) + 2 * _linear(context, channels, False) \
        + _linear(channels, channels)
    feed_forward = _linear(channels, channels * 8) + _linear(channels * 4, channels)
    block = 3 * _norm(channels) + attention_self + attention_cross + feed_forward
    return _norm(channels) + 2 * _linear(channels, channels) + depth * block


def ffrnet_parameters(c: FFRNetConfig) -> int:
    """The ControlNet backbone (diffusers ``ControlNetModel`` names), without ID-Injector heads."""
    first, last = c.block_out_channels[0], c.block_out_channels[-1]
    temb = 4 * first
    embed = c.conditioning_embedding_out_channels
    total = (_conv(c.in_channels, first, 3) + _linear(first, temb) + _linear(temb, temb)
             + _linear(c.projection_class_embeddings_input_dim, temb) + _linear(temb, temb)
             + _conv(c.conditioning_channels, embed[0], 3) + _conv(embed[-1], first, 3)
             + sum(_conv(a, a, 3) + _conv(a, b, 3) for a, b in zip(embed[:-1], embed[1:])))
    inputs = first
    for level, width in enumerate(c.block_out_channels):
        total += sum(_resnet(inputs if i == 0 else width, width, temb) for i in range(c.layers_per_block))
        if c.down_block_types[level] == "CrossAttnDownBlock2D":
            total += c.layers_per_block * _transformer(width, c.transformer_layers_per_block[level],
                                                       c.cross_attention_dim)
        if level != len(c.block_out_channels) - 1:
            total += _conv(width, width, 3)
        inputs = width
    total += sum(_conv(width, width, 1) for width in c.residual_channels())
    total += 2 * _resnet(last, last, temb) + _transformer(last, c.transformer_layers_per_block[-1],
                                                          c.cross_attention_dim)
    return total + _conv(last, last, 1)


def injector_parameters(layout: InjectorLayout) -> int:
    """Diff-PC's ID-Injector heads: phi and mu per injection point."""
    return sum(2 * _conv(s, t, layout.kernel_size) for s, t in zip(layout.source_channels, layout.target_channels))
