"""FaceSnap weight files: one ``.safetensors`` holding the mixer, the ID-Injector heads and optionally FFRNet.

Layout (tensor name prefixes):
    mixer.*      FacialAttributeMixer
    injector.*   IDInjector heads (when the FFRNet config has ``id_injector``)
    ffrnet.*     the FFRNet backbone in diffusers ControlNetModel names (optional: it may instead be a
                 diffusers ControlNet in ComfyUI's ``models/controlnet``, see ``load_diffusers_controlnet``)
Metadata: ``facesnap_format``, ``mixer_config`` and ``ffrnet_config`` (JSON), plus free-form string entries.

Every tensor shape is checked against the config before anything is built; a mismatch names the tensor and
the base model the file is for. Models are built on the meta device and filled with ``assign=True``, so a
full-size file loads without first allocating random weights.
"""

from __future__ import annotations

import json
import os

import torch
from torch import nn

from .attribute_mixer import FacialAttributeMixer, MixerConfig
from ..errors import ModelFileError
from .ffrnet import FFRNet, FFRNetConfig
from .safetensors_files import read_header, read_tensors

FORMAT_VERSION = "1"
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


def _sd_base(sd: dict, prefix: str = "") -> str:
    proj = sd.get(prefix + "add_embedding.linear_1.weight")
    k = next((v for n, v in sd.items() if n.startswith(prefix) and n.endswith("attn2.to_k.weight")), None)
    levels = len({n.split(".")[1] for n in sd if n.startswith(prefix + "down_blocks.")}) or None
    return base_model_name(None if proj is None else proj.shape[1], None if k is None else k.shape[1], levels)


def _shape(t) -> tuple:
    return tuple(t.shape) if hasattr(t, "shape") else tuple(t.get_shape())


def _validate(module: nn.Module, tensors: dict, prefix: str, path: str, expected_base: str, file_base: str) -> None:
    expected = module.state_dict()
    for name, ref in expected.items():
        key = prefix + name
        if key not in tensors:
            raise ModelFileError(
                f"{os.path.basename(path)} has no tensor {key!r} (expected for {expected_base}); "
                f"the file looks like {file_base}",
                f"use a FaceSnap/ControlNet file made for {expected_base}",
            )
        got = _shape(tensors[key])
        if got != tuple(ref.shape):
            raise ModelFileError(
                f"tensor {key!r} in {os.path.basename(path)} has shape {list(got)}, expected {list(ref.shape)}: "
                f"the file is for {file_base}, this model needs {expected_base}",
                f"use weights made for {expected_base}, not {file_base}",
            )
    extra = [k for k in tensors if k.startswith(prefix) and k[len(prefix):] not in expected]
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


def _read(path: str):
    """-> (tensors, metadata); a missing, damaged or truncated file is named (``safetensors_files``)."""
    if not os.path.isfile(path):
        raise ModelFileError(f"weights file not found: {path}", "put the .safetensors file there")
    _, metadata = read_header(path)
    return read_tensors(path), metadata


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


def load_facesnap(path: str, controlnet_path: str | None = None, operations=None):
    """-> (mixer, ffrnet_or_None, metadata). ``controlnet_path`` supplies the backbone when the file has none
    (a diffusers ControlNet folder or .safetensors); the file's injector heads are attached to it.
    ``operations``: layer classes of the mixer, FFRNet and the heads (``operations.py``; default torch.nn). The modules
    hold the file's dtype; ComfyUI's glue rebuilds them in its storage dtype (``comfy_glue/weight_dtypes.py``)."""
    tensors, metadata = _read(path)
    name = os.path.basename(path)
    if metadata.get("facesnap_format") != FORMAT_VERSION or "mixer_config" not in metadata:
        raise ModelFileError(
            f"{name} is not a FaceSnap weights file (no FaceSnap metadata); it looks like {_sd_base(tensors)} weights",
            "put a FaceSnap .safetensors in models/facesnap; ControlNets belong in models/controlnet",
        )
    try:
        mixer_cfg = MixerConfig.from_dict(json.loads(metadata["mixer_config"]))
        ffr_cfg = FFRNetConfig.from_dict(json.loads(metadata["ffrnet_config"])) if "ffrnet_config" in metadata else None
    except (ValueError, TypeError) as err:
        raise ModelFileError(f"{name} has a corrupt config in its metadata ({err})", "re-export the file") from err
    mixer_base = f"a mixer of width {mixer_cfg.dim}"
    with torch.device("meta"):
        _validate(FacialAttributeMixer(mixer_cfg), tensors, "mixer.", path, mixer_base, "another mixer layout")
    mixer = _build(lambda: FacialAttributeMixer(mixer_cfg, operations), tensors, "mixer.")

    ffrnet = None
    if ffr_cfg is not None and any(k.startswith("ffrnet.") for k in tensors):
        base = _config_base(ffr_cfg)
        with torch.device("meta"):
            _validate(FFRNet(ffr_cfg), _with_injector(tensors), "ffrnet.", path, base, _sd_base(tensors, "ffrnet."))
        ffrnet = _build(lambda: FFRNet(ffr_cfg, operations), _with_injector(tensors), "ffrnet.")
    elif controlnet_path is not None:
        ffrnet = load_diffusers_controlnet(controlnet_path, id_injector=bool(ffr_cfg and ffr_cfg.id_injector),
                                           injector_kernel_size=ffr_cfg.injector_kernel_size if ffr_cfg else 1,
                                           operations=operations)
        if ffrnet.id_injector is not None:
            with torch.device("meta"):
                _validate(ffrnet.id_injector, tensors, "injector.", path, _config_base(ffrnet.config), "another layout")
            ffrnet.id_injector.load_state_dict({k[len("injector."):]: v for k, v in tensors.items()
                                                if k.startswith("injector.")})
    if ffrnet is not None and ffrnet.config.cross_attention_dim != mixer_cfg.dim:
        raise ModelFileError(
            f"the FFRNet cross-attention width {ffrnet.config.cross_attention_dim} differs from the mixer width {mixer_cfg.dim}",
            "use the ControlNet that was trained together with this FaceSnap file",
        )
    user_metadata = {k: v for k, v in metadata.items() if k not in ("mixer_config", "ffrnet_config")}
    return mixer.eval(), (ffrnet.eval() if ffrnet is not None else None), user_metadata


def _with_injector(tensors: dict) -> dict:
    """View the file's ``injector.*`` tensors under the FFRNet's ``id_injector.*`` names."""
    out = dict(tensors)
    out.update({"ffrnet.id_injector." + k[len("injector."):]: v for k, v in tensors.items() if k.startswith("injector.")})
    return out


def load_diffusers_controlnet(path: str, id_injector: bool = False, injector_kernel_size: int = 1,
                              operations=None) -> FFRNet:
    """A diffusers ControlNet (folder with config.json, or a single .safetensors) as the FFRNet backbone.

    Single files carry no config; it is read from the safetensors metadata when present, else inferred from
    the tensor shapes (head count assumes SDXL's 64-wide heads). Injector heads start at zero (a no-op)."""
    if os.path.isdir(path):
        config_path = os.path.join(path, "config.json")
        weights = next((os.path.join(path, n) for n in DIFFUSERS_WEIGHT_NAMES if os.path.isfile(os.path.join(path, n))), None)
        if weights is None or not os.path.isfile(config_path):
            raise ModelFileError(f"{path} is not a diffusers ControlNet folder (config.json + "
                                 f"{DIFFUSERS_WEIGHT_NAMES[0]})", "point to a diffusers ControlNet folder or .safetensors")
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
        tensors, _ = _read(weights)
    else:
        tensors, metadata = _read(path)
        if "zero_convs.0.0.weight" in tensors:
            raise ModelFileError(f"{os.path.basename(path)} is an original-layout (LDM) ControlNet",
                                 "FFRNet loads diffusers-layout ControlNets; convert it with diffusers first")
        if "controlnet_cond_embedding.conv_in.weight" not in tensors:
            raise ModelFileError(f"{os.path.basename(path)} is not a diffusers ControlNet",
                                 "use a diffusers SDXL ControlNet .safetensors")
        config = json.loads(metadata["config"]) if "config" in metadata else infer_diffusers_config(tensors)
    base = _sd_base(tensors)
    if config.get("projection_class_embeddings_input_dim") != 2816 or config.get("addition_embed_type", "text_time") != "text_time":
        raise ModelFileError(f"{os.path.basename(path)} is a ControlNet for {base}, not SDXL",
                             "FaceSnap's FFRNet is an SDXL ControlNet; use an SDXL (diffusers) ControlNet")
    cfg = FFRNetConfig.from_diffusers(config, id_injector=id_injector)
    cfg.injector_kernel_size = injector_kernel_size
    with torch.device("meta"):
        probe = FFRNet(FFRNetConfig.from_diffusers(config, id_injector=False))
    _validate(probe, tensors, "", path, _config_base(cfg), base)
    ffrnet = _build(lambda: FFRNet(FFRNetConfig.from_diffusers(config, id_injector=False), operations), tensors, "")
    if id_injector:
        ffrnet.config = cfg
        dtype = ffrnet.conv_in.weight.dtype  # the file's (``ffrnet.dtype`` is the compute dtype)
        from .id_injector import IDInjector

        ffrnet.id_injector = IDInjector(cfg.injector_layout(), operations).to(dtype)
    return ffrnet


def infer_diffusers_config(tensors: dict) -> dict:
    """Rebuild a diffusers ControlNet config from tensor shapes."""
    levels = sorted({int(k.split(".")[1]) for k in tensors if k.startswith("down_blocks.")})
    channels = [tensors[f"down_blocks.{i}.resnets.0.conv1.weight"].shape[0] for i in levels]
    layers = len({k.split(".")[3] for k in tensors if k.startswith("down_blocks.0.resnets.")})
    types, depth, heads = [], [], []
    for i, ch in zip(levels, channels):
        has_attn = any(k.startswith(f"down_blocks.{i}.attentions.") for k in tensors)
        types.append("CrossAttnDownBlock2D" if has_attn else "DownBlock2D")
        blocks = {k.split(".")[5] for k in tensors if k.startswith(f"down_blocks.{i}.attentions.0.transformer_blocks.")}
        depth.append(max(len(blocks), 1))
        heads.append(max(ch // 64, 1))
    cond = [tensors["controlnet_cond_embedding.conv_in.weight"].shape[0]]
    n_blocks = len({k.split(".")[2] for k in tensors if k.startswith("controlnet_cond_embedding.blocks.")})
    cond += [tensors[f"controlnet_cond_embedding.blocks.{j}.weight"].shape[0] for j in range(1, n_blocks, 2)]
    mid_blocks = {k.split(".")[4] for k in tensors if k.startswith("mid_block.attentions.0.transformer_blocks.")}
    depth[-1] = len(mid_blocks) or depth[-1]
    k_proj = next(v for k, v in tensors.items() if k.endswith("attn2.to_k.weight"))
    add = tensors.get("add_embedding.linear_1.weight")
    return dict(
        addition_embed_type=None if add is None else "text_time",
        in_channels=tensors["conv_in.weight"].shape[1],
        conditioning_channels=tensors["controlnet_cond_embedding.conv_in.weight"].shape[1],
        down_block_types=types, block_out_channels=channels, layers_per_block=layers,
        transformer_layers_per_block=depth, attention_head_dim=heads, cross_attention_dim=k_proj.shape[1],
        projection_class_embeddings_input_dim=None if add is None else add.shape[1],
        conditioning_embedding_out_channels=cond,
    )
