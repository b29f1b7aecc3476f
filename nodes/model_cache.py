"""One caching policy for every loader node: reuse what ComfyUI still holds, never keep anything alive ourselves.

ComfyUI already keeps each node's outputs in its execution cache (and frees them on "Unload models" / "Free memory"
or when the graph changes). A loader therefore only needs to find an object that is still alive somewhere in
ComfyUI: the cache holds *weak* references, keyed by the settings and by every file's real path, size and
modification time, so an edited or replaced file is loaded again. Two loaders in one graph keep both objects;
nothing of the pack's outlives ComfyUI's own references to it.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Hashable, Iterable
from typing import TypeVar

T = TypeVar("T")


def file_identity(path: str) -> tuple:
    """(real path, size, mtime in ns): changes whenever the file is replaced or edited. A missing file gives
    (real path, None, None), so the loader itself reports it."""
    real = os.path.realpath(path)
    try:
        stat = os.stat(real)
    except OSError:
        return real, None, None
    return real, stat.st_size, stat.st_mtime_ns


class LoadedModels:
    """A weak-valued cache of loaded models. Values must support weak references (plain class instances do)."""

    def __init__(self, name: str):
        self.name = name
        self._entries: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self._lock = threading.Lock()

    def get(self, settings: Hashable, files: Iterable[str], load: Callable[[], T]) -> T:
        key = (settings, tuple(file_identity(f) for f in files))
        with self._lock:
            found = self._entries.get(key)
        if found is not None:
            return found
        value = load()
        with self._lock:
            self._entries[key] = value
        return value

    def __len__(self) -> int:
        return len(self._entries)
