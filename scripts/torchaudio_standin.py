"""Write a stand-in ``torchaudio`` package into a test venv's site-packages (``scripts/setup_second_host.sh``).

Newer ComfyUI imports torchaudio at module level, and the registry has no torchaudio that loads beside CPU torch
2.13. The stand-in imports (also ``import torchaudio.functional as AF`` and ``from torchaudio.transforms import X``)
and raises as soon as anything in it is called, so audio nodes fail with a clear message and nothing else changes.
Test hosts only: the pack's runtime code never imports torchaudio.
"""

from __future__ import annotations

import pathlib
import sys

STANDIN = '''\
"""Stand-in torchaudio for a CPU test host (written by ComfyUI-FaceSnap's scripts/torchaudio_standin.py)."""
import importlib.abc
import importlib.machinery
import sys
import types

__version__ = "0.0.0+standin"
MESSAGE = "torchaudio is a stand-in on this test host (no build loads beside its CPU torch); audio is unavailable"


class _Unavailable:
    def __init__(self, name):
        self._name = name

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self._name}: {MESSAGE}")

    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Unavailable(f"{self._name}.{attr}")

    def __mro_entries__(self, bases):
        return (_UnavailableBase,)


class _UnavailableBase:
    def __init__(self, *args, **kwargs):
        raise RuntimeError(MESSAGE)


class _StandinModule(types.ModuleType):
    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Unavailable(f"{self.__name__}.{attr}")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith(__name__ + "."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StandinModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


sys.meta_path.append(_Finder())
sys.modules[__name__].__class__ = _StandinModule
'''


def write_standin(site_packages: pathlib.Path) -> pathlib.Path:
    package = site_packages / "torchaudio"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(STANDIN)
    return package


if __name__ == "__main__":
    print(f"torchaudio stand-in written to {write_standin(pathlib.Path(sys.argv[1]))}")
