"""Fixtures shared by the node tests that feed hostile inputs through ComfyUI's validator and executor."""

import asyncio
import pathlib
import shutil

import pytest
import torch

from hostile_prompts import write_ict_npz


@pytest.fixture(scope="module")
def hostile_host(comfy_host, insightface_images):
    """The session's ComfyUI host, plus ComfyUI's own Preview Any node and the test-only bad-image node."""
    import folder_paths
    import nodes

    for name in ("Tom_Hanks_54745.png", "mask_black.jpg", "t1.jpg"):
        shutil.copy(insightface_images / name, comfy_host.input_dir / name)
    preview_any = pathlib.Path(folder_paths.base_path) / "comfy_extras" / "nodes_preview_any.py"
    for pack in (preview_any, pathlib.Path(__file__).resolve().parent / "comfy_hostile_nodes.py"):
        if not asyncio.run(nodes.load_custom_node(str(pack))):
            raise RuntimeError(f"could not load {pack}")
    return comfy_host


@pytest.fixture
def folders(tmp_path, flame_files):
    """tmp/models/3dmm registered as ComfyUI's default 3dmm folder (ICT stand-in, FLAME fixture files), and
    tmp/outside with valid model files that no workflow may reach."""
    from comfyui_facesnap.devkit.workflow_files import model_folders_restored

    models, outside = tmp_path / "models" / "3dmm", tmp_path / "outside"
    models.mkdir(parents=True)
    outside.mkdir()
    write_ict_npz(models / "ict_face_narrow.npz")
    write_ict_npz(outside / "secret.npz")
    for name, secret in (("generic_model.pkl", "secret.pkl"), ("landmark_embedding.npy", "secret.npy")):
        shutil.copy(flame_files[0] / name, models / name)
        shutil.copy(flame_files[0] / name, outside / secret)
    torch.save({"E_flame": {}}, outside / "secret.tar")
    with model_folders_restored() as folder_paths:
        folder_paths.add_model_folder_path("3dmm", str(models), is_default=True)
        yield models, outside
