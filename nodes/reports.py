"""Warnings an artist needs (a clamped pose, a skipped face) where the artist looks, not only on the console.

A node returns them as its ``report`` STRING output (wire it to a text preview node, or save it with the image) and
shows them on the node itself, through the progress-text message that ComfyUI's own Get Image Size node uses.
"""

from __future__ import annotations

import logging

log = logging.getLogger("FaceSnap")


def show_report(warnings: list[str]) -> str:
    """The report text (empty when nothing needed adjusting), also shown on the running node and logged."""
    text = "\n".join(warnings)
    if text:
        log.warning("FaceSnap: %s", text.replace("\n", "; "))
        _show_on_node(text)
    return text


def _show_on_node(text: str) -> None:
    try:
        from comfy_execution.utils import get_executing_context
        from server import PromptServer
    except ImportError:  # an older ComfyUI, or ComfyUI's modules not loaded (scripts)
        return
    context, server = get_executing_context(), getattr(PromptServer, "instance", None)
    if context is not None and server is not None:
        server.send_progress_text(text, context.node_id)
