"""Import this checkout as the package ``comfyui_facesnap`` without ComfyUI's loader.

Used by the tests, the trainer and the benchmarks. The checkout's own directory name (often ``ComfyUI-FaceSnap``)
is not a valid module name, and the pack root must never be on ``sys.path`` itself: its ``nodes/`` package would
shadow ComfyUI's ``nodes.py``.
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
