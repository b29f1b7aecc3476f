"""ArcFace embeddings from an ONNX model (insightface's own runner), for detectors that give none (dlib)."""

from __future__ import annotations

import numpy as np


class ArcFaceEmbedder:
    def __init__(self, model_path: str):
        import onnxruntime
        from insightface.model_zoo.arcface_onnx import ArcFaceONNX

        session = onnxruntime.InferenceSession(model_path, providers=["CPUExecutionProvider"])
        self.model = ArcFaceONNX(model_file=model_path, session=session)

    def embed(self, rgb: np.ndarray, kps5: np.ndarray) -> tuple[np.ndarray, float]:
        """(512,) float32 L2-normalised embedding of the face aligned on its five keypoints, and the norm of the
        raw output (their product is insightface's ``Face.embedding``)."""
        from ..models.face_analysis.align import arcface_crop

        bgr = np.ascontiguousarray(rgb[:, :, ::-1])  # insightface's runner expects BGR
        aligned = arcface_crop(bgr, np.asarray(kps5, np.float32), self.model.input_size[0])
        feat = self.model.get_feat(aligned).reshape(-1).astype(np.float32)
        norm = float(np.linalg.norm(feat))
        return feat / max(norm, 1e-12), norm
