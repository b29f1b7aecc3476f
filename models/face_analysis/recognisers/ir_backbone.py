"""The IR-ResNet backbone of face.evoLVe that AdaFace and CurricularFace both publish (``Backbone(input_size, 100,
'ir')`` = IR-101), with their parameter names, so the released checkpoints load as they are.

Input layer (3x3 conv, BN, PReLU), four stages of 3 / 13 / 30 / 3 residual units (64, 128, 256, 512 channels, each
stage's first unit strides 2), and the output layer BN2d -> dropout -> flatten -> Linear(512*7*7, 512) ->
BatchNorm1d without affine parameters. A unit's shortcut is a 1x1 max pool (subsampling only) when the channels stay,
else a strided 1x1 conv + BN. The two papers' units differ in one layer: AdaFace has a BatchNorm between the first
conv and the PReLU, CurricularFace has not; ``unit`` picks which. Convolutions and the linear layer come from
``operations`` (``models/common/operations.py``: torch.nn by default, ``comfy.ops`` inside ComfyUI).
"""

from __future__ import annotations

import torch
from torch import nn

from ...common.operations import resolve_operations

IR101_STAGES = ((64, 64, 3), (64, 128, 13), (128, 256, 30), (256, 512, 3))  # (in, out, units)
UNITS = ("adaface", "curricularface")
EMBEDDING_SIZE = 512
INPUT_SIZE = 112


class IRUnit(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, unit: str, operations=None):
        super().__init__()
        conv = resolve_operations(operations).Conv2d
        if cin == cout:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(conv(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        middle = [nn.BatchNorm2d(cout)] if unit == "adaface" else []
        self.res_layer = nn.Sequential(nn.BatchNorm2d(cin), conv(cin, cout, 3, 1, 1, bias=False), *middle,
                                       nn.PReLU(cout), conv(cout, cout, 3, stride, 1, bias=False),
                                       nn.BatchNorm2d(cout))

    def forward(self, x):
        return self.res_layer(x) + self.shortcut_layer(x)


class IRBackbone(nn.Module):
    def __init__(self, unit: str, stages=IR101_STAGES, operations=None):
        super().__init__()
        if unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, not {unit!r}")
        ops = resolve_operations(operations)
        self.input_layer = nn.Sequential(ops.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units = []
        for cin, cout, count in stages:
            units += [IRUnit(cin, cout, 2, unit, ops)] + [IRUnit(cout, cout, 1, unit, ops) for _ in range(count - 1)]
        self.body = nn.Sequential(*units)
        last = stages[-1][1]
        self.output_layer = nn.Sequential(nn.BatchNorm2d(last), nn.Dropout(0.4), nn.Flatten(),
                                          ops.Linear(last * 7 * 7, EMBEDDING_SIZE),
                                          nn.BatchNorm1d(EMBEDDING_SIZE, affine=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 112, 112) aligned faces in [-1, 1] -> (B, 512) embeddings, not yet L2-normalised."""
        return self.output_layer(self.body(self.input_layer(x)))
