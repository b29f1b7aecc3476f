"""Reading published ``.bin`` / ``.pt`` weight files, which are torch pickles.

``torch.load(weights_only=True)`` rebuilds tensors and plain containers only: a pickle that names any other class or
function (code that would run while loading) is refused before anything in it runs. The refusal names the code
reference and nothing else; torch's own message explains how to load such a file anyway, which the pack never does.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile

import torch

from ..errors import ModelFileError


def read_torch_weights(path: str, fix: str, parts: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The tensors of a torch pickle as one flat dict. A top-level entry named in ``parts`` that holds a dict is
    flattened into ``"{part}.{key}"`` names (IP-Adapter files nest ``image_proj`` / ``ip_adapter`` that way).
    ``fix`` tells the user where the right file comes from."""
    name = os.path.basename(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f" (it calls {found.group(1)})" if found else ""
        raise ModelFileError(
            f"{name} was refused: it holds Python objects beyond tensors, which could run code when loaded{what}. "
            "Nothing in it was run.", f"delete it; {fix}") from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as err:
        raise ModelFileError(f"{name} is not a readable torch weights file, or it is damaged or incomplete (an "
                             f"interrupted download?) ({str(err).splitlines()[0]})", fix) from None
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
