"""DECA's coarse encoder ``E_flame``: FLAME parameters regressed from a face crop, as an alternative to landmark
fitting.

The user places DECA's ``deca_model.tar`` (MPI non-commercial licence) in models/3dmm. It is a ``torch.save`` of
{"E_flame", "E_detail", "D_detail", ...}; only ``E_flame`` is used and it is read with
``torch.load(weights_only=True)``, a restricted unpickler that rebuilds tensors and plain containers only. ``E_flame``
is DECA's ``ResnetEncoder``: a ResNet-50 trunk (DECA's own ``resnet.py``: conv1/bn1/layer1-4, 7x7 average pool, no fc)
under ``encoder.*`` and the head ``layers`` = Linear(2048, 1024), ReLU, Linear(1024, 236). Its input is an RGB crop in
[0, 1], 224 x 224, of the square around the 68 landmarks' box, enlarged 1.1 * 1.25 (DECA's ``kpt68`` crop at scale
1.25).

The 236 outputs: shape 100 | tex 50 | exp 50 | pose 6 (global + jaw axis-angle) | cam 3 (s, tx, ty) | light 27.
DECA projects orthographically: crop pixel = 112 * s * ([x, -y] + [tx, ty] * [1, -1]) + 112 for posed FLAME vertices
in metres, and rotates the head about FLAME's root joint.
"""

from __future__ import annotations

import pathlib

import numpy as np
import torch
from torch import nn

from ..common.file_checks import Interrupt, check_finite
from ..common.operations import resolve_operations
from ..common.torch_pickle import load_weights_only
from ..errors import InvalidInputError, ModelFileError
from ..face_analysis.align import crop_square
from .face_fitting import FitResult, axis_angle_to_matrix
from .morphable_model import MorphableModel

DECA_HINT = ("download deca_model.tar from DECA (github.com/yfeng95/DECA, MPI non-commercial licence) into "
             "ComfyUI/models/3dmm, or set deca_file to none to fit landmarks instead")
DECA_KIND = "DECA's deca_model.tar (a PyTorch checkpoint of tensors)"
DECA_SPLITS = {"shape": 100, "tex": 50, "exp": 50, "pose": 6, "cam": 3, "light": 27}
DECA_OUTPUTS = sum(DECA_SPLITS.values())
CROP_SIZE = 224
CROP_SCALE = 1.25
LANDMARK_BOX_MARGIN = 1.1  # DECA enlarges the landmarks' box by this before the crop scale


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, operations=None):
        super().__init__()
        conv = resolve_operations(operations).Conv2d
        self.conv1 = conv(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = None
        if stride != 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(conv(inplanes, planes * 4, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes * 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet50Features(nn.Module):
    """ResNet-50 up to the global average pool: (B, 3, 224, 224) -> (B, 2048)."""

    def __init__(self, operations=None):
        super().__init__()
        self.conv1 = resolve_operations(operations).Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes, stages = 64, []
        for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            layer = [Bottleneck(inplanes, planes, stride, operations)]
            layer += [Bottleneck(planes * 4, planes, operations=operations) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layer))
            inplanes = planes * 4
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean(dim=(2, 3))  # DECA's AvgPool2d(7) on the 7 x 7 map of a 224 crop


class DecaEncoder(nn.Module):
    """DECA's ``E_flame``; state-dict keys match DECA's (``encoder.layer1.0.conv1.weight``, ``layers.2.bias``).
    ``operations``: the ``Conv2d`` and ``Linear`` classes (``models/common/operations.py``; default torch.nn; ComfyUI
    passes ``comfy.ops``). The batch norms stay torch.nn's: ComfyUI's operations have none."""

    def __init__(self, operations=None):
        super().__init__()
        linear = resolve_operations(operations).Linear
        self.encoder = ResNet50Features(operations)
        self.layers = nn.Sequential(linear(2048, 1024), nn.ReLU(), linear(1024, DECA_OUTPUTS))

    def forward(self, crops: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, 224, 224) RGB in [0, 1] -> DECA's parameter groups."""
        groups = self.layers(self.encoder(crops)).split(list(DECA_SPLITS.values()), dim=1)
        return dict(zip(DECA_SPLITS, groups, strict=True))


def _refused(path, found: str | None) -> ModelFileError:
    if found is None:
        return ModelFileError(f"{path} is not {DECA_KIND} (it is damaged or a different kind of file)", DECA_HINT)
    return ModelFileError(f"{path} was not loaded: it should be {DECA_KIND}, but it holds a reference to {found}, "
                          "which is program code, not data. The pack reads model files without running any code in "
                          "them", DECA_HINT)


def load_deca_encoder(path: str | pathlib.Path, operations=None, interrupt: Interrupt = None) -> DecaEncoder:
    """``E_flame`` from DECA's ``deca_model.tar`` without running pickled code. Raises ModelFileError naming the path;
    ``interrupt`` is polled while the weights are checked."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ModelFileError(f"the DECA model was not found at {path}", DECA_HINT)
    checkpoint = load_weights_only(str(path), DECA_HINT, what=DECA_KIND,
                                   refused=lambda name, found: _refused(path, found))
    if not isinstance(checkpoint, dict) or "E_flame" not in checkpoint:
        found = sorted(checkpoint)[:6] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ModelFileError(f"{path} is not DECA's deca_model.tar (no 'E_flame' entry; found {found})", DECA_HINT)
    state = {k.removeprefix("module."): v for k, v in checkpoint["E_flame"].items()}
    encoder = DecaEncoder(operations)
    expected = encoder.state_dict()
    missing = sorted(set(expected) - set(state))
    wrong = sorted(k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or wrong:
        raise ModelFileError(f"{path}: E_flame does not match DECA's ResNet-50 encoder (missing {missing[:4]}, "
                             f"wrong shape {wrong[:4]})", DECA_HINT)
    check_finite({k: state[k] for k in expected}, str(path), DECA_HINT, interrupt)
    encoder.load_state_dict({k: state[k] for k in expected})
    return encoder.eval()


def deca_crop_box(landmarks68: np.ndarray) -> np.ndarray:
    """DECA's square crop (x1, y1, x2, y2) around 68 landmarks in image pixels."""
    low, high = landmarks68.min(0), landmarks68.max(0)
    side = float((high - low).sum()) / 2 * LANDMARK_BOX_MARGIN * CROP_SCALE
    cx, cy = (low + high) / 2
    return np.array([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], np.float32)


@torch.no_grad()
def regress_faces(model: MorphableModel, encoder: DecaEncoder, images: list[np.ndarray], landmarks68: np.ndarray,
                  frame_matrices: list[np.ndarray] | None = None) -> FitResult:
    """FLAME parameters for each face: images[i] (RGB uint8) with its (68, 2) landmarks; the pose is returned in the
    frame that ``frame_matrices[i]`` (2x3, image pixels -> frame pixels, scale + translation) maps to (default: image).
    """
    art = model.articulation
    if art is None:
        raise InvalidInputError(f"DECA regresses FLAME parameters, but the model is {model.name}",
                                "set model to FLAME in FaceSnap 3DMM Loader, or leave deca_file empty")
    boxes = [deca_crop_box(np.asarray(p, np.float32)[:68]) for p in landmarks68]
    crops = np.stack([crop_square(image, box, CROP_SIZE) for image, box in zip(images, boxes, strict=True)])
    params = encoder(torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0)
    batch = len(boxes)
    alpha = params["shape"][:, : model.num_id]
    beta = params["exp"][:, : model.num_exp]
    rotation = axis_angle_to_matrix(params["pose"][:, :3])
    joint_pose = art.jaw_only(params["pose"][:, 3:])
    # DECA turns the head about the root joint; the pack's camera turns the normalised frame about its origin.
    rest = art.joints(model.vertices(alpha, beta))[:, 0]
    origin = art.frame_unit * (rest - (rotation @ rest.unsqueeze(-1)).squeeze(-1)) + art.frame_centre
    s, shift = params["cam"][:, 0], params["cam"][:, 1:]
    half = CROP_SIZE / 2
    scale_crop = half * s * art.frame_unit
    trans_crop = half * s.unsqueeze(1) * (origin[:, :2] + shift) * torch.tensor([1.0, -1.0]) + half
    scale, translation = torch.empty(batch), torch.empty(batch, 2)
    for i, box in enumerate(boxes):
        to_image = CROP_SIZE / float(box[2] - box[0])  # crop pixels per image pixel
        frame = np.eye(2, 3) if frame_matrices is None else np.asarray(frame_matrices[i], np.float64)
        scale[i] = scale_crop[i] / to_image * frame[0, 0]
        translation[i] = torch.from_numpy((frame[:, :2] @ (trans_crop[i].double().numpy() / to_image + box[:2])
                                           + frame[:, 2]).astype(np.float32))
    return FitResult(alpha, beta, rotation, scale, translation, torch.full((batch,), float("nan")), joint_pose)
