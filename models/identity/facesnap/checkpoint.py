"""FaceSnap weight files: one ``.safetensors`` holding the mixer, the ID-Injector heads and optionally FFRNet.

Layout (tensor name prefixes):
    mixer.*      FacialAttributeMixer
    injector.*   IDInjector heads (when the FFRNet config has ``id_injector``)
    ffrnet.*     the FFRNet backbone in diffusers ControlNetModel names (optional: it may instead be a
                 diffusers ControlNet in ComfyUI's ``models/controlnet``, read by ``diffusers_controlnet.py``)
Metadata: ``facesnap_format``, ``mixer_config`` and ``ffrnet_config`` (JSON), plus free-form string entries.

Before anything is built, every config value is checked (``layout_checks.py``), the parameters the config implies
are compared with those the header declares, and every tensor shape is checked against the config; a mismatch names
the field, or the tensor and the base model the file is for. Only then are the tensors read, and refused if any holds
NaN or infinite values. Models are built on the meta device and filled with ``assign=True``, so a full-size file
loads without first allocating random weights.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace

import torch

from ...common.file_checks import Interrupt, check_finite, check_parameter_budget, declared_parameters, parse_config
from ...common.safetensors_files import read_header, read_tensors
from ...errors import ModelFileError
from ..controlnet_checks import controlnet_parameters
from ..diffusers_controlnet import (
    build_from_tensors,
    config_base,
    header_base,
    load_diffusers_controlnet,
    validate_tensors,
)
from ..sdxl_controlnet import ControlNetConfig
from .attribute_mixer import FacialAttributeMixer
from .ffrnet import FFRNet, FFRNetConfig
from .id_injector import IDInjector
from .layout_checks import checked_ffrnet_config, checked_mixer_config, injector_parameters, mixer_parameters

FORMAT_VERSION = "1"
OWN_FFRNET = "(FFRNet inside the FaceSnap file)"  # FaceSnap Model Loader's controlnet_name for "none"
REEXPORT_FIX = "re-export the file with save_facesnap, or use the original download"


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
    shapes, metadata = read_header(path)
    name = os.path.basename(path)
    if metadata.get("facesnap_format") != FORMAT_VERSION or "mixer_config" not in metadata:
        raise ModelFileError(
            f"{name} is not a FaceSnap weights file (no FaceSnap metadata); it looks like {header_base(shapes)} "
            "weights",
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
        validate_tensors(FacialAttributeMixer(mixer_cfg), shapes, "mixer.", path, f"a mixer of width {mixer_cfg.dim}",
                  "another mixer layout")
    if own_backbone:
        check_parameter_budget(controlnet_parameters(ffr_cfg), declared_parameters(shapes, "ffrnet."),
                               "its ffrnet_config", name, REEXPORT_FIX)
        if ffr_cfg.id_injector:
            check_parameter_budget(injector_parameters(ffr_cfg.injector_layout()),
                                   declared_parameters(shapes, "injector."), "its ffrnet_config (ID-Injector heads)",
                                   name, REEXPORT_FIX)
        with torch.device("meta"):
            validate_tensors(FFRNet(ffr_cfg), _with_injector(shapes), "ffrnet.", path, config_base(ffr_cfg),
                             header_base(shapes, "ffrnet."))
    tensors = read_tensors(path, interrupt)
    check_finite(tensors, name, REEXPORT_FIX, interrupt)
    mixer = build_from_tensors(lambda: FacialAttributeMixer(mixer_cfg, operations), tensors, "mixer.")

    ffrnet = None
    if own_backbone:
        ffrnet = build_from_tensors(lambda: FFRNet(ffr_cfg, operations), _with_injector(tensors), "ffrnet.")
    elif controlnet_path is not None:
        ffrnet = load_controlnet_as_ffrnet(controlnet_path, operations=operations, interrupt=interrupt)
        if ffr_cfg is not None and ffr_cfg.id_injector:
            _attach_injector(ffrnet, ffr_cfg.injector_kernel_size, shapes, tensors, path, operations)
    if ffrnet is not None and ffrnet.config.cross_attention_dim != mixer_cfg.dim:
        raise ModelFileError(
            f"the FFRNet cross-attention width {ffrnet.config.cross_attention_dim} differs from the mixer width "
            f"{mixer_cfg.dim}",
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
    validate_tensors(heads, shapes, "injector.", path, config_base(cfg), "another layout")
    dtype = ffrnet.conv_in.weight.dtype  # the backbone file's (``ffrnet.dtype`` is the compute dtype)
    heads.load_state_dict({k[len("injector."):]: v.to(dtype) for k, v in tensors.items()
                           if k.startswith("injector.")}, assign=True)
    ffrnet.config, ffrnet.id_injector = cfg, heads


def _with_injector(tensors: dict) -> dict:
    """View the file's ``injector.*`` tensors under the FFRNet's ``id_injector.*`` names."""
    out = dict(tensors)
    out.update({"ffrnet.id_injector." + k[len("injector."):]: v
                for k, v in tensors.items() if k.startswith("injector.")})
    return out


def ffrnet_backbone(config: ControlNetConfig, operations=None) -> FFRNet:
    """An FFRNet without ID-Injector heads on a ControlNet layout: what a diffusers ControlNet file is read into."""
    return FFRNet(FFRNetConfig.from_controlnet(config), operations)


def load_controlnet_as_ffrnet(path: str, id_injector: bool = False, injector_kernel_size: int = 1, operations=None,
                              interrupt: Interrupt = None) -> FFRNet:
    """A diffusers SDXL ControlNet (``diffusers_controlnet.load_diffusers_controlnet``) as the FFRNet backbone;
    with ``id_injector``, ID-Injector heads at zero (a no-op) are added."""
    ffrnet = load_diffusers_controlnet(path, operations, interrupt, build=ffrnet_backbone)
    if id_injector:
        ffrnet.config = replace(ffrnet.config, id_injector=True, injector_kernel_size=injector_kernel_size)
        dtype = ffrnet.conv_in.weight.dtype  # the file's (``ffrnet.dtype`` is the compute dtype)
        ffrnet.id_injector = IDInjector(ffrnet.config.injector_layout(), operations).to(dtype)
    return ffrnet
