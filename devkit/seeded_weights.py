"""Seeded random weights and inputs that a reference script (fed to the official code) and the tests (fed to the
pack's modules) rebuild identically at full size, so that committed reference outputs can be compared without
committing weights. Two recipes, each used by the fixtures that were written with it:

- per tensor (``seeded_tensor``, ``seeded_state``): every tensor from its own ``torch.Generator`` seeded from the run's
  seed and the tensor's name (CRC-32), so any tensor can be rebuilt alone and in any order, under another name if the
  two modules name it differently. Biases 0.1 N(0, 1), 1-D scales 1 + 0.1 N(0, 1), ``*.weight`` matrices (out, in)
  N(0, 1/in), other matrices (in, out) N(0, 1/in), other tensors N(0, 1/last dim). PuLID's encoders and attention.
- per spec (``seeded_tensors`` with ``eva_clip_spec`` / ``bisenet_spec``): one generator seeded once, tensors drawn in
  sorted-name order as ``mean + std * randn`` or ``low + (high - low) * rand``, scales chosen per layer kind so deep
  stacks keep a useful range. The EVA-CLIP tower and the BiSeNet parser.

The values come from torch's CPU samplers; a torch release that changed them would change every value, and the
fixtures would have to be written again (the scripts that wrote them say how; ``fingerprint`` detects it).
"""

from __future__ import annotations

import hashlib
import math
import zlib

import torch

NORMAL, UNIFORM = "normal", "uniform"


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


def seeded_tensors(spec: dict[str, tuple[tuple[int, ...], str, float, float]], seed: int) -> dict[str, torch.Tensor]:
    """``spec``: name -> (shape, NORMAL, mean, std) or (shape, UNIFORM, low, high)."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name in sorted(spec):
        shape, kind, a, b = spec[name]
        if kind == NORMAL:
            out[name] = a + b * torch.randn(shape, generator=generator)
        else:
            out[name] = a + (b - a) * torch.rand(shape, generator=generator)
    return out


def fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """A short digest of the names, shapes and first values of each tensor: checks that two processes drew the same
    tensors (a change of torch's generator would change every value)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        value = tensors[name].detach()
        digest.update(f"{name}{tuple(value.shape)}".encode())
        digest.update(value.flatten()[:1024].to(torch.float32).numpy().tobytes())
    return digest.hexdigest()[:16]


def eva_clip_spec(shapes: dict[str, tuple[int, ...]]) -> dict:
    """EVA-CLIP vision tower (names without ``visual.``): LayerNorm weights 1 +- 0.1, other vectors 0.05, linear
    weights 0.03, the patch convolution 1 / sqrt(fan-in), the class token and positions 0.1."""
    spec = {}
    for name, shape in shapes.items():
        layer_norm = "norm" in name or "_ln" in name
        if layer_norm and name.endswith(".weight"):
            spec[name] = (shape, NORMAL, 1.0, 0.1)
        elif name in ("cls_token", "pos_embed"):
            spec[name] = (shape, NORMAL, 0.0, 0.1)
        elif name == "patch_embed.proj.weight":
            spec[name] = (shape, NORMAL, 0.0, 1.0 / math.sqrt(math.prod(shape[1:])))
        elif len(shape) == 1:
            spec[name] = (shape, NORMAL, 0.0, 0.05)
        else:
            spec[name] = (shape, NORMAL, 0.0, 0.03)
    return spec


def bisenet_spec(shapes: dict[str, tuple[int, ...]]) -> dict:
    """BiSeNet (BatchNorm counters excluded): convolutions He-normal, BatchNorm scale 1 +- 0.1, shift and running
    mean 0.1, running variance uniform in [0.5, 1.5]."""
    spec = {}
    for name, shape in shapes.items():
        if name.endswith("running_var"):
            spec[name] = (shape, UNIFORM, 0.5, 1.5)
        elif len(shape) == 4:
            spec[name] = (shape, NORMAL, 0.0, math.sqrt(2.0 / math.prod(shape[1:])))
        elif name.endswith(".weight"):
            spec[name] = (shape, NORMAL, 1.0, 0.1)
        else:
            spec[name] = (shape, NORMAL, 0.0, 0.1)
    return spec
