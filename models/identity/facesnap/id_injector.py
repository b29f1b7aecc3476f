"""Diff-PC's ID-Injector (Eq. 16-17), driven by FFRNet's control features.

    phi = Conv1(c_id),  mu = Conv2(c_id),  y = (1 + phi) * z' + mu

z' is the UNet hidden state after the middle block and after every decoder block (10 points on SDXL: channels
1280 x4, 640 x3, 320 x3). c_id at each point is the FFRNet control residual of the same resolution (see
``FFRNetConfig.injector_layout``). The heads are zero-initialised, so an untrained injector is an exact no-op.
The paper does not give the kernel size; 1x1 (SFT's choice) is the default, which costs < 1 % of a step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...common.operations import resolve_operations


@dataclass(frozen=True)
class InjectorLayout:
    target_channels: list[int]  # channels of the UNet hidden state at each point (point 0 = after the middle block)
    source_indices: list[int]  # index into the FFRNet "output" residual list feeding each point
    source_channels: list[int]
    kernel_size: int = 1

    @property
    def points(self) -> int:
        return len(self.target_channels)


class IDInjector(nn.Module):
    """``operations``: layer classes (see ``operations.py``; default ``torch.nn``). The heads run in the dtype of the
    control residuals they read."""

    def __init__(self, layout: InjectorLayout, operations=None):
        super().__init__()
        conv = resolve_operations(operations).Conv2d
        self.layout = layout
        k = layout.kernel_size
        self.phi = nn.ModuleList(
            [conv(s, t, k, padding=k // 2) for s, t in zip(layout.source_channels, layout.target_channels, strict=True)]
        )
        self.mu = nn.ModuleList(
            [conv(s, t, k, padding=k // 2) for s, t in zip(layout.source_channels, layout.target_channels, strict=True)]
        )
        self.zero_init()

    def zero_init(self) -> None:
        for head in [*self.phi, *self.mu]:
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, control: dict) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """[(phi, mu)] per injection point from an FFRNet output ``{"middle": [...], "output": [...]}``.

        Call it before anything scales or sums the residuals (ComfyUI's ``control_merge`` works in place).
        """
        residuals = control["output"]
        params = []
        for phi, mu, src in zip(self.phi, self.mu, self.layout.source_indices, strict=True):
            c_id = residuals[src]
            params.append((phi(c_id), mu(c_id)))
        return params

    @staticmethod
    def apply(h: torch.Tensor, phi: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        """Eq. 17. A mismatch in batch or resolution is a wiring bug and raises."""
        if phi.shape[-2:] != h.shape[-2:] or phi.shape[1] != h.shape[1]:
            raise ValueError(f"ID-Injector params {tuple(phi.shape)} do not fit the hidden state {tuple(h.shape)}")
        return h * (1 + phi.to(h)) + mu.to(h)
