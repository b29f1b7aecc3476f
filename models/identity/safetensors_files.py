"""Reading ``.safetensors`` files in two steps: the header (names, shapes, metadata) first, the tensors only after
the header has been checked. A wrong file picked from a dropdown is then refused before gigabytes are read."""

from __future__ import annotations

import os
import struct

import torch

from ..errors import ModelFileError
from ..file_checks import Interrupt, poll

SAFETENSORS_FIX = "re-download or re-export the file; only .safetensors (or published .bin) weights are supported"
MAX_HEADER_BYTES = 8 * 2**20  # a full SDXL checkpoint's header is about 0.3 MB


def _check_header_size(path: str) -> None:
    """The 8-byte length that starts the file, checked before the header is parsed (a header bomb claims more)."""
    name = os.path.basename(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        start = f.read(8)
    if len(start) < 8:
        raise ModelFileError(f"{name} is not a readable .safetensors file ({size} bytes: no header)", SAFETENSORS_FIX)
    (length,) = struct.unpack("<Q", start)
    if length > MAX_HEADER_BYTES or 8 + length > size:
        raise ModelFileError(f"{name} is not a readable .safetensors file: its header claims {length:,} bytes (the "
                             f"file has {size:,}; weight files need at most {MAX_HEADER_BYTES:,})", SAFETENSORS_FIX)


def read_header(path: str) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """-> ({tensor name: shape}, metadata) without reading any tensor data."""
    from safetensors import SafetensorError, safe_open

    if not os.path.isfile(path):
        raise ModelFileError(f"file not found: {path}", "put the file there, or pick another one")
    try:
        _check_header_size(path)
        with safe_open(path, framework="pt") as f:
            shapes = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
            metadata = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelFileError(f"{os.path.basename(path)} is not a readable .safetensors file ({err})", SAFETENSORS_FIX) from err
    return shapes, metadata


def read_tensors(path: str, interrupt: Interrupt = None) -> dict[str, torch.Tensor]:
    """Every tensor of a file whose header was already read with ``read_header``, one at a time (``interrupt`` is
    polled between them)."""
    from safetensors import SafetensorError, safe_open

    tensors = {}
    try:
        with safe_open(path, framework="pt") as f:
            for name in f.keys():
                poll(interrupt)
                tensors[name] = f.get_tensor(name)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ModelFileError(f"{os.path.basename(path)} could not be read ({err})", SAFETENSORS_FIX) from err
    return tensors
