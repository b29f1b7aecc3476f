"""Reading published torch pickles (``.pt``, ``.pth``, ``.bin``) without running anything in them."""

from __future__ import annotations

import os
import pickle
import re
import zipfile

import torch

from .errors import ModelFileError


def load_weights_only(path: str, fix: str, what: str = "torch weights file"):
    """``torch.load(weights_only=True)``, memory-mapped when the file is a zip archive (nothing is read until a
    tensor is used). A pickle that would call code is refused naming what it calls; an unreadable or truncated file
    is named as such. ``fix`` is the advice for a file that has to be replaced."""
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"file not found: {path}", fix)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as err:
        # torch's own message explains how to load the file anyway; only the offending name is passed on
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        calls = f" (it calls {found.group(1)})" if found else ""
        raise ModelFileError(f"{name} was refused: it holds Python objects beyond tensors, which could run code when "
                             f"loaded{calls}. Nothing in it was run.", fix) from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as err:
        raise ModelFileError(f"{name} is not a readable {what}, or it is truncated ({err})", fix) from err


def all_finite(tensor: torch.Tensor) -> bool:
    """No NaN or infinity in a floating-point tensor; fast for half precision on the CPU too (min and max carry
    both)."""
    if tensor.numel() == 0:
        return True
    return bool(torch.isfinite(torch.stack(torch.aminmax(tensor.reshape(-1)))).all())
