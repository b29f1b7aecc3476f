"""AdaFace judge: the authors' IR-101 (``net.build_model('ir_101')``) from their released checkpoint, on the 112 px
five-point alignment, BGR as their ``inference.py`` feeds it."""

from __future__ import annotations

import functools

from .face_crops import aligned_input
from .ir_backbone import IRBackbone
from .specs import ADAFACE
from .torch_judge import TorchJudge, load_torch_judge


def load_adaface(path: str, device: str = "cpu") -> TorchJudge:
    return load_torch_judge(ADAFACE, functools.partial(IRBackbone, "adaface"), path,
                            functools.partial(aligned_input, bgr=True), device)
