"""What PuLID and EcomID read of the reference faces, computed inside ComfyUI: the EVA02-CLIP-L-14-336 tower
(FACESNAP_EVA_CLIP) and facexlib's BiSeNet face parser (FACESNAP_FACE_PARSER), each built from ComfyUI's operations
and managed by its own ModelPatcher, and ``pulid_features``, the faces' ArcFace and EVA-CLIP features.

The tower takes the loader's dtype option like every network of the pack (``weight_dtypes.py``). The parser is stored
and computes in float32 whatever the option: its BatchNorm layers are torch's (ComfyUI has no BatchNorm operation to
cast them), and it holds 13 M parameters.
"""

from __future__ import annotations

import torch

import comfy.model_management

from ..models.face_analysis.face_parsing import BiSeNet, load_face_parser
from ..models.face_analysis.record import FaceSet
from ..models.identity.pulid.eva_clip_vision import EVAVisionTower, eva_clip_input
from ..models.identity.pulid.eva_clip_weights import load_eva_clip_vision
from ..models.identity.pulid.face_input import one_face_per_photo, pulid_face_images
from ..models.identity.reference_faces import arcface_embeddings, reference_indices
from .weight_dtypes import WeightDtypes, build_managed, choose_weight_dtypes, dtype_option, file_dtype, managed_patcher

FLOAT32 = WeightDtypes(torch.float32, torch.float32)


class EVAClipBundle:
    """The FACESNAP_EVA_CLIP payload: the vision tower in the storage dtype of loader option ``dtype``."""

    def __init__(self, tower: EVAVisionTower, name: str = "", dtype: str = "auto"):
        device = comfy.model_management.get_torch_device()
        self.dtypes = choose_weight_dtypes(dtype, device, file_dtype(tower))
        self.config = tower.config
        self.tower = build_managed(lambda ops, compute: EVAVisionTower(tower.config, ops, compute), tower, self.dtypes)
        self.name = name
        self.patcher = managed_patcher(self.tower)


class FaceParserBundle:
    """The FACESNAP_FACE_PARSER payload: BiSeNet in float32 (see the module docstring)."""

    def __init__(self, parser: BiSeNet, name: str = ""):
        self.parser = build_managed(lambda ops, compute: BiSeNet(operations=ops), parser, FLOAT32)
        self.name = name
        self.patcher = managed_patcher(self.parser)


def load_eva_clip(*, weights: str, name: str = "", dtype: str = "auto") -> EVAClipBundle:
    dtype_option(dtype)  # refuse a bad option before reading the file
    return EVAClipBundle(load_eva_clip_vision(weights), name, dtype)


def load_parser(*, weights: str, name: str = "") -> FaceParserBundle:
    return FaceParserBundle(load_face_parser(weights), name)


@torch.no_grad()
def pulid_features(faces: FaceSet, eva: EVAClipBundle, parser: FaceParserBundle, purpose: str):
    """(ArcFace (N, 512), EVA CLS embeddings (N, 768), 5 EVA hidden states (N, 1 + patches, width)) of one face per
    photo (``one_face_per_photo``), float32 on ComfyUI's intermediate device. ArcFace is insightface's raw
    ``Face.embedding``; the EVA input is PuLID's: the face aligned to 512 px from the pack's five keypoints, its
    background whited out by the parser, in grey."""
    faces = one_face_per_photo(faces)
    arcface = arcface_embeddings(faces, raw=True, purpose=purpose)
    comfy.model_management.load_models_gpu([parser.patcher, eva.patcher])
    device = eva.patcher.load_device
    out = comfy.model_management.intermediate_device()
    embeddings, hidden = [], []
    for index in reference_indices(faces):  # one photo at a time: the parser runs at 512 px
        comfy.model_management.throw_exception_if_processing_interrupted()
        grey = pulid_face_images([faces.images[index]], [faces.records[index].kps5], parser.parser, device)
        result = eva.tower(eva_clip_input(grey, eva.config.image_size))
        embeddings.append(result.embedding.to(out, torch.float32))
        hidden.append([h.to(out, torch.float32) for h in result.hidden_states])
    return arcface, torch.cat(embeddings), [torch.cat(layer) for layer in zip(*hidden, strict=True)]
