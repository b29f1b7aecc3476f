"""Face detection, landmarks and identity embeddings behind one record type.

Backends: ``insightface`` (antelopev2: SCRFD, glintr100 ArcFace, 2d106det, 1k3d68) and ``dlib``
(HOG/CNN detector, 68 landmarks, 128-D descriptor, shipped by the dlib-bin and face-recognition-models wheels).
"""

from .record import FaceRecord, FaceSet

__all__ = ["FaceRecord", "FaceSet"]
