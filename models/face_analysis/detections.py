"""What every backend's ``detect`` shares: the input check, the minimum face size and the result order."""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError
from .record import FaceRecord

MIN_FACE_SIZE = 8.0  # pixels, the shorter side of a detection box; smaller boxes are dropped


def rgb_uint8(image) -> np.ndarray:
    """``image`` as an (H, W, 3) uint8 array, or an error naming what it is instead."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InvalidInputError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}",
                                "convert the image to RGB first")
    return image


def too_small(box) -> bool:
    """Whether an (x1, y1, x2, y2) box is shorter than MIN_FACE_SIZE on a side."""
    return min(box[2] - box[0], box[3] - box[1]) < MIN_FACE_SIZE


def largest_first(records: list[FaceRecord]) -> list[FaceRecord]:
    """Sorted by box area, largest first; equal areas from left to right."""
    return sorted(records, key=lambda r: (-r.area, r.center_x))
