"""CurricularFace judge: the authors' IR-101 (``backbone/model_irse.IR_101``) from ``CurricularFace_Backbone.pth``,
on the 112 px five-point alignment, RGB as it was trained (PuLID's FaceSim)."""

from __future__ import annotations

import functools

from .face_crops import aligned_input
from .ir_backbone import IRBackbone
from .specs import CURRICULARFACE
from .torch_judge import TorchJudge, load_torch_judge


def load_curricularface(path: str, device: str = "cpu") -> TorchJudge:
    return load_torch_judge(CURRICULARFACE, functools.partial(IRBackbone, "curricularface"), path,
                            functools.partial(aligned_input, bgr=False), device)
