"""Turn model-side errors into messages that name the node and the fix."""

from __future__ import annotations

import functools

from ..models.errors import FaceSnapError


class FaceSnapNodeError(RuntimeError):
    """What ComfyUI shows in its error dialog. The server keeps running."""


def node_error(node_id: str, message: str, fix: str = "") -> FaceSnapNodeError:
    text = f"[{node_id}] {message}"
    if fix:
        text += f"\nFix: {fix}"
    return FaceSnapNodeError(text)


def reports_errors(execute):
    """Decorate a node's ``execute`` classmethod so FaceSnapErrors come out naming the node."""

    @functools.wraps(execute)
    def wrapper(cls, *args, **kwargs):
        try:
            return execute(cls, *args, **kwargs)
        except FaceSnapError as err:
            raise node_error(cls.define_schema().node_id, err.message, err.fix) from err

    return wrapper
