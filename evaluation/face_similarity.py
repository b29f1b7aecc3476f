"""Likeness: cosine similarity of face-recognition features of a generated face and the reference faces, and the
copy-paste score.

Each judge (``models/face_analysis/recognisers``) has its own feature and its own column, never mixed:
``FaceSim-Arc`` (antelopev2 glintr100 ArcFace, Diff-PC's Sim), ``FaceSim-Cur`` (CurricularFace IR-101, PuLID's),
``FaceSim-Ada`` (AdaFace IR-101, MultiID-Bench's), ``FaceSim-FaceNet`` (FaceSnap's Table 1) and ``FaceSim-dlib``
(dlib's 128-D descriptor, a fallback on a different scale: the six different people of insightface's t1.jpg have
dlib cosines of 0.81-0.91 to each other). Without a judge, a face analyzer's own feature is used: ArcFace for
insightface, the descriptor for dlib.

Copy-paste: the likeness to the reference photos the generator saw minus the highest cosine to other photos of the
same person that it did not see. Above 0 the face is closer to the given photo than to the person's other photos:
the generator copied the photo rather than the person.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..models.errors import InvalidInputError
from ..models.face_analysis.recognisers import JUDGES
from ..models.face_analysis.recognisers.specs import JudgeSpec
from ..models.face_analysis.record import FaceRecord, FaceSet
from ..models.face_analysis.select import is_no_face

ANALYZER_JUDGES = {"insightface": "ArcFace", "dlib": "dlib"}  # the judge whose feature each analyzer computes
NO_FACE_SCORE = -1.0  # the lowest cosine: a faceless image ranks last


def analyzer_judge(backend: str) -> JudgeSpec:
    if backend not in ANALYZER_JUDGES:
        raise InvalidInputError(f"unknown face backend {backend!r}", f"use one of {', '.join(ANALYZER_JUDGES)}")
    return JUDGES[ANALYZER_JUDGES[backend]]


def identity_feature(record: FaceRecord) -> np.ndarray:
    """The L2-normalised recognition feature of ``record``'s own backend (ArcFace or dlib descriptor)."""
    raw = record.embedding if record.backend == "insightface" else record.descriptor
    if raw is None:
        raise InvalidInputError(f"a {record.backend} face record carries no {analyzer_judge(record.backend).feature}",
                                "detect the faces with identity features switched on")
    feature = np.asarray(raw, np.float64).reshape(-1)
    return feature / max(float(np.linalg.norm(feature)), 1e-12)


def reference_features(faces: FaceSet, backend: str, judge=None) -> list[np.ndarray]:
    """Features of the real reference faces of a FaceSet (skipped placeholders are left out): ``judge``'s, or the
    records' own when it is None (then they must come from the ``backend`` analyzer)."""
    real = [i for i, r in enumerate(faces.records) if not is_no_face(r)]
    if not real:
        raise InvalidInputError("the reference faces hold no face (empty, or only skipped images)",
                                "connect a FaceSnap Face Crop that found at least one reference face")
    if judge is not None:
        return list(judge.features([(faces.images[i], faces.records[i]) for i in real]))
    records = [faces.records[i] for i in real]
    other = sorted({r.backend for r in records} - {backend})
    if other:
        theirs, ours = analyzer_judge(other[0]).feature, analyzer_judge(backend).feature
        raise InvalidInputError(
            f"the reference faces were found by the {', '.join(other)} face analyzer but the images are scored with "
            f"{backend}; their features ({theirs} vs {ours}) cannot be compared",
            "connect the same FaceSnap Face Analyzer Loader to the Face Crop and this node, or pick a judge")
    return [identity_feature(r) for r in records]


def likeness(feature: np.ndarray, references: Sequence[np.ndarray]) -> float:
    """Mean cosine similarity of one face feature to every reference feature (all L2-normalised)."""
    return float(np.mean([float(feature @ ref) for ref in references]))


def copy_paste(feature: np.ndarray, references: Sequence[np.ndarray], others: Sequence[np.ndarray]) -> float:
    """Likeness to the references minus the best cosine to the person's other photos (all L2-normalised)."""
    if len(others) == 0:
        raise InvalidInputError("the copy-paste score needs other photos of the person",
                                "give photos of the same person that the generator did not see")
    return likeness(feature, references) - max(float(feature @ other) for other in others)


@dataclass
class ImageLikeness:
    index: int
    score: float | None  # None: no face found
    faces_found: int


def score_images(analyzer, images: Sequence[np.ndarray], references: Sequence[np.ndarray],
                 judge=None) -> list[ImageLikeness]:
    """Likeness of the largest face of each RGB uint8 image to the references (features of ``judge``, all faces in
    one batch, or of the analyzer itself when None)."""
    faces = [analyzer.detect(image, image_index=index) for index, image in enumerate(images)]
    found = [i for i, f in enumerate(faces) if f]
    if judge is None:
        features = [identity_feature(faces[i][0]) for i in found]
    else:
        features = judge.features([(images[i], faces[i][0]) for i in found]) if found else []
    scores = dict(zip(found, (likeness(feature, references) for feature in features), strict=True))
    return [ImageLikeness(i, scores.get(i), len(f)) for i, f in enumerate(faces)]


def format_report(results: Sequence[ImageLikeness], spec: JudgeSpec, references: int) -> str:
    """A plain-text ranking: best image first, with the metric named."""
    lines = [f"{spec.metric}: mean cosine of the {spec.feature} to {references} reference face(s); higher is more "
             "alike"]
    ranked = sorted(results, key=lambda r: -np.inf if r.score is None else r.score, reverse=True)
    for rank, result in enumerate(ranked, start=1):
        if result.score is None:
            lines.append(f"{rank}. image {result.index}: no face found")
        else:
            extra = f" (largest of {result.faces_found} faces)" if result.faces_found > 1 else ""
            lines.append(f"{rank}. image {result.index}: {result.score:.3f}{extra}")
    return "\n".join(lines)
