"""Face-recognition networks as judges of likeness, in plain PyTorch (and insightface / dlib for the two that ship
that way), each read from the weights its authors publish. See ``specs`` for the table of judges.

    status = judge_status("FaceNet", judge_folders=["ComfyUI/models/face_recognition"])   # None: installed
    judge = load_judge("FaceNet", judge_folders=[...], device="cuda")
    features = judge.features([(rgb_image, face_record), ...])      # (N, D), L2-normalised

=====================  ======================================================================================
module                 role
=====================  ======================================================================================
specs                  the judges: column names, published files, where to get them, who used them
published_weights      read a .safetensors / torch file safely, unwrap Lightning / DataParallel, check layout
inception_resnet_v1    FaceNet's network (facenet-pytorch's parameter names)
ir_backbone            the IR-101 of AdaFace and CurricularFace (their parameter names)
face_crops             each network's crop and pixel scaling
torch_judge            crop, embed in batches, normalise
facenet, adaface,      the three PyTorch judges
curricularface
arcface                antelopev2 glintr100 (ONNX, through insightface)
dlib_descriptor        dlib's 128-D descriptor
=====================  ======================================================================================
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
from collections.abc import Sequence

from ...errors import InvalidInputError, ModelFileError
from .specs import JUDGES, TORCH_JUDGES, WEIGHT_SUFFIXES, JudgeSpec


def _listed(folders: Sequence[str | os.PathLike]) -> dict[str, str]:
    """relative name -> path of every weights file below the folders (the first folder wins a name)."""
    found: dict[str, str] = {}
    for folder in folders:
        folder = pathlib.Path(folder).expanduser()
        if folder.is_dir():
            for path in sorted(folder.rglob("*")):
                if path.is_file() and path.suffix.lower() in WEIGHT_SUFFIXES:
                    found.setdefault(path.relative_to(folder).as_posix(), str(path))
    return found


def judge_file(spec: JudgeSpec, judge_folders: Sequence[str | os.PathLike]) -> str | None:
    """The weights file a PyTorch judge would read from these folders, or None."""
    listed = _listed(judge_folders)
    names = spec.candidates(listed)
    return listed[names[0]] if names else None


def _insightface_glintr100(roots: Sequence[str | os.PathLike]) -> bool:
    return importlib.util.find_spec("insightface") is not None and any(
        (pathlib.Path(r).expanduser() / "models" / "antelopev2" / "glintr100.onnx").is_file() for r in roots)


def judge_status(name: str, judge_folders: Sequence[str | os.PathLike] = (),
                 insightface_roots: Sequence[str | os.PathLike] = ()) -> str | None:
    """None when the judge can be loaded from these places, else why not (with where to get it)."""
    spec = get_spec(name)
    if name in TORCH_JUDGES:
        if judge_file(spec, judge_folders) is not None:
            return None
        where = ", ".join(str(f) for f in judge_folders) or "no face_recognition folder given"
        return f"no {spec.published[0]} (or other {spec.stem}* weights) in {where}; get {spec.source}"
    if name == "ArcFace":
        if _insightface_glintr100(insightface_roots):
            return None
        where = ", ".join(str(pathlib.Path(r) / "models" / "antelopev2") for r in insightface_roots) or "no folder"
        return f"needs the insightface package and glintr100.onnx in {where}; get {spec.source}"
    if importlib.util.find_spec("dlib") is None or importlib.util.find_spec("face_recognition_models") is None:
        return f"needs dlib and its models: {spec.source}"
    return None


def get_spec(name: str) -> JudgeSpec:
    if name not in JUDGES:
        raise InvalidInputError(f"unknown judge {name!r}", f"use one of {', '.join(JUDGES)}")
    return JUDGES[name]


def load_judge(name: str, judge_folders: Sequence[str | os.PathLike] = (),
               insightface_roots: Sequence[str | os.PathLike] = (), device: str = "cpu", provider: str = "CPU",
               path: str | None = None, facenet_margin: float = 0.0):
    """The judge ``name``; a PyTorch judge reads ``path``, or the file ``judge_file`` finds in ``judge_folders``."""
    spec = get_spec(name)
    if name in TORCH_JUDGES:
        path = path or judge_file(spec, judge_folders)
        if path is None:
            raise ModelFileError(f"the {name} judge found no weights: {judge_status(name, judge_folders)}",
                                 f"download {spec.source} into the face_recognition model folder")
        if name == "FaceNet":
            from .facenet import load_facenet

            return load_facenet(path, device, facenet_margin)
        if name == "AdaFace":
            from .adaface import load_adaface

            return load_adaface(path, device)
        from .curricularface import load_curricularface

        return load_curricularface(path, device)
    if name == "ArcFace":
        from .arcface import ArcFaceJudge

        return ArcFaceJudge(insightface_roots, provider)
    from .dlib_descriptor import DlibJudge

    return DlibJudge()


__all__ = ["JUDGES", "JudgeSpec", "get_spec", "judge_file", "judge_status", "load_judge"]
