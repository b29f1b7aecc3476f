"""Seeded random weights and inputs that a reference script and the tests rebuild identically, at full size.

Every tensor is drawn from its own ``torch.Generator``, seeded from the run's seed and the tensor's name (CRC-32), so
any tensor can be rebuilt alone and in any order: a test fills the pack's module and the reference script fills the
official one with the same values, each under its own names. Scales keep activations realistic:
biases 0.1 N(0, 1), 1-D scales (LayerNorm weights) 1 + 0.1 N(0, 1), ``*.weight`` matrices (out, in) N(0, 1/in), other
matrices (in, out) N(0, 1/in), other tensors N(0, 1/last dim).

The values come from torch's CPU normal sampler; a torch release that changed it would change them, and the fixtures
made with them would have to be made again (the script that wrote them says how).
"""

from __future__ import annotations

import math
import zlib

import torch


def tensor_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % 2 ** 63


def seeded_tensor(name: str, shape, seed: int) -> torch.Tensor:
    """The float32 tensor called ``name`` in a run seeded with ``seed``."""
    shape = tuple(shape)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(tensor_seed(seed, name)))
    if name.endswith("bias"):
        return x.mul_(0.1)
    if len(shape) == 1:
        return x.mul_(0.1).add_(1.0)
    if len(shape) == 2:
        fan_in = shape[1] if name.endswith("weight") else shape[0]
        return x.div_(math.sqrt(fan_in))
    return x.div_(math.sqrt(shape[-1]))


def seeded_state(shapes: dict[str, tuple], seed: int, rename=None) -> dict[str, torch.Tensor]:
    """``{name: tensor}`` for ``shapes``; ``rename(name)`` gives the name each tensor is drawn under (default: its
    own), so two modules that name a weight differently get the same values."""
    return {name: seeded_tensor(rename(name) if rename else name, shape, seed) for name, shape in shapes.items()}


def seeded_normal(shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    """An input tensor: N(0, scale^2) from its own generator."""
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed)) * scale
