"""What the web UI knows about a node: its ``/object_info`` entry and the widgets it builds from it.

The UI workflow format stores widget values as a positional list (``widgets_values``), so the order and the extra
"control after generate" and "upload" slots must match the frontend exactly. The rules below mirror
comfyui-frontend-package 1.32 (``useIntWidget``, ``addComboWidget``, ``migrateWidgetsValues``); the browser test
checks them against the real frontend through ``app.graphToPrompt()``.
"""

from __future__ import annotations

import dataclasses

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_NAMES = {"seed", "noise_seed"}
UPLOAD_FLAGS = ("image_upload", "audio_upload", "video_upload", "file_upload")
# Nodes that exist only in the frontend: they are never sent to the server.
FRONTEND_ONLY_TYPES = {"Note", "MarkdownNote"}


def node_info(name: str, node_class) -> dict:
    """The ``/object_info`` entry of a node class, as ``server.PromptServer`` builds it (V1 and V3 nodes)."""
    if hasattr(node_class, "GET_NODE_INFO_V1"):
        return node_class.GET_NODE_INFO_V1()
    import nodes

    inputs = node_class.INPUT_TYPES()
    return {
        "input": inputs,
        "input_order": {key: list(value) for key, value in inputs.items()},
        "output": list(node_class.RETURN_TYPES),
        "output_is_list": list(getattr(node_class, "OUTPUT_IS_LIST", [False] * len(node_class.RETURN_TYPES))),
        "output_name": list(getattr(node_class, "RETURN_NAMES", node_class.RETURN_TYPES)),
        "display_name": nodes.NODE_DISPLAY_NAME_MAPPINGS.get(name, name),
        "python_module": getattr(node_class, "RELATIVE_PYTHON_MODULE", "nodes"),
        "category": getattr(node_class, "CATEGORY", "sd"),
        "output_node": bool(getattr(node_class, "OUTPUT_NODE", False)),
        "deprecated": bool(getattr(node_class, "DEPRECATED", False)),
    }


def object_info(node_classes: dict) -> dict[str, dict]:
    return {name: node_info(name, cls) for name, cls in node_classes.items()}


@dataclasses.dataclass(frozen=True)
class InputSpec:
    name: str
    type: str  # "COMBO" for option lists
    options: dict
    optional: bool

    @property
    def choices(self) -> list | None:
        return self.options.get("options") if self.type == "COMBO" else None

    @property
    def is_widget(self) -> bool:
        return self.type in WIDGET_TYPES and not self.options.get("forceInput")


@dataclasses.dataclass(frozen=True)
class WidgetSlot:
    """One entry of ``widgets_values``. ``input`` is None for the frontend's own slots (control, upload)."""

    input: InputSpec | None
    kind: str  # "value", "control" or "upload"


def input_specs(info: dict) -> list[InputSpec]:
    specs = []
    for section in ("required", "optional"):
        entries = info["input"].get(section, {})
        for name in info.get("input_order", {}).get(section, list(entries)):
            io_type, *rest = entries[name]
            options = dict(rest[0]) if rest and rest[0] else {}
            if isinstance(io_type, list):  # V1 combo: the option list is the type
                options["options"] = io_type
                io_type = "COMBO"
            specs.append(InputSpec(name, io_type, options, section == "optional"))
    return specs


def socket_inputs(info: dict) -> list[InputSpec]:
    return [spec for spec in input_specs(info) if not spec.is_widget]


def widget_slots(info: dict) -> list[WidgetSlot]:
    slots = []
    for spec in input_specs(info):
        if not spec.is_widget:
            continue
        slots.append(WidgetSlot(spec, "value"))
        control = spec.options.get("control_after_generate")
        if spec.type == "INT" and (control if control is not None else spec.name in SEED_NAMES):
            slots.append(WidgetSlot(None, "control"))
        elif spec.type == "COMBO" and control:
            raise NotImplementedError(f"combo {spec.name} with control_after_generate (the UI adds a filter widget)")
        if spec.type == "COMBO" and any(spec.options.get(flag) for flag in UPLOAD_FLAGS):
            slots.append(WidgetSlot(None, "upload"))
    return slots


def outputs(info: dict) -> list[tuple[str, str]]:
    """(name, type) of each output slot."""
    return list(zip(info["output_name"], info["output"], strict=True))


def types_match(output_type: str, input_type: str) -> bool:
    """The frontend's link rule for our purposes: equal type names, or a wildcard on either side."""
    if "*" in (output_type, input_type):
        return True
    return set(output_type.split(",")) & set(input_type.split(",")) != set()
