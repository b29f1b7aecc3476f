"""Pin the pack's node ids, input names, widget order and output types in tests/node_ids.json (``make pin-ids``).

Pinning only ever adds: a pinned node or input that disappeared is refused with the deprecation recipe from
nodes/deprecations.py, because saved workflows would stop loading.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import sys

PACK_ROOT = pathlib.Path(__file__).resolve().parents[1]
PINS_PATH = PACK_ROOT / "tests" / "node_ids.json"
RECIPE = (
    "keep the old node registered with is_deprecated=True, register the changed one under a new id "
    "and add DEPRECATED_IDS['{id}'] = '<new id>' in nodes/deprecations.py"
)


def current_pins(pack) -> dict[str, dict]:
    """What tests/node_ids.json records for each node the pack registers now."""
    from comfyui_facesnap.devkit.ui_workflow import node_info, widget_slots

    extension = asyncio.run(pack.comfy_entrypoint())
    pins = {}
    for node in asyncio.run(extension.get_node_list()):
        schema = node.GET_SCHEMA()
        info = node_info(schema.node_id, node)
        pins[schema.node_id] = {
            "inputs": [socket.id for socket in schema.inputs],
            "widgets": [slot.input.name for slot in widget_slots(info) if slot.kind == "value"],
            "outputs": [output.io_type for output in schema.outputs],
            "deprecated": bool(schema.is_deprecated),
        }
    return pins


def breaking_changes(pinned: dict, current: dict, deprecated_ids: dict[str, str]) -> list[str]:
    """Changes that would break saved workflows, or a deprecation entry that does not hold."""
    problems = []
    for node_id, pin in pinned.items():
        now = current.get(node_id)
        if now is None:
            problems.append(f"{node_id} was removed or renamed: {RECIPE.format(id=node_id)}")
            continue
        lost = [name for name in pin["inputs"] if name not in now["inputs"]]
        if lost:
            problems.append(f"{node_id} lost inputs {lost} (input names are part of saved workflows): "
                            f"{RECIPE.format(id=node_id)}")
        if now["widgets"][: len(pin["widgets"])] != pin["widgets"]:
            problems.append(
                f"{node_id} widget order changed from {pin['widgets']} to {now['widgets']} (the UI stores widget "
                f"values by position; add new widgets after the pinned ones): {RECIPE.format(id=node_id)}"
            )
        if now["outputs"][: len(pin["outputs"])] != pin["outputs"]:
            problems.append(f"{node_id} outputs changed from {pin['outputs']} to {now['outputs']} (links use slot "
                            f"positions; append new outputs): {RECIPE.format(id=node_id)}")
    for old, new in deprecated_ids.items():
        if not current.get(old, {}).get("deprecated"):
            problems.append(f"DEPRECATED_IDS lists {old}, which must stay registered with is_deprecated=True")
        if new not in current or current[new]["deprecated"]:
            problems.append(f"DEPRECATED_IDS maps {old} to {new}, which is not a registered, current node")
    for node_id, now in current.items():
        if now["deprecated"] and node_id not in deprecated_ids:
            problems.append(f"{node_id} is deprecated but has no DEPRECATED_IDS entry naming its replacement")
    return problems


def unpinned_changes(pinned: dict, current: dict) -> list[str]:
    """Additions that are safe but must be pinned on purpose."""
    changes = [f"new node {node_id}" for node_id in current if node_id not in pinned]
    for node_id, pin in pinned.items():
        if node_id in current and current[node_id] != pin:
            changes.append(f"{node_id}: pinned {pin}, now {current[node_id]}")
    return changes


def load_pins() -> dict:
    return json.loads(PINS_PATH.read_text())["nodes"] if PINS_PATH.exists() else {}


def main() -> int:
    sys.path.insert(0, str(PACK_ROOT))  # only while importing pack_import: the root's nodes/ would shadow ComfyUI's
    import pack_import

    sys.path.remove(str(PACK_ROOT))
    pack_import.boot_comfyui(cpu=True)
    import comfyui_facesnap
    from comfyui_facesnap.nodes.deprecations import DEPRECATED_IDS

    current = current_pins(comfyui_facesnap)
    problems = breaking_changes(load_pins(), current, DEPRECATED_IDS)
    if problems:
        print("refusing to re-pin:\n- " + "\n- ".join(problems), file=sys.stderr)
        return 1
    note = "Written by `make pin-ids` (scripts/pin_node_ids.py). Pins only grow; see nodes/deprecations.py."
    # One line per node keeps review diffs readable.
    rows = ",\n".join(f"    {json.dumps(node_id)}: {json.dumps(pin)}" for node_id, pin in sorted(current.items()))
    PINS_PATH.write_text(f'{{\n  "_note": {json.dumps(note)},\n  "nodes": {{\n{rows}\n  }}\n}}\n')
    print(f"pinned {len(current)} node ids in {PINS_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
