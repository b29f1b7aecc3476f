"""dlib judge: dlib's 128-D ResNet face descriptor, a fallback on its own scale (different people of insightface's
t1.jpg score 0.81-0.91 against each other), never comparable with the other judges.

A face found by the dlib analyzer already carries its descriptor; for a face found by another analyzer, dlib's
68-point shape predictor is run in its box first, as dlib's own pipeline would."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..dlib_backend import DlibAnalyzer
from .specs import DLIB
from .torch_judge import reuse_or_compute


class DlibJudge:
    spec = DLIB

    def __init__(self, analyzer: DlibAnalyzer | None = None):
        self.analyzer = analyzer or DlibAnalyzer("hog")

    def features(self, faces: Sequence[tuple[np.ndarray, object]]) -> np.ndarray:
        return reuse_or_compute(faces, lambda r: r.descriptor if r.backend == "dlib" else None, self._descriptor)

    def _descriptor(self, image: np.ndarray, record) -> np.ndarray:
        image = np.ascontiguousarray(image)
        return self.analyzer.descriptor(image, self.analyzer.shape_in_box(image, record.bbox))
