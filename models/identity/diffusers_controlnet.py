"""Reading diffusers SDXL ControlNets (a folder with ``config.json``, or a single ``.safetensors``) as an
``SDXLControlNet``, and the header checks that every loader of ControlNet-layout tensors shares.

Before anything is built, the config is checked field by field (``controlnet_checks.py``), the parameters it implies
are compared with those the header declares, and every tensor shape is checked against the config; a mismatch names
the field, or the tensor and the base model the file is for. Only then are the tensors read, and refused if any holds
NaN or infinite values. Models are built on the meta device and filled with ``assign=True``, so a full-size file
loads without first allocating random weights.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..common.file_checks import (
    Interrupt,
    check_finite,
    check_parameter_budget,
    declared_parameters,
    parse_config,
    read_config_file,
)
from ..common.safetensors_files import read_header, read_tensors
from ..errors import ModelFileError
from .controlnet_checks import checked_controlnet_config, controlnet_parameters
from .sdxl_controlnet import ControlNetConfig, SDXLControlNet

CONTROLNET_FIX = ("use an unmodified diffusers SDXL ControlNet (config.json beside its weights, or a single "
                  ".safetensors)")
DIFFUSERS_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors")


def base_model_name(projection_dim: int | None, cross_attention_dim: int | None, levels: int | None) -> str:
    """Name the Stable Diffusion family a ControlNet/UNet layout belongs to."""
    if projection_dim == 2816 and levels == 3:
        return "SDXL"
    if projection_dim == 2816:
        return "SDXL-like (non-standard depth)"
    if cross_attention_dim == 768:
        return "SD1.5"
    if cross_attention_dim == 1024:
        return "SD2.x"
    return "an unknown base model"


def config_base(cfg: ControlNetConfig) -> str:
    """The base model a ControlNet config is for."""
    return base_model_name(cfg.projection_class_embeddings_input_dim, None, len(cfg.block_out_channels))


def _dim(shape, axis: int) -> int | None:
    return shape[axis] if shape is not None and len(shape) > axis else None


def header_base(shapes: dict[str, tuple], prefix: str = "") -> str:
    """The base model a ControlNet/UNet's tensor shapes (from a header) belong to."""
    proj = shapes.get(prefix + "add_embedding.linear_1.weight")
    k = next((v for n, v in shapes.items() if n.startswith(prefix) and n.endswith("attn2.to_k.weight")), None)
    levels = len({n.split(".")[1] for n in shapes if n.startswith(prefix + "down_blocks.")}) or None
    return base_model_name(_dim(proj, 1), _dim(k, 1), levels)


def validate_tensors(module: nn.Module, shapes: dict[str, tuple], prefix: str, path: str, expected_base: str,
                     file_base: str) -> None:
    """Every tensor of ``module`` under ``prefix`` in the file's header ``shapes``, with its shape, and no other."""
    expected = module.state_dict()
    for name, ref in expected.items():
        key = prefix + name
        if key not in shapes:
            raise ModelFileError(
                f"{os.path.basename(path)} has no tensor {key!r} (expected for {expected_base}); "
                f"the file looks like {file_base}",
                f"use a FaceSnap/ControlNet file made for {expected_base}",
            )
        got = tuple(shapes[key])
        if got != tuple(ref.shape):
            raise ModelFileError(
                f"tensor {key!r} in {os.path.basename(path)} has shape {list(got)}, expected {list(ref.shape)}: "
                f"the file is for {file_base}, this model needs {expected_base}",
                f"use weights made for {expected_base}, not {file_base}",
            )
    extra = [k for k in shapes if k.startswith(prefix) and k[len(prefix):] not in expected]
    if extra:
        raise ModelFileError(
            f"{os.path.basename(path)} has {len(extra)} unexpected tensors under {prefix!r}, e.g. {extra[0]!r}",
            "the file does not match its own config; re-export it with save_facesnap",
        )


def build_from_tensors(factory, tensors: dict, prefix: str) -> nn.Module:
    """``factory()`` built on the meta device and filled with the file's ``prefix`` tensors (no random init)."""
    with torch.device("meta"):
        module = factory()
    state = {name: tensors[prefix + name] for name in module.state_dict()}
    module.load_state_dict(state, assign=True)
    return module


def load_diffusers_controlnet(path: str, operations=None, interrupt: Interrupt = None,
                              build=SDXLControlNet) -> nn.Module:
    """A diffusers SDXL ControlNet (folder with config.json, or a single .safetensors) as ``build(config, operations)``
    (default an ``SDXLControlNet``; FaceSnap builds an FFRNet without heads, whose tensors are the same).

    Single files carry no config; it is read from the safetensors metadata when present, else inferred from
    the tensor shapes (head count assumes SDXL's 64-wide heads). The config is checked field by field and against
    the parameters the file holds before anything is built. ``operations``: layer classes (default torch.nn);
    ``interrupt`` is polled between tensors."""
    name = config_name = os.path.basename(path)
    if os.path.isdir(path):
        config_path = os.path.join(path, "config.json")
        config_name = os.path.join(name, "config.json")
        weights = next((os.path.join(path, n) for n in DIFFUSERS_WEIGHT_NAMES
                        if os.path.isfile(os.path.join(path, n))), None)
        if weights is None or not os.path.isfile(config_path):
            raise ModelFileError(f"{path} is not a diffusers ControlNet folder (config.json + "
                                 f"{DIFFUSERS_WEIGHT_NAMES[0]})",
                                 "point to a diffusers ControlNet folder or .safetensors")
        config = read_config_file(config_path, CONTROLNET_FIX)
        shapes, _ = read_header(weights)
    else:
        weights = path
        shapes, metadata = read_header(path)
        if "zero_convs.0.0.weight" in shapes:
            raise ModelFileError(f"{name} is an original-layout (LDM) ControlNet",
                                 "the pack loads diffusers-layout ControlNets; convert it with diffusers first")
        if "controlnet_cond_embedding.conv_in.weight" not in shapes:
            raise ModelFileError(f"{name} is not a diffusers ControlNet",
                                 "use a diffusers SDXL ControlNet .safetensors")
        config = (parse_config(metadata["config"], "its config metadata", name, CONTROLNET_FIX)
                  if "config" in metadata else infer_diffusers_config(shapes, name))
    base = header_base(shapes)
    if (config.get("projection_class_embeddings_input_dim") != 2816
            or config.get("addition_embed_type", "text_time") != "text_time"):
        raise ModelFileError(f"{name} is a ControlNet for {base}, not SDXL",
                             "FFRNet and IdentityNet are SDXL ControlNets; use an SDXL (diffusers) ControlNet")
    cfg = checked_controlnet_config(config, config_name, CONTROLNET_FIX)
    check_parameter_budget(controlnet_parameters(cfg), declared_parameters(shapes), "its config", config_name,
                           CONTROLNET_FIX)
    with torch.device("meta"):
        validate_tensors(SDXLControlNet(cfg), shapes, "", path, config_base(cfg), base)
    tensors = read_tensors(weights, interrupt)
    check_finite(tensors, os.path.basename(weights), CONTROLNET_FIX, interrupt)
    return build_from_tensors(lambda: build(cfg, operations), tensors, "")


def infer_diffusers_config(shapes: dict, name: str = "the file") -> dict:
    """Rebuild a diffusers ControlNet config from the tensor shapes of its header (or from its tensors)."""
    shapes = {k: tuple(v.shape) if hasattr(v, "shape") else tuple(v) for k, v in shapes.items()}
    try:
        return _inferred_config(shapes)
    except (KeyError, IndexError, ValueError, StopIteration) as err:
        raise ModelFileError(f"{name} has no config and its layout cannot be read from its tensors (missing or "
                             f"malformed: {err})", CONTROLNET_FIX) from None


def _inferred_config(shapes: dict[str, tuple]) -> dict:
    levels = sorted({int(k.split(".")[1]) for k in shapes if k.startswith("down_blocks.")})
    channels = [shapes[f"down_blocks.{i}.resnets.0.conv1.weight"][0] for i in levels]
    layers = len({k.split(".")[3] for k in shapes if k.startswith("down_blocks.0.resnets.")})
    types, depth, heads = [], [], []
    for i, ch in zip(levels, channels, strict=True):
        has_attn = any(k.startswith(f"down_blocks.{i}.attentions.") for k in shapes)
        types.append("CrossAttnDownBlock2D" if has_attn else "DownBlock2D")
        blocks = {k.split(".")[5] for k in shapes if k.startswith(f"down_blocks.{i}.attentions.0.transformer_blocks.")}
        depth.append(max(len(blocks), 1))
        heads.append(max(ch // 64, 1))
    cond = [shapes["controlnet_cond_embedding.conv_in.weight"][0]]
    n_blocks = len({k.split(".")[2] for k in shapes if k.startswith("controlnet_cond_embedding.blocks.")})
    cond += [shapes[f"controlnet_cond_embedding.blocks.{j}.weight"][0] for j in range(1, n_blocks, 2)]
    mid_blocks = {k.split(".")[4] for k in shapes if k.startswith("mid_block.attentions.0.transformer_blocks.")}
    depth[-1] = len(mid_blocks) or depth[-1]
    k_proj = next(v for k, v in shapes.items() if k.endswith("attn2.to_k.weight"))
    add = shapes.get("add_embedding.linear_1.weight")
    return dict(
        addition_embed_type=None if add is None else "text_time",
        in_channels=shapes["conv_in.weight"][1],
        conditioning_channels=shapes["controlnet_cond_embedding.conv_in.weight"][1],
        down_block_types=types, block_out_channels=channels, layers_per_block=layers,
        transformer_layers_per_block=depth, attention_head_dim=heads, cross_attention_dim=k_proj[1],
        projection_class_embeddings_input_dim=None if add is None else add[1],
        conditioning_embedding_out_channels=cond,
    )
