"""The EVA02-CLIP-L-14-336 weight file: ``EVA02_CLIP_L_336_psz14_s6B.pt`` (QuanSun/EVA-CLIP, OpenCLIP-style keys).

The published file is a torch pickle of the whole CLIP (``visual.*`` vision tower, ``text.*``, ``logit_scale``),
read with ``torch.load(weights_only=True)``: a pickle that would run code is refused, and nothing in it runs. Also
read: the same dict under a ``model`` / ``module`` / ``state_dict`` key or with DDP's ``module.`` prefix (the layouts
eva_clip's own loader accepts), a vision-only file without the ``visual.`` prefix, and ``.safetensors`` conversions
with either naming. Only the vision tower is kept.

Every tensor name and shape of the tower is checked before the tower is built; the per-block copies of the RoPE
tables the file carries are checked for shape and dropped (the tower computes them). Other vision towers are named:
EVA01-CLIP, EVA02-CLIP-B-16 / L-14 at 224 px / bigE, EVA-02 MIM backbones, OpenAI / OpenCLIP ViTs, the
transformers CLIP vision layout, OpenCLIP's timm layout of EVA, PuLID adapter files.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict

import torch

from ...common.config_values import ConfigValues
from ...common.file_checks import parse_config
from ...common.safetensors_files import check_values, read_header, read_tensors
from ...common.torch_pickle import load_weights_only
from ...errors import ModelFileError
from .eva_clip_vision import EVAVisionConfig, EVAVisionTower

FILE_NAME = "EVA02_CLIP_L_336_psz14_s6B.pt"
FILE_FIX = f"download {FILE_NAME} (QuanSun/EVA-CLIP on Hugging Face, 856 MB), or a .safetensors conversion of it"
WRAPPER_KEYS = ("model", "module", "state_dict")  # in eva_clip's order
TOWER_PREFIX = "visual."
EVA02_CLIP_L = EVAVisionConfig()  # the tower of FILE_NAME
ROPE_BUFFER = re.compile(r"^(blocks\.\d+\.attn\.)?rope\.freqs_(cos|sin)$")
KNOWN_TOWERS = {  # (width, blocks, patch, image size) -> name
    (768, 12, 16, 224): "EVA02-CLIP-B-16",
    (1024, 24, 14, 224): "EVA02-CLIP-L-14 at 224 px (PuLID uses the 336 px tower)",
    (1792, 64, 14, 224): "EVA02-CLIP-bigE-14",
}


def _unwrap(data, name: str) -> dict:
    if not isinstance(data, dict):
        raise ModelFileError(f"{name} holds a {type(data).__name__}, not a dict of tensors", FILE_FIX)
    for key in WRAPPER_KEYS:
        if isinstance(data.get(key), dict):
            data = data[key]
            break
    if data and all(str(k).startswith("module.") for k in data):
        data = {str(k)[len("module."):]: v for k, v in data.items()}
    return {str(k): v for k, v in data.items()}


def _tower_prefix(keys) -> str | None:
    """``"visual."`` for a whole-CLIP file, ``""`` for a vision-only one, None when neither."""
    if any(k.startswith(TOWER_PREFIX) for k in keys):
        return TOWER_PREFIX
    return "" if "pos_embed" in keys and any(k.startswith("blocks.") for k in keys) else None


def _foreign_file(keys, name: str) -> str | None:
    """What a file without an EVA-CLIP tower is, when recognisable."""
    if any(k.startswith("vision_model.") for k in keys):
        return f"{name} is a CLIP vision model in the transformers layout (a ComfyUI clip_vision file), not EVA-CLIP"
    if any(k.startswith("visual.trunk.") for k in keys):
        return f"{name} is a CLIP in OpenCLIP's timm layout (visual.trunk.*), which is not read; use the original file"
    if any(k.startswith(("visual.transformer.resblocks.", "visual.class_embedding")) for k in keys):
        return f"{name} is an OpenAI / OpenCLIP ViT CLIP, not EVA-CLIP"
    if any(k.startswith(("id_adapter.", "image_proj.", "ip_adapter.")) for k in keys):
        return f"{name} is an identity adapter (PuLID / IP-Adapter weights), not the EVA-CLIP vision tower"
    return None


def _describe_tower(tower: dict[str, tuple], name: str, config: EVAVisionConfig) -> str | None:
    """Name another vision tower from its structure."""
    if "blocks.0.attn.qkv.weight" in tower or "blocks.0.mlp.fc1.weight" in tower:
        return (f"{name} is an EVA01-CLIP vision tower (fused qkv, GELU MLP), not EVA02-CLIP-L-14-336's (SwiGLU, "
                "sub-LN, RoPE)")
    if "head.weight" not in tower and ("mask_token" in tower or "lm_head.weight" in tower):
        return f"{name} is an EVA-02 MIM-pretrained backbone without the CLIP head, not EVA02-CLIP-L-14-336"
    pos, patch = tower.get("pos_embed"), tower.get("patch_embed.proj.weight")
    if pos is None or patch is None or len(pos) != 3 or len(patch) != 4:
        return None
    blocks = len({k.split(".")[1] for k in tower if k.startswith("blocks.")})
    size = round(math.sqrt(max(pos[1] - 1, 0))) * patch[-1]
    found = (pos[2], blocks, patch[-1], size)
    if found == (config.width, config.layers, config.patch_size, config.image_size):
        return None
    kind = KNOWN_TOWERS.get(found, f"an EVA-CLIP tower {pos[2]} wide with {blocks} blocks, {patch[-1]} px patches "
                                   f"at {size} px")
    return f"{name} holds {kind}; PuLID needs EVA02-CLIP-L-14-336 (1024 wide, 24 blocks, 14 px patches at 336 px)"


def expected_shapes(config: EVAVisionConfig = EVA02_CLIP_L) -> dict[str, tuple]:
    """The tower's tensors as the file names them without the ``visual.`` prefix (RoPE tables excluded)."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in EVAVisionTower(config).state_dict().items()}


def check_tower_shapes(shapes: dict[str, tuple], name: str, config: EVAVisionConfig = EVA02_CLIP_L) -> list[str]:
    """Check a file's tensor shapes; -> the file's names of the tower tensors to read (RoPE tables excluded).
    Errors name the kind of file, or the tensor."""
    prefix = _tower_prefix(shapes)
    foreign = _foreign_file(shapes, name)
    if foreign or prefix is None:
        example = next(iter(shapes), "nothing")
        raise ModelFileError(foreign or f"{name} holds no EVA-CLIP vision tower (it holds e.g. {example!r})",
                             FILE_FIX)
    tower = {k[len(prefix):]: tuple(s) for k, s in shapes.items() if k.startswith(prefix)}
    described = _describe_tower(tower, name, config)
    if described:
        raise ModelFileError(described, FILE_FIX)
    expected = expected_shapes(config)
    rope_shape = (config.grid ** 2, config.head_dim)
    for key, shape in tower.items():
        if ROPE_BUFFER.match(key) and shape != rope_shape:
            raise ModelFileError(f"tensor {prefix + key!r} in {name} has shape {list(shape)}, expected "
                                 f"{list(rope_shape)}: the file's RoPE is for another image size", FILE_FIX)
        if not ROPE_BUFFER.match(key) and key not in expected:
            raise ModelFileError(f"{name} has an unexpected tensor {prefix + key!r}; it is not EVA02-CLIP-L-14-336's "
                                 "vision tower", FILE_FIX)
    for key, shape in expected.items():
        if key not in tower:
            raise ModelFileError(f"{name} has no tensor {prefix + key!r}: the file is incomplete or another model",
                                 FILE_FIX)
        if tower[key] != shape:
            raise ModelFileError(f"tensor {prefix + key!r} in {name} has shape {list(tower[key])}, expected "
                                 f"{list(shape)}", FILE_FIX)
    return [prefix + key for key in expected]


def read_tower_tensors(path: str, config: EVAVisionConfig = EVA02_CLIP_L) -> dict[str, torch.Tensor]:
    """The tower's tensors under the tower's own names, checked before anything is built."""
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"EVA-CLIP weights not found: {path}", FILE_FIX)
    if path.lower().endswith(".safetensors"):
        shapes, _ = read_header(path)
        names = check_tower_shapes(shapes, name, config)  # before reading any data
        tensors = read_tensors(path, names=names)
    else:
        entries = _unwrap(load_weights_only(path, FILE_FIX), name)
        prefix = _tower_prefix(entries)
        bad = next((k for k, v in entries.items()
                    if prefix is not None and k.startswith(prefix) and not isinstance(v, torch.Tensor)), None)
        if bad is not None:
            raise ModelFileError(f"{name}: entry {bad!r} is a {type(entries[bad]).__name__}, not a tensor", FILE_FIX)
        shapes = {k: tuple(v.shape) if isinstance(v, torch.Tensor) else () for k, v in entries.items()}
        names = check_tower_shapes(shapes, name, config)
        tensors = {k: entries[k] for k in names}
    prefix = TOWER_PREFIX if names and names[0].startswith(TOWER_PREFIX) else ""
    tower = {k[len(prefix):]: v for k, v in tensors.items()}
    check_values(tensors, name, FILE_FIX)
    return tower


def build_tower(tensors: dict[str, torch.Tensor], config: EVAVisionConfig = EVA02_CLIP_L, operations=None,
                dtype: torch.dtype | None = None, compute_dtype: torch.dtype | None = None) -> EVAVisionTower:
    """The tower built on the meta device from ``operations`` and filled with ``tensors`` (from
    ``read_tower_tensors``), stored in ``dtype`` (default: the file's)."""
    with torch.device("meta"):
        tower = EVAVisionTower(config, operations, compute_dtype)
    tower.load_state_dict({k: v if dtype is None else v.to(dtype) for k, v in tensors.items()}, assign=True)
    return tower.eval().requires_grad_(False)


def checked_eva_config(data: dict, name: str) -> EVAVisionConfig:
    """A tower layout from a file's ``eva_config`` metadata (missing fields are EVA02-CLIP-L-14-336's), every value
    checked before anything is built."""
    defaults = asdict(EVAVisionConfig())
    values = ConfigValues({**defaults, **data}, "eva_config", name, FILE_FIX)
    values.unknown(defaults)
    sizes = {key: values.integer(key, 1, limit) for key, limit in
             (("image_size", 1024), ("patch_size", 64), ("width", 4096), ("layers", 64), ("heads", 64),
              ("mlp_hidden", 16384), ("embed_dim", 4096), ("rope_pretrain_grid", 256))}
    layers = values.integers("hidden_layers", 0, sizes["layers"] - 1, 5)
    eps = values.number("eps", 0.0, 1.0)
    config = EVAVisionConfig(**sizes, hidden_layers=tuple(layers), eps=eps)
    if config.image_size % config.patch_size or config.width % config.heads or config.head_dim % 4:
        values.refuse("image_size must be a multiple of patch_size, and width a multiple of 4 x heads")
    return config


def file_config(path: str) -> EVAVisionConfig:
    """EVA02-CLIP-L-14-336's layout, unless a ``.safetensors`` file names another in its ``eva_config`` metadata (the
    tests' tiny towers; published files have none)."""
    if not path.lower().endswith(".safetensors") or not os.path.isfile(path):
        return EVAVisionConfig()
    _, metadata = read_header(path)
    if "eva_config" not in metadata:
        return EVAVisionConfig()
    name = os.path.basename(path)
    return checked_eva_config(parse_config(metadata["eva_config"], "its eva_config metadata", name, FILE_FIX), name)


def load_eva_clip_vision(path: str, operations=None, dtype: torch.dtype | None = None,
                         compute_dtype: torch.dtype | None = None,
                         config: EVAVisionConfig | None = None) -> EVAVisionTower:
    """Read, check and build in one step; ``config`` defaults to the file's (``file_config``)."""
    config = config or file_config(path)
    return build_tower(read_tower_tensors(path, config), config, operations, dtype, compute_dtype)
