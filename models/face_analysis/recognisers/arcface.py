"""ArcFace judge: antelopev2's glintr100 through insightface's own ArcFaceONNX (the embedding InstantID and its
successors read, Diff-PC's Sim), on insightface's 112 px alignment of BGR pixels.

A face found by the insightface analyzer already carries this embedding (same file, same crop) and it is reused;
a face found by dlib is aligned by its five keypoints (from dlib's 68 points) and embedded here."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ...errors import ModelFileError
from ..align import arcface_crop
from ..insightface_backend import ROLE_FILES, find_pack_folder, import_insightface, load_onnx_model, onnx_providers
from .specs import ARCFACE
from .torch_judge import reuse_or_compute


class ArcFaceJudge:
    spec = ARCFACE

    def __init__(self, roots: Sequence[str | os.PathLike], provider: str = "CPU"):
        model_zoo, _ = import_insightface()
        self.path = find_pack_folder(roots) / ROLE_FILES["recognition"]
        if not self.path.is_file():
            raise ModelFileError(f"the ArcFace judge needs {self.path}", f"copy {ARCFACE.source}")
        self.model = load_onnx_model(model_zoo, self.path, onnx_providers(provider))
        if getattr(self.model, "taskname", None) != "recognition":
            raise ModelFileError(f"{self.path} is not a face-recognition model", f"copy {ARCFACE.source}")

    def features(self, faces: Sequence[tuple[np.ndarray, object]]) -> np.ndarray:
        return reuse_or_compute(faces, lambda r: r.embedding if r.backend == "insightface" else None, self._embed)

    def _embed(self, image: np.ndarray, record) -> np.ndarray:
        bgr = np.ascontiguousarray(np.asarray(image)[..., ::-1])
        return self.model.get_feat(arcface_crop(bgr, record.kps5, self.model.input_size[0])).ravel()
