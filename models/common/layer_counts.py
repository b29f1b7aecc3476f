"""How many parameters a layer holds, by arithmetic alone: the building blocks of the layout counts that are compared
with what a weight file holds before anything is built from its config (``file_checks.check_parameter_budget``)."""

from __future__ import annotations


def linear_parameters(inputs: int, outputs: int, bias: bool = True) -> int:
    return inputs * outputs + (outputs if bias else 0)


def conv_parameters(inputs: int, outputs: int, kernel: int) -> int:
    return inputs * outputs * kernel * kernel + outputs


def norm_parameters(channels: int) -> int:
    """A LayerNorm or GroupNorm with scale and shift."""
    return 2 * channels


def multihead_attention_parameters(dim: int) -> int:
    """``operations.MultiheadAttention``: the fused input projection and ``out_proj``."""
    return 3 * dim * dim + 3 * dim + linear_parameters(dim, dim)
