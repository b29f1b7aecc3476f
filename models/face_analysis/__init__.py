"""Face detection, landmarks and identity embeddings behind one record type.

Backends: ``insightface`` (antelopev2: SCRFD, glintr100 ArcFace, 1k3d68; see ``insightface_backend``) and ``dlib``
(HOG/CNN detector, 68 landmarks, 128-D descriptor, shipped by the dlib-bin and face-recognition-models wheels).
Both are imported lazily: this package loads without either library installed.

    analyzer = load_analyzer("dlib")                      # or ("insightface", insightface_root=..., provider="CUDA")
    faces = analyzer.detect(rgb_uint8_image, image_index=0)   # list[FaceRecord], largest first
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..errors import InvalidInputError
from .record import FaceRecord, FaceSet

BACKENDS = ("insightface", "dlib")
DEFAULT_INSIGHTFACE_ROOT = "~/.insightface"  # insightface's own default; ComfyUI passes models/insightface


def load_analyzer(backend: str = "dlib", insightface_root: str | os.PathLike | Sequence | None = None,
                  provider: str = "CPU", detector: str = "hog"):
    """Build a face analyzer. ``insightface_root`` is the folder holding ``models/antelopev2`` (or a list of
    candidate folders, searched in order); ``detector`` ("hog" | "cnn") applies to dlib only."""
    if backend == "dlib":
        from .dlib_backend import DlibAnalyzer

        return DlibAnalyzer(detector)
    if backend == "insightface":
        from .insightface_backend import InsightFaceAnalyzer

        if insightface_root is None:
            roots = [DEFAULT_INSIGHTFACE_ROOT]
        elif isinstance(insightface_root, (str, os.PathLike)):
            roots = [insightface_root]
        else:
            roots = list(insightface_root)
        return InsightFaceAnalyzer(roots, provider)
    raise InvalidInputError(f"unknown face backend {backend!r}", f"use one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "FaceRecord", "FaceSet", "load_analyzer"]
