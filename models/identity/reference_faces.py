"""The reference photos of one person as every identity method reads them: the real faces of a face set, their
ArcFace embeddings and their square crops."""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InvalidInputError
from ..face_analysis.align import crop_square, square_box
from ..face_analysis.record import FaceSet
from ..face_analysis.select import is_no_face
from .identity import ARCFACE_DIM

CLIP_INPUT = 224  # CLIP-ViT-H/14 input side; the crop is resized by CLIPVisionEncode's preprocessing anyway


def arcface_embeddings(faces: FaceSet, raw: bool = False,
                       purpose: str = "FaceSnap's identity features") -> torch.Tensor:
    """(N, 512) for the real faces; only the insightface backend computes ArcFace embeddings.

    ``raw``: insightface's unnormalised ``Face.embedding`` (what InstantID's Resampler reads) instead of the
    L2-normalised one (what FaceSnap's mixer reads). ``purpose`` names the consumer in errors."""
    rows = []
    for i in reference_indices(faces):
        record = faces.records[i]
        if record.embedding is None:
            raise InvalidInputError(
                f"reference face {i} comes from the {record.backend!r} face analyzer, which computes no ArcFace "
                "embedding",
                f"load the insightface (antelopev2) face analyzer; dlib cannot drive {purpose}",
            )
        emb = np.asarray(record.embedding, dtype=np.float32).reshape(-1)
        if emb.shape != (ARCFACE_DIM,):
            raise InvalidInputError(f"reference face {i} has a {emb.shape[0]}-D embedding, not ArcFace's 512-D",
                                    "use the insightface antelopev2 recognition model (glintr100)")
        if raw:
            norm = getattr(record, "embedding_norm", None)
            if norm is None or not np.isfinite(norm) or norm <= 0:
                raise InvalidInputError(f"reference face {i} carries no raw ArcFace embedding (only its direction)",
                                        f"crop the faces again with the insightface face analyzer for {purpose}")
            emb = emb * np.float32(norm)
        rows.append(emb)
    return torch.from_numpy(np.stack(rows))


def reference_indices(faces: FaceSet) -> list[int]:
    """Indices of real faces (the crop node's "skip" placeholders are left out)."""
    keep = [i for i, r in enumerate(faces.records) if not is_no_face(r)]
    if not keep:
        raise InvalidInputError("no reference face was given (the face set is empty or holds only skipped images)",
                                "connect a Face Crop node that found at least one face")
    return keep


def face_crop(faces: FaceSet, index: int, size: int = CLIP_INPUT) -> np.ndarray:
    """The square face crop of reference ``index`` (RGB uint8, black where the box leaves the image):
    the Face Crop node's box, or the detection box with the crop node's default margin when there is none."""
    box = faces.crop_boxes[index] if index < len(faces.crop_boxes) else square_box(faces.records[index].bbox, 0.5)
    return crop_square(faces.images[index], np.asarray(box, np.float32), size)
