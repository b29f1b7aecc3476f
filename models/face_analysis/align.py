"""Geometry shared by the face backends and nodes: ArcFace alignment, square crop boxes, padded crops."""

from __future__ import annotations

import numpy as np

# insightface's arcface_dst: where the 5 keypoints land in a 112x112 ArcFace crop.
ARCFACE_DST = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama 1991, no reflection) mapping ``src`` onto ``dst``; returns a 2x3 matrix.

    Computed step by step as skimage's ``SimilarityTransform.estimate`` (which insightface's ``norm_crop`` uses),
    in the points' own dtype, so float32 keypoints give bit-identical matrices and crops.
    """
    src, dst = np.asarray(src), np.asarray(dst)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_demean, dst_demean = src - src_mean, dst - dst_mean
    cov = dst_demean.T @ src_demean / src.shape[0]
    d = np.ones(2, dtype=np.float64)
    if np.linalg.det(cov) < 0:
        d[1] = -1
    u, s, vt = np.linalg.svd(cov)
    matrix = np.eye(3, dtype=np.float64)
    matrix[:2, :2] = u @ np.diag(d) @ vt
    scale = 1.0 / src_demean.var(axis=0).sum() * (s @ d)  # this operation order, for identical rounding
    matrix[:2, 2] = dst_mean - scale * (matrix[:2, :2] @ src_mean.T)
    matrix[:2, :2] *= scale
    return matrix[:2]


def arcface_matrix(kps5: np.ndarray, size: int = 112) -> np.ndarray:
    """The 2x3 matrix insightface's ``estimate_norm`` computes for a ``size`` x ``size`` ArcFace crop."""
    if size % 112 == 0:
        dst = ARCFACE_DST * (size / 112.0)
    elif size % 128 == 0:
        dst = ARCFACE_DST * (size / 128.0)
        dst[:, 0] += 8.0 * size / 128.0
    else:
        raise ValueError(f"ArcFace crops are 112*k or 128*k pixels, got {size}")
    return similarity_transform(np.asarray(kps5, np.float32).reshape(5, 2), dst)


def arcface_crop(image: np.ndarray, kps5: np.ndarray, size: int = 112) -> np.ndarray:
    """Align a face by its 5 keypoints exactly as insightface's ``norm_crop`` does (same channels as ``image``)."""
    import cv2

    return cv2.warpAffine(image, arcface_matrix(kps5, size), (size, size), borderValue=0.0)


# facexlib's FaceRestoreHelper template: where the 5 keypoints land in a 512 x 512 FFHQ-style crop (PuLID's input).
FFHQ_512 = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                     [201.26117, 371.41043], [313.08905, 371.15118]])
FFHQ_BORDER_RGB = (132, 133, 135)  # facexlib fills with (135, 133, 132) in its BGR images


def ffhq_matrix(kps5: np.ndarray, size: int = 512) -> np.ndarray | None:
    """The 2x3 similarity facexlib's ``align_warp_face`` estimates: OpenCV's robust (LMedS) partial affine fit of
    the keypoints (float32, as detectors give them) onto ``FFHQ_512`` scaled to ``size``; None when degenerate."""
    import cv2

    points = np.asarray(kps5, np.float32).reshape(5, 2)
    return cv2.estimateAffinePartial2D(points, FFHQ_512 * (size / 512.0), method=cv2.LMEDS)[0]


def ffhq_crop(image: np.ndarray, kps5: np.ndarray, size: int = 512) -> np.ndarray:
    """A face aligned as facexlib's ``FaceRestoreHelper(face_size=size)`` aligns it (bilinear, grey border), from
    an RGB image. Raises ValueError when the keypoints are degenerate."""
    import cv2

    matrix = ffhq_matrix(kps5, size)
    if matrix is None:
        raise ValueError(f"no similarity maps these keypoints onto the face template: {np.asarray(kps5).tolist()}")
    return cv2.warpAffine(image, matrix, (size, size), borderMode=cv2.BORDER_CONSTANT, borderValue=FFHQ_BORDER_RGB)


def square_box(bbox: np.ndarray, margin: float) -> np.ndarray:
    """A square around ``bbox`` (x1, y1, x2, y2): side = longer bbox side x (1 + 2 * margin), same centre."""
    x1, y1, x2, y2 = (float(v) for v in bbox)
    side = max(x2 - x1, y2 - y1, 1.0) * (1.0 + 2.0 * margin)
    cx, cy = 0.5 * (x1 + x2), 0.5 * (y1 + y2)
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], np.float32)


def box_to_crop_matrix(box: np.ndarray, size: int) -> np.ndarray:
    """2x3 matrix mapping source pixels into a ``size`` x ``size`` crop of the square ``box``."""
    x1, y1, x2, _ = (float(v) for v in box)
    scale = size / max(x2 - x1, 1e-6)
    return np.array([[scale, 0.0, -x1 * scale], [0.0, scale, -y1 * scale]])


def crop_square(image: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Cut ``box`` out of ``image`` and resize it to ``size``; parts outside the image are black. Deterministic.

    When shrinking, the image is first reduced with area averaging so large photos do not alias.
    """
    import cv2

    matrix = box_to_crop_matrix(box, size)
    scale = matrix[0, 0]
    if scale < 1.0:
        height, width = image.shape[:2]
        small = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                           interpolation=cv2.INTER_AREA)
        fx, fy = small.shape[1] / width, small.shape[0] / height
        matrix = np.array([[scale / fx, 0.0, matrix[0, 2]], [0.0, scale / fy, matrix[1, 2]]])
        image = small
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to (..., 2) points."""
    pts = np.asarray(points, np.float64)
    return (pts @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)
