"""Reading published torch pickles (``.bin``, ``.pt``, ``.pth``, ``.ckpt``) without running anything in them.

``torch.load(weights_only=True)`` rebuilds tensors and plain containers only: a pickle that names any other class or
function (code that would run while loading) is refused before anything in it runs. The refusal names the code
reference and nothing else; torch's own message explains how to load such a file anyway, which the pack never does.
"""

from __future__ import annotations

import os
import pickle
import zipfile

import torch

from ..errors import ModelFileError
from .file_errors import code_reference

REFUSED = ("{name} was refused: it holds Python objects beyond tensors, which could run code when loaded{calls}. "
           "Nothing in it was run.")


def load_weights_only(path: str, fix: str, what: str = "torch weights file", mmap: bool | None = None,
                      refused=None):
    """What the pickle holds (tensors and plain containers), memory-mapped when the file is a zip archive unless
    ``mmap`` says otherwise (then nothing is read until a tensor is used). A pickle that would call code, an unreadable
    or a truncated file is named as such; ``fix`` is the advice for a file that has to be replaced. ``refused(name,
    code reference)`` may word the refusal of a pickle that calls code (e.g. a training checkpoint's settings)."""
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"file not found: {path}", fix)
    try:
        return torch.load(path, map_location="cpu", weights_only=True,
                          mmap=zipfile.is_zipfile(path) if mmap is None else mmap)
    except pickle.UnpicklingError as err:
        found = code_reference(err)
        if refused is not None:
            raise refused(name, found) from None
        raise ModelFileError(REFUSED.format(name=name, calls=f" (it calls {found})" if found else ""), fix) from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as err:
        reason = str(err).split(". ")[0].splitlines()[0] if str(err) else type(err).__name__
        raise ModelFileError(f"{name} is not a readable {what}: it is damaged or truncated (an interrupted download?) "
                             f"({reason})", fix) from None


def read_torch_weights(path: str, fix: str, parts: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The tensors of a torch pickle as one flat dict. A top-level entry named in ``parts`` that holds a dict is
    flattened into ``"{part}.{key}"`` names (IP-Adapter files nest ``image_proj`` / ``ip_adapter`` that way)."""
    name = os.path.basename(path)
    data = load_weights_only(path, fix)
    if not isinstance(data, dict):
        raise ModelFileError(f"{name} holds a {type(data).__name__}, not a dict of tensors", fix)
    flat = {}
    for key, value in data.items():
        if key in parts and isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[str(key)] = value
    bad = next((k for k, v in flat.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise ModelFileError(f"{name}: entry {bad!r} is a {type(flat[bad]).__name__}, not a tensor", fix)
    return flat
