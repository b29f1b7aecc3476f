"""FaceSnap weight files: one ``.safetensors`` holding the mixer, the ID-Injector heads and optionally FFRNet.

Layout (tensor name prefixes):
    mixer.*      FacialAttributeMixer
    injector.*   IDInjector heads (when the FFRNet config has ``id_injector``)
    ffrnet.*     the FFRNet backbone in diffusers ControlNetModel names (optional: it may instead be a
                 diffusers ControlNet in ComfyUI's ``models/controlnet``, see ``load_diffusers_controlnet``)
Metadata: ``facesnap_format``, ``mixer_config`` and ``ffrnet_config`` (JSON), plus free-form string entries.

Before anything is built, every config value is checked (``config_bounds.py``), the parameters the config implies
are compared with those the header declares (``parameter_counts.py``), and every tensor shape is checked against the
config; a mismatch names the field, or the tensor and the base model the file is for. Only then are the tensors read,
and refused if any holds NaN or infinite values. Models are built on the meta device and filled with
``assign=True``, so a full-size file loads without first allocating random weights.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace

import torch
from torch import nn

from ...errors import ModelFileError
from ...common.file_checks import (Interrupt, check_finite, check_parameter_budget, declared_parameters, parse_config,
                                   read_config_file)
from .attribute_mixer import FacialAttributeMixer
from ..config_bounds import checked_ffrnet_config, checked_mixer_config
from .ffrnet import FFRNet, FFRNetConfig
from .id_injector import IDInjector
from ..parameter_counts import ffrnet_parameters, injector_parameters, mixer_parameters
from ...common.safetensors_files import read_header, read_tensors

FORMAT_VERSION = "1"
OWN_FFRNET = "(FFRNet inside the FaceSnap file)"  # FaceSnap Model Loader's controlnet_name for "none"
REEXPORT_FIX = "re-export the file with save_facesnap, or use the original download"
CONTROLNET_FIX = "use an unmodified diffusers SDXL ControlNet (config.json beside its weights, or a single .safetensors)"
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


def _config_base(cfg: FFRNetConfig) -> str:
    return base_model_name(cfg.projection_class_embeddings_input_dim, None, len(cfg.block_out_channels))


def _dim(shape, axis: int) -> int | None:
    return shape[axis] if shape is not None and len(shape) > axis else None


def _sd_base(shapes: dict[str, tuple], prefix: str = "") -> str:
    """The base model a ControlNet/UNet's tensor shapes (from a header) belong to."""
    proj = shapes.get(prefix + "add_embedding.linear_1.weight")
    k = next((v for n, v in shapes.items() if n.startswith(prefix) and n.endswith("attn2.to_k.weight")), None)
    levels = len({n.split(".")[1] for n in shapes if n.startswith(prefix + "down_blocks.")}) or None
    return base_model_name(_dim(proj, 1), _dim(k, 1), levels)


def _validate(module: nn.Module, shapes: dict[str, tuple], prefix: str, path: str, expected_base: str,
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


def _build(factory, tensors: dict, prefix: str) -> nn.Module:
    with torch.device("meta"):
        module = factory()
    state = {name: tensors[prefix + name] for name in module.state_dict()}
    module.load_state_dict(state, assign=True)
    return module


def _header(path: str) -> tuple[dict[str, tuple], dict[str, str]]:
    if not os.path.isfile(path):
        raise ModelFileError(f"weights file not found: {path}", "put the .safetensors file there")
    return read_header(path)


def _config(metadata: dict, key: str, name: str) -> dict:
    return parse_config(metadata[key], f"its {key} metadata", name, REEXPORT_FIX)


def save_facesnap(path: str, mixer: FacialAttributeMixer, ffrnet: FFRNet | None,
                  extra_metadata: dict | None = None, ffrnet_config: FFRNetConfig | None = None,
                  include_backbone: bool = True) -> None:
    """Write one .safetensors. ``ffrnet_config`` describes the injector when no FFRNet module is given."""
    from safetensors.torch import save_file

    tensors = {f"mixer.{k}": v for k, v in mixer.state_dict().items()}
    cfg = ffrnet.config if ffrnet is not None else ffrnet_config
    if ffrnet is not None:
        for k, v in ffrnet.state_dict().items():
            if k.startswith("id_injector."):
                tensors["injector." + k[len("id_injector."):]] = v
            elif include_backbone:
                tensors["ffrnet." + k] = v
    metadata = {str(k): str(v) for k, v in (extra_metadata or {}).items()}
    metadata.update(
        facesnap_format=FORMAT_VERSION,
        mixer_config=json.dumps(mixer.config.to_dict()),
        has_ffrnet=str(ffrnet is not None and include_backbone).lower(),
    )
    if cfg is not None:
        metadata["ffrnet_config"] = json.dumps(cfg.to_dict())
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(tensors, path, metadata=metadata)


def load_facesnap(path: str, controlnet_path: str | None = None, operations=None, interrupt: Interrupt = None):
    """-> (mixer, ffrnet_or_None, metadata). ``controlnet_path`` supplies the backbone when the file has none
    (a diffusers ControlNet folder or .safetensors); the file's injector heads are attached to it. A file that has
    its own FFRNet refuses a ``controlnet_path``: its heads and mixer were trained with that FFRNet.
    ``operations``: layer classes of the mixer, FFRNet and the heads (``operations.py``; default torch.nn). The modules
    hold the file's dtype; ComfyUI's glue rebuilds them in its storage dtype (``comfy_glue/weight_dtypes.py``).
    Every config value, parameter count and tensor shape is checked from the header before any data is read;
    ``interrupt`` is polled between tensors."""
    shapes, metadata = _header(path)
    name = os.path.basename(path)
    if metadata.get("facesnap_format") != FORMAT_VERSION or "mixer_config" not in metadata:
        raise ModelFileError(
            f"{name} is not a FaceSnap weights file (no FaceSnap metadata); it looks like {_sd_base(shapes)} weights",
            "put a FaceSnap .safetensors in models/facesnap; ControlNets belong in models/controlnet",
        )
    mixer_cfg = checked_mixer_config(_config(metadata, "mixer_config", name), name, REEXPORT_FIX)
    ffr_cfg = None
    if "ffrnet_config" in metadata:
        ffr_cfg = checked_ffrnet_config(_config(metadata, "ffrnet_config", name), name, REEXPORT_FIX)
    own_backbone = ffr_cfg is not None and any(k.startswith("ffrnet.") for k in shapes)
    if own_backbone and controlnet_path is not None:
        raise ModelFileError(
            f"{name} has its own FFRNet, so the ControlNet {os.path.basename(controlnet_path)!r} chosen beside it "
            "would not be used", f"set controlnet_name to {OWN_FFRNET!r}, or pick a FaceSnap file without FFRNet")
    check_parameter_budget(mixer_parameters(mixer_cfg), declared_parameters(shapes, "mixer."), "its mixer_config",
                           name, REEXPORT_FIX)
    with torch.device("meta"):
        _validate(FacialAttributeMixer(mixer_cfg), shapes, "mixer.", path, f"a mixer of width {mixer_cfg.dim}",
                  "another mixer layout")
    if own_backbone:
        check_parameter_budget(ffrnet_parameters(ffr_cfg), declared_parameters(shapes, "ffrnet."),
                               "its ffrnet_config", name, REEXPORT_FIX)
        if ffr_cfg.id_injector:
            check_parameter_budget(injector_parameters(ffr_cfg.injector_layout()),
                                   declared_parameters(shapes, "injector."), "its ffrnet_config (ID-Injector heads)",
                                   name, REEXPORT_FIX)
        with torch.device("meta"):
            _validate(FFRNet(ffr_cfg), _with_injector(shapes), "ffrnet.", path, _config_base(ffr_cfg),
                      _sd_base(shapes, "ffrnet."))
    tensors = read_tensors(path, interrupt)
    check_finite(tensors, name, REEXPORT_FIX, interrupt)
    mixer = _build(lambda: FacialAttributeMixer(mixer_cfg, operations), tensors, "mixer.")

    ffrnet = None
    if own_backbone:
        ffrnet = _build(lambda: FFRNet(ffr_cfg, operations), _with_injector(tensors), "ffrnet.")
    elif controlnet_path is not None:
        ffrnet = load_diffusers_controlnet(controlnet_path, operations=operations, interrupt=interrupt)
        if ffr_cfg is not None and ffr_cfg.id_injector:
            _attach_injector(ffrnet, ffr_cfg.injector_kernel_size, shapes, tensors, path, operations)
    if ffrnet is not None and ffrnet.config.cross_attention_dim != mixer_cfg.dim:
        raise ModelFileError(
            f"the FFRNet cross-attention width {ffrnet.config.cross_attention_dim} differs from the mixer width {mixer_cfg.dim}",
            "use the ControlNet that was trained together with this FaceSnap file",
        )
    user_metadata = {k: v for k, v in metadata.items() if k not in ("mixer_config", "ffrnet_config")}
    return mixer.eval(), (ffrnet.eval() if ffrnet is not None else None), user_metadata


def _attach_injector(ffrnet: FFRNet, kernel_size: int, shapes: dict, tensors: dict, path: str, operations) -> None:
    """The FaceSnap file's ``injector.*`` heads on a ControlNet backbone from another file, sized by that backbone:
    checked against the file's header before they are built."""
    cfg = replace(ffrnet.config, id_injector=True, injector_kernel_size=kernel_size)
    layout = cfg.injector_layout()
    check_parameter_budget(injector_parameters(layout), declared_parameters(shapes, "injector."),
                           "the ID-Injector heads its ffrnet_config sets for this ControlNet", os.path.basename(path),
                           "use the ControlNet that was trained together with this FaceSnap file")
    with torch.device("meta"):
        heads = IDInjector(layout, operations)
    _validate(heads, shapes, "injector.", path, _config_base(cfg), "another layout")
    dtype = ffrnet.conv_in.weight.dtype  # the backbone file's (``ffrnet.dtype`` is the compute dtype)
    heads.load_state_dict({k[len("injector."):]: v.to(dtype) for k, v in tensors.items()
                           if k.startswith("injector.")}, assign=True)
    ffrnet.config, ffrnet.id_injector = cfg, heads


def _with_injector(tensors: dict) -> dict:
    """View the file's ``injector.*`` tensors under the FFRNet's ``id_injector.*`` names."""
    out = dict(tensors)
    out.update({"ffrnet.id_injector." + k[len("injector."):]: v for k, v in tensors.items() if k.startswith("injector.")})
    return out


def load_diffusers_controlnet(path: str, id_injector: bool = False, injector_kernel_size: int = 1,
                              operations=None, interrupt: Interrupt = None) -> FFRNet:
    """A diffusers ControlNet (folder with config.json, or a single .safetensors) as the FFRNet backbone.

    Single files carry no config; it is read from the safetensors metadata when present, else inferred from
    the tensor shapes (head count assumes SDXL's 64-wide heads). The config is checked field by field and against
    the parameters the file holds before anything is built. Injector heads start at zero (a no-op)."""
    name = config_name = os.path.basename(path)
    if os.path.isdir(path):
        config_path = os.path.join(path, "config.json")
        config_name = os.path.join(name, "config.json")
        weights = next((os.path.join(path, n) for n in DIFFUSERS_WEIGHT_NAMES if os.path.isfile(os.path.join(path, n))), None)
        if weights is None or not os.path.isfile(config_path):
            raise ModelFileError(f"{path} is not a diffusers ControlNet folder (config.json + "
                                 f"{DIFFUSERS_WEIGHT_NAMES[0]})", "point to a diffusers ControlNet folder or .safetensors")
        config = read_config_file(config_path, CONTROLNET_FIX)
        shapes, _ = _header(weights)
    else:
        weights = path
        shapes, metadata = _header(path)
        if "zero_convs.0.0.weight" in shapes:
            raise ModelFileError(f"{name} is an original-layout (LDM) ControlNet",
                                 "FFRNet loads diffusers-layout ControlNets; convert it with diffusers first")
        if "controlnet_cond_embedding.conv_in.weight" not in shapes:
            raise ModelFileError(f"{name} is not a diffusers ControlNet",
                                 "use a diffusers SDXL ControlNet .safetensors")
        config = (parse_config(metadata["config"], "its config metadata", name, CONTROLNET_FIX)
                  if "config" in metadata else infer_diffusers_config(shapes, name))
    base = _sd_base(shapes)
    if config.get("projection_class_embeddings_input_dim") != 2816 or config.get("addition_embed_type", "text_time") != "text_time":
        raise ModelFileError(f"{name} is a ControlNet for {base}, not SDXL",
                             "FaceSnap's FFRNet is an SDXL ControlNet; use an SDXL (diffusers) ControlNet")
    cfg = checked_ffrnet_config(config, config_name, CONTROLNET_FIX, where="config", diffusers=True)
    check_parameter_budget(ffrnet_parameters(cfg), declared_parameters(shapes), "its config", config_name,
                           CONTROLNET_FIX)
    with torch.device("meta"):
        _validate(FFRNet(cfg), shapes, "", path, _config_base(cfg), base)
    tensors = read_tensors(weights, interrupt)
    check_finite(tensors, os.path.basename(weights), CONTROLNET_FIX, interrupt)
    ffrnet = _build(lambda: FFRNet(cfg, operations), tensors, "")
    if id_injector:
        ffrnet.config = replace(cfg, id_injector=True, injector_kernel_size=injector_kernel_size)
        dtype = ffrnet.conv_in.weight.dtype  # the file's (``ffrnet.dtype`` is the compute dtype)
        ffrnet.id_injector = IDInjector(ffrnet.config.injector_layout(), operations).to(dtype)
    return ffrnet


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
    for i, ch in zip(levels, channels):
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
