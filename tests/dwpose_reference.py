"""An independent re-reading of the DWPose preprocessor's face drawing, for the tests of the ``dwpose_face`` style.

Read (not copied) at reallyigor/easy_dwpose 6935d6537ab49c005a00fa7e9ff470542c9f6369, the package the card of
dimitribarbot/controlnet-dwpose-sdxl-1.0 calls (``DWposeDetector(...)(image, detect_resolution=image.width,
include_hands=True, include_face=True)``): ``easy_dwpose/dwpose.py`` (``__call__``, ``_format_pose``),
``easy_dwpose/draw/openpose.py`` (``draw_pose``, ``draw_facepose``) and ``easy_dwpose/body_estimation/utils.py``
(``resize_image``). The face drawing is the same in IDEA-Research/DWPose's ControlNet-v1-1-nightly annotator
(3dca5db79d9f9ffdd378753ddf6ec66535aace88) and huggingface/controlnet_aux's ``dwpose``:

- the pose decoder's keypoints are float64 (float32 SimCC locations divided by the integer input size); the 68
  face points are wholebody keypoints 24-91; every keypoint is divided in place by the canvas width / height;
- each face point is drawn, whatever its score, at ``(int(x * W), int(y * H))`` when both exceed eps = 0.01, as a
  filled white circle of radius 3;
- the canvas is the detector's input: the photo scaled so its short side is ``detect_resolution``, each side then
  rounded to a multiple of 64; the drawing is resized back to the photo's size with ``cv2.resize(drawing, size,
  cv2.INTER_LANCZOS4)``, where the flag lands in ``dst``'s place, so the interpolation is bilinear.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

WHOLEBODY_POINTS = 134
FACE_FIRST, FACE_LAST = 24, 92
EPS = 0.01
FAR = 2.0 ** 24  # the pack counts a point this far out as undetected (OpenCV could not take it)


def face_drawing(face68: np.ndarray, height: int, width: int) -> np.ndarray:
    """DWPose's drawing of one person's face on a black (height, width) canvas, from its 68 face points in pixels.

    A point that is not finite, or absurdly far, is skipped: the pack's rule for undetected points (DWPose's
    detector never hands those over, and ``int()`` would raise)."""
    candidates = np.zeros((1, WHOLEBODY_POINTS, 2))
    candidates[0, FACE_FIRST:FACE_LAST] = np.asarray(face68, np.float64)
    candidates[..., 0] /= float(width)
    candidates[..., 1] /= float(height)
    canvas = np.zeros((height, width, 3), np.uint8)
    for person in candidates[:, FACE_FIRST:FACE_LAST]:
        for x, y in np.array(person):
            if not (math.isfinite(x) and math.isfinite(y)) or max(abs(x * width), abs(y * height)) > FAR:
                continue
            x, y = int(x * width), int(y * height)
            if x > EPS and y > EPS:
                cv2.circle(canvas, (x, y), 3, (255, 255, 255), thickness=-1)
    return canvas


def detect_canvas(height: int, width: int, detect_resolution: int) -> tuple[int, int]:
    """The (height, width) DWPose draws at for a photo of this size (``resize_image``)."""
    k = float(detect_resolution) / min(height, width)
    return int(np.round(height * k / 64)) * 64, int(np.round(width * k / 64)) * 64


def preprocessor_output(face68: np.ndarray, height: int, width: int, detect_resolution: int) -> np.ndarray:
    """What the preprocessor returns for a photo of (height, width) whose face points are ``face68`` (photo pixels):
    the points as found on the resized photo, drawn there, and the drawing resized back (bilinear)."""
    canvas_h, canvas_w = detect_canvas(height, width, detect_resolution)
    found = np.asarray(face68, np.float64) * np.array([canvas_w / width, canvas_h / height])
    return cv2.resize(face_drawing(found, canvas_h, canvas_w), (width, height))
