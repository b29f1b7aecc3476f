"""What the identity tests check about layers built from ComfyUI's operations: the layer types and raw parameters of
a network, storage dtypes with their tolerances, and a tiny FFRNet's inputs and outputs."""

import torch
from torch import nn

from comfyui_facesnap.models.identity.facesnap.ffrnet import FFRNet, FFRNetConfig

LAYER_TYPES = (nn.Linear, nn.Conv2d, nn.LayerNorm, nn.GroupNorm)


def ffrnet_inputs(cfg: FFRNetConfig, seed=3):
    g = torch.Generator().manual_seed(seed)
    return dict(x=torch.randn(2, 4, 16, 16, generator=g), hint=torch.rand(2, 3, 128, 128, generator=g),
                timesteps=torch.tensor([10.0, 700.0]), context=torch.randn(2, 16, cfg.cross_attention_dim, generator=g),
                y=torch.randn(2, 2816, generator=g))


def ffrnet_outputs(ffrnet: FFRNet) -> list[torch.Tensor]:
    with torch.no_grad():
        out = ffrnet(**ffrnet_inputs(ffrnet.config))
        params = ffrnet.injector_params(out)
    return [*out["output"], *out["middle"], *[t for pair in params for t in pair]]


def layers_and_raw_parameters(module: nn.Module):
    layers = [(n, m) for n, m in module.named_modules() if isinstance(m, LAYER_TYPES)]
    in_layers = {f"{n}.{p}" for n, m in layers for p, _ in m.named_parameters(recurse=False)}
    raw = [n for n, _ in module.named_parameters() if n not in in_layers]
    return layers, raw


def to_storage(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.data = p.data.to(dtype)
    return module


# relative L2 error of the outputs vs fp32 storage, compute in fp32 (storage rounding only)
STORAGE_TOLERANCE = {torch.float16: 2e-3, torch.bfloat16: 1.5e-2, torch.float8_e4m3fn: 1e-1}


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))
