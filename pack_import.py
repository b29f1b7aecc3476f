"""Import this checkout as the package ``comfyui_facesnap`` without ComfyUI's loader.

Used by the tests, the trainer, the scripts and the benchmarks. The checkout's own directory name (often
``ComfyUI-FaceSnap``) is not a valid module name, and the pack root must never stay on ``sys.path``: its ``nodes/``
package would shadow ComfyUI's ``nodes.py``. Entry points therefore put the root on ``sys.path`` only long enough to
import this file.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

PACK_NAME = "comfyui_facesnap"
PACK_ROOT = pathlib.Path(__file__).resolve().parent


def load_pack():
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    spec = importlib.util.spec_from_file_location(
        PACK_NAME, PACK_ROOT / "__init__.py", submodule_search_locations=[str(PACK_ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module


def boot_comfyui(path=None, cpu: bool | None = None) -> pathlib.Path:
    """Load the pack, then make ComfyUI importable (``comfy_glue/boot.py``); returns ComfyUI's folder."""
    load_pack()
    from comfyui_facesnap.comfy_glue.boot import boot

    return boot(path, cpu)
