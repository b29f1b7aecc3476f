"""dlib backend: HOG or MMOD-CNN detector, 68-point shape predictor, 128-D face descriptor.

The weights come from the ``face-recognition-models`` wheel. That package imports ``pkg_resources`` (gone with
setuptools >= 81), so its ``.dat`` files are located through ``importlib`` without importing it.
"""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np

from ..errors import InvalidInputError, MissingDependencyError, ModelFileError
from .detections import largest_first, rgb_uint8, too_small
from .keypoints5 import kps5_from_ibug68
from .landmarks72 import from_ibug68
from .record import FaceRecord

DLIB_FILES = {
    "cnn": "mmod_human_face_detector.dat",
    "shape68": "shape_predictor_68_face_landmarks.dat",
    "descriptor": "dlib_face_recognition_resnet_model_v1.dat",
}
DETECTORS = ("hog", "cnn")
# Detection runs on a copy whose longer side is at most this; boxes are mapped back to full resolution.
MAX_DETECT_SIDE = {"hog": 1600, "cnn": 1024}
# Upsampling finds faces down to ~40 px; the CNN only upsamples small images, since it costs 4x per step.
HOG_UPSAMPLE = 1
CNN_UPSAMPLE_BELOW_SIDE = 640
INSTALL_FIX = "pip install dlib-bin face-recognition-models   (in ComfyUI's Python environment)"


def _import_dlib():
    try:
        import dlib
    except ImportError as err:
        raise MissingDependencyError(f"the dlib face backend needs the dlib package ({err})", INSTALL_FIX) from err
    return dlib


def dlib_model_dir() -> pathlib.Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise MissingDependencyError("the dlib face backend needs the face-recognition-models package", INSTALL_FIX)
    return pathlib.Path(spec.origin).parent / "models"


class DlibAnalyzer:
    name = "dlib"
    has_arcface = False

    def __init__(self, detector: str = "hog"):
        if detector not in DETECTORS:
            raise InvalidInputError(f"unknown dlib detector {detector!r}", f"use one of {', '.join(DETECTORS)}")
        dlib = _import_dlib()
        folder = dlib_model_dir()
        needed = ["shape68", "descriptor"] + (["cnn"] if detector == "cnn" else [])
        missing = [DLIB_FILES[k] for k in needed if not (folder / DLIB_FILES[k]).is_file()]
        if missing:
            raise ModelFileError(f"dlib model files missing in {folder}: {', '.join(missing)}",
                                 "reinstall them: pip install --force-reinstall face-recognition-models")
        self.detector_kind = detector
        self.providers = ["CPU"]
        if detector == "hog":
            self._detector = dlib.get_frontal_face_detector()
        else:
            self._detector = dlib.cnn_face_detection_model_v1(str(folder / DLIB_FILES["cnn"]))
        self._shape68 = dlib.shape_predictor(str(folder / DLIB_FILES["shape68"]))
        self._descriptor = dlib.face_recognition_model_v1(str(folder / DLIB_FILES["descriptor"]))
        self._dlib = dlib

    def _detect_boxes(self, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        import cv2

        height, width = image.shape[:2]
        scale = min(1.0, MAX_DETECT_SIDE[self.detector_kind] / max(height, width))
        small = image if scale == 1.0 else cv2.resize(
            image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
        sx, sy = width / small.shape[1], height / small.shape[0]
        boxes = []
        if self.detector_kind == "hog":
            rects, scores, _ = self._detector.run(small, HOG_UPSAMPLE, 0.0)
        else:
            detections = self._detector(small, int(max(small.shape[:2]) < CNN_UPSAMPLE_BELOW_SIDE))
            rects, scores = [d.rect for d in detections], [d.confidence for d in detections]
        for rect, score in zip(rects, scores, strict=True):
            box = np.array([rect.left() * sx, rect.top() * sy, (rect.right() + 1) * sx, (rect.bottom() + 1) * sy],
                           np.float32)
            boxes.append((box, float(score)))
        return boxes

    def shape_in_box(self, image: np.ndarray, box):
        """dlib's 68-point shape of the face in an (x1, y1, x2, y2) pixel box of a contiguous RGB uint8 image."""
        rect = self._dlib.rectangle(int(round(box[0])), int(round(box[1])),
                                    int(round(box[2])) - 1, int(round(box[3])) - 1)
        return self._shape68(image, rect)

    def descriptor(self, image: np.ndarray, shape) -> np.ndarray:
        """The 128-D face descriptor of a face whose 68-point ``shape`` was found in ``image``."""
        return np.asarray(self._descriptor.compute_face_descriptor(image, shape, 0), np.float32)

    def detect(self, image: np.ndarray, image_index: int = 0, with_embedding: bool = True) -> list[FaceRecord]:
        """Faces of one RGB uint8 image, largest first."""
        image = np.ascontiguousarray(rgb_uint8(image))
        records = []
        for box, score in self._detect_boxes(image):
            if too_small(box):
                continue
            shape = self.shape_in_box(image, box)
            points68 = np.array([[p.x, p.y] for p in shape.parts()], np.float32)
            descriptor = self.descriptor(image, shape) if with_embedding else None
            records.append(FaceRecord(bbox=box, score=score, kps5=kps5_from_ibug68(points68),
                                      landmarks=from_ibug68(points68), backend=self.name,
                                      descriptor=descriptor, image_index=image_index))
        return largest_first(records)
