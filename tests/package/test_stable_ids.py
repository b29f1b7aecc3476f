"""Node ids, input names, widget order and output types are pinned in tests/node_ids.json (``make pin-ids``)."""

import importlib.util
import pathlib

import pytest

pytestmark = pytest.mark.comfy

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "pin_node_ids.py"


@pytest.fixture(scope="module")
def pinning():
    spec = importlib.util.spec_from_file_location("pin_node_ids", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def current(pinning):
    import comfyui_facesnap

    return pinning.current_pins(comfyui_facesnap)


def test_no_pinned_node_or_input_breaks(pinning, current):
    from comfyui_facesnap.nodes.deprecations import DEPRECATED_IDS

    problems = pinning.breaking_changes(pinning.load_pins(), current, DEPRECATED_IDS)
    assert not problems, "saved workflows would break:\n- " + "\n- ".join(problems)


def test_every_node_and_input_is_pinned(pinning, current):
    changes = pinning.unpinned_changes(pinning.load_pins(), current)
    assert not changes, "nodes changed since the last pin; if intended, run `make pin-ids`:\n- " + "\n- ".join(changes)


def _node(inputs, widgets=None, outputs=("IMAGE",), deprecated=False):
    return {"inputs": list(inputs), "widgets": list(widgets or []), "outputs": list(outputs), "deprecated": deprecated}


def test_rename_without_deprecation_is_refused(pinning):
    pinned = {"OldNode": _node(["image"])}
    assert pinning.breaking_changes(pinned, {"NewNode": _node(["image"])}, {})
    kept = {"OldNode": _node(["image"], deprecated=True), "NewNode": _node(["image"])}
    assert pinning.breaking_changes(pinned, kept, {}), "a deprecated node needs its DEPRECATED_IDS entry"
    assert pinning.breaking_changes(pinned, {"NewNode": _node(["image"])}, {"OldNode": "NewNode"})
    assert not pinning.breaking_changes(pinned, kept, {"OldNode": "NewNode"})


def test_input_changes_are_classified(pinning):
    pinned = {"Node": _node(["image", "size", "margin"], ["size", "margin"])}
    renamed = {"Node": _node(["image", "size", "padding"], ["size", "padding"])}
    reordered = {"Node": _node(["image", "margin", "size"], ["margin", "size"])}
    appended = {"Node": _node(["image", "size", "margin", "mode"], ["size", "margin", "mode"])}
    assert pinning.breaking_changes(pinned, renamed, {})
    assert pinning.breaking_changes(pinned, reordered, {})
    assert not pinning.breaking_changes(pinned, appended, {})
    assert pinning.unpinned_changes(pinned, appended), "additions must be pinned on purpose"
