"""A judge backed by a PyTorch network: crop each face as its authors did, embed in batches, L2-normalise."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from .published_weights import build_network, expected_shapes, read_published_weights
from .specs import JudgeSpec

BATCH = 16


def normalised(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, np.float64)
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def reuse_or_compute(faces: Sequence[tuple[np.ndarray, object]], own: Callable, compute: Callable) -> np.ndarray:
    """(N, D) L2-normalised features: ``own(record)`` where the analyzer already computed this judge's feature
    (not None), else ``compute(image, record)``."""
    out = []
    for image, record in faces:
        feature = own(record)
        out.append(compute(image, record) if feature is None else feature)
    return normalised(np.asarray(out, np.float64).reshape(len(out), -1))


class TorchJudge:
    def __init__(self, spec: JudgeSpec, network: torch.nn.Module, preprocess: Callable, device: str = "cpu"):
        self.spec, self.network, self.preprocess, self.device = spec, network.to(device), preprocess, device

    @torch.no_grad()
    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        """The network's raw (B, 512) output for preprocessed inputs."""
        return self.network(batch.to(self.device)).float().cpu()

    def features(self, faces: Sequence[tuple[np.ndarray, object]]) -> np.ndarray:
        """(N, 512) L2-normalised features of (RGB uint8 image, FaceRecord) pairs."""
        inputs = [self.preprocess(image, record) for image, record in faces]
        out = [self.embed(torch.from_numpy(np.stack(inputs[i:i + BATCH]))) for i in range(0, len(inputs), BATCH)]
        return normalised(torch.cat(out).numpy()) if out else np.zeros((0, 512))


def load_torch_judge(spec: JudgeSpec, make_network: Callable[..., torch.nn.Module], path: str, preprocess: Callable,
                     device: str = "cpu", ignored: tuple[str, ...] = (), operations=None) -> TorchJudge:
    """Build the network (layers from ``operations``, default torch.nn) on the meta device, read and check the
    published file, fill the network."""
    with torch.device("meta"):
        network = make_network(operations=operations)
    tensors = read_published_weights(str(path), spec, expected_shapes(network), ignored)
    return TorchJudge(spec, build_network(network, tensors), preprocess, device)
