"""What each judge's network sees: the crop and the pixel scaling its authors used.

* FaceNet (facenet-pytorch): ``extract_face`` on a numpy image. The detection box grows by ``margin`` pixels *of the
  output* (``margin * box_side / (size - margin)`` source pixels, half on each side), is clipped to the image and
  truncated to integers, cut out and resized to 160 x 160 with area interpolation; then MTCNN's fixed
  standardisation ``(x - 127.5) / 128``. facenet-pytorch takes the box from its own MTCNN; here it is the face
  analyzer's box, so crops differ by what the two detectors call the face's extent.
* AdaFace and CurricularFace: a 112 x 112 five-point similarity alignment onto ArcFace's template (AdaFace's
  ``get_reference_facial_points(default_square=True)`` is that template), pixels scaled to ``(x / 255 - 0.5) / 0.5``.
  AdaFace aligns with ``warp_and_crop_face``, whose similarity (matlab_cp2tform's) is the least-squares fit from the
  template to the image keypoints, inverted: with imperfect keypoints it differs from insightface's fit the other way
  round (by ~0.5 % in scale on jittered points), so AdaFace gets its own. CurricularFace trained on insightface's
  MS1MV2 crops and gets insightface's alignment. AdaFace's network takes BGR (its ``to_input`` flips the channels),
  CurricularFace's RGB (it trained on PIL-decoded images). Keypoints in a mirrored order are not supported (AdaFace's
  code would fit a reflection).
"""

from __future__ import annotations

import numpy as np

from ...errors import InvalidInputError
from ..align import ARCFACE_DST, arcface_crop

FACENET_SIZE = 160
ALIGNED_SIZE = 112


def facenet_box(bbox, margin: float, width: int, height: int, size: int = FACENET_SIZE) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = (float(v) for v in bbox)
    grow_x, grow_y = margin * (x2 - x1) / (size - margin), margin * (y2 - y1) / (size - margin)
    return (int(max(x1 - grow_x / 2, 0)), int(max(y1 - grow_y / 2, 0)),
            int(min(x2 + grow_x / 2, width)), int(min(y2 + grow_y / 2, height)))


def facenet_crop(image: np.ndarray, bbox, margin: float = 0.0, size: int = FACENET_SIZE) -> np.ndarray:
    """The (size, size, 3) uint8 crop facenet-pytorch's ``extract_face`` cuts from an RGB uint8 image."""
    import cv2

    height, width = image.shape[:2]
    x1, y1, x2, y2 = facenet_box(bbox, margin, width, height, size)
    if x2 <= x1 or y2 <= y1:
        raise InvalidInputError(f"the face box {[round(float(v), 1) for v in bbox]} lies outside the "
                                f"{width}x{height} image", "pass the face records found in this image")
    return cv2.resize(np.ascontiguousarray(image[y1:y2, x1:x2]), (size, size), interpolation=cv2.INTER_AREA)


def facenet_input(image: np.ndarray, record, margin: float = 0.0) -> np.ndarray:
    """(3, 160, 160) float32: the crop, standardised as facenet-pytorch's ``fixed_image_standardization``."""
    crop = facenet_crop(image, record.bbox, margin).astype(np.float32)
    return ((crop - 127.5) / 128.0).transpose(2, 0, 1)


def adaface_matrix(kps5) -> np.ndarray:
    """The 2x3 image -> crop matrix of AdaFace's ``warp_and_crop_face``: fit template -> image keypoints
    (u = a x + b y + tx, v = -b x + a y + ty, least squares in image pixels), then invert."""
    image = np.asarray(kps5, np.float64).reshape(5, 2)
    template = ARCFACE_DST.astype(np.float64)
    ones, zeros = np.ones(5), np.zeros(5)
    design = np.vstack([np.column_stack([template[:, 0], template[:, 1], ones, zeros]),
                        np.column_stack([template[:, 1], -template[:, 0], zeros, ones])])
    a, b, tx, ty = np.linalg.lstsq(design, np.concatenate([image[:, 0], image[:, 1]]), rcond=None)[0]
    return np.linalg.inv(np.array([[a, b, tx], [-b, a, ty], [0.0, 0.0, 1.0]]))[:2]


def aligned_input(image: np.ndarray, record, bgr: bool) -> np.ndarray:
    """(3, 112, 112) float32 in [-1, 1]: the five-point aligned face; ``bgr``: AdaFace's alignment and channel
    order, else CurricularFace's (insightface's alignment, RGB)."""
    import cv2

    if bgr:
        crop = cv2.warpAffine(image, adaface_matrix(record.kps5), (ALIGNED_SIZE, ALIGNED_SIZE), borderValue=0.0)
    else:
        crop = arcface_crop(image, record.kps5, ALIGNED_SIZE)
    crop = crop.astype(np.float32)
    if bgr:
        crop = crop[..., ::-1]
    return np.ascontiguousarray(((crop / 255.0 - 0.5) / 0.5).transpose(2, 0, 1))
