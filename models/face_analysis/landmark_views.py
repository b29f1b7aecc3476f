"""FaceSet -> LandmarkSet, and LandmarkSet -> control images and overlay previews (the Draw Landmarks node)."""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError
from .landmark_styles import FACESNAP72, draw_landmarks
from .landmarks72 import LandmarkSet
from .align import box_to_crop_matrix, crop_square, transform_points
from .record import FaceSet

FRAMES = ("crop", "image")


def faces_to_landmarks(faces: FaceSet, frame: str = "crop") -> LandmarkSet:
    """The 72-point landmarks of a FaceSet, in its crops' pixel frame ("crop") or its source images' ("image").

    Placeholder records (no face) keep NaN points, which render as an empty black control image.
    """
    if frame not in FRAMES:
        raise InvalidInputError(f"unknown landmark frame {frame!r}", f"use one of {', '.join(FRAMES)}")
    if len(faces) == 0:
        raise InvalidInputError("the face set is empty", "connect the faces output of a Face Crop node")
    if frame == "image" or not faces.crop_boxes or faces.crop_size <= 0:
        points = np.stack([r.landmarks for r in faces.records])
        sizes = [image.shape[:2] for image in faces.images]
        return LandmarkSet(points, sizes, list(faces.images))
    size = faces.crop_size
    points, backgrounds = [], []
    for record, image, box in zip(faces.records, faces.images, faces.crop_boxes):
        points.append(transform_points(record.landmarks, box_to_crop_matrix(box, size)))
        backgrounds.append(crop_square(image, box, size))
    return LandmarkSet(np.stack(points), [(size, size)] * len(points), backgrounds)


def output_size(landmarks: LandmarkSet, width: int = 0, height: int = 0) -> tuple[int, int]:
    """The (height, width) ``render_landmarks`` draws at: ``width`` x ``height`` when both are > 0, otherwise the
    first item's canvas, so that the whole batch has one size (a ComfyUI IMAGE batch must)."""
    if len(landmarks) == 0:
        raise InvalidInputError("the landmark set is empty", "connect a node that outputs landmarks")
    if (width > 0) != (height > 0):
        raise InvalidInputError(f"set both width and height, or neither (got {width} x {height})",
                                "use 0 for both to keep the source size")
    return (height, width) if width > 0 else landmarks.canvas_sizes[0]


def render_landmarks(landmarks: LandmarkSet, width: int = 0, height: int = 0,
                     style: str = FACESNAP72) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Control images (landmarks on black) and overlays (on the photo, or black when there is none), drawn in
    ``style`` (landmark_styles.py) at ``output_size``. Points are scaled from each item's canvas to the output size.
    """
    import cv2

    out_h, out_w = output_size(landmarks, width, height)
    controls, overlays = [], []
    for points, (canvas_h, canvas_w), background in zip(landmarks.points, landmarks.canvas_sizes,
                                                         landmarks.backgrounds):
        scaled = points * np.array([out_w / canvas_w, out_h / canvas_h], np.float32)
        controls.append(draw_landmarks(scaled, out_h, out_w, style))
        if background is None:
            photo = np.zeros((out_h, out_w, 3), np.uint8)
        elif background.shape[:2] == (out_h, out_w):
            photo = background
        else:
            shrinking = out_h * out_w < background.shape[0] * background.shape[1]
            interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
            photo = cv2.resize(background, (out_w, out_h), interpolation=interpolation)
        overlays.append(draw_landmarks(scaled, out_h, out_w, style, canvas=photo))
    return controls, overlays
