"""The pack's 72 landmarks drawn the way the common OpenPose and DWPose preprocessors draw face points.

Matched convention: ``draw_facepose`` and ``draw_bodypose`` of huggingface/controlnet_aux 0.0.10
(``open_pose/util.py``), which Fannovel16/comfyui_controlnet_aux's OpenPose node draws identically (with
``scale_stick_for_xinsr_cn`` off; ``xinsir_sticks=True`` turns that option's limb width on). For one face on a black
canvas the result is pixel-identical to those functions fed the same keypoints normalised by the canvas size
(``x / width``, ``y / height``), which is what their detectors hand them. ``include_pupils=False`` is DWPose's face
drawing (the drawings registry's ``dwpose_face``): the same procedure on DWPose's 68 face points, as easy_dwpose,
IDEA-Research/DWPose's ControlNet annotator and controlnet_aux's ``dwpose`` draw them from float64 keypoints
normalised the same way:

- face: points 0-69 of the 72-point layout are OpenPose-face-70 (iBUG-68, then the right pupil, then the left
  pupil); 70 (glabella) and 71 (forehead) have no OpenPose counterpart and are not drawn. Each point becomes
  ``(int(x / W * W), int(y / H * H))`` (truncation toward zero) and is drawn only when both are above ``EPS`` (0.01),
  i.e. at least 1 pixel: a point on row or column 0, or left of / above the image, is dropped, one right of / below
  the image is handed to OpenCV, which clips its circle. Circle: radius 3, filled, white, ``cv2.LINE_8``.
- head (``include_head``): the COCO-18 body keypoints nose, neck, eyes and ears with their limbs, drawn first and
  under the face points as ``draw_poses`` orders them. Limbs are ``cv2.ellipse2Poly`` sticks 4 px wide in 0.6 x the
  OpenPose colour, keypoints radius-4 discs in full colour; body keypoints have no ``EPS`` test.
- a point that is NaN or infinite, or beyond ``MAX_COORD`` pixels, counts as undetected (the preprocessors' own
  detectors mark those as -1 or leave them out): it and its limbs are not drawn. The convention itself would raise.

Ears and neck are not facial landmarks: ``head_keypoints`` estimates them (documented there). The output is RGB:
OpenPose's colour lists are written as RGB and ``draw_poses`` returns its canvas as an RGB image.
"""

from __future__ import annotations

import math

import numpy as np

from .landmarks72 import NUM_POINTS, blank_or_copy

EPS = 0.01
FACE_POINTS = 70
FACE_RADIUS = 3
FACE_COLOR = (255, 255, 255)
BODY_RADIUS = 4
STICK_WIDTH = 4
LIMB_DIMMING = 0.6
MAX_COORD = float(1 << 24)  # far beyond any canvas; keeps every value OpenCV sees inside int32

# COCO-18 keypoint order used by OpenPose's BODY_18 model and the ControlNet preprocessors.
BODY_PART_INDEX = {"nose": 0, "neck": 1, "right_eye": 14, "left_eye": 15, "right_ear": 16, "left_ear": 17}
BODY_COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)
# The head's limbs as (limb position in OpenPose's 17-limb list, from keypoint, to keypoint); the position picks
# the colour, and the list order is the draw order.
HEAD_LIMBS = ((12, 1, 0), (13, 0, 14), (14, 14, 16), (15, 0, 15), (16, 15, 17))

# Head keypoint estimates (see head_keypoints).
EAR_OUTSET = 0.1
EAR_HIDDEN_BELOW = 0.2
NECK_DROP = 1.9


def openpose_face70(points72: np.ndarray) -> np.ndarray:
    """The OpenPose-face-70 points of a 72-point set: indices 0-69 unchanged (68 = right pupil, 69 = left pupil)."""
    pts = np.asarray(points72, dtype=np.float64)
    if pts.shape != (NUM_POINTS, 2):
        raise ValueError(f"expected ({NUM_POINTS}, 2) landmarks, got {pts.shape}")
    return pts[:FACE_POINTS].copy()


def head_keypoints(points72: np.ndarray) -> np.ndarray:
    """COCO-18 body keypoints (18, 2) in pixels for the head: NaN for parts not derived or not visible.

    - nose = landmark 30 (nose tip); right_eye / left_eye = 68 / 69 (the pupils).
    - ears (estimate): each jaw end (0 right, 16 left) pushed outward along the jaw-end line by ``EAR_OUTSET`` of
      the jaw width. An ear is left out as hidden when the nose tip, projected on that line, lies within
      ``EAR_HIDDEN_BELOW`` of the jaw width from that ear's jaw end (the head is turned away from that side), since
      the preprocessors' detectors drop occluded ears.
    - neck (estimate): OpenPose's neck is the shoulders' midpoint, which a face does not show. It is put straight
      below (image down; the body is assumed upright while the head rolls) the jaw ends' midpoint, by ``NECK_DROP``
      times that midpoint's distance to the chin (landmark 8): about 0.9 of that distance below the chin.
    """
    pts = np.asarray(points72, dtype=np.float64)
    if pts.shape != (NUM_POINTS, 2):
        raise ValueError(f"expected ({NUM_POINTS}, 2) landmarks, got {pts.shape}")
    body = np.full((len(BODY_COLORS), 2), np.nan)
    body[BODY_PART_INDEX["nose"]] = pts[30]
    body[BODY_PART_INDEX["right_eye"]] = pts[68]
    body[BODY_PART_INDEX["left_eye"]] = pts[69]
    right_jaw, left_jaw, chin = pts[0], pts[16], pts[8]
    across = left_jaw - right_jaw
    jaw_width_sq = float(across @ across)
    if np.isfinite(jaw_width_sq) and jaw_width_sq > 1e-12:
        nose_at = float((pts[30] - right_jaw) @ across) / jaw_width_sq  # 0 at the right jaw end, 1 at the left
        if not nose_at < EAR_HIDDEN_BELOW:  # also keeps the ear when the nose tip is NaN (visibility unknown)
            body[BODY_PART_INDEX["right_ear"]] = right_jaw - EAR_OUTSET * across
        if not nose_at > 1.0 - EAR_HIDDEN_BELOW:
            body[BODY_PART_INDEX["left_ear"]] = left_jaw + EAR_OUTSET * across
    jaw_mid = 0.5 * (right_jaw + left_jaw)
    body[BODY_PART_INDEX["neck"]] = jaw_mid + np.array([0.0, NECK_DROP * float(np.hypot(*(chin - jaw_mid)))])
    return body


def _detected(points: np.ndarray) -> np.ndarray:
    return np.isfinite(points).all(axis=1) & (np.abs(points) <= MAX_COORD).all(axis=1)


def _normalised(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixel points as the preprocessors' detectors hand them to the drawing: divided by the canvas size."""
    return points / np.array([float(width), float(height)])


def _draw_face(canvas: np.ndarray, face: np.ndarray) -> None:
    import cv2

    height, width = canvas.shape[:2]
    keep = _detected(face)
    pixels = np.trunc(_normalised(face[keep], height, width) * np.array([width, height])).astype(np.int64)
    for x, y in pixels[(pixels > EPS).all(axis=1)]:
        cv2.circle(canvas, (int(x), int(y)), FACE_RADIUS, FACE_COLOR, thickness=-1)


def _stick_scale(height: int, width: int, xinsir_sticks: bool) -> int:
    """Limb width multiplier of comfyui_controlnet_aux's ``scale_stick_for_xinsr_cn`` option (1 when off)."""
    longest = max(height, width)
    if not xinsir_sticks or longest < 500:
        return 1
    return min(2 + longest // 1000, 7)


def _draw_head(canvas: np.ndarray, body: np.ndarray, xinsir_sticks: bool) -> None:
    import cv2

    height, width = canvas.shape[:2]
    keep = _detected(body)
    scaled = _normalised(body, height, width) * np.array([float(width), float(height)])
    stick = STICK_WIDTH * _stick_scale(height, width, xinsir_sticks)
    for colour_index, start, end in HEAD_LIMBS:
        if not (keep[start] and keep[end]):
            continue
        xs, ys = scaled[[start, end], 0], scaled[[start, end], 1]
        # Same float64 operations as the convention, so lengths and angles truncate to the same integers.
        half_length = int(((ys[0] - ys[1]) ** 2 + (xs[0] - xs[1]) ** 2) ** 0.5 / 2)
        angle = int(math.degrees(math.atan2(ys[0] - ys[1], xs[0] - xs[1])))
        centre = (int(np.mean(xs)), int(np.mean(ys)))
        outline = cv2.ellipse2Poly(centre, (half_length, stick), angle, 0, 360, 1)
        dimmed = [int(float(c) * LIMB_DIMMING) for c in BODY_COLORS[colour_index]]
        cv2.fillConvexPoly(canvas, outline, dimmed)
    for index in np.flatnonzero(keep):
        x, y = (int(v) for v in np.trunc(scaled[index]))
        cv2.circle(canvas, (x, y), BODY_RADIUS, BODY_COLORS[index], thickness=-1)


def draw_openpose_face(points72: np.ndarray, height: int, width: int, include_head: bool = False,
                       include_pupils: bool = True, xinsir_sticks: bool = False,
                       canvas: np.ndarray | None = None) -> np.ndarray:
    """Draw one 72-point set as an OpenPose face (and optionally head) control image, (height, width, 3) RGB uint8.

    ``points72`` are (72, 2) pixel coordinates in the canvas frame. ``include_pupils=False`` draws the 68 iBUG
    points only, as controlnet_aux's DWPose preprocessor does. ``canvas`` (RGB uint8, same size) draws over a copy
    of an image instead of black.
    """
    image = blank_or_copy(height, width, canvas)
    face = openpose_face70(points72)
    if include_head:
        _draw_head(image, head_keypoints(points72), xinsir_sticks)
    _draw_face(image, face if include_pupils else face[:68])
    return image


def preprocessor_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """The (height, width) comfyui_controlnet_aux's OpenPose/DWPose nodes output for a ``resolution`` setting: the
    short side scaled to ``resolution`` and rounded (their ``resize_image_with_pad``). Drawing at this size keeps the
    dots' size relative to the face the same as theirs."""
    scale = float(resolution) / float(min(height, width))
    return int(np.round(float(height) * scale)), int(np.round(float(width) * scale))
