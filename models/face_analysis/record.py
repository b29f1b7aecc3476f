"""The data every face-analysis backend produces, and what the FACESNAP_FACES socket carries."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class FaceRecord:
    """One detected face, in the pixel coordinates of its source image.

    ``kps5`` follows insightface's order: the eye on the image left, the eye on the image right, nose tip,
    mouth corner on the image left, mouth corner on the image right.
    ``landmarks`` uses the pack's 72-point layout (``models.face_analysis.landmarks72``).
    """

    bbox: np.ndarray  # (4,) float32: x1, y1, x2, y2
    score: float
    kps5: np.ndarray  # (5, 2) float32
    landmarks: np.ndarray  # (72, 2) float32
    backend: str  # "insightface" or "dlib"
    embedding: np.ndarray | None = None  # (512,) L2-normalised ArcFace embedding (insightface only)
    descriptor: np.ndarray | None = None  # (128,) dlib face descriptor (dlib only)
    landmarks_3d: np.ndarray | None = None  # (68, 3) from insightface 1k3d68, x/y in pixels, z in the same scale
    pose: tuple[float, float, float] | None = None  # pitch, yaw, roll in degrees, when the backend estimates it
    image_index: int = 0  # index of the source image in its batch
    embedding_norm: float | None = None  # norm of the raw ArcFace output: embedding * embedding_norm is
    # insightface's Face.embedding, which InstantID's Resampler reads (insightface only)

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.bbox
        return float(max(0.0, x2 - x1) * max(0.0, y2 - y1))

    @property
    def center_x(self) -> float:
        return float(0.5 * (self.bbox[0] + self.bbox[2]))


@dataclass
class FaceSet:
    """Selected faces with the images they came from: the payload of the FACESNAP_FACES socket.

    ``images[i]`` is the RGB uint8 source image of ``records[i]``; ``crop_boxes[i]`` is the square crop
    (x1, y1, x2, y2, may extend past the image) that the crop node cut around it, resized to
    ``crop_size`` x ``crop_size`` pixels (0 when no crop was made).
    """

    records: list[FaceRecord]
    images: list[np.ndarray]
    crop_boxes: list[np.ndarray] = field(default_factory=list)
    crop_size: int = 0

    def __len__(self) -> int:
        return len(self.records)
