"""FaceNet judge: facenet-pytorch's InceptionResnetV1 with its VGGFace2 weights (``20180402-114759-vggface2.pt``),
on its 160 px crop with fixed standardisation (FaceSnap's FaceSim)."""

from __future__ import annotations

import functools

from .face_crops import facenet_input
from .inception_resnet_v1 import InceptionResnetV1
from .specs import FACENET
from .torch_judge import TorchJudge, load_torch_judge

DEFAULT_MARGIN = 0  # facenet-pytorch's MTCNN default; its examples also use 20 or 32 (pixels of the 160 px crop)


def load_facenet(path: str, device: str = "cpu", margin: float = DEFAULT_MARGIN) -> TorchJudge:
    return load_torch_judge(FACENET, InceptionResnetV1, path, functools.partial(facenet_input, margin=margin), device,
                            ignored=("logits.",))
