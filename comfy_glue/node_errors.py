"""The error ComfyUI shows for the pack: ``[node id] message`` and the fix. It lives in the glue so that code running
while ComfyUI samples (identity controls) raises it too; ``nodes/errors.py`` re-exports it for the nodes."""

from __future__ import annotations

# ComfyUI's error dialog titles an error with ``module + "." + qualname`` of its type (execution.full_type_name).
# ComfyUI imports the pack under its folder path, so the natural module name would be a file-system path.
ERROR_MODULE = "comfyui_facesnap"


class FaceSnapNodeError(RuntimeError):
    """What ComfyUI shows in its error dialog. The server keeps running."""


FaceSnapNodeError.__module__ = ERROR_MODULE


def node_error(node_id: str, message: str, fix: str = "") -> FaceSnapNodeError:
    text = f"[{node_id}] {message}"
    if fix:
        text += f"\nFix: {fix}"
    return FaceSnapNodeError(text)
