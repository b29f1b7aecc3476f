"""Pick faces in a batch of images and cut square crops around them: the logic behind the Face Crop node.

No-face policy "skip": an image without a (selected) face is passed through whole, letterboxed (centred, black bars)
into the square crop, and its FaceSet entry is a *placeholder* record: score 0 and NaN bbox, keypoints and landmarks
(``is_no_face(record)`` is True). So crop ``i`` always belongs to ``faces.records[i]``, and the control image drawn
for a placeholder is plain black (``draw_control_image`` draws nothing for non-finite points).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError, NoFaceError
from .align import crop_square, square_box
from .landmarks72 import NUM_POINTS
from .record import FaceRecord, FaceSet

SELECTIONS = ("largest", "index", "left_to_right", "all")
NO_FACE_POLICIES = ("error", "skip")


def no_face_record(image_index: int, backend: str) -> FaceRecord:
    nan = np.float32(np.nan)
    return FaceRecord(bbox=np.full(4, nan), score=0.0, kps5=np.full((5, 2), nan),
                      landmarks=np.full((NUM_POINTS, 2), nan), backend=backend, image_index=image_index)


def is_no_face(record: FaceRecord) -> bool:
    return not np.isfinite(record.bbox).all()


def select_faces(faces: list[FaceRecord], selection: str, index: int = 0) -> list[FaceRecord]:
    """Faces of one image (largest first, as analyzers return them) -> the selected ones; [] when none qualifies.

    largest: the biggest face. index: the ``index``-th face by size (0 = largest). left_to_right: the ``index``-th
    face counted from the image's left edge. all: every face, left to right.
    """
    if selection not in SELECTIONS:
        raise InvalidInputError(f"unknown face selection {selection!r}", f"use one of {', '.join(SELECTIONS)}")
    by_size = sorted(faces, key=lambda r: (-r.area, r.center_x))
    left_to_right = sorted(faces, key=lambda r: (r.center_x, -r.area))
    if selection == "largest":
        return by_size[:1]
    if selection == "all":
        return left_to_right
    ordered = by_size if selection == "index" else left_to_right
    return [ordered[index]] if 0 <= index < len(ordered) else []


def centred_whole_image_box(height: int, width: int) -> np.ndarray:
    """The square holding the whole image, centred (letterbox)."""
    side = float(max(height, width))
    x1, y1 = (width - side) / 2.0, (height - side) / 2.0
    return np.array([x1, y1, x1 + side, y1 + side], np.float32)


def _missing_face_message(image_index: int, found: int, selection: str, index: int) -> str:
    if found == 0:
        return f"no face found in image {image_index} of the batch"
    return f"image {image_index} of the batch has {found} face(s), so face index {index} ({selection}) does not exist"


@dataclass
class CropPlan:
    """The faces chosen in a batch and the squares to cut around them, before any crop is allocated."""

    records: list[FaceRecord]
    images: list[np.ndarray]
    boxes: list[np.ndarray]
    size: int
    warnings: list[str]

    def __len__(self) -> int:
        return len(self.records)


def plan_crops(analyzer, images: Sequence[np.ndarray], selection: str = "largest", index: int = 0, size: int = 512,
               margin: float = 0.5, on_no_face: str = "error") -> CropPlan:
    """Detect and select faces in a batch of RGB uint8 images, and place a square crop around each.

    Images come out in order, and within an image the faces in selection order. With ``on_no_face="skip"`` an image
    without a (selected) face gets a placeholder record and a letterbox box, and a warning says so.
    """
    if on_no_face not in NO_FACE_POLICIES:
        raise InvalidInputError(f"unknown no-face policy {on_no_face!r}", f"use one of {', '.join(NO_FACE_POLICIES)}")
    if size < 1 or margin < 0:
        raise InvalidInputError(f"crop size must be >= 1 and margin >= 0, got {size} and {margin}",
                                "use a positive size and a non-negative margin")
    if len(images) == 0:
        raise InvalidInputError("the image batch is empty", "connect at least one image")
    plan = CropPlan([], [], [], size, [])
    for image_index, image in enumerate(images):
        faces = analyzer.detect(image, image_index=image_index)
        chosen = select_faces(faces, selection, index)
        if not chosen:
            missing = _missing_face_message(image_index, len(faces), selection, index)
            if on_no_face == "error":
                raise NoFaceError(missing, "use an image with a clearly visible face, change the face "
                                           "selection/index, or set 'if no face' to skip")
            plan.warnings.append(f"{missing}: passed through whole, with no face recorded")
            chosen_pairs = [(no_face_record(image_index, analyzer.name), centred_whole_image_box(*image.shape[:2]))]
        else:
            chosen_pairs = [(record, square_box(record.bbox, margin)) for record in chosen]
        for record, box in chosen_pairs:
            plan.records.append(record)
            plan.images.append(image)
            plan.boxes.append(box)
    return plan


def cut_crops(plan: CropPlan) -> tuple[list[np.ndarray], FaceSet]:
    """The square crops of a plan (parts past the image border are black) and the FaceSet describing them."""
    crops = [crop_square(image, box, plan.size) for image, box in zip(plan.images, plan.boxes, strict=True)]
    return crops, FaceSet(records=list(plan.records), images=list(plan.images), crop_boxes=list(plan.boxes),
                          crop_size=plan.size)

