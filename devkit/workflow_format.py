"""Convert a workflow saved by the web UI (format version 0.4) into the API prompt that the UI would queue.

This follows the frontend's ``graphToPrompt``: frontend-only nodes (notes) are dropped, widget values are matched to
input names through the node's ``/object_info`` entry, and links become ``[source node id, output slot]``.
The browser test compares this converter with the real frontend's output.
"""

from __future__ import annotations

from .ui_workflow import FRONTEND_ONLY_TYPES, widget_slots

MODE_ALWAYS, MODE_NEVER, MODE_BYPASS = 0, 2, 4


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    links = {link[0]: link for link in workflow.get("links", [])}
    nodes = {node["id"]: node for node in workflow["nodes"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY_TYPES or node.get("mode", MODE_ALWAYS) == MODE_NEVER:
            continue
        if node.get("mode", MODE_ALWAYS) == MODE_BYPASS:
            raise ValueError(f"node {node['id']} ({node['type']}) is bypassed; the example workflows never bypass")
        if node["type"] not in object_info:
            raise KeyError(f"node {node['id']}: type {node['type']} is not registered")
        info = object_info[node["type"]]
        inputs = {}
        values = node.get("widgets_values") or []
        slots = widget_slots(info)
        if isinstance(values, dict):  # some frontends save widget values by name
            inputs.update({k: v for k, v in values.items() if k in {s.input.name for s in slots if s.input}})
        else:
            for slot, value in zip(slots, values, strict=False):
                if slot.kind == "value":
                    inputs[slot.input.name] = value
        for entry in node.get("inputs", []):
            link = links.get(entry.get("link"))
            if link is None:
                continue
            source_id, source_slot = link[1], link[2]
            source = nodes.get(source_id)
            if source is None or source["type"] in FRONTEND_ONLY_TYPES or source.get("mode", 0) == MODE_NEVER:
                continue
            inputs[entry["name"]] = [str(source_id), source_slot]
        prompt[str(node["id"])] = {
            "inputs": inputs,
            "class_type": node["type"],
            "_meta": {"title": node.get("title") or info.get("display_name") or node["type"]},
        }
    return prompt
