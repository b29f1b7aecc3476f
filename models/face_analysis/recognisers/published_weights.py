"""Reading a judge's published weights file without running anything in it, and checking it before use.

Accepted: ``.safetensors``, or a torch file (``.pt`` / ``.pth`` / ``.ckpt``) read with
``torch.load(weights_only=True)``, which refuses any pickled Python object other than tensors and plain containers.
The file's tensors may be the network's state dict itself (facenet-pytorch's and CurricularFace's releases), that
dict under ``state_dict`` (a PyTorch Lightning checkpoint, as AdaFace's ``.ckpt`` releases are) with the network
under ``model.`` (its loss head, ``head.*``, is dropped), or under ``module.`` (saved from DataParallel). Every
expected name is checked for its shape before any tensor is used (a safetensors file before any data is read), then
its floating-point type and finite values; errors name the tensor, the file and where to get the right one.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping

import torch

from ...common.file_checks import check_finite
from ...common.safetensors_files import read_header, read_tensors
from ...common.torch_pickle import load_weights_only
from ...errors import ModelFileError
from .specs import JudgeSpec

WRAPPER_PREFIXES = ("model.", "module.")  # Lightning's LightningModule attribute, DataParallel


def _fix(spec: JudgeSpec) -> str:
    return f"download {spec.source} and put it in the face_recognition model folder"


def _refused(name: str, found: str | None, spec: JudgeSpec, expected: Mapping) -> ModelFileError:
    if found is None:
        return ModelFileError(f"{name} is not a readable torch weights file (damaged, or not a torch file)", _fix(spec))
    example = next(iter(expected))
    return ModelFileError(
        f"{name} holds Python objects besides its tensors ({found}), such as a training checkpoint's "
        "settings; the pack reads only tensors and plain containers from torch files, so it stopped without running "
        "anything in the file.",
        f"use a file that holds only the network's tensors: a .safetensors or .pt file whose names are the "
        f"{spec.name} network's ('{example}', ...; a 'model.' prefix is fine), or the original file: {spec.source}")


def _load_torch(path: str, spec: JudgeSpec, expected: Mapping, mmap: bool) -> dict:
    data = load_weights_only(path, _fix(spec), mmap=mmap,
                             refused=lambda name, found: _refused(name, found, spec, expected))
    if isinstance(data, Mapping) and isinstance(data.get("state_dict"), Mapping):
        data = data["state_dict"]
    if not isinstance(data, Mapping):
        raise ModelFileError(f"{os.path.basename(path)} holds a {type(data).__name__}, not a dict of tensors",
                             _fix(spec))
    return dict(data)


def network_names(names) -> dict[str, str]:
    """file name -> network name: without a wrapper prefix when the file has one (then only the prefixed names)."""
    names = list(names)
    for prefix in WRAPPER_PREFIXES:
        if any(n.startswith(prefix) for n in names):
            return {n: n[len(prefix):] for n in names if n.startswith(prefix)}
    return {n: n for n in names}


def check_layout(shapes: Mapping[str, tuple], expected: Mapping[str, tuple], name: str, spec: JudgeSpec,
                 ignored: tuple[str, ...] = ()) -> None:
    """Every expected tensor with its shape (``num_batches_tracked`` may be missing), nothing unknown except names
    starting with ``ignored``."""
    what = f"the {spec.name} network"
    for key, shape in expected.items():
        if key not in shapes:
            if key.endswith("num_batches_tracked"):
                continue
            raise ModelFileError(f"{name} has no tensor {key!r}: it is not {what}'s weights (or is incomplete)",
                                 _fix(spec))
        if tuple(shapes[key]) != tuple(shape):
            raise ModelFileError(f"tensor {key!r} in {name} has shape {list(shapes[key])}, {what} needs "
                                 f"{list(shape)}: it is another architecture", _fix(spec))
    extra = next((k for k in shapes if k not in expected and not k.startswith(ignored)), None)
    if extra is not None:
        raise ModelFileError(f"{name} has a tensor {extra!r} that {what} does not have: it is another network's file",
                             _fix(spec))


def read_published_weights(path: str, spec: JudgeSpec, expected: Mapping[str, tuple],
                           ignored: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The network's tensors from ``path`` under the network's own names, checked against ``expected`` shapes."""
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"the {spec.name} weights were not found at {path}", _fix(spec))
    if path.lower().endswith(".safetensors"):
        shapes, _ = read_header(path)
        names = network_names(shapes)
        check_layout({names[k]: shapes[k] for k in names}, expected, name, spec, ignored)
        raw = read_tensors(path)
    else:
        mapped = zipfile.is_zipfile(path)  # shapes are checked before any tensor data is read
        raw = _load_torch(path, spec, expected, mmap=mapped)
        bad = next((k for k, v in raw.items() if not isinstance(v, torch.Tensor)), None)
        if bad is not None:
            raise ModelFileError(f"{name}: entry {bad!r} is a {type(raw[bad]).__name__}, not a tensor", _fix(spec))
        names = network_names(raw)
        check_layout({names[k]: tuple(raw[k].shape) for k in names}, expected, name, spec, ignored)
        if mapped:  # reading the whole file at once is several times faster than paging the mapping in
            raw = _load_torch(path, spec, expected, mmap=False)
    tensors = {names[k]: raw[k] for k in names if names[k] in expected}
    for key, tensor in tensors.items():
        if key.endswith("num_batches_tracked"):
            continue
        if not tensor.is_floating_point():
            raise ModelFileError(f"tensor {key!r} in {name} is {tensor.dtype}, not floating point", _fix(spec))
    check_finite(tensors, name, _fix(spec))
    return tensors


def build_network(network: torch.nn.Module, tensors: Mapping[str, torch.Tensor]) -> torch.nn.Module:
    """``network`` (built on the meta device or not) filled with ``tensors`` in float32, in eval mode."""
    state = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in tensors.items()}
    for key, value in network.state_dict().items():
        if key not in state:  # num_batches_tracked, unused at inference
            state[key] = torch.zeros(value.shape, dtype=value.dtype)
    network.load_state_dict(state, assign=True)
    return network.eval().requires_grad_(False)


def expected_shapes(network: torch.nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in network.state_dict().items()}
