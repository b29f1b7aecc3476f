"""FaceNet's network: Inception-ResNet-v1 as facenet-pytorch publishes it (``InceptionResnetV1``), parameter names and
all, so ``20180402-114759-vggface2.pt`` (VGGFace2) loads into it as it is. Convolutions and the linear layer come from
``operations`` (``models/common/operations.py``: torch.nn by default, ``comfy.ops`` inside ComfyUI); batch norms
are torch.nn's.

Stem, 5 x Block35 (scale 0.17), Mixed_6a, 10 x Block17 (0.10), Mixed_7a, 5 x Block8 (0.20), a last Block8 without
ReLU, average pooling, a 1792 -> 512 linear layer without bias and a BatchNorm (eps 1e-3, as TensorFlow's). The file's
``logits.*`` (the VGGFace2 classifier) are not part of the embedding and are left out. Every convolution is
conv (no bias) + BatchNorm (eps 1e-3) + ReLU, as in the TensorFlow original it was converted from.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from ...common.operations import resolve_operations

BN_EPS = 1e-3
EMBEDDING_SIZE = 512
INPUT_SIZE = 160


class BasicConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, kernel, stride: int = 1, padding=0, operations=None):
        super().__init__()
        self.conv = resolve_operations(operations).Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _branch(convs: tuple, operations) -> nn.Module:
    """One conv spec -> a BasicConv2d; several -> a Sequential of them (the published names differ: ``branch0.conv``
    vs ``branch1.0.conv``)."""
    layers = [BasicConv2d(*spec, operations=operations) for spec in convs]
    return layers[0] if len(layers) == 1 else nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """Block35 / Block17 / Block8: parallel branches, concatenated, a 1x1 conv back to ``channels``, scaled and
    added to the input."""

    def __init__(self, channels: int, branches: list[tuple], scale: float, relu: bool = True, operations=None):
        super().__init__()
        for i, convs in enumerate(branches):
            setattr(self, f"branch{i}", _branch(convs, operations))
        self.num_branches = len(branches)
        self.conv2d = resolve_operations(operations).Conv2d(sum(convs[-1][1] for convs in branches), channels, 1)
        self.scale, self.relu = scale, relu

    def forward(self, x):
        out = torch.cat([getattr(self, f"branch{i}")(x) for i in range(self.num_branches)], 1)
        out = self.conv2d(out) * self.scale + x
        return F.relu(out) if self.relu else out


class ReductionBlock(nn.Module):
    """Mixed_6a / Mixed_7a: strided conv branches plus a 3x3 max pool, concatenated."""

    def __init__(self, branches: list[tuple], operations=None):
        super().__init__()
        for i, convs in enumerate(branches):
            setattr(self, f"branch{i}", _branch(convs, operations))
        self.num_branches = len(branches)
        self.pool = nn.MaxPool2d(3, stride=2)

    def forward(self, x):
        outs = [getattr(self, f"branch{i}")(x) for i in range(self.num_branches)]
        return torch.cat([*outs, self.pool(x)], 1)


def block35(operations=None) -> ResidualBlock:
    return ResidualBlock(256, [((256, 32, 1),), ((256, 32, 1), (32, 32, 3, 1, 1)),
                               ((256, 32, 1), (32, 32, 3, 1, 1), (32, 32, 3, 1, 1))], 0.17, operations=operations)


def block17(operations=None) -> ResidualBlock:
    return ResidualBlock(896, [((896, 128, 1),), ((896, 128, 1), (128, 128, (1, 7), 1, (0, 3)),
                                                  (128, 128, (7, 1), 1, (3, 0)))], 0.10, operations=operations)


def block8(scale: float = 0.20, relu: bool = True, operations=None) -> ResidualBlock:
    return ResidualBlock(1792, [((1792, 192, 1),), ((1792, 192, 1), (192, 192, (1, 3), 1, (0, 1)),
                                                    (192, 192, (3, 1), 1, (1, 0)))], scale, relu, operations)


class InceptionResnetV1(nn.Module):
    def __init__(self, operations=None):
        super().__init__()
        conv = functools.partial(BasicConv2d, operations=operations)
        self.conv2d_1a = conv(3, 32, 3, 2)
        self.conv2d_2a = conv(32, 32, 3)
        self.conv2d_2b = conv(32, 64, 3, 1, 1)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = conv(64, 80, 1)
        self.conv2d_4a = conv(80, 192, 3)
        self.conv2d_4b = conv(192, 256, 3, 2)
        self.repeat_1 = nn.Sequential(*[block35(operations) for _ in range(5)])
        self.mixed_6a = ReductionBlock([((256, 384, 3, 2),), ((256, 192, 1), (192, 192, 3, 1, 1), (192, 256, 3, 2))],
                                       operations)
        self.repeat_2 = nn.Sequential(*[block17(operations) for _ in range(10)])
        self.mixed_7a = ReductionBlock([((896, 256, 1), (256, 384, 3, 2)), ((896, 256, 1), (256, 256, 3, 2)),
                                        ((896, 256, 1), (256, 256, 3, 1, 1), (256, 256, 3, 2))], operations)
        self.repeat_3 = nn.Sequential(*[block8(operations=operations) for _ in range(5)])
        self.block8 = block8(scale=1.0, relu=False, operations=operations)
        self.last_linear = resolve_operations(operations).Linear(1792, EMBEDDING_SIZE, bias=False)
        self.last_bn = nn.BatchNorm1d(EMBEDDING_SIZE, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 160, 160) standardised RGB -> (B, 512) embeddings, not yet L2-normalised."""
        x = self.maxpool_3a(self.conv2d_2b(self.conv2d_2a(self.conv2d_1a(x))))
        x = self.conv2d_4b(self.conv2d_4a(self.conv2d_3b(x)))
        x = self.repeat_3(self.mixed_7a(self.repeat_2(self.mixed_6a(self.repeat_1(x)))))
        x = F.adaptive_avg_pool2d(self.block8(x), 1).flatten(1)
        return self.last_bn(self.last_linear(x))
