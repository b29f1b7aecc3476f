"""Write docs/nodes.md from the live node schemas (``make docs``); tests/package/test_node_docs.py fails when it is
stale.

The nodes come from the pack's own ``comfy_entrypoint`` -> ``get_node_list`` -> ``GET_SCHEMA``, exactly what ComfyUI
registers. Model folders are emptied while the schemas are read, so file-list dropdowns never leak the files of the
machine that ran the script into the docs.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import sys
import tempfile

DOCS_PATH = pathlib.Path(__file__).resolve().parents[1] / "docs" / "nodes.md"
MAX_OPTIONS_SHOWN = 12

HEADER = """# FaceSnap node reference

Generated from the node schemas by `make docs` (scripts/gen_node_docs.py); do not edit by hand.
Node ids never change: saved workflows refer to them (tests/package/test_stable_ids.py).
"""


@contextlib.contextmanager
def empty_model_folders():
    """Point every registered model folder at an empty directory for the duration, then restore ComfyUI's state."""
    from comfyui_facesnap.devkit.workflow_files import model_folders_restored

    with tempfile.TemporaryDirectory() as empty, model_folders_restored() as folder_paths:
        for name, (_, extensions) in list(folder_paths.folder_names_and_paths.items()):
            folder_paths.folder_names_and_paths[name] = ([empty], extensions)
        folder_paths.filename_list_cache.clear()
        yield


def pack_schemas(pack) -> list:
    """The schema of every node the pack registers, in menu order."""
    extension = asyncio.run(pack.comfy_entrypoint())
    with empty_model_folders():
        return [node.GET_SCHEMA() for node in asyncio.run(extension.get_node_list())]


def _cell(value) -> str:
    text = " ".join(str(value).split())
    return text.replace("|", "\\|") if text else "—"


def _code(value) -> str:
    return f"`{value}`" if value not in (None, "") else "—"


def _input_details(options: dict) -> str:
    parts = []
    if "options" in options:
        choices = [str(choice) for choice in options["options"]]
        shown = ", ".join(f"`{c}`" for c in choices[:MAX_OPTIONS_SHOWN])
        if len(choices) > MAX_OPTIONS_SHOWN:
            shown += f", … ({len(choices)} in all)"
        parts.append(f"one of {shown}" if choices else "a file from the model folder")
    for key, label in (("min", "min"), ("max", "max"), ("step", "step")):
        if options.get(key) is not None:
            parts.append(f"{label} {options[key]}")
    if options.get("multiline"):
        parts.append("multiline")
    if options.get("forceInput"):
        parts.append("socket only")
    return "; ".join(parts)


def render_node(schema) -> str:
    lines = [f"## {schema.display_name or schema.node_id}", ""]
    facts = [f"id `{schema.node_id}`", f"category `{schema.category}`"]
    if schema.is_output_node:
        facts.append("output node")
    if schema.is_deprecated:
        facts.append("**deprecated**")
    if schema.is_experimental:
        facts.append("experimental")
    lines += [" · ".join(facts), "", " ".join(schema.description.split()), ""]
    if schema.inputs:
        lines += ["| input | type | default | details | tooltip |", "|---|---|---|---|---|"]
        for socket in schema.inputs:
            options = socket.as_dict()
            name = f"`{socket.id}`" + (" (optional)" if socket.optional else "")
            lines.append(
                f"| {name} | {_code(socket.get_io_type())} | {_code(options.get('default'))} "
                f"| {_cell(_input_details(options))} | {_cell(socket.tooltip or '')} |"
            )
        lines.append("")
    if schema.outputs:
        lines += ["| output | type | tooltip |", "|---|---|---|"]
        for output in schema.outputs:
            name = output.display_name or output.io_type
            kind = output.io_type + (" (list)" if output.is_output_list else "")
            lines.append(f"| `{name}` | `{kind}` | {_cell(output.tooltip or '')} |")
        lines.append("")
    return "\n".join(lines)


def render_drawings() -> str:
    """The table of control drawings, from the registry the style inputs are made from."""
    from comfyui_facesnap.models.face_analysis.drawings import DRAWINGS

    lines = ["## Control drawings", "",
             "The `style` choices of FaceSnap Draw Landmarks and FaceSnap Landmark Predictor "
             "(models/face_analysis/drawings.py); FaceSnap Draw Keypoints draws `instantid_kps5`. Point numbers are "
             "the pack's 72-point layout.", "",
             "| style | reads | points drawn | drawing |", "|---|---|---|---|"]
    lines += [f"| `{d.name}` | {d.point_set.name} | {d.uses} | {d.summary} |" for d in DRAWINGS.values()]
    return "\n".join(lines) + "\n"


def render(schemas: list) -> str:
    index = ["| node | id | category |", "|---|---|---|"]
    for schema in schemas:
        title = schema.display_name or schema.node_id
        anchor = "".join(ch for ch in title.lower().replace(" ", "-") if ch.isalnum() or ch in "-_")
        index.append(f"| [{title}](#{anchor}) | `{schema.node_id}` | `{schema.category}` |")
    nodes = [render_node(schema) for schema in schemas]
    return "\n".join([HEADER, *index, "", *nodes, render_drawings()]).rstrip() + "\n"


def main() -> int:
    root = pathlib.Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))  # only while importing pack_import: the root's nodes/ would shadow ComfyUI's
    import pack_import

    sys.path.remove(str(root))
    pack_import.boot_comfyui(cpu=True)
    import comfyui_facesnap

    DOCS_PATH.write_text(render(pack_schemas(comfyui_facesnap)))
    print(f"wrote {DOCS_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
