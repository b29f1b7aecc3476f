"""A differentiable ArcFace backbone (insightface ``arcface_torch`` IResNet) for the ID loss.

The ONNX ArcFace used for the stored embeddings cannot pass gradients back to the generator, so the ID loss needs a
PyTorch network. Its parameter names follow ``arcface_torch/backbones/iresnet.py``, so a published
``backbone.pth`` converts to safetensors with ``save_file(torch.load(p, weights_only=True), out)``. Both sides of
the loss (reference and generated face) go through this same network, so the embedding space is consistent.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.face_analysis.align import ARCFACE_DST

ARCHS = {"r100": ([3, 13, 30, 3], 64), "r50": ([3, 4, 14, 3], 64), "r18": ([2, 2, 2, 2], 64), "tiny": ([1, 1, 1, 1], 8)}



class IBasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes, eps=1e-5))

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    def __init__(self, layers: list[int], width: int = 64, num_features: int = 512):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, eps=1e-5)
        self.prelu = nn.PReLU(width)
        planes = [width, 2 * width, 4 * width, 8 * width]
        inplanes = width
        for i, (n, p) in enumerate(zip(layers, planes, strict=True), start=1):
            blocks = [IBasicBlock(inplanes, p, 2)] + [IBasicBlock(p, p, 1) for _ in range(n - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            inplanes = p
        self.bn2 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.dropout = nn.Dropout(0.0)
        self.fc = nn.Linear(inplanes * 7 * 7, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)

    def forward(self, x):
        """(B, 3, 112, 112) RGB in [-1, 1] -> (B, num_features), not normalised."""
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.features(self.fc(self.dropout(torch.flatten(self.bn2(x), 1))))


def load_face_model(path: str, arch: str = "r100") -> IResNet:
    from safetensors.torch import load_file

    from ..models.errors import ModelFileError

    layers, width = ARCHS[arch]
    model = IResNet(layers, width)
    if path:
        try:
            model.load_state_dict(load_file(path))
        except (RuntimeError, OSError) as err:
            raise ModelFileError(f"{path} is not an arcface_torch {arch} backbone ({err})",
                                 "convert the backbone.pth of the matching architecture to safetensors") from err
    return model.eval().requires_grad_(False)


def _similarity(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity transforms (Umeyama, no reflection) mapping src (B, K, 2) onto dst (K, 2): (B, 2, 3)."""
    dst = dst.to(src)
    mu_s, mu_d = src.mean(1, keepdim=True), dst.mean(0, keepdim=True)
    s, d = src - mu_s, dst - mu_d
    # complex-number form of a 2-D similarity: d = a * s with a = sum(conj(s) d) / sum(|s|^2)
    sc, dc = torch.complex(s[..., 0], s[..., 1]), torch.complex(d[..., 0], d[..., 1])
    a = (sc.conj() * dc).sum(1) / (sc.abs() ** 2).sum(1).clamp_min(1e-8)
    rot = torch.stack([torch.stack([a.real, -a.imag], -1), torch.stack([a.imag, a.real], -1)], -2)
    t = mu_d[None, 0] - torch.einsum("bij,bj->bi", rot, mu_s[:, 0])
    return torch.cat([rot, t[..., None]], -1)


def align_faces(images: torch.Tensor, kps5: torch.Tensor, size: int = 112) -> torch.Tensor:
    """Differentiable ArcFace alignment: (B, 3, H, W) in [-1, 1] + (B, 5, 2) pixel keypoints -> (B, 3, size, size)."""
    b, _, h, w = images.shape
    m = _similarity(kps5.float(), torch.from_numpy(ARCFACE_DST) * (size / 112.0))  # image px -> aligned px
    full = torch.cat([m, torch.tensor([0.0, 0.0, 1.0]).to(m).expand(b, 1, 3)], 1)
    inv = torch.linalg.inv(full)[:, :2]  # aligned px -> image px
    # affine_grid works in normalised coordinates (align_corners=False): x_px = ((x_n + 1) * W - 1) / 2
    to_norm_in = torch.tensor([[2.0 / w, 0, 1.0 / w - 1], [0, 2.0 / h, 1.0 / h - 1], [0, 0, 1]]).to(m)
    from_norm_out = torch.tensor([[size / 2.0, 0, (size - 1) / 2.0], [0, size / 2.0, (size - 1) / 2.0],
                                  [0, 0, 1]]).to(m)
    inv3 = torch.cat([inv, torch.tensor([0.0, 0.0, 1.0]).to(m).expand(b, 1, 3)], 1)
    theta = (to_norm_in @ inv3 @ from_norm_out)[:, :2]
    grid = F.affine_grid(theta, (b, 3, size, size), align_corners=False)
    return F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border", align_corners=False)
