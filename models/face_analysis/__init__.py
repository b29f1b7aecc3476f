"""Face detection, landmarks and identity embeddings behind one record type.

Backends: ``insightface`` (antelopev2: SCRFD, glintr100 ArcFace, 1k3d68; see ``insightface_backend``) and ``dlib``
(HOG/CNN detector, 68 landmarks, 128-D descriptor, shipped by the dlib-bin and face-recognition-models wheels).
Both are imported lazily: this package loads without either library installed. ``recognisers`` holds the
face-recognition networks that judge likeness (ArcFace, CurricularFace, AdaFace, FaceNet, dlib).

    analyzer = load_analyzer("dlib")                      # or ("insightface", insightface_root=..., provider="CUDA")
    faces = analyzer.detect(rgb_uint8_image, image_index=0)   # list[FaceRecord], largest first
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..errors import InvalidInputError, MissingDependencyError
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


def analyzer_files(backend: str, insightface_root: Sequence[str | os.PathLike] = (),
                   detector: str = "hog") -> list[str]:
    """The weight files ``load_analyzer`` would read for these settings (those that exist), so that a cache can
    notice an edited or replaced file. Never raises: a missing file or package is reported by ``load_analyzer``."""
    import pathlib

    if backend == "dlib":
        from .dlib_backend import DLIB_FILES, dlib_model_dir

        try:
            folder = dlib_model_dir()
        except MissingDependencyError:
            return []
        needed = ["shape68", "descriptor"] + (["cnn"] if detector == "cnn" else [])
        return [str(folder / DLIB_FILES[k]) for k in needed]
    if backend == "insightface":
        from .insightface_backend import PACK_NAME

        for root in insightface_root:
            folder = pathlib.Path(root).expanduser() / "models" / PACK_NAME
            if folder.is_dir():
                return sorted(str(p) for p in folder.glob("*.onnx"))
    return []


__all__ = ["BACKENDS", "FaceRecord", "FaceSet", "analyzer_files", "load_analyzer"]
