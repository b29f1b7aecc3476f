"""Build UI-format workflows (what the web UI exports, version 0.4) from a compact description.

Widget values are laid out from the live node schemas (devkit/ui_workflow.py), so their positional order is exactly
the one the frontend expects. Links are checked for types and every required socket must be connected.
"""

from __future__ import annotations

import dataclasses
import uuid

from comfyui_facesnap.devkit.ui_workflow import FRONTEND_ONLY_TYPES, outputs, socket_inputs, types_match, widget_slots

COLUMN_WIDTH = 350
NODE_WIDTH = 310
NOTE_WIDTH = 310
ROW_GAP = 40
SLOT_HEIGHT = 20
WIDGET_HEIGHT = 24
IMAGE_PREVIEW_HEIGHT = 260
TITLE_HEIGHT = 30
GROUP_PADDING = 14
IMAGE_NODES = {"LoadImage", "SaveImage", "PreviewImage"}
PACK_ID = "comfyui-facesnap"  # the Comfy Registry id, used by ComfyUI-Manager to install missing nodes


@dataclasses.dataclass
class Node:
    key: str
    type: str
    col: int
    links: dict = dataclasses.field(default_factory=dict)  # input name -> (node key, output name or slot index)
    widgets: dict = dataclasses.field(default_factory=dict)  # input name -> value; the rest keep their defaults
    title: str | None = None
    height: int | None = None  # for notes, whose height the text decides


@dataclasses.dataclass
class Workflow:
    name: str
    nodes: list[Node]
    groups: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # title -> node keys


def note(key: str, col: int, text: str, height: int = 220) -> Node:
    return Node(key, "MarkdownNote", col, widgets={"text": text}, height=height)


def _default(slot) -> object:
    spec = slot.input
    if "default" in spec.options:
        return spec.options["default"]
    if spec.choices:
        return spec.choices[0]
    if spec.type == "COMBO":
        raise ValueError(f"{spec.name} lists no files here; give its value in the workflow description")
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}[spec.type]


def _widget_values(node: Node, info: dict) -> list:
    slots = widget_slots(info)
    names = {slot.input.name for slot in slots if slot.kind == "value"}
    unknown = set(node.widgets) - names
    if unknown:
        raise ValueError(f"{node.key} ({node.type}) has no widgets {sorted(unknown)}; it has {sorted(names)}")
    values = []
    for slot in slots:
        if slot.kind == "control":
            values.append("fixed")  # reproducible example: the seed stays as written
        elif slot.kind == "upload":
            values.append("image")
        else:
            name = slot.input.name
            values.append(node.widgets[name] if name in node.widgets else _default(slot))
    return values


def _height(node: Node, info: dict | None) -> int:
    if node.height:
        return node.height
    rows = max(len(socket_inputs(info)), len(info["output"]))
    widgets = widget_slots(info)
    height = 10 + rows * SLOT_HEIGHT + len(widgets) * WIDGET_HEIGHT
    height += sum(80 for slot in widgets if slot.input and slot.input.options.get("multiline"))
    return height + (IMAGE_PREVIEW_HEIGHT if node.type in IMAGE_NODES else 0)


def _order(nodes: list[Node]) -> dict[str, int]:
    """Topological execution order, as LiteGraph stores it in ``order``."""
    done: dict[str, int] = {}

    def visit(node: Node, path: tuple = ()):
        if node.key in done:
            return
        if node.key in path:
            raise ValueError(f"cycle through {node.key}")
        for source, _ in node.links.values():
            visit(by_key[source], path + (node.key,))
        done[node.key] = len(done)

    by_key = {node.key: node for node in nodes}
    for node in nodes:
        visit(node)
    return done


def build(workflow: Workflow, object_info: dict) -> dict:
    keys = [node.key for node in workflow.nodes]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{workflow.name}: duplicate node keys")
    ids = {node.key: index + 1 for index, node in enumerate(workflow.nodes)}
    order = _order(workflow.nodes)
    ui_nodes, links, column_y = {}, [], {}
    for node in workflow.nodes:
        frontend_only = node.type in FRONTEND_ONLY_TYPES
        if not frontend_only and node.type not in object_info:
            raise ValueError(f"{workflow.name}: node type {node.type} is not registered")
        info = None if frontend_only else object_info[node.type]
        width = NOTE_WIDTH if frontend_only else NODE_WIDTH
        height = _height(node, info)
        y = column_y.get(node.col, 0)
        column_y[node.col] = y + height + TITLE_HEIGHT + ROW_GAP
        ui = {
            "id": ids[node.key],
            "type": node.type,
            "pos": [node.col * COLUMN_WIDTH, y],
            "size": [width, height],
            "flags": {},
            "order": order[node.key],
            "mode": 0,
            "inputs": [],
            "outputs": [],
            "properties": {},
            "widgets_values": list(node.widgets.values()) if frontend_only else _widget_values(node, info),
        }
        if not frontend_only:
            core = info.get("python_module", "nodes") in ("nodes",) or info["python_module"].startswith("comfy_extras")
            ui["properties"] = {"Node name for S&R": node.type, "cnr_id": "comfy-core" if core else PACK_ID}
            for spec in socket_inputs(info):
                entry = {"name": spec.name, "type": spec.type, "link": None}
                if spec.optional:
                    entry["shape"] = 7  # LiteGraph's hollow "optional" socket
                ui["inputs"].append(entry)
            for slot, (name, io_type) in enumerate(outputs(info)):
                ui["outputs"].append({"name": name, "type": io_type, "slot_index": slot, "links": []})
        if node.title:
            ui["title"] = node.title
        ui_nodes[node.key] = ui
    for node in workflow.nodes:
        target = ui_nodes[node.key]
        for input_name, (source_key, output) in node.links.items():
            source = ui_nodes[source_key]
            names = [entry["name"] for entry in source["outputs"]]
            slot = output if isinstance(output, int) else names.index(output) if output in names else None
            if slot is None:
                raise ValueError(f"{workflow.name}: {source_key} ({source['type']}) has no output {output}; {names}")
            target_slot = next((i for i, e in enumerate(target["inputs"]) if e["name"] == input_name), None)
            if target_slot is None:
                raise ValueError(f"{workflow.name}: {node.key} ({node.type}) has no socket input {input_name}")
            out_type, in_type = source["outputs"][slot]["type"], target["inputs"][target_slot]["type"]
            if not types_match(out_type, in_type):
                raise ValueError(f"{workflow.name}: {source_key}.{output} ({out_type}) -> {node.key}.{input_name} "
                                 f"({in_type})")
            link_id = len(links) + 1
            links.append([link_id, source["id"], slot, target["id"], target_slot, out_type])
            source["outputs"][slot]["links"].append(link_id)
            target["inputs"][target_slot]["link"] = link_id
        missing = [e["name"] for e in target["inputs"] if e["link"] is None and "shape" not in e]
        if missing:
            raise ValueError(f"{workflow.name}: {node.key} ({node.type}) needs links for {missing}")
    for ui in ui_nodes.values():
        for output in ui["outputs"]:
            output["links"] = output["links"] or None
    groups = []
    for title, members in workflow.groups.items():
        groups.append(_group(title, [ui_nodes[key] for key in members]))
        left, top, width, height = groups[-1]["bounding"]
        for key, ui in ui_nodes.items():
            x, y = ui["pos"]
            inside = x < left + width and x + ui["size"][0] > left and y < top + height and y + ui["size"][1] > top
            if inside and key not in members:
                raise ValueError(f"{workflow.name}: group {title!r} would also frame {key}; move one of them")
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{PACK_ID}/workflows/{workflow.name}")),
        "revision": 0,
        "last_node_id": len(ui_nodes),
        "last_link_id": len(links),
        "nodes": list(ui_nodes.values()),
        "links": links,
        "groups": groups,
        "config": {},
        "extra": {"ds": _viewport(list(ui_nodes.values()))},
        "version": 0.4,
    }


def _bounds(ui_nodes: list[dict]) -> tuple[float, float, float, float]:
    left = min(n["pos"][0] for n in ui_nodes)
    top = min(n["pos"][1] for n in ui_nodes) - TITLE_HEIGHT
    right = max(n["pos"][0] + n["size"][0] for n in ui_nodes)
    bottom = max(n["pos"][1] + n["size"][1] for n in ui_nodes)
    return left, top, right, bottom


def _group(title: str, members: list[dict]) -> dict:
    left, top, right, bottom = _bounds(members)
    pad = GROUP_PADDING
    return {
        "title": title,
        "bounding": [left - pad, top - pad - 34, right - left + 2 * pad, bottom - top + 2 * pad + 34],
        "color": "#3f789e",
        "font_size": 24,
        "flags": {},
    }


def _viewport(ui_nodes: list[dict], screen=(1280, 720)) -> dict:
    """Scale and offset that show the whole graph on a 1280x720 canvas (screen = (pos + offset) * scale)."""
    left, top, right, bottom = _bounds(ui_nodes)
    margin = 60
    scale = min(1.0, (screen[0] - 2 * margin) / (right - left), (screen[1] - 2 * margin) / (bottom - top + 60))
    return {"scale": round(scale, 4), "offset": [round(margin / scale - left, 1), round(margin / scale - top + 50, 1)]}
