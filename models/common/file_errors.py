"""Errors for model files that are not what they should be, worded without the libraries' own advice.

numpy and PyTorch explain a refused file by suggesting to load it unsafely (``allow_pickle=True``,
``weights_only=False``, ``add_safe_globals``). The pack never does that, so its messages keep only the facts: which
code reference a file holds, or that it is damaged, with what the file should be and where to get it.
"""

from __future__ import annotations

import re

from ..errors import ModelFileError

_ADVICE = ("weights_only", "allow_pickle", "unsafe", "trust", "safe_globals", "pickle.load")


def code_reference(err: BaseException) -> str | None:
    """The class or function a restricted unpickler refused (the pack's or ``torch.load(weights_only=True)``'s)."""
    found = re.search(r"GLOBAL ([\w.]+)|the global ([\w.]+)", str(err))
    return (found.group(1) or found.group(2)) if found else None


def safe_reason(err: BaseException) -> str:
    """A library error as a short reason: its text, or only its type when the text advises unsafe loading."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if not text or any(word in str(err).lower() for word in _ADVICE):
        return type(err).__name__
    return f"{type(err).__name__}: {text}"


def refused_code_error(path, err: BaseException, kind: str, hint: str) -> ModelFileError:
    """The error for a file that holds program code where ``kind`` (what the file should be) holds only data."""
    name = code_reference(err)
    holds = f"a reference to {name}, which is program code, not data" if name else "objects that are not plain data"
    return ModelFileError(f"{path} was not loaded: it should be {kind}, but it holds {holds}. The pack reads model "
                          "files without running any code in them", hint)
