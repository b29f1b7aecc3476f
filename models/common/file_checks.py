"""Checks shared by every loader of the pack, applied to what a file says before and after its data is read:
config text parsed within a size bound, the parameters a header declares, and values that must be finite.

Nothing here allocates more than a bounded slice of what it checks. ``interrupt`` arguments are callables the
caller passes to let a user stop a long load (ComfyUI's ``throw_exception_if_processing_interrupted``); models/
never imports ComfyUI itself.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from typing import Optional

import numpy as np
import torch

from ..errors import ModelFileError

MAX_CONFIG_BYTES = 256 * 1024  # published configs (diffusers config.json, metadata JSON) are a few kB
PARAMETER_SLACK = 1 << 20  # parameters a config may describe beyond twice the file's before it is refused
FINITE_CHUNK = 1 << 22  # elements checked at a time: a bounded temporary whatever the tensor's size

Interrupt = Optional[Callable[[], None]]


def poll(interrupt: Interrupt) -> None:
    if interrupt is not None:
        interrupt()


def parse_config(text: str | bytes, what: str, file_name: str, fix: str) -> dict:
    """A JSON object read from a file (``what`` names it, e.g. "its resampler_config metadata"), or a
    ModelFileError: too long, not JSON, nested too deep, or not an object."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ModelFileError(f"{file_name}: {what} is {len(text):,} bytes long; published configs are a few kB "
                             f"(at most {MAX_CONFIG_BYTES:,} bytes are read)", fix)
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = "it is nested too deeply" if isinstance(err, RecursionError) else str(err)
        raise ModelFileError(f"{file_name}: {what} is not valid JSON ({reason})", fix) from None
    if not isinstance(data, dict):
        raise ModelFileError(f"{file_name}: {what} is a JSON {type(data).__name__}, not an object of settings", fix)
    return data


def read_config_file(path: str, fix: str) -> dict:
    """A ``config.json`` beside a weights file, its size checked before it is read; errors name it with its folder."""
    name = os.path.join(os.path.basename(os.path.dirname(path)), os.path.basename(path))
    try:
        size = os.path.getsize(path)
        if size > MAX_CONFIG_BYTES:
            raise ModelFileError(f"{name} is {size:,} bytes long; published configs are a few kB (at most "
                                 f"{MAX_CONFIG_BYTES:,} bytes are read)", fix)
        with open(path, "rb") as f:
            text = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise ModelFileError(f"{name} could not be read ({err.strerror or err})", fix) from err
    return parse_config(text, "its content", name, fix)


def declared_parameters(shapes: Mapping[str, tuple], prefix: str = "") -> int:
    """The number of values the tensors named ``prefix...`` hold, from their shapes alone."""
    return sum(math.prod(shape) for name, shape in shapes.items() if name.startswith(prefix))


def check_parameter_budget(implied: int, held: int, described: str, file_name: str, fix: str) -> None:
    """Refuse a config that describes far more parameters than the file holds (more than twice as many, plus
    ``PARAMETER_SLACK``), before anything is built from it. Smaller differences pass on to the tensor-by-tensor check,
    whose message names the tensor and the base model."""
    if implied > 2 * held + PARAMETER_SLACK:
        raise ModelFileError(
            f"{file_name}: {described} describes {implied:,} parameters ({implied * 4 / 2**30:,.1f} GB in fp32), but "
            f"the file holds only {held:,}: the config does not match the file's tensors", fix)


def _chunks(value):
    flat = value.reshape(-1)
    return (flat[i:i + FINITE_CHUNK] for i in range(0, flat.shape[0], FINITE_CHUNK))


def _finite_array_chunk(chunk) -> bool:
    """A NaN or an infinity makes the sum NaN or infinite, so a finite sum (one fast pass) clears the chunk; only a
    sum that overflowed is checked element by element."""
    return bool(np.isfinite(chunk.sum())) or bool(np.isfinite(chunk).all())


def _finite_tensor_chunk(chunk: torch.Tensor) -> bool:
    """Minimum and maximum carry any NaN or infinity; one pass, fast for half precision on the CPU too."""
    return bool(torch.isfinite(torch.stack(torch.aminmax(chunk))).all())


def _is_finite(value) -> bool:
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point() or value.numel() == 0:
            return True
        full = value.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64)
        # fp8 kinds have no aminmax of their own: each chunk is widened to fp16 first
        return all(_finite_tensor_chunk(chunk if full else chunk.to(torch.float16)) for chunk in _chunks(value))
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.floating) or array.size == 0:
        return True
    with np.errstate(all="ignore"):  # an overflowing sum is expected, and checked element by element
        return all(_finite_array_chunk(chunk) for chunk in _chunks(array))


def first_nonfinite(values: Mapping[str, object], interrupt: Interrupt = None) -> str | None:
    """The name of the first tensor or float array holding a NaN or an infinity, else None."""
    for name, value in values.items():
        poll(interrupt)
        if not _is_finite(value):
            return name
    return None


def check_finite(values: Mapping[str, object], file_name: str, fix: str, interrupt: Interrupt = None,
                 what: str = "tensor") -> None:
    """Refuse weights with NaN or infinite values, naming the first such tensor: they would load and then turn every
    result into NaN (a black or noise image) without a word."""
    bad = first_nonfinite(values, interrupt)
    if bad is not None:
        raise ModelFileError(f"{what} {bad!r} in {file_name} holds NaN or infinite values (a damaged file, or "
                             "weights from a diverged training)", fix)
