"""docs/nodes.md is generated from the node schemas and must match them."""

import importlib.util
import pathlib

import pytest

pytestmark = pytest.mark.comfy

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "gen_node_docs.py"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_node_docs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_node_docs_are_current():
    import comfyui_facesnap

    generator = _generator()
    schemas = generator.pack_schemas(comfyui_facesnap)
    expected = generator.render(schemas)
    current = generator.DOCS_PATH.read_text() if generator.DOCS_PATH.exists() else ""
    assert current == expected, "docs/nodes.md is stale: run `make docs` and commit the result"
    for schema in schemas:
        assert f"`{schema.node_id}`" in current


def test_model_folders_are_restored_after_rendering():
    import folder_paths

    import comfyui_facesnap

    before = {name: list(paths) for name, (paths, _) in folder_paths.folder_names_and_paths.items()}
    _generator().pack_schemas(comfyui_facesnap)
    after = {name: list(paths) for name, (paths, _) in folder_paths.folder_names_and_paths.items()}
    assert after == before
