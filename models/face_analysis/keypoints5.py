"""The five facial keypoints InstantID's IdentityNet reads, from every landmark source, and their control image.

Order (insightface's SCRFD / ArcFace template): the eye on the image left, the eye on the image right, the nose
tip, the mouth corner on the image left, the mouth corner on the image right.

The control image is InstantID's ``draw_kps``: on black, four limbs join the eyes and the mouth corners to the nose
(ellipses of half-axes (length / 2, 4) in the colour of their outer point), the limb layer is scaled by 0.6, then
each keypoint gets a filled circle of radius 10 in full colour. Colours (RGB) per keypoint: red, green, blue,
yellow, magenta. Coordinates are truncated to integers, as there, so the pixels are the ones IdentityNet saw.
"""

from __future__ import annotations

import math

import numpy as np

from .landmarks72 import EXTRA_POINTS, NUM_POINTS, blank_or_copy, from_ibug68
from .record import FaceRecord

KPS_COLORS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255))
LIMBS = ((0, 2), (1, 2), (3, 2), (4, 2))  # (outer point, nose): each limb takes its outer point's colour
STICK_WIDTH = 4
LIMB_SCALE = 0.6
POINT_RADIUS = 10
MAX_COORDINATE = 1 << 20  # OpenCV takes int coordinates
# nose tip and mouth corners in the iBUG-68 numbering (shared by the first 68 points of the 72-point layout)
IBUG_NOSE_TIP, IBUG_MOUTH_LEFT, IBUG_MOUTH_RIGHT = 30, 48, 54


def kps5_from_landmarks72(points72: np.ndarray) -> np.ndarray:
    """(..., 72, 2) pack landmarks -> (..., 5, 2): the pupils (eye centres), nose tip and mouth corners."""
    p = np.asarray(points72, np.float32)
    if p.shape[-2:] != (NUM_POINTS, 2):
        raise ValueError(f"expected (..., {NUM_POINTS}, 2) landmarks, got {p.shape}")
    index = [EXTRA_POINTS["right_pupil"], EXTRA_POINTS["left_pupil"], IBUG_NOSE_TIP, IBUG_MOUTH_LEFT, IBUG_MOUTH_RIGHT]
    return p[..., index, :]


def kps5_from_ibug68(points68: np.ndarray) -> np.ndarray:
    """(..., 68, 2) iBUG points -> (..., 5, 2): eye contour centres, nose tip (30), mouth corners (48, 54)."""
    return kps5_from_landmarks72(from_ibug68(points68))


def kps5_from_record(record: FaceRecord) -> np.ndarray:
    """The detector's own five keypoints (insightface's SCRFD; dlib's come from its 68 points)."""
    return np.asarray(record.kps5, np.float32).reshape(5, 2)


def draw_kps(kps: np.ndarray, height: int, width: int, canvas: np.ndarray | None = None) -> np.ndarray:
    """InstantID's keypoint control image, (height, width, 3) uint8 RGB, on black or over a copy of ``canvas``
    (RGB uint8, same size). Non-finite keypoints draw nothing.

    The arithmetic keeps the keypoints' dtype (insightface gives float32), as ``draw_kps`` does, so that lengths,
    angles and centres truncate to the same integers. The limbs are painted, not blended, so scaling their colours
    by 0.6 equals InstantID's scaling of the finished limb layer, on black and under the circles."""
    import cv2

    image = blank_or_copy(height, width, canvas)
    points = np.asarray(kps)
    points = (points if np.issubdtype(points.dtype, np.floating) else points.astype(np.float64)).reshape(-1, 2)
    if points.shape != (5, 2):
        raise ValueError(f"expected 5 keypoints, got {points.shape[0]}")
    if not np.isfinite(points).all():
        return image
    if np.abs(points).max() > MAX_COORDINATE:
        raise ValueError(f"keypoints lie absurdly far outside the {width}x{height} image: {points.tolist()}")
    for outer, inner in LIMBS:
        (x0, y0), (x1, y1) = points[outer], points[inner]
        half_length = int(((x0 - x1) ** 2 + (y0 - y1) ** 2) ** 0.5 / 2)
        angle = int(math.degrees(math.atan2(y0 - y1, x0 - x1)))
        centre = (int((x0 + x1) / 2), int((y0 + y1) / 2))
        polygon = cv2.ellipse2Poly(centre, (half_length, STICK_WIDTH), angle, 0, 360, 1)
        cv2.fillConvexPoly(image, polygon, tuple(int(c * LIMB_SCALE) for c in KPS_COLORS[outer]))
    for (x, y), color in zip(points, KPS_COLORS, strict=True):
        cv2.circle(image, (int(x), int(y)), POINT_RADIUS, color, -1)
    return image
