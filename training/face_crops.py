"""The augmented square crop around a face (FaceSnap §3.1 scale / rotation / padding, Diff-PC §4.6 filters)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .images import SkipImage

PAD_MODES = {"reflect": 4, "edge": 1, "constant": 0}  # cv2.BORDER_REFLECT_101, BORDER_REPLICATE, BORDER_CONSTANT


@dataclass
class CropConfig:
    size: int = 1024  # output side (the paper trains at 1024²)
    min_face_fraction: float = 0.02  # Diff-PC: face area >= 2 % of the crop
    max_face_fraction: float = 0.30  # upper end of the scale augmentation
    min_short_side: int = 256  # Diff-PC: crops whose source side is below 256 px are removed
    max_rotation: float = 15.0  # degrees, uniform in [-max, max]
    max_shift: float = 0.8  # face centre may move this fraction of the free margin away from the crop centre
    pad_mode: str = "reflect"  # how pixels outside the photo are filled ("padding" augmentation)
    mask_dilation: float = 0.08  # face-mask dilation, as a fraction of the face box side
    face_crop_size: int = 224  # the CLIP input crop
    face_crop_scale: float = 1.3  # CLIP crop side / face box side


@dataclass
class FaceCrop:
    image: np.ndarray  # (size, size, 3) uint8
    mask: np.ndarray  # (size, size) uint8, 0/255
    face: np.ndarray  # (face_crop_size, face_crop_size, 3) uint8
    landmarks: np.ndarray  # (72, 2) in crop pixels
    kps5: np.ndarray  # (5, 2) in crop pixels
    face_kps5: np.ndarray  # (5, 2) in face-crop pixels (aligns the reference for the ID loss)
    bbox: np.ndarray  # (4,) axis-aligned box of the rotated face box, crop pixels
    matrix: np.ndarray  # (2, 3) source -> crop affine
    face_fraction: float
    source_short_side: float
    rotation: float


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    return (pts @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def _box_corners(bbox: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = bbox
    return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], dtype=np.float64)


def face_mask(landmarks: np.ndarray, face_side: float, size: int, dilation: float) -> np.ndarray:
    """Convex hull of the 72 landmarks (jaw to forehead point), dilated so hairline and cheeks are inside."""
    import cv2

    mask = np.zeros((size, size), np.uint8)
    hull = cv2.convexHull(np.round(landmarks).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 255)
    radius = max(1, int(round(dilation * face_side)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(mask, kernel)


def _square_crop(image: np.ndarray, center: np.ndarray, side: float, out: int) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    scale = out / side
    m = np.array([[scale, 0, out / 2 - scale * center[0]], [0, scale, out / 2 - scale * center[1]]])
    return cv2.warpAffine(image, m, (out, out), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT_101), m


def make_crop(rgb: np.ndarray, bbox: np.ndarray, landmarks: np.ndarray, kps5: np.ndarray, cfg: CropConfig,
              rng: np.random.Generator) -> FaceCrop:
    """Sample one augmented crop, or raise ``SkipImage`` when the photo cannot satisfy the filters."""
    import cv2

    height, width = rgb.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in bbox)
    face_w, face_h = max(1.0, x2 - x1), max(1.0, y2 - y1)
    face_area = face_w * face_h
    # Scale: the face covers a log-uniform fraction of the crop; the crop must keep >= min_short_side source pixels.
    upper = min(cfg.max_face_fraction, face_area / float(cfg.min_short_side) ** 2)
    if upper < cfg.min_face_fraction:
        raise SkipImage("face too small", f"face box {face_w:.0f}x{face_h:.0f} px")
    fraction = (float(np.exp(rng.uniform(np.log(cfg.min_face_fraction * 1.05), np.log(upper))))
                if upper > cfg.min_face_fraction * 1.05 else upper)
    side = np.sqrt(face_area / fraction)
    free = max(0.0, side - max(face_w, face_h)) / 2
    center = np.array([(x1 + x2) / 2, (y1 + y2) / 2]) + rng.uniform(-1, 1, 2) * cfg.max_shift * free
    # Padding: the part of the crop that lies on the photo must itself keep a short side >= min_short_side.
    cover_w = min(width, center[0] + side / 2) - max(0.0, center[0] - side / 2)
    cover_h = min(height, center[1] + side / 2) - max(0.0, center[1] - side / 2)
    short_side = float(min(cover_w, cover_h))
    if short_side < cfg.min_short_side:
        raise SkipImage("crop short side < 256" if cfg.min_short_side == 256 else "crop too small",
                        f"{short_side:.0f} px on the photo")
    rotation = float(rng.uniform(-cfg.max_rotation, cfg.max_rotation))
    matrix = cv2.getRotationMatrix2D((float(center[0]), float(center[1])), rotation, cfg.size / side)
    matrix[:, 2] += cfg.size / 2 - center
    image = cv2.warpAffine(rgb, matrix, (cfg.size, cfg.size),
                           flags=cv2.INTER_AREA if side > cfg.size else cv2.INTER_CUBIC,
                           borderMode=PAD_MODES[cfg.pad_mode])
    pts = _apply(matrix, landmarks)
    corners = _apply(matrix, _box_corners(bbox))
    new_bbox = np.concatenate([corners.min(0), corners.max(0)]).astype(np.float32)
    scale = cfg.size / side
    face_fraction = face_area * scale * scale / float(cfg.size * cfg.size)
    if face_fraction < cfg.min_face_fraction:
        raise SkipImage("face < 2% of crop", f"{100 * face_fraction:.2f} %")
    face_side = max(face_w, face_h) * scale
    mask = face_mask(pts, face_side, cfg.size, cfg.mask_dilation)
    face_center = (new_bbox[:2] + new_bbox[2:]) / 2
    face, face_matrix = _square_crop(image, face_center, cfg.face_crop_scale * face_side, cfg.face_crop_size)
    crop_kps = _apply(matrix, kps5)
    return FaceCrop(image, mask, face, pts, crop_kps, _apply(face_matrix, crop_kps), new_bbox,
                    matrix.astype(np.float32), face_fraction, short_side, rotation)
