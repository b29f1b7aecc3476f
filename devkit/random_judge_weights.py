"""Seeded random weights, inputs and test images for the face-recognition judges, and their published file layouts.

Weights are drawn the same way from any state dict with the same names and shapes: ``scripts/reference_judges.py``
draws them for the official networks and the tests draw them again for the pack's, so that only a seed needs to be
stored beside the reference outputs.

Names are visited in sorted order with one generator. Convolution and linear weights are N(0, 1/fan_in) (activations
stay finite through a hundred layers); 1-D weights (BatchNorm scale, PReLU slope) are 1 + 0.1 N, biases and running
means 0.1 N, running variances U(0.5, 1.5); ``num_batches_tracked`` is 0 and draws nothing.
"""

from __future__ import annotations

import collections
import hashlib
import pathlib
from collections.abc import Mapping

import numpy as np
import torch

IMAGE_SEED = 2103
# (x1, y1, x2, y2, margin in output pixels): a face inside the image, and one reaching past its corner
FACENET_BOXES = ((61.7, 40.2, 171.9, 180.6, 0), (-12.5, 150.3, 95.1, 262.8, 32))
FACENET_IMAGE = (240, 200)  # height, width
KEYPOINT_SETS = 2
CROP_STRIDE = 8  # reference crops keep every 8th pixel of the 160 px crop (as uint8: 1.2 KB each)


def _draw(name: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    if name.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    if name.endswith("running_var"):
        return 0.5 + torch.rand(shape, generator=generator)
    if name.endswith(("running_mean", "bias")):
        return 0.1 * torch.randn(shape, generator=generator)
    if len(shape) == 1:
        return 1.0 + 0.1 * torch.randn(shape, generator=generator)
    fan_in = 1
    for size in shape[1:]:
        fan_in *= size
    return torch.randn(shape, generator=generator) * fan_in ** -0.5


def random_state_dict(shapes: Mapping[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {name: _draw(name, tuple(shapes[name]), generator) for name in sorted(shapes)}


def random_faces(count: int, size: int, seed: int) -> torch.Tensor:
    """(count, 3, size, size) network inputs in [-1, 1]."""
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2.0 - 1.0


def layout_digest(shapes: Mapping[str, tuple[int, ...]]) -> str:
    """sha256 of the sorted ``name:shape`` lines: equal digests mean equal parameter names and shapes."""
    lines = "\n".join(f"{name}:{'x'.join(map(str, shapes[name]))}" for name in sorted(shapes))
    return hashlib.sha256(lines.encode()).hexdigest()


def seeded_image(height: int, width: int) -> np.ndarray:
    """A smooth-ish RGB uint8 test image (random noise on gradients), so resampling differences would show."""
    rng = np.random.default_rng(IMAGE_SEED)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255.0 / width, y * 255.0 / height, (x + y) * 127.0 / (width + height)], -1)
    return np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8)


def seeded_keypoints() -> np.ndarray:
    """(KEYPOINT_SETS, 5, 2) face-like keypoints: a template scaled, rotated and shifted at random."""
    rng = np.random.default_rng(IMAGE_SEED + 1)
    template = np.array([[-1.0, -1.0], [1.0, -1.0], [0.0, 0.2], [-0.8, 1.2], [0.8, 1.2]])
    sets = []
    for _ in range(KEYPOINT_SETS):
        angle, scale = rng.uniform(-0.4, 0.4), rng.uniform(20, 60)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        sets.append(template @ rotation.T * scale + rng.uniform(80, 160, 2) + rng.normal(0, 2, (5, 2)))
    return np.asarray(sets, np.float32)


def judge_network(name: str) -> torch.nn.Module:
    """The pack's network of a PyTorch judge, on the meta device (for its names and shapes)."""
    from ..models.face_analysis.recognisers.inception_resnet_v1 import InceptionResnetV1
    from ..models.face_analysis.recognisers.ir_backbone import IRBackbone

    with torch.device("meta"):
        return InceptionResnetV1() if name == "FaceNet" else IRBackbone(name.lower())


def judge_layout(name: str) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in judge_network(name).state_dict().items()}


FACENET_CLASSES = 8631  # VGGFace2 identities: the published file's logits layer
LIGHTNING_HEAD_CLASSES = 16  # stand-in width of AdaFace's loss head (the real one has one column per identity)


def write_published_judge(name: str, folder, seed: int = 0, state: dict | None = None) -> pathlib.Path:
    """A full-size file laid out as the authors publish it, holding seeded random weights (or ``state``):
    facenet-pytorch's ``20180402-114759-vggface2.pt`` (state dict with the VGGFace2 ``logits``), AdaFace's
    ``adaface_ir101_webface12m.ckpt`` (a PyTorch Lightning checkpoint: ``state_dict`` with ``model.`` and ``head.``
    entries beside plain training records) or CurricularFace's ``CurricularFace_Backbone.pth`` (a state dict)."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = dict(state if state is not None else random_state_dict(judge_layout(name), seed))
    generator = torch.Generator().manual_seed(seed + 1)
    if name == "FaceNet":
        state["logits.weight"] = torch.randn(FACENET_CLASSES, 512, generator=generator) * 0.05
        state["logits.bias"] = torch.zeros(FACENET_CLASSES)
        path, data = folder / "20180402-114759-vggface2.pt", state
    elif name == "AdaFace":
        wrapped = {f"model.{k}": v for k, v in state.items()}
        wrapped["head.kernel"] = torch.randn(512, LIGHTNING_HEAD_CLASSES, generator=generator)
        data = {"epoch": 26, "global_step": 1000, "pytorch-lightning_version": "1.8.6", "state_dict": wrapped,
                "hyper_parameters": {"arch": "ir_101", "head": "adaface", "m": 0.4, "h": 0.333},
                "lr_schedulers": [{"milestones": collections.Counter({12: 1, 20: 1, 24: 1}), "gamma": 0.1}]}
        path = folder / "adaface_ir101_webface12m.ckpt"
    else:
        path, data = folder / "CurricularFace_Backbone.pth", state
    torch.save(data, path)
    return path
