"""insightface antelopev2 backend: SCRFD detector, glintr100 ArcFace, 1k3d68 landmarks and pose.

The ONNX files are recognised by role the way insightface's model zoo does it (by their input and output shapes),
through insightface's own ``model_zoo.get_model``, whose SCRFD / ArcFaceONNX / Landmark classes do the pre- and
post-processing. insightface is imported only when this backend is loaded.

The 68 dense points come from 1k3d68, which predicts the iBUG-68 markup directly. 2d106det uses insightface's own
106-point markup, for which no verified mapping to iBUG-68 was found, so it is not needed here (see the docs).
"""

from __future__ import annotations

import os
import pathlib
import warnings
from collections.abc import Sequence

import numpy as np

from ..errors import InvalidInputError, MissingDependencyError, ModelFileError
from .align import arcface_crop
from .detections import largest_first, rgb_uint8, too_small
from .landmarks72 import from_ibug68
from .onnxruntime_setup import cuda_unavailable_hint, insightface_install_fix
from .record import FaceRecord

PACK_NAME = "antelopev2"
# role (insightface task name) -> the antelopev2 file that plays it
ROLE_FILES = {
    "detection": "scrfd_10g_bnkps.onnx",
    "recognition": "glintr100.onnx",
    "landmark_3d_68": "1k3d68.onnx",
}
OPTIONAL_ROLE_FILES = {"landmark_2d_106": "2d106det.onnx", "genderage": "genderage.onnx"}
PROVIDERS = ("CPU", "CUDA")
DET_SIZE = (640, 640)
DET_THRESHOLD = 0.5


def import_insightface():
    """The insightface model zoo and its Face record, or a MissingDependencyError naming the pip command."""
    try:
        from insightface.app.common import Face
        from insightface.model_zoo import model_zoo
    except ImportError as err:
        raise MissingDependencyError(f"the insightface face backend needs the insightface package ({err})",
                                     insightface_install_fix()) from err
    return model_zoo, Face


def onnx_providers(provider: str) -> list[str]:
    """onnxruntime providers for "CPU" or "CUDA"; CUDA falls back to CPU (with a warning) when unavailable."""
    if provider not in PROVIDERS:
        raise InvalidInputError(f"unknown provider {provider!r}", f"use one of {', '.join(PROVIDERS)}")
    if provider == "CPU":
        return ["CPUExecutionProvider"]
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    warnings.warn(f"onnxruntime has no CUDA provider here; the insightface models run on the CPU "
                  f"({cuda_unavailable_hint()})", RuntimeWarning, stacklevel=2)
    return ["CPUExecutionProvider"]


def find_pack_folder(roots: Sequence[str | os.PathLike]) -> pathlib.Path:
    """``<root>/models/antelopev2`` for the first root that has it, else an error listing every expected path."""
    folders = [pathlib.Path(root).expanduser() / "models" / PACK_NAME for root in roots]
    for folder in folders:
        if folder.is_dir():
            return folder
    expected = "\n  ".join(str(f) for f in folders)
    files = ", ".join([*ROLE_FILES.values(), *OPTIONAL_ROLE_FILES.values()])
    raise ModelFileError(f"the insightface antelopev2 models were not found. Expected the folder:\n  {expected}",
                         f"download antelopev2 (as InstantID uses it) and put its files ({files}) in that folder")


def load_onnx_model(model_zoo, path: pathlib.Path, providers: list[str]):
    """One insightface model-zoo model (its class chosen by the file's signature), or a ModelFileError."""
    try:
        return model_zoo.get_model(str(path), providers=providers)
    except Exception as err:  # onnxruntime raises its own exception types for corrupt files
        raise ModelFileError(f"could not load {path}: {err}",
                             "the file is damaged or not an insightface model: download it again") from err


class InsightFaceAnalyzer:
    name = "insightface"
    has_arcface = True

    def __init__(self, roots: Sequence[str | os.PathLike], provider: str = "CPU"):
        model_zoo, self._face_type = import_insightface()
        self.folder = find_pack_folder(roots)
        self.providers = onnx_providers(provider)
        self.models = self._load_by_role(model_zoo)
        detector = self.models["detection"]
        if not detector.use_kps:
            raise ModelFileError(f"the detector in {self.folder} predicts no 5-point keypoints",
                                 "use antelopev2's scrfd_10g_bnkps.onnx (the 'kps' variant of SCRFD)")
        ctx_id = 0 if self.providers[0] == "CUDAExecutionProvider" else -1
        detector.prepare(ctx_id, input_size=DET_SIZE, det_thresh=DET_THRESHOLD)

    def _load_by_role(self, model_zoo) -> dict:
        models = {}
        for path in sorted(self.folder.glob("*.onnx")):
            model = load_onnx_model(model_zoo, path, self.providers)
            role = getattr(model, "taskname", None)
            if role is not None and role not in models:
                models[role] = model
        missing = [f"{file} ({role})" for role, file in ROLE_FILES.items() if role not in models]
        if missing:
            raise ModelFileError(f"the antelopev2 folder {self.folder} is incomplete; missing: {', '.join(missing)}",
                                 f"copy the complete antelopev2 pack into {self.folder}")
        return models

    def detect(self, image: np.ndarray, image_index: int = 0, with_embedding: bool = True) -> list[FaceRecord]:
        """Faces of one RGB uint8 image, largest first."""
        bgr = np.ascontiguousarray(rgb_uint8(image)[..., ::-1])  # insightface's models take BGR, like cv2.imread gives
        boxes, kpss = self.models["detection"].detect(bgr, input_size=DET_SIZE)
        records = []
        for det, kps in zip(boxes, kpss, strict=True):
            bbox = det[:4].astype(np.float32)
            if too_small(bbox):
                continue
            face = self._face_type(bbox=bbox, kps=kps.astype(np.float32), det_score=float(det[4]))
            points3d = self.models["landmark_3d_68"].get(bgr, face).astype(np.float32)
            embedding = norm = None
            if with_embedding:
                # arcface_crop is insightface's norm_crop, bit for bit, without its deprecated skimage call
                recognition = self.models["recognition"]
                crop = arcface_crop(bgr, face.kps, recognition.input_size[0])
                raw = recognition.get_feat(crop).ravel().astype(np.float32)
                norm = float(np.linalg.norm(raw))
                embedding = raw / max(norm, 1e-12)
            pose = tuple(float(a) for a in face["pose"])
            records.append(FaceRecord(bbox=bbox, score=float(det[4]), kps5=face.kps,
                                      landmarks=from_ibug68(points3d[:, :2]), backend=self.name, embedding=embedding,
                                      embedding_norm=norm,
                                      landmarks_3d=points3d, pose=pose, image_index=image_index))
        return largest_first(records)
