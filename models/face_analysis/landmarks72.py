"""The pack's 72-point facial landmark layout and its deterministic control-image renderer.

The FaceSnap paper conditions its FFRNet on "72-point landmarks" but does not publish the layout, so this one
is the pack's own: the 68 iBUG / Multi-PIE points in their usual order, followed by four named extras.

====  =================  =============================================================
 idx  name               definition
====  =================  =============================================================
0-16  jaw                jaw contour, from the subject's right ear to the left ear
17-21 right_brow         subject's right eyebrow (image left in a frontal photo)
22-26 left_brow          subject's left eyebrow
27-30 nose_bridge        top of the bridge down to the nose tip
31-35 nose_lower         lower nose, right alar to left alar
36-41 right_eye          subject's right eye, closed contour
42-47 left_eye           subject's left eye, closed contour
48-59 outer_lips         outer lip contour, closed
60-67 inner_lips         inner lip contour, closed
68    right_pupil        centre of the subject's right eye (mean of 36-41)
69    left_pupil         centre of the subject's left eye (mean of 42-47)
70    glabella           midpoint of the inner brow ends (21, 22)
71    forehead           glabella moved up by 0.6 x the bridge length (27 -> 30)
====  =================  =============================================================

Points 0-69 are OpenPose-face-70 compatible. Every detector or 3DMM in the pack maps into this layout through
``from_ibug68``; 3DMMs may supply their own 3D extras instead of the estimated ones.
"""

from __future__ import annotations

import numpy as np

NUM_POINTS = 72

REGIONS: dict[str, tuple[range, bool]] = {
    # name: (indices, closed polyline)
    "jaw": (range(0, 17), False),
    "right_brow": (range(17, 22), False),
    "left_brow": (range(22, 27), False),
    "nose_bridge": (range(27, 31), False),
    "nose_lower": (range(31, 36), False),
    "right_eye": (range(36, 42), True),
    "left_eye": (range(42, 48), True),
    "outer_lips": (range(48, 60), True),
    "inner_lips": (range(60, 68), True),
}

EXTRA_POINTS = {"right_pupil": 68, "left_pupil": 69, "glabella": 70, "forehead": 71}

# BGR-free: colours are RGB tuples. Fixed forever, since trained FFRNet weights depend on them.
REGION_COLORS: dict[str, tuple[int, int, int]] = {
    "jaw": (255, 255, 255),
    "right_brow": (255, 128, 0),
    "left_brow": (255, 200, 0),
    "nose_bridge": (0, 255, 0),
    "nose_lower": (0, 200, 120),
    "right_eye": (0, 128, 255),
    "left_eye": (0, 200, 255),
    "outer_lips": (255, 0, 0),
    "inner_lips": (255, 0, 160),
}
EXTRA_COLORS: dict[str, tuple[int, int, int]] = {
    "right_pupil": (255, 0, 255),
    "left_pupil": (180, 0, 255),
    "glabella": (255, 255, 0),
    "forehead": (128, 255, 255),
}

FOREHEAD_SCALE = 0.6


def extras_from_ibug68(points68: np.ndarray) -> np.ndarray:
    """The four extra points estimated from 68 landmarks. Works for (..., 68, D) arrays with D = 2 or 3."""
    p = np.asarray(points68, dtype=np.float32)
    right_pupil = p[..., 36:42, :].mean(axis=-2)
    left_pupil = p[..., 42:48, :].mean(axis=-2)
    glabella = 0.5 * (p[..., 21, :] + p[..., 22, :])
    bridge = p[..., 30, :] - p[..., 27, :]
    forehead = glabella - FOREHEAD_SCALE * bridge
    return np.stack([right_pupil, left_pupil, glabella, forehead], axis=-2)


def from_ibug68(points68: np.ndarray, extras: np.ndarray | None = None) -> np.ndarray:
    """Build the 72-point layout from iBUG-68 points, estimating the extras unless given."""
    p = np.asarray(points68, dtype=np.float32)
    if p.shape[-2] != 68:
        raise ValueError(f"expected 68 points, got shape {p.shape}")
    if extras is None:
        extras = extras_from_ibug68(p)
    return np.concatenate([p, np.asarray(extras, dtype=np.float32)], axis=-2)


def blank_or_copy(height: int, width: int, canvas: np.ndarray | None = None) -> np.ndarray:
    """The image a drawing starts from: black (height, width, 3) RGB uint8, or a copy of ``canvas`` of that shape."""
    if height < 1 or width < 1:
        raise ValueError(f"canvas size must be positive, got {height}x{width}")
    if canvas is None:
        return np.zeros((height, width, 3), np.uint8)
    if canvas.dtype != np.uint8 or canvas.shape != (height, width, 3):
        raise ValueError(f"canvas must be ({height}, {width}, 3) uint8, got {canvas.shape} {canvas.dtype}")
    return np.ascontiguousarray(canvas).copy()


def _stroke_sizes(height: int, width: int) -> tuple[int, int]:
    scale = max(height, width) / 512.0
    return max(1, int(round(2 * scale))), max(1, int(round(3 * scale)))


def draw_control_image(points: np.ndarray, height: int, width: int, canvas: np.ndarray | None = None) -> np.ndarray:
    """Render 72 landmarks as the FFRNet control image: coloured polylines and points on black.

    ``points`` are (72, 2) pixel coordinates in the canvas frame. Returns (height, width, 3) uint8 RGB. The result is a
    pure function of the inputs (no anti-aliasing, integer rounding), so training and inference see identical pixels.
    Pass ``canvas`` (an RGB uint8 image of the same size) to draw over a photo instead of black.
    """
    import cv2

    pts = np.asarray(points, dtype=np.float64)
    if pts.shape != (NUM_POINTS, 2):
        raise ValueError(f"expected ({NUM_POINTS}, 2) points, got {pts.shape}")
    image = blank_or_copy(height, width, canvas)
    if not np.isfinite(pts).all():
        return image
    thickness, radius = _stroke_sizes(height, width)
    ipts = np.round(pts).astype(np.int32)
    for name, (idx, closed) in REGIONS.items():
        poly = ipts[list(idx)].reshape(-1, 1, 2)
        cv2.polylines(image, [poly], closed, REGION_COLORS[name], thickness, lineType=cv2.LINE_8)
    for name, (idx, _) in REGIONS.items():
        for x, y in ipts[list(idx)]:
            cv2.circle(image, (int(x), int(y)), radius, REGION_COLORS[name], -1, lineType=cv2.LINE_8)
    for name, i in EXTRA_POINTS.items():
        x, y = ipts[i]
        cv2.circle(image, (int(x), int(y)), radius + 1, EXTRA_COLORS[name], -1, lineType=cv2.LINE_8)
    return image


class LandmarkSet:
    """The payload of the FACESNAP_LANDMARKS socket: a batch of 72-point landmark sets and their canvases.

    ``points`` is (B, 72, 2) float32 in the pixel coordinates of a (height, width) canvas; ``canvas_sizes`` gives
    that (height, width) per item; ``backgrounds`` optionally holds the RGB uint8 photo each set was measured on
    (used only for overlay previews).
    """

    def __init__(self, points: np.ndarray, canvas_sizes: list[tuple[int, int]],
                 backgrounds: list[np.ndarray | None] | None = None):
        pts = np.asarray(points, dtype=np.float32)
        if pts.ndim != 3 or pts.shape[1:] != (NUM_POINTS, 2):
            raise ValueError(f"expected (B, {NUM_POINTS}, 2) landmarks, got {pts.shape}")
        if len(canvas_sizes) != len(pts):
            raise ValueError("one canvas size per landmark set is required")
        self.points = pts
        self.canvas_sizes = [(int(h), int(w)) for h, w in canvas_sizes]
        self.backgrounds = list(backgrounds) if backgrounds is not None else [None] * len(pts)

    def __len__(self) -> int:
        return len(self.points)
