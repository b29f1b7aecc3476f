"""Seeded random weights at full size: the same tensors in a reference script (fed to the official code) and in the
tests (fed to the pack's modules), so that committed reference outputs can be compared without committing weights.

Order: the tensors are drawn in sorted-name order from one CPU ``torch.Generator`` seeded once, each in float32 as
``mean + std * randn(shape)`` or ``low + (high - low) * rand(shape)``. Scales keep activations in a useful range
through deep stacks (so that a swapped layer changes the outputs by far more than float32 rounding).
"""

from __future__ import annotations

import hashlib
import math

import torch

NORMAL, UNIFORM = "normal", "uniform"


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
