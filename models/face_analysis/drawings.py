"""Every control drawing the pack makes, declared once.

A drawing names the point set it reads (the 72 landmarks, or the 5 keypoints), the points it draws, a one-line
summary, and its draw function. The nodes' ``style`` dropdowns, their tooltips and the drawings table of
docs/nodes.md are generated from ``DRAWINGS``; every node draws through ``landmark_views.render``. The conventions
themselves live with their code: landmarks72.py (FaceSnap's own), openpose_face.py (OpenPose and DWPose face
drawings), keypoints5.py (InstantID's keypoints).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np

from ..errors import InvalidInputError
from .keypoints5 import draw_kps, kps5_from_landmarks72, kps5_from_record
from .landmarks72 import draw_control_image
from .openpose_face import draw_openpose_face
from .record import FaceRecord


@dataclass(frozen=True)
class PointSet:
    """Points a drawing reads: taken from 72-point landmarks, or from a detected face's record."""

    name: str
    from_landmarks: Callable[[np.ndarray], np.ndarray]  # (..., 72, 2) -> (..., N, 2)
    from_record: Callable[[FaceRecord], np.ndarray]  # -> (N, 2)


LANDMARKS72 = PointSet("72 landmarks", lambda points: points, lambda record: record.landmarks)
# From a face, the detector's own keypoints (insightface's SCRFD; dlib's come from its 68 points).
KEYPOINTS5 = PointSet("5 keypoints", kps5_from_landmarks72, kps5_from_record)


@dataclass(frozen=True)
class Drawing:
    name: str
    point_set: PointSet
    uses: str  # which points are drawn
    summary: str  # one line: what it looks like and what it is for
    draw: Callable[..., np.ndarray]  # (points of point_set in pixels, height, width, canvas=None) -> RGB uint8


FACESNAP72 = "facesnap72"  # the default of every style input
KPS5 = "instantid_kps5"  # what FaceSnap Draw Keypoints draws
DRAWINGS: dict[str, Drawing] = {d.name: d for d in (
    Drawing(FACESNAP72, LANDMARKS72, "0-71",
            "the pack's own drawing for FFRNet: fixed-colour contours and dots of all 72 points on black.",
            draw_control_image),
    Drawing("openpose_face", LANDMARKS72, "0-69 (iBUG-68, right and left pupil)",
            "points 0-69 (iBUG-68 and the two pupils) as white radius-3 dots on black, pixel for pixel as the "
            "OpenPose preprocessors draw a face (controlnet_aux draw_facepose); dots on row or column 0, or left of "
            "or above the image, are dropped as there.",
            partial(draw_openpose_face, include_head=False)),
    Drawing("openpose_face_head", LANDMARKS72, "0-69, and the head keypoints from 0, 8, 16, 30, 68, 69",
            "openpose_face plus the body's nose, eyes, ears and neck with their sticks (draw_bodypose); the ears "
            "and the neck are estimates from the jaw line.",
            partial(draw_openpose_face, include_head=True)),
    Drawing("openpose_face_head_xinsir", LANDMARKS72, "as openpose_face_head",
            "openpose_face_head with the sticks widened as scale_stick_for_xinsr_cn does, for "
            "xinsir/controlnet-openpose-sdxl-1.0.",
            partial(draw_openpose_face, include_head=True, xinsir_sticks=True)),
    Drawing("dwpose_face", LANDMARKS72, "0-67 (iBUG-68)",
            "DWPose's 68 face points as white radius-3 dots on black, pixel for pixel as the DWPose preprocessor "
            "(easy_dwpose, named on the card of dimitribarbot/controlnet-dwpose-sdxl-1.0) draws them on its canvas; "
            "the face only, no body or hands.",
            partial(draw_openpose_face, include_pupils=False)),
    Drawing(KPS5, KEYPOINTS5, "eyes (68, 69), nose tip (30), mouth corners (48, 54)",
            "InstantID's 5-keypoint image pixel for pixel as its draw_kps (the input of InstantID's and EcomID's "
            "IdentityNet); from faces, the detector's own keypoints.",
            draw_kps),
)}
STYLES = tuple(DRAWINGS)
NOT_MEASURED = ("How the OpenPose and DWPose ControlNets respond to these face drawings was not measured (no "
                "weights here).")


def drawing(style: str) -> Drawing:
    if style not in DRAWINGS:
        raise InvalidInputError(f"unknown landmark style {style!r}", f"use one of {', '.join(STYLES)}")
    return DRAWINGS[style]


def style_tooltip() -> str:
    """The tooltip of a ``style`` input: every drawing's one-line summary."""
    return " ".join([*(f"{d.name}: {d.summary}" for d in DRAWINGS.values()), NOT_MEASURED])


def draw_landmarks(points: np.ndarray, height: int, width: int, style: str = FACESNAP72,
                   canvas: np.ndarray | None = None) -> np.ndarray:
    """(72, 2) landmarks in the canvas's pixels drawn in ``style``: (height, width, 3) RGB uint8, over a copy of
    ``canvas`` (RGB uint8, same size) or on black."""
    chosen = drawing(style)
    return chosen.draw(chosen.point_set.from_landmarks(points), height, width, canvas=canvas)
