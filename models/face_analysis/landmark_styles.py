"""The drawing styles of the landmark nodes: the pack's own 72-point drawing, or OpenPose face (and head) drawings
for the public OpenPose ControlNets (see openpose_face.py for the matched convention)."""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError
from .landmarks72 import draw_control_image
from .openpose_face import draw_openpose_face

FACESNAP72 = "facesnap72"
# style -> draw_openpose_face options
OPENPOSE_STYLES = {
    "openpose_face": dict(include_head=False),
    "openpose_face_head": dict(include_head=True),
    "openpose_face_head_xinsir": dict(include_head=True, xinsir_sticks=True),
}
STYLES = (FACESNAP72, *OPENPOSE_STYLES)

STYLE_TOOLTIP = (
    "facesnap72: the pack's own drawing for FFRNet (coloured contours, all 72 points). "
    "openpose_face: points 0-69 (iBUG-68 and the two pupils, OpenPose-face-70 order) as white radius-3 dots on "
    "black, pixel for pixel as controlnet_aux 0.0.10 draw_facepose and comfyui_controlnet_aux's OpenPose/DWPose "
    "face drawing (scale_stick_for_xinsr_cn off) would draw them at this output size; points on row/column 0 or "
    "left of/above the image are dropped, as there. "
    "openpose_face_head: also the body's nose, eyes, ears and neck with their sticks, as draw_bodypose draws them. "
    "Nose and eyes are landmarks; ears and neck are estimates from the jaw line (a face shows neither). "
    "openpose_face_head_xinsir: the same with the sticks widened as scale_stick_for_xinsr_cn does for "
    "xinsir/controlnet-openpose-sdxl-1.0. Whether SDXL OpenPose ControlNets follow face dots, with or without the "
    "head, was not measured (no weights here).")


def draw_landmarks(points: np.ndarray, height: int, width: int, style: str = FACESNAP72,
                   canvas: np.ndarray | None = None) -> np.ndarray:
    """(72, 2) landmarks in the canvas's pixels drawn in ``style``: (height, width, 3) RGB uint8, over a copy of
    ``canvas`` (RGB uint8, same size) or on black."""
    if style == FACESNAP72:
        return draw_control_image(points, height, width, canvas=canvas)
    if style not in OPENPOSE_STYLES:
        raise InvalidInputError(f"unknown landmark style {style!r}", f"use one of {', '.join(STYLES)}")
    return draw_openpose_face(points, height, width, canvas=canvas, **OPENPOSE_STYLES[style])
