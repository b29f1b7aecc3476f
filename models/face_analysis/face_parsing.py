"""Face parsing with BiSeNet (Yu et al. 2018) as facexlib publishes it: ``parsing_bisenet.pth``, 19 CelebAMask-HQ
labels per pixel.

    ResNet-18 (strides 8, 16, 32)
    context path: arm32 = ARM(feat32) + conv_avg(global mean of feat32); up to 1/16 (nearest), conv_head32
                  arm16 = ARM(feat16) + that;                             up to 1/8 (nearest),  conv_head16
    ARM(f) = c * sigmoid(BN(1x1 conv(mean of c))), c = ConvBNReLU(f)
    fusion: f = ConvBNReLU([feat8; context 1/8]);  f = f + f * sigmoid(1x1(relu(1x1(mean of f))))
    logits = conv_out(f), bilinearly resized (align_corners) to the input size

The two auxiliary heads of training (``conv_out16``, ``conv_out32``) are in the file and kept, so it loads as it is,
but are not run: facexlib's callers read the main head only. Input: RGB in [0, 1] normalised with the ImageNet
mean/std (``parse_faces`` does it). Module names are the file's; read with ``torch.load(weights_only=True)``, or a
``.safetensors`` conversion with the same names. BatchNorm's ``num_batches_tracked`` counters may be absent.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from ..common.operations import TORCH_OPS, resolve_operations
from ..common.safetensors_files import check_values, read_header, read_tensors
from ..common.torch_pickle import load_weights_only
from ..errors import InvalidInputError, ModelFileError

LABELS = ("background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r", "nose",
          "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FILE_NAME = "parsing_bisenet.pth"
FILE_FIX = (f"download {FILE_NAME} from facexlib's GitHub release v0.2.0 (xinntao/facexlib), or a .safetensors "
            "conversion of it")
BATCH_COUNTER = "num_batches_tracked"


class ConvBNReLU(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int = 3, ops=TORCH_OPS):
        super().__init__()
        self.conv = ops.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, ops=TORCH_OPS):
        super().__init__()
        self.conv1 = ops.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = ops.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if cin != cout or stride != 1:
            self.downsample = nn.Sequential(ops.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(shortcut + residual)


class ResNet18(nn.Module):
    def __init__(self, ops=TORCH_OPS):
        super().__init__()
        self.conv1 = ops.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        widths = ((64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2))
        for index, (cin, cout, stride) in enumerate(widths, start=1):
            blocks = [BasicBlock(cin, cout, stride, ops), BasicBlock(cout, cout, 1, ops)]
            setattr(self, f"layer{index}", nn.Sequential(*blocks))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        feat8 = self.layer2(self.layer1(x))
        feat16 = self.layer3(feat8)
        return feat8, feat16, self.layer4(feat16)


def _global_mean(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, x.shape[2:])


class AttentionRefinement(nn.Module):
    def __init__(self, cin: int, cout: int, ops=TORCH_OPS):
        super().__init__()
        self.conv = ConvBNReLU(cin, cout, ops=ops)
        self.conv_atten = ops.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        return feat * torch.sigmoid(self.bn_atten(self.conv_atten(_global_mean(feat))))


class ContextPath(nn.Module):
    def __init__(self, ops=TORCH_OPS):
        super().__init__()
        self.resnet = ResNet18(ops)
        self.arm16 = AttentionRefinement(256, 128, ops)
        self.arm32 = AttentionRefinement(512, 128, ops)
        self.conv_head32 = ConvBNReLU(128, 128, ops=ops)
        self.conv_head16 = ConvBNReLU(128, 128, ops=ops)
        self.conv_avg = ConvBNReLU(512, 128, kernel=1, ops=ops)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat8, feat16, feat32 = self.resnet(x)
        context = self.conv_avg(_global_mean(feat32))
        up32 = self.arm32(feat32) + F.interpolate(context, feat32.shape[2:], mode="nearest")
        up32 = self.conv_head32(F.interpolate(up32, feat16.shape[2:], mode="nearest"))
        up16 = self.conv_head16(F.interpolate(self.arm16(feat16) + up32, feat8.shape[2:], mode="nearest"))
        return feat8, up16


class FeatureFusion(nn.Module):
    def __init__(self, cin: int, cout: int, ops=TORCH_OPS):
        super().__init__()
        self.convblk = ConvBNReLU(cin, cout, kernel=1, ops=ops)
        self.conv1 = ops.Conv2d(cout, cout // 4, 1, bias=False)
        self.conv2 = ops.Conv2d(cout // 4, cout, 1, bias=False)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        attention = torch.sigmoid(self.conv2(F.relu(self.conv1(_global_mean(feat)))))
        return feat * attention + feat


class ParsingHead(nn.Module):
    def __init__(self, cin: int, mid: int, classes: int, ops=TORCH_OPS):
        super().__init__()
        self.conv = ConvBNReLU(cin, mid, ops=ops)
        self.conv_out = ops.Conv2d(mid, classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """``operations``: the convolutions' class (default torch.nn; ComfyUI passes comfy.ops). BatchNorm stays
    torch.nn's, so the parser computes in the dtype it is stored in."""

    def __init__(self, classes: int = len(LABELS), operations=None):
        super().__init__()
        ops = resolve_operations(operations)
        self.cp = ContextPath(ops)
        self.ffm = FeatureFusion(256, 256, ops)
        self.conv_out = ParsingHead(256, 256, classes, ops)
        self.conv_out16 = ParsingHead(128, 64, classes, ops)  # training-time auxiliary heads: loaded, never run
        self.conv_out32 = ParsingHead(128, 64, classes, ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) ImageNet-normalised RGB, H and W multiples of 32 -> (B, classes, H, W) logits."""
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[0] == 0 or x.shape[2] % 32 or x.shape[3] % 32:
            raise InvalidInputError(f"face parsing takes (batch, 3, H, W) images with H and W multiples of 32, got "
                                    f"{list(x.shape)}", "align the faces to 512 x 512 first")
        x = x.to(self.conv_out.conv_out.weight.dtype)
        feat8, context8 = self.cp(x)
        logits = self.conv_out(self.ffm(feat8, context8))
        return F.interpolate(logits, x.shape[2:], mode="bilinear", align_corners=True)


@torch.no_grad()
def parse_faces(parser: BiSeNet, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] -> (B, 1, H, W) int64 labels (indices into ``LABELS``)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=images.dtype, device=images.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=images.dtype, device=images.device)[:, None, None]
    return parser((images - mean) / std).argmax(dim=1, keepdim=True)


def expected_shapes(classes: int = len(LABELS)) -> dict[str, tuple]:
    """The file's tensors, BatchNorm counters excluded."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in BiSeNet(classes).state_dict().items() if not k.endswith(BATCH_COUNTER)}


def _describe_foreign(shapes: dict[str, tuple], name: str) -> None:
    if "cp.resnet.conv1.weight" in shapes:
        classes = shapes.get("conv_out.conv_out.weight", (len(LABELS),))[0]
        if classes != len(LABELS):
            raise ModelFileError(f"{name} is a BiSeNet parser with {classes} labels; PuLID reads facexlib's "
                                 f"{len(LABELS)}-label CelebAMask-HQ parser", FILE_FIX)
        return
    if any(k.startswith("module.cp.") for k in shapes):
        raise ModelFileError(f"{name} holds a BiSeNet saved with a 'module.' prefix; use facexlib's {FILE_NAME}",
                             FILE_FIX)
    if "out_mask_conv.weight" in shapes or any(k.startswith("out_mask_conv.") for k in shapes):
        raise ModelFileError(f"{name} is facexlib's ParseNet (parsing_parsenet.pth); PuLID uses the BiSeNet parser",
                             FILE_FIX)
    if any(k.startswith(("ClassHead.", "BboxHead.", "LandmarkHead.")) for k in shapes):
        raise ModelFileError(f"{name} is a RetinaFace face detector, not the face parser", FILE_FIX)
    example = next(iter(shapes), "nothing")
    raise ModelFileError(f"{name} is not facexlib's BiSeNet face parser (it holds e.g. {example!r})", FILE_FIX)


def check_parser_shapes(shapes: dict[str, tuple], name: str) -> None:
    _describe_foreign(shapes, name)
    expected = expected_shapes()
    for key, shape in expected.items():
        if key not in shapes:
            raise ModelFileError(f"{name} has no tensor {key!r}: the file is incomplete", FILE_FIX)
        if tuple(shapes[key]) != shape:
            raise ModelFileError(f"tensor {key!r} in {name} has shape {list(shapes[key])}, expected {list(shape)}",
                                 FILE_FIX)
    extra = next((k for k in shapes if k not in expected and not k.endswith(BATCH_COUNTER)), None)
    if extra is not None:
        raise ModelFileError(f"{name} has an unexpected tensor {extra!r}; it is not facexlib's BiSeNet", FILE_FIX)


def load_face_parser(path: str, dtype: torch.dtype | None = None) -> BiSeNet:
    """Read, check and build facexlib's BiSeNet (in eval mode, stored in ``dtype``, default: the file's)."""
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"face parsing weights not found: {path}", FILE_FIX)
    if path.lower().endswith(".safetensors"):
        shapes, _ = read_header(path)
        check_parser_shapes(shapes, name)
        tensors = read_tensors(path)
    else:
        data = load_weights_only(path, FILE_FIX)
        if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
            raise ModelFileError(f"{name} is not a dict of tensors", FILE_FIX)
        tensors = {str(k): v for k, v in data.items()}
        check_parser_shapes({k: tuple(v.shape) for k, v in tensors.items()}, name)
    weights = {k: v for k, v in tensors.items() if not k.endswith(BATCH_COUNTER)}
    check_values(weights, name, FILE_FIX)
    return build_face_parser(weights, dtype)


def build_face_parser(weights: dict[str, torch.Tensor], dtype: torch.dtype | None = None) -> BiSeNet:
    """BiSeNet built on the meta device and filled with ``weights`` (checked names; BatchNorm counters optional)."""
    with torch.device("meta"):
        parser = BiSeNet()
    weights = {k: v if dtype is None or k.endswith(BATCH_COUNTER) else v.to(dtype) for k, v in weights.items()}
    missing, _ = parser.load_state_dict(weights, strict=False, assign=True)
    if any(not k.endswith(BATCH_COUNTER) for k in missing):
        raise ValueError(f"BiSeNet weights lack {[k for k in missing if not k.endswith(BATCH_COUNTER)][:3]}")
    for module in parser.modules():  # counters the file may lack: unused in eval mode
        if isinstance(module, nn.BatchNorm2d) and module.num_batches_tracked.is_meta:
            module.num_batches_tracked = torch.zeros((), dtype=torch.long)
    return parser.eval().requires_grad_(False)
