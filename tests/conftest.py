"""Test setup: find the ComfyUI host, force CPU, and import this checkout as ``comfyui_facesnap``.

pytest runs with ``-c tests/pytest.ini`` so its rootdir is ``tests/`` and the pack root's ``__init__`` is never
collected as a test package.
"""

import os
import pathlib
import sys

import pytest

PACK_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = PACK_ROOT.parent / "shared"
sys.path.insert(0, str(PACK_ROOT))  # only while importing pack_import: the root's nodes/ would shadow ComfyUI's
import pack_import  # noqa: E402

sys.path.remove(str(PACK_ROOT))
pack_import.load_pack()
from comfyui_facesnap.comfy_glue.boot import DEFAULT_HOST, boot, find_comfyui  # noqa: E402

HAVE_COMFY = find_comfyui() is not None
COMFY = boot(cpu=True) if HAVE_COMFY else pathlib.Path(os.environ.get("COMFYUI_PATH") or DEFAULT_HOST)


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
    from comfyui_facesnap.devkit.workflow_files import insightface_images as photo_dir

    try:
        return photo_dir()
    except RuntimeError as err:
        pytest.skip(str(err))


ICT_MODEL = SHARED / "3dmm" / "ict_face_narrow.npz"  # the real conversion: an optional extra, never required
FACE_MODELS = ["synthetic", "ict"] if ICT_MODEL.exists() else ["synthetic"]


@pytest.fixture(scope="session")
def synthetic_face_model_path(tmp_path_factory) -> pathlib.Path:
    """A procedural face model in the converted ICT-FaceKit format (devkit/synthetic_face_model.py)."""
    from comfyui_facesnap.devkit.synthetic_face_model import write_synthetic_face_model

    return write_synthetic_face_model(tmp_path_factory.mktemp("3dmm") / "ict_face_narrow.npz")


@pytest.fixture(scope="session", params=FACE_MODELS)
def face_model_path(request, synthetic_face_model_path) -> pathlib.Path:
    """Every 3DMM test runs on the procedural model, and on the real ICT-FaceKit conversion as well when
    ../shared/3dmm has it."""
    return synthetic_face_model_path if request.param == "synthetic" else ICT_MODEL


@pytest.fixture(scope="session")
def default_face_model_path(synthetic_face_model_path) -> pathlib.Path:
    """One model for the slower node-level tests: the real conversion when it is there, else the procedural one."""
    return ICT_MODEL if ICT_MODEL.exists() else synthetic_face_model_path


@pytest.fixture(scope="session")
def comfy_host(tmp_path_factory):
    """ComfyUI's executor with this pack loaded through ComfyUI's own custom-node loader, plus the test-only
    node pack tests/comfy_test_nodes (tiny in-process SDXL, VAE, CLIP vision, conditioning)."""
    if not HAVE_COMFY:
        pytest.skip(f"ComfyUI not found at {COMFY}")
    from comfyui_facesnap.devkit.comfy_host import ComfyHost

    return ComfyHost(PACK_ROOT, tmp_path_factory.mktemp("comfy"),
                     extra_packs=[PACK_ROOT / "tests" / "comfy_test_nodes"])


@pytest.fixture(scope="module", autouse=True)
def model_folders_per_module(request):
    """Model folders a test module registers with ComfyUI (folder_paths) end with it, so no later module sees them
    (a judge or an analyzer listed only because another module made one). The host is started first: the folders
    the pack registers when ComfyUI loads it stay for the session."""
    if not HAVE_COMFY:
        yield
        return
    from comfyui_facesnap.devkit.workflow_files import model_folders_restored

    request.getfixturevalue("comfy_host")
    with model_folders_restored():
        yield


@pytest.fixture()
def fresh_model_management():
    """ComfyUI's model management with nothing loaded before or after the test (a prompt's models stay loaded
    otherwise, as in a server)."""
    import comfy.model_management

    comfy.model_management.unload_all_models()
    yield comfy.model_management
    comfy.model_management.unload_all_models()


@pytest.fixture(autouse=True)
def conds_without_hooks(request, monkeypatch):
    """In every test that samples through ComfyUI: fails the test if any cond given to the sampler has hooks that make
    a dynamic-VRAM host replace the MODEL (tests/cond_hooks.py). Yields the records."""
    if request.node.get_closest_marker("comfy") is None or request.node.get_closest_marker("hooked") or not HAVE_COMFY:
        yield []
        return
    from cond_hooks import record_cond_hooks, unexpected_hooks

    records = record_cond_hooks(monkeypatch)
    yield records
    assert not unexpected_hooks(records), f"conds with hooks: {unexpected_hooks(records)}"


@pytest.fixture(scope="module")
def identity_host(comfy_host, insightface_images, tmp_path_factory):
    """The host with the tiny FaceSnap and InstantID files in their model folders and the face pipeline's stand-ins
    (tests/identity_graphs.py, tests/instantid_graphs.py): the identity nodes and the stacking tests."""
    from identity_graphs import register_facesnap_folder, setup_face_pipeline
    from instantid_graphs import register_instantid_folders

    register_facesnap_folder(tmp_path_factory.mktemp("facesnap"))
    setup_face_pipeline(comfy_host, insightface_images, tmp_path_factory.mktemp("insightface"))
    register_instantid_folders(comfy_host, insightface_images, tmp_path_factory.mktemp("instantid"))
    return comfy_host


@pytest.fixture(scope="module")
def identity_workflow_host(comfy_host, insightface_images, tmp_path_factory):
    """The host for ``identity_graphs.identity_workflow_graph``: the face pipeline's stand-ins and the tiny FaceSnap
    files, plus a corrupt ``broken.safetensors``."""
    from identity_graphs import register_facesnap_folder, setup_face_pipeline

    setup_face_pipeline(comfy_host, insightface_images, tmp_path_factory.mktemp("insightface"))
    facesnap_dir = tmp_path_factory.mktemp("facesnap")
    (facesnap_dir / "broken.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!")
    register_facesnap_folder(facesnap_dir)
    return comfy_host


@pytest.fixture(scope="module")
def flame_files(tmp_path_factory):
    """The FLAME-layout stand-in (tests/flame_stand_in.py): (folder, the pickled model dict, its shapedirs)."""
    from flame_stand_in import write_flame_files

    return write_flame_files(tmp_path_factory.mktemp("flame"))


@pytest.fixture(scope="module")
def flame_model(flame_files):
    """The stand-in loaded as a morphable model (20 shape and 10 expression components)."""
    from comfyui_facesnap.models.face3d.flame_loader import flame_morphable_model

    root, _, _ = flame_files
    return flame_morphable_model(root / "generic_model.pkl", root / "landmark_embedding.npy", num_shape=20,
                                 num_expression=10)
