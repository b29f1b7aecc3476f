"""Test setup: find the ComfyUI host, force CPU, and import this checkout as ``comfyui_facesnap``.

pytest runs with ``-c tests/pytest.ini`` so its rootdir is ``tests/`` and the pack root's ``__init__`` is never
collected as a test package.
"""

import os
import pathlib
import sys
import types

import pytest

PACK_ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_HOST = pathlib.Path.home() / ".cache" / "comfyui-facesnap" / "comfyui"
COMFY = pathlib.Path(os.environ.get("COMFYUI_PATH", DEFAULT_HOST)).resolve()
HAVE_COMFY = (COMFY / "comfy" / "model_management.py").exists()
SHARED = PACK_ROOT.parent / "shared"

# PyPI torchvision is a CUDA build whose fake-op registrations fail beside CPU torch; ComfyUI never uses them.
sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
if HAVE_COMFY:
    sys.path.insert(0, str(COMFY))
    from comfy.cli_args import args

    args.cpu = True  # before anything imports comfy.model_management
sys.path.append(str(PACK_ROOT))
import pack_import  # noqa: E402

pack_import.load_pack()
sys.path.remove(str(PACK_ROOT))


def pytest_collection_modifyitems(config, items):
    if HAVE_COMFY:
        return
    skip = pytest.mark.skip(reason=f"ComfyUI not found at {COMFY} (run `make test`, or set COMFYUI_PATH)")
    for item in items:
        if "comfy" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def insightface_images() -> pathlib.Path:
    """The photos shipped inside the insightface wheel (t1.jpg: six faces; Tom_Hanks_54745.png; mask_*.jpg: none)."""
    from workflow_fixtures import insightface_images as photo_dir

    try:
        return photo_dir()
    except RuntimeError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="session")
def ict_model_path() -> pathlib.Path:
    path = SHARED / "3dmm" / "ict_face_narrow.npz"
    if not path.exists():
        pytest.skip(f"the converted ICT-FaceKit model is expected at {path}")
    return path


@pytest.fixture(scope="session")
def comfy_host(tmp_path_factory):
    """ComfyUI's executor with this pack loaded through ComfyUI's own custom-node loader, plus the test-only
    node pack tests/comfy_test_nodes (tiny in-process SDXL, VAE, CLIP vision, conditioning)."""
    if not HAVE_COMFY:
        pytest.skip(f"ComfyUI not found at {COMFY}")
    from comfy_host import ComfyHost

    return ComfyHost(PACK_ROOT, tmp_path_factory.mktemp("comfy"), extra_packs=[PACK_ROOT / "tests" / "comfy_test_nodes"])
