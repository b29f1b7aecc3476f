"""Reading ``.safetensors`` files in two steps: the header (names, shapes, metadata) first, the tensors only after
the header has been checked. A wrong file picked from a dropdown is then refused before gigabytes are read."""

from __future__ import annotations

import json
import os
import struct

import torch

from ..errors import ModelFileError
from .file_checks import Interrupt, check_finite, poll

SAFETENSORS_FIX = "re-download or re-export the file; only .safetensors (or published .bin) weights are supported"
MAX_HEADER_BYTES = 8 * 2**20  # a full SDXL checkpoint's header is about 0.3 MB


def _header_length(path: str) -> int:
    """The 8-byte length that starts the file, checked before the header is parsed (a header bomb claims more)."""
    name = os.path.basename(path)
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        start = f.read(8)
    if len(start) < 8:
        raise ModelFileError(f"{name} is not a readable .safetensors file ({size} bytes: no header)", SAFETENSORS_FIX)
    (length,) = struct.unpack("<Q", start)
    if length > MAX_HEADER_BYTES:
        raise ModelFileError(f"{name} is not a readable .safetensors file: its header claims {length:,} bytes (weight "
                             f"files need at most {MAX_HEADER_BYTES:,})", SAFETENSORS_FIX)
    if 8 + length > size:
        raise ModelFileError(f"{name} is truncated: its header alone claims {length:,} bytes and the file has "
                             f"{size:,} (an interrupted download or copy?)", SAFETENSORS_FIX)
    return length


def declared_size(path: str) -> int | None:
    """The byte count a .safetensors file's header declares (header plus all tensor data), None if unreadable."""
    try:
        length = _header_length(path)
        with open(path, "rb") as f:
            f.seek(8)
            header = json.loads(f.read(length))
        ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    except (ModelFileError, OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None
    return 8 + length + max(ends, default=0)


def read_header(path: str) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """-> ({tensor name: shape}, metadata) without reading any tensor data."""
    from safetensors import SafetensorError, safe_open

    if not os.path.isfile(path):
        raise ModelFileError(f"file not found: {path}", "put the file there, or pick another one")
    name = os.path.basename(path)
    try:
        _header_length(path)
        with safe_open(path, framework="pt") as f:
            shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
            metadata = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        size, declared = os.path.getsize(path), declared_size(path)
        if declared is not None and size < declared:
            raise ModelFileError(f"{name} is truncated: it holds {size:,} of the {declared:,} bytes its header "
                                 "declares (an interrupted download or copy?)", SAFETENSORS_FIX) from err
        raise ModelFileError(f"{name} is not a readable .safetensors file ({err})", SAFETENSORS_FIX) from err
    return shapes, metadata


def read_tensors(path: str, interrupt: Interrupt = None, names=None) -> dict[str, torch.Tensor]:
    """Every tensor of a file whose header was already read with ``read_header`` (or only those in ``names``), one at
    a time (``interrupt`` is polled between them)."""
    from safetensors import SafetensorError, safe_open

    tensors = {}
    try:
        with safe_open(path, framework="pt") as f:
            for name in (f.keys() if names is None else names):
                poll(interrupt)
                tensors[name] = f.get_tensor(name)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ModelFileError(f"{os.path.basename(path)} could not be read ({err})", SAFETENSORS_FIX) from err
    return tensors


def check_shapes(shapes: dict[str, tuple], expected: dict[str, tuple], name: str, kind: str, fix: str) -> None:
    """Every expected tensor present with its shape and nothing else (checked from a header, before reading data);
    errors name the tensor. ``kind`` names what the file should be ("PuLID's weights")."""
    for key, shape in expected.items():
        if key not in shapes:
            raise ModelFileError(f"{name} has no tensor {key!r}; the file is incomplete or not {kind}", fix)
        if tuple(shapes[key]) != tuple(shape):
            raise ModelFileError(f"tensor {key!r} in {name} has shape {list(shapes[key])}, expected {list(shape)}",
                                 fix)
    extra = next((k for k in shapes if k not in expected), None)
    if extra is not None:
        raise ModelFileError(f"{name} has an unexpected tensor {extra!r}; it is not {kind}", fix)


def check_values(tensors: dict[str, torch.Tensor], name: str, fix: str, interrupt: Interrupt = None) -> None:
    """Weights must be floating point and finite: a NaN or infinity would turn every image black."""
    for key, value in tensors.items():
        if not value.is_floating_point():
            raise ModelFileError(f"tensor {key!r} in {name} is {value.dtype}, not floating point", fix)
    check_finite(tensors, name, fix, interrupt)
