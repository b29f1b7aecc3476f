"""Make the pinned ComfyUI importable from a script, on CPU, the same way tests/conftest.py does for the tests.

Scripts call ``boot()`` first, then use ``tests/comfy_host.py`` (also put on ``sys.path``) to load the pack through
ComfyUI's own custom-node loader.
"""

from __future__ import annotations

import os
import pathlib
import sys
import types

PACK_ROOT = pathlib.Path(__file__).resolve().parents[1]
TESTS = PACK_ROOT / "tests"
DEFAULT_HOST = pathlib.Path.home() / ".cache" / "comfyui-facesnap" / "comfyui"


def boot() -> pathlib.Path:
    comfy = pathlib.Path(os.environ.get("COMFYUI_PATH", DEFAULT_HOST)).resolve()
    if not (comfy / "comfy" / "model_management.py").exists():
        sys.exit(f"ComfyUI not found at {comfy}: run `make setup` or set COMFYUI_PATH")
    # PyPI torchvision is a CUDA build whose fake-op registrations fail beside CPU torch; ComfyUI never uses them.
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    sys.path.insert(0, str(comfy))
    from comfy.cli_args import args

    args.cpu = True  # before anything imports comfy.model_management
    sys.path.append(str(TESTS))
    sys.path.append(str(PACK_ROOT))
    import pack_import

    pack_import.load_pack()
    sys.path.remove(str(PACK_ROOT))  # its nodes/ package would shadow ComfyUI's nodes.py
    return comfy
