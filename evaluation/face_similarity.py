"""Likeness: cosine similarity of face-recognition features of a generated face and the reference faces.

Each face backend has its own feature and its own metric name, and the two are never mixed:
``FaceSim`` is the cosine of antelopev2 glintr100 ArcFace embeddings (insightface backend), as Diff-PC's Sim
(FaceSnap's Table 1 measured its FaceSim with FaceNet: not comparable); ``FaceSim-dlib`` is the cosine of dlib's 128-D descriptors, a fallback on a different scale
(the six different people of insightface's t1.jpg have dlib cosines of 0.81-0.91 to each other), never comparable
with FaceSim.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..models.errors import InvalidInputError
from ..models.face_analysis.record import FaceRecord, FaceSet
from ..models.face_analysis.select import is_no_face

METRIC_NAMES = {"insightface": "FaceSim", "dlib": "FaceSim-dlib"}
FEATURE_NAMES = {"insightface": "ArcFace glintr100 embedding", "dlib": "dlib 128-D face descriptor"}
NO_FACE_SCORE = -1.0  # the lowest cosine: a faceless image ranks last


def metric_name(backend: str) -> str:
    if backend not in METRIC_NAMES:
        raise InvalidInputError(f"unknown face backend {backend!r}", f"use one of {', '.join(METRIC_NAMES)}")
    return METRIC_NAMES[backend]


def identity_feature(record: FaceRecord) -> np.ndarray:
    """The L2-normalised recognition feature of ``record``'s own backend (ArcFace or dlib descriptor)."""
    raw = record.embedding if record.backend == "insightface" else record.descriptor
    if raw is None:
        raise InvalidInputError(f"a {record.backend} face record carries no {FEATURE_NAMES[record.backend]}",
                                "detect the faces with identity features switched on")
    feature = np.asarray(raw, np.float64).reshape(-1)
    return feature / max(float(np.linalg.norm(feature)), 1e-12)


def reference_features(faces: FaceSet, backend: str) -> list[np.ndarray]:
    """Features of the real reference faces of a FaceSet (skipped placeholders are left out)."""
    records = [r for r in faces.records if not is_no_face(r)]
    if not records:
        raise InvalidInputError("the reference faces hold no face (empty, or only skipped images)",
                                "connect a FaceSnap Face Crop that found at least one reference face")
    other = sorted({r.backend for r in records} - {backend})
    if other:
        raise InvalidInputError(
            f"the reference faces were found by the {', '.join(other)} face analyzer but the images are scored with "
            f"{backend}; their features ({FEATURE_NAMES.get(other[0], other[0])} vs {FEATURE_NAMES[backend]}) "
            "cannot be compared", "connect the same FaceSnap Face Analyzer Loader to the Face Crop and this node")
    return [identity_feature(r) for r in records]


def likeness(feature: np.ndarray, references: Sequence[np.ndarray]) -> float:
    """Mean cosine similarity of one face feature to every reference feature (all L2-normalised)."""
    return float(np.mean([float(feature @ ref) for ref in references]))


@dataclass
class ImageLikeness:
    index: int
    score: float | None  # None: no face found
    faces_found: int


def score_images(analyzer, images: Sequence[np.ndarray], references: Sequence[np.ndarray]) -> list[ImageLikeness]:
    """Likeness of the largest face of each RGB uint8 image to the references."""
    results = []
    for index, image in enumerate(images):
        faces = analyzer.detect(image, image_index=index)
        score = likeness(identity_feature(faces[0]), references) if faces else None
        results.append(ImageLikeness(index, score, len(faces)))
    return results


def format_report(results: Sequence[ImageLikeness], backend: str, references: int) -> str:
    """A plain-text ranking: best image first, with the metric named."""
    lines = [f"{metric_name(backend)}: mean cosine of the {FEATURE_NAMES[backend]} to {references} reference "
             f"face(s); higher is more alike"]
    ranked = sorted(results, key=lambda r: -np.inf if r.score is None else r.score, reverse=True)
    for rank, result in enumerate(ranked, start=1):
        if result.score is None:
            lines.append(f"{rank}. image {result.index}: no face found")
        else:
            extra = f" (largest of {result.faces_found} faces)" if result.faces_found > 1 else ""
            lines.append(f"{rank}. image {result.index}: {result.score:.3f}{extra}")
    return "\n".join(lines)
