"""Reading ``.safetensors`` files in two steps: the header (names, shapes, metadata) first, the tensors only after
the header has been checked. A wrong file picked from a dropdown is then refused before gigabytes are read."""

from __future__ import annotations

import os

import torch

from ..errors import ModelFileError

SAFETENSORS_FIX = "re-download or re-export the file; only .safetensors (or published .bin) weights are supported"


def read_header(path: str) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """-> ({tensor name: shape}, metadata) without reading any tensor data."""
    from safetensors import SafetensorError, safe_open

    if not os.path.isfile(path):
        raise ModelFileError(f"file not found: {path}", "put the file there, or pick another one")
    try:
        with safe_open(path, framework="pt") as f:
            shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
            metadata = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelFileError(f"{os.path.basename(path)} is not a readable .safetensors file ({err})", SAFETENSORS_FIX) from err
    return shapes, metadata


def read_tensors(path: str, names=None) -> dict[str, torch.Tensor]:
    """Every tensor of a file whose header was already read with ``read_header``, or only those in ``names``."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        if names is None:
            return load_file(path)
        with safe_open(path, framework="pt") as f:
            return {name: f.get_tensor(name) for name in names}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ModelFileError(f"{os.path.basename(path)} could not be read ({err})", SAFETENSORS_FIX) from err
