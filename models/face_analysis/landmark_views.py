"""The one rendering path of every control drawing (drawings.py): a drawing's points on their canvases, from faces
(crop or image frame) or from a LandmarkSet, drawn at one output size as control images and overlay previews."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import InvalidInputError
from .align import box_to_crop_matrix, crop_square, transform_points
from .drawings import FACESNAP72, LANDMARKS72, Drawing, PointSet, drawing
from .landmarks72 import LandmarkSet
from .record import FaceSet

FRAMES = ("crop", "image")


class CanvasPoints(NamedTuple):
    """Point sets (B, N, 2) float32 in their canvases' pixels, each canvas's (height, width), and its photo (or
    None)."""

    points: np.ndarray
    canvas_sizes: list[tuple[int, int]]
    backgrounds: list[np.ndarray | None]


def faces_to_points(faces: FaceSet, frame: str = "crop", point_set: PointSet = LANDMARKS72) -> CanvasPoints:
    """A FaceSet's points of ``point_set``, in its crops' pixel frame ("crop") or its source images' ("image").

    Placeholder records (no face) keep NaN points, which draw nothing.
    """
    if frame not in FRAMES:
        raise InvalidInputError(f"unknown landmark frame {frame!r}", f"use one of {', '.join(FRAMES)}")
    if len(faces) == 0:
        raise InvalidInputError("the face set is empty", "connect the faces output of a Face Crop node")
    if frame == "image" or not faces.crop_boxes or faces.crop_size <= 0:
        points = np.stack([point_set.from_record(r) for r in faces.records]).astype(np.float32)
        return CanvasPoints(points, [image.shape[:2] for image in faces.images], list(faces.images))
    size = faces.crop_size
    points, backgrounds = [], []
    for record, image, box in zip(faces.records, faces.images, faces.crop_boxes, strict=True):
        points.append(transform_points(point_set.from_record(record), box_to_crop_matrix(box, size)))
        backgrounds.append(crop_square(image, box, size))
    return CanvasPoints(np.stack(points), [(size, size)] * len(points), backgrounds)


def faces_to_landmarks(faces: FaceSet, frame: str = "crop") -> LandmarkSet:
    """The 72-point landmarks of a FaceSet, in its crops' pixel frame ("crop") or its source images' ("image")."""
    return LandmarkSet(*faces_to_points(faces, frame))


def drawing_points(drawing: Drawing, faces: FaceSet | None = None, landmarks: LandmarkSet | None = None,
                   frame: str = "crop") -> CanvasPoints:
    """The points ``drawing`` reads, from faces when given, else from landmarks."""
    if faces is not None:
        return faces_to_points(faces, frame, drawing.point_set)
    return CanvasPoints(drawing.point_set.from_landmarks(landmarks.points), landmarks.canvas_sizes,
                        landmarks.backgrounds)


def output_size(view: CanvasPoints | LandmarkSet, width: int = 0, height: int = 0) -> tuple[int, int]:
    """The (height, width) ``render`` draws at: ``width`` x ``height`` when both are > 0, otherwise the first item's
    canvas, so that the whole batch has one size (a ComfyUI IMAGE batch must)."""
    if len(view.points) == 0:
        raise InvalidInputError("the landmark set is empty", "connect a node that outputs landmarks")
    if (width > 0) != (height > 0):
        raise InvalidInputError(f"set both width and height, or neither (got {width} x {height})",
                                "use 0 for both to keep the source size")
    return (height, width) if width > 0 else view.canvas_sizes[0]


def _photo(background: np.ndarray | None, height: int, width: int) -> np.ndarray:
    """The overlay's background at the output size: the photo (area-averaged when shrunk), or black."""
    import cv2

    if background is None:
        return np.zeros((height, width, 3), np.uint8)
    if background.shape[:2] == (height, width):
        return background
    shrinking = height * width < background.shape[0] * background.shape[1]
    return cv2.resize(background, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def render(view: CanvasPoints | LandmarkSet, drawing: Drawing, width: int = 0,
           height: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Control images (on black) and overlays (over the photo, or black when there is none) of ``drawing`` at
    ``output_size``. ``view`` holds the drawing's points; they are scaled from each item's canvas to the output."""
    out_h, out_w = output_size(view, width, height)
    controls, overlays = [], []
    for points, (canvas_h, canvas_w), background in zip(view.points, view.canvas_sizes, view.backgrounds, strict=True):
        scaled = points * np.array([out_w / canvas_w, out_h / canvas_h], np.float32)
        controls.append(drawing.draw(scaled, out_h, out_w))
        overlays.append(drawing.draw(scaled, out_h, out_w, canvas=_photo(background, out_h, out_w)))
    return controls, overlays


def render_landmarks(landmarks: LandmarkSet, width: int = 0, height: int = 0,
                     style: str = FACESNAP72) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``render`` of a LandmarkSet in the drawing named ``style``."""
    chosen = drawing(style)
    return render(drawing_points(chosen, landmarks=landmarks), chosen, width, height)
