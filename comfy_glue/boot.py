"""The one place that makes a ComfyUI checkout importable in-process: tests, scripts, benchmarks and the trainer.

Imports nothing from ComfyUI at module level, so it can run before ComfyUI is on ``sys.path``.

Why a torchvision shim: PyPI's torchvision wheels are CUDA builds. Beside a CPU-only torch their fake-op
registrations (``torchvision._meta_registrations``) fail at import with "operator torchvision::nms does not exist",
and ComfyUI imports torchvision unconditionally (``comfy/controlnet.py`` imports ``comfy.ldm.cascade``). ComfyUI never
uses those ops, so registering an empty module under that name lets torchvision import. ``scripts/setup_host.sh``
writes the same line into the test venv as a ``.pth`` file so that ComfyUI's own ``main.py`` starts there too;
on a CUDA machine neither is needed and ``boot`` leaves torchvision alone.
"""

from __future__ import annotations

import os
import pathlib
import sys
import types

DEFAULT_HOST = pathlib.Path(os.environ.get("FACESNAP_CACHE",
                                           pathlib.Path.home() / ".cache" / "comfyui-facesnap")) / "comfyui"


class ComfyUINotFound(RuntimeError):
    pass


def find_comfyui(path: str | os.PathLike | None = None) -> pathlib.Path | None:
    """``path``, else ``$COMFYUI_PATH``, else the test host that ``make setup`` builds; None if it is not ComfyUI."""
    root = pathlib.Path(path or os.environ.get("COMFYUI_PATH") or DEFAULT_HOST).expanduser().resolve()
    return root if (root / "comfy" / "model_management.py").exists() else None


def boot(path: str | os.PathLike | None = None, cpu: bool | None = None) -> pathlib.Path:
    """Put ComfyUI on ``sys.path`` and choose its device before ``comfy.model_management`` is imported (it probes
    the device at import time). ``cpu=None`` uses the CPU only when torch sees no CUDA device."""
    root = find_comfyui(path)
    if root is None:
        where = path or os.environ.get("COMFYUI_PATH") or DEFAULT_HOST
        raise ComfyUINotFound(f"ComfyUI not found at {where}: run `make setup`, pass --comfyui or set COMFYUI_PATH")
    import torch

    if cpu is None:
        cpu = not torch.cuda.is_available()
    if not torch.cuda.is_available():
        sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from comfy.cli_args import args

    args.cpu = cpu
    return root
