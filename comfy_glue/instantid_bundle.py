"""The FACESNAP_INSTANTID payload: InstantID's Resampler, IP-attention layers and IdentityNet, managed by ComfyUI.

Precision and layers follow ComfyUI's own ControlNet loader (``comfy.controlnet.controlnet_config``): the storage dtype
is the chosen one or, for "auto", ``unet_dtype`` for the device and the IdentityNet file's dtype; the compute dtype is
``unet_manual_cast`` of it (None when the device computes in the storage dtype); IdentityNet's layers come from
``comfy.ops.pick_operations``. The Resampler and the IP-attention layers use ``comfy.ops.manual_cast``: the IP layers run
inside the UNet, whose compute dtype is the MODEL's, so they cast their weights to whatever the UNet hands them.

Each part has its own ModelPatcher, so ComfyUI loads and offloads it: the Resampler when an identity is encoded, the IP
layers as an additional model of the patched MODEL, IdentityNet as the control's model.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import replace

import torch

import comfy.model_management
import comfy.model_patcher
import comfy.ops

from ..models.errors import ModelFileError
from ..models.identity.facesnap_checkpoint import DIFFUSERS_WEIGHT_NAMES, load_diffusers_controlnet
from ..models.identity.identity import Identity
from ..models.identity.instantid.weights import (build_instantid, expected_shapes, file_layout,
                                                 read_instantid_tensors)
from .bundle import backbone_files, dtype_option
from .control import IdentityControlNet

SAFETENSORS_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32,
                      "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}


def identitynet_path(path: str) -> str:
    """A diffusers ControlNet picked by its weights file: the folder when ``config.json`` sits beside a
    ``diffusion_pytorch_model*.safetensors`` (InstantID's ``ControlNetModel/`` layout), else the single file."""
    folder = os.path.dirname(path)
    if os.path.basename(path) in DIFFUSERS_WEIGHT_NAMES and os.path.isfile(os.path.join(folder, "config.json")):
        return folder
    return path


def identitynet_files(path: str) -> list[str]:
    """The files IdentityNet is read from, for the loader cache."""
    return backbone_files(identitynet_path(path))


def _file_dtype(path: str) -> torch.dtype | None:
    """The dtype of a .safetensors file's first tensor (header only), None when unknown."""
    from safetensors import SafetensorError, safe_open

    weights = next((f for f in backbone_files(path) if f.endswith(".safetensors")), None)
    if weights is None:
        return None
    try:
        with safe_open(weights, framework="pt") as f:
            first = next(iter(f.keys()), None)
            return None if first is None else SAFETENSORS_DTYPES.get(f.get_slice(first).get_dtype())
    except (SafetensorError, OSError, ValueError):  # reported by the loader, which reads the file next
        return None


def pick_precision(option: str, device: torch.device, file_dtype: torch.dtype | None):
    """(storage dtype, compute dtype or None, operations), as ComfyUI's ControlNet loader chooses them."""
    weight = dtype_option(option) or comfy.model_management.unet_dtype(device, model_params=-1, weight_dtype=file_dtype)
    compute = comfy.model_management.unet_manual_cast(weight, device)
    return weight, compute, comfy.ops.pick_operations(weight, compute, load_device=device, disable_fast_fp8=True)


class InstantIDBundle:
    """``adapter`` (Resampler ``image_proj`` + IP layers ``ip_adapter``) and IdentityNet (``control``)."""

    def __init__(self, adapter, identitynet, name: str, weight_dtype: torch.dtype, compute_dtype: torch.dtype | None):
        device = comfy.model_management.get_torch_device()
        offload = comfy.model_management.unet_offload_device()
        self.adapter = adapter
        self.name = name
        self.dtype = weight_dtype
        self.compute_dtype = compute_dtype
        self.key = f"facesnap_instantid#{uuid.uuid4().hex}"  # this load's additional-model key on a MODEL
        self.resampler_patcher = comfy.model_patcher.ModelPatcher(adapter.image_proj, load_device=device,
                                                                  offload_device=offload)
        self.ip_patcher = comfy.model_patcher.ModelPatcher(adapter.ip_adapter, load_device=device, offload_device=offload)
        self.control = IdentityControlNet(identitynet, load_device=device, manual_cast_dtype=compute_dtype)

    @property
    def model_key(self) -> str:
        return self.adapter.model_key

    @property
    def ip_layers(self):
        return self.adapter.ip_adapter

    def encode(self, embeddings: torch.Tensor, uncond_noise: float = 0.0, seed: int = 0) -> Identity:
        """An identity from raw ArcFace embeddings (N, 512); tokens as float32 on ComfyUI's intermediate device."""
        comfy.model_management.load_models_gpu([self.resampler_patcher])
        identity = self.adapter.encode_identity(embeddings, uncond_noise, seed, compute_dtype=self.compute_dtype)
        out = comfy.model_management.intermediate_device()
        return replace(identity, cond=identity.cond.to(out, torch.float32), uncond=identity.uncond.to(out, torch.float32))


def load_instantid_bundle(ip_path: str, controlnet_path: str, name: str = "", dtype: str = "auto") -> InstantIDBundle:
    """InstantID's ip-adapter file and its IdentityNet (a diffusers SDXL ControlNet) as one bundle."""
    dtype_option(dtype)  # refuse a bad option before reading the files
    config, unet_config = file_layout(ip_path)
    tensors = read_instantid_tensors(ip_path, expected_shapes(config, unet_config))
    cn_path = identitynet_path(controlnet_path)
    device = comfy.model_management.get_torch_device()
    weight, compute, operations = pick_precision(dtype, device, _file_dtype(cn_path))
    adapter = build_instantid(tensors, config, unet_config, comfy.ops.manual_cast, weight)
    identitynet = load_diffusers_controlnet(cn_path, id_injector=False, operations=operations).to(weight)
    identitynet.compute_dtype = compute
    width = identitynet.config.cross_attention_dim
    if width != config.output_dim:
        raise ModelFileError(
            f"the ControlNet {os.path.basename(controlnet_path)!r} reads {width}-wide tokens, but InstantID's Resampler "
            f"in {os.path.basename(ip_path)!r} makes {config.output_dim}-wide ones: it is not InstantID's IdentityNet",
            "pick InstantID's IdentityNet (ControlNetModel/diffusion_pytorch_model.safetensors) in models/controlnet")
    return InstantIDBundle(adapter, identitynet.eval(), name, weight, compute)
