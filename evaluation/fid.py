"""FID of generated images against the reference photos, through torchmetrics, with local Inception weights only.

The extractor is torchmetrics' ``NoTrainInceptionV3`` (torch-fidelity's port of the TensorFlow FID Inception, the
network clean-fid and the papers' FID use). Its weights come from a local file,
``weights-inception-2015-12-05-6726825d.pth`` (torch-fidelity's release) or a safetensors copy, read with
``torch.load(weights_only=True)``. torch-fidelity's own loader would unpickle the file without restriction or
download it, so the architecture is built with that loader switched off and the weights loaded afterwards.

With few images FID is dominated by its small-sample bias (the papers use 200 identities); compare runs of the same
size only.
"""

from __future__ import annotations

import contextlib
import pathlib
import pickle
from collections.abc import Sequence

import numpy as np
import torch

from ..models.errors import MissingDependencyError, ModelFileError

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
FEATURE_LAYERS = (64, 192, 768, 2048)  # 2048 is the standard FID; smaller layers are for quick checks only
INSTALL_FIX = "pip install torchmetrics torch-fidelity   (the pack's `eval` extra; the nodes do not need them)"
_ARCHITECTURE_ONLY = object()


def _inception_class():
    try:
        import torch_fidelity.feature_extractor_inceptionv3 as fidelity_inception
        from torchmetrics.image.fid import NoTrainInceptionV3
    except ImportError as err:
        raise MissingDependencyError(f"FID needs torchmetrics and torch-fidelity ({err})", INSTALL_FIX) from err

    class LocalInceptionV3(NoTrainInceptionV3):
        def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
            if state_dict is _ARCHITECTURE_ONLY:  # the constructor's own load: weights come later
                return None
            return super().load_state_dict(state_dict, strict, assign)

    return LocalInceptionV3, fidelity_inception


@contextlib.contextmanager
def _no_download(fidelity_inception):
    original = fidelity_inception.load_state_dict_from_url
    fidelity_inception.load_state_dict_from_url = lambda *args, **kwargs: _ARCHITECTURE_ONLY
    try:
        yield
    finally:
        fidelity_inception.load_state_dict_from_url = original


def inception_architecture(features: int = 2048) -> torch.nn.Module:
    """The FID Inception with PyTorch's default random init (weights are loaded by ``load_inception``)."""
    if features not in FEATURE_LAYERS:
        raise ValueError(f"FID features must be one of {FEATURE_LAYERS}, got {features}")
    cls, fidelity_inception = _inception_class()
    with _no_download(fidelity_inception):
        return cls(name="inception-v3-compat", features_list=[str(features)])


def _read_state_dict(path: pathlib.Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def load_inception(path: str | pathlib.Path | None, features: int = 2048) -> torch.nn.Module:
    """The FID Inception with the weights in ``path``; a clear error naming the file when it is missing or wrong."""
    fix = (f"download {INCEPTION_FILE} once from {INCEPTION_URL} and pass --fid-weights PATH (nothing is downloaded "
           "at run time), or leave FID out with --no-fid")
    if path is None or not pathlib.Path(path).expanduser().is_file():
        raise ModelFileError(f"FID needs the Inception weights file {INCEPTION_FILE} "
                             f"(not found: {path or 'none given'})", fix)
    path = pathlib.Path(path).expanduser()
    model = inception_architecture(features)
    try:
        model.load_state_dict(_read_state_dict(path))
    except (RuntimeError, OSError, ValueError, KeyError, pickle.UnpicklingError) as err:
        # weights_only refuses anything but tensors and plain containers with an UnpicklingError
        raise ModelFileError(f"{path} is not the FID Inception's plain weights ({str(err)[:300]})", fix) from err
    return model.eval()


class FidScore:
    """Accumulates real (reference) and generated images, then computes torchmetrics' FID."""

    def __init__(self, extractor: torch.nn.Module):
        try:
            from torchmetrics.image.fid import FrechetInceptionDistance
        except ImportError as err:
            raise MissingDependencyError(f"FID needs torchmetrics ({err})", INSTALL_FIX) from err
        self.device = next(iter(extractor.parameters()), torch.empty(0)).device
        self.metric = FrechetInceptionDistance(feature=extractor, reset_real_features=False).to(self.device)

    def add(self, images: Sequence[np.ndarray] | torch.Tensor, real: bool) -> None:
        """RGB uint8 (H, W, 3) images of any sizes (the Inception resizes them), or an already batched tensor in
        the extractor's input format."""
        batches = [images] if isinstance(images, torch.Tensor) else [
            torch.from_numpy(np.ascontiguousarray(image, np.uint8)).permute(2, 0, 1)[None] for image in images]
        with torch.no_grad():
            for batch in batches:
                self.metric.update(batch.to(self.device), real=real)

    def compute(self) -> float:
        return float(self.metric.compute())

    def reset_generated(self) -> None:
        self.metric.reset()  # keeps the real features (reset_real_features=False)
