"""FFRNet: FaceSnap's Face Fidelity Reinforce Network, an SDXL ControlNet (``sdxl_controlnet.py``) whose
cross-attention context is f_mix, with Diff-PC's ID-Injector heads inside it (``id_injector.py``).

The backbone's parameter names are diffusers' ``ControlNetModel``'s; the heads are registered after it
(``id_injector.*``), so a diffusers ControlNet file is an FFRNet without heads.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from ...common.operations import resolve_operations
from ..sdxl_controlnet import ControlNetConfig, SDXLControlNet
from .id_injector import IDInjector, InjectorLayout

FFRNET_PRESETS = ("sdxl", "sdxl_light")  # full-size FFRNetConfig classmethods


@dataclass
class FFRNetConfig(ControlNetConfig):
    """A ``ControlNetConfig`` plus the ID-Injector heads (``id_injector``) and their kernel size."""

    id_injector: bool = True
    injector_kernel_size: int = 1

    @classmethod
    def sdxl(cls, id_injector: bool = True) -> "FFRNetConfig":
        """The paper's FFRNet: a full copy of SDXL's encoder and middle block (1.25 B parameters)."""
        return cls(id_injector=id_injector)

    @classmethod
    def sdxl_light(cls, id_injector: bool = True) -> "FFRNetConfig":
        """SDXL FFRNet with 2 instead of 10 transformer layers in the 1280-channel down block and the mid block
        (diffusers ties the mid block's depth to the last level's), like diffusers' small SDXL ControlNets: 417 M
        parameters, 46 % of ``sdxl()``'s FLOPs. Initialised from the UNet, each block takes its first 2 layers."""
        return cls(transformer_layers_per_block=(1, 2, 2), id_injector=id_injector)

    @classmethod
    def preset(cls, name: str, id_injector: bool = True) -> "FFRNetConfig":
        """The full-size config called ``name``, one of ``FFRNET_PRESETS``."""
        if name not in FFRNET_PRESETS:
            raise ValueError(f"unknown FFRNet preset {name!r}; choose one of {', '.join(FFRNET_PRESETS)}")
        return getattr(cls, name)(id_injector=id_injector)

    @classmethod
    def tiny(cls, id_injector: bool = True, cross_attention_dim: int = 64) -> "FFRNetConfig":
        """A two-level toy with SDXL's structure (first level without attention), for tests."""
        return super().tiny(cross_attention_dim, id_injector=id_injector)

    @classmethod
    def from_diffusers(cls, config: dict, id_injector: bool = False) -> "FFRNetConfig":
        """Build from a diffusers ``config.json`` dict (``num_attention_heads`` wins over ``attention_head_dim``)."""
        return super().from_diffusers(config, id_injector=id_injector)

    @classmethod
    def from_controlnet(cls, config: ControlNetConfig, id_injector: bool = False,
                        injector_kernel_size: int = 1) -> "FFRNetConfig":
        """The FFRNet on the backbone ``config`` (e.g. a diffusers ControlNet's)."""
        backbone = {f.name: getattr(config, f.name) for f in fields(ControlNetConfig)}
        return cls(**backbone, id_injector=id_injector, injector_kernel_size=injector_kernel_size)

    def injector_layout(self) -> InjectorLayout:
        """Where the ID-Injector acts: after the middle block, then after each decoder block of the UNet."""
        decoder = []
        for ch in reversed(self.block_out_channels):
            decoder += [ch] * (self.layers_per_block + 1)
        residual = self.residual_channels()
        n = len(residual)
        # Point k (k < n) is the input of decoder block k; it is concatenated with the skip that receives
        # residual n-1-k, so that residual has the same resolution. The last point (after the last decoder
        # block) is at full resolution, like residual 0.
        sources = [n - 1 - k for k in range(n)] + [0]
        return InjectorLayout(
            target_channels=[self.block_out_channels[-1]] + decoder,
            source_indices=sources,
            source_channels=[residual[i] for i in sources],
            kernel_size=self.injector_kernel_size,
        )


class FFRNet(SDXLControlNet):
    """SDXL ControlNet (diffusers layout) + optional ID-Injector heads that live inside it (``id_injector``,
    registered after the backbone). ``operations`` / ``compute_dtype``: see ``SDXLControlNet``."""

    def __init__(self, config: FFRNetConfig, operations=None, compute_dtype: torch.dtype | None = None):
        super().__init__(config, operations, compute_dtype)
        ops = resolve_operations(operations)
        self.id_injector = IDInjector(config.injector_layout(), operations=ops) if config.id_injector else None

    def zero_init_controls(self) -> None:
        """Zero the output convs (ControlNet's zero convolutions) and the injector heads."""
        super().zero_init_controls()
        if self.id_injector is not None:
            self.id_injector.zero_init()

    def injector_params(self, control: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(phi, mu) for every injection point, from this network's own ``forward`` output."""
        if self.id_injector is None:
            raise ValueError("this FFRNet has no ID-Injector heads")
        return self.id_injector(control)
