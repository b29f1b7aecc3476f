"""Reading ``.safetensors`` files in two steps: the header (names, shapes, metadata) first, the tensors only after
the header has been checked. A wrong file picked from a dropdown is then refused before gigabytes are read."""

from __future__ import annotations

import json
import os
import struct

import torch

from ..errors import ModelFileError

SAFETENSORS_FIX = "re-download or re-export the file; only .safetensors (or published .bin) weights are supported"
MAX_HEADER_BYTES = 100_000_000  # the safetensors format's own limit


def declared_size(path: str) -> int | None:
    """The byte count a .safetensors file's header declares (header plus all tensor data), None if unreadable."""
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if not 0 < length <= MAX_HEADER_BYTES:
                return None
            text = f.read(length)
            if len(text) < length:
                return 8 + length
            header = json.loads(text)
        ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    except (OSError, struct.error, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None
    return 8 + length + max(ends, default=0)


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
        name, size, declared = os.path.basename(path), os.path.getsize(path), declared_size(path)
        if declared is not None and size < declared:
            raise ModelFileError(f"{name} is truncated: it holds {size:,} of the {declared:,} bytes its header "
                                 "declares (an interrupted download or copy?)", SAFETENSORS_FIX) from err
        raise ModelFileError(f"{name} is not a readable .safetensors file ({err})", SAFETENSORS_FIX) from err
    return shapes, metadata


def read_tensors(path: str) -> dict[str, torch.Tensor]:
    """Every tensor of a file whose header was already read with ``read_header``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ModelFileError(f"{os.path.basename(path)} could not be read ({err})", SAFETENSORS_FIX) from err


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


def check_values(tensors: dict[str, torch.Tensor], name: str, fix: str) -> None:
    """Weights must be floating point and finite: a NaN or infinity would turn every image black."""
    for key, value in tensors.items():
        if not value.is_floating_point():
            raise ModelFileError(f"tensor {key!r} in {name} is {value.dtype}, not floating point", fix)
        if not bool(torch.isfinite(value).all()):
            raise ModelFileError(f"tensor {key!r} in {name} holds NaN or infinite values (a damaged file)", fix)
