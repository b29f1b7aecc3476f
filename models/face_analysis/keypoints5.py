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

from ..errors import InvalidInputError
from .landmarks72 import EXTRA_POINTS, NUM_POINTS, from_ibug68
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


def draw_kps(kps: np.ndarray, height: int, width: int) -> np.ndarray:
    """InstantID's keypoint control image, (height, width, 3) uint8 RGB. Non-finite keypoints give black.

    The arithmetic keeps the keypoints' dtype (insightface gives float32), as ``draw_kps`` does, so that lengths,
    angles and centres truncate to the same integers."""
    import cv2

    image = np.zeros((height, width, 3), np.uint8)
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
        # fillConvexPoly paints without blending, so scaling the colour equals scaling the finished layer
        cv2.fillConvexPoly(image, polygon, tuple(int(c * LIMB_SCALE) for c in KPS_COLORS[outer]))
    for (x, y), color in zip(points, KPS_COLORS):
        cv2.circle(image, (int(x), int(y)), POINT_RADIUS, color, -1)
    return image


def faces_to_kps5(faces, frame: str = "crop") -> tuple[np.ndarray, list[tuple[int, int]], list]:
    """The detector keypoints of a FaceSet (B, 5, 2) in its crops' pixel frame ("crop") or its source images'
    ("image"), with each item's canvas (height, width) and photo. Placeholders (no face) keep NaN: a black image."""
    from .align import box_to_crop_matrix, transform_points
    from .landmark_views import faces_to_landmarks

    view = faces_to_landmarks(faces, frame)  # checks the frame; the same canvases and photos as the landmarks
    points = np.stack([kps5_from_record(r) for r in faces.records])
    if frame == "crop" and faces.crop_boxes and faces.crop_size > 0:
        points = np.stack([transform_points(p, box_to_crop_matrix(box, faces.crop_size))
                           for p, box in zip(points, faces.crop_boxes)]).astype(np.float32)
    return points, view.canvas_sizes, view.backgrounds


def render_kps5(points: np.ndarray, canvas_sizes, backgrounds, width: int = 0,
                height: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``draw_kps`` control images and previews over the photos (black where there is none) for (B, 5, 2) keypoints
    on their canvases. The size is ``width`` x ``height`` when both are > 0, else the first canvas; points are scaled
    from each canvas to it, so the whole batch has one size."""
    import cv2

    if len(points) == 0:
        raise InvalidInputError("no keypoints to draw", "connect faces or landmarks with at least one item")
    if (width > 0) != (height > 0):
        raise InvalidInputError(f"set both width and height, or neither (got {width} x {height})",
                                "use 0 for both to keep the source size")
    out_h, out_w = (height, width) if width > 0 else canvas_sizes[0]
    controls, overlays = [], []
    for kps, (canvas_h, canvas_w), photo in zip(points, canvas_sizes, backgrounds):
        scaled = np.asarray(kps, np.float32) * np.array([out_w / canvas_w, out_h / canvas_h], np.float32)
        control = draw_kps(scaled, out_h, out_w)
        if photo is None:
            photo = np.zeros_like(control)
        elif photo.shape[:2] != (out_h, out_w):
            photo = cv2.resize(photo, (out_w, out_h), interpolation=cv2.INTER_AREA)
        controls.append(control)
        overlays.append(np.where(control.any(axis=-1, keepdims=True), control, photo))
    return controls, overlays
