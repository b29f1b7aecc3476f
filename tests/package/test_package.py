"""The pack loads in the pinned ComfyUI through its V3 entrypoint, and every node follows the house rules."""

import asyncio

import pytest

pytestmark = pytest.mark.comfy


def _node_list():
    import comfyui_facesnap

    extension = asyncio.run(comfyui_facesnap.comfy_entrypoint())
    return asyncio.run(extension.get_node_list())


def test_pack_uses_v3_only():
    import comfyui_facesnap

    assert not hasattr(comfyui_facesnap, "NODE_CLASS_MAPPINGS"), "ComfyUI ignores comfy_entrypoint when this exists"


def test_every_node_is_documented():
    for node in _node_list():
        schema = node.GET_SCHEMA()
        assert schema.category.startswith("FaceSnap/"), schema.node_id
        assert schema.description.strip(), schema.node_id
        for socket in schema.inputs:
            assert getattr(socket, "tooltip", None), f"{schema.node_id}.{socket.id} has no tooltip"


def test_model_folders_registered():
    import folder_paths

    _node_list()
    for name in ("facesnap", "insightface", "3dmm"):
        paths = folder_paths.get_folder_paths(name)
        assert paths and paths[0].endswith(name)

