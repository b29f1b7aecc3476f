"""The FACESNAP_MODEL payload: the Facial Attribute Mixer and FFRNet, each managed by ComfyUI, in one dtype."""

from __future__ import annotations

import os
import uuid

import torch

import comfy.model_management
import comfy.model_patcher

from ..models.errors import InvalidInputError
from ..models.identity.attribute_mixer import FacialAttributeMixer
from ..models.identity.face_features import FaceFeatures
from ..models.identity.facesnap_checkpoint import DIFFUSERS_WEIGHT_NAMES, load_facesnap
from ..models.identity.ffrnet import FFRNet
from .control import wrap_identity_model

DTYPE_OPTIONS = {"auto": None, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def dtype_option(option: str) -> torch.dtype | None:
    """The dtype named by a loader option (None = auto); anything else is refused."""
    if option not in DTYPE_OPTIONS:
        raise InvalidInputError(f"unknown dtype {option!r}", f"choose one of {', '.join(DTYPE_OPTIONS)}")
    return DTYPE_OPTIONS[option]


def choose_dtype(option: str, device: torch.device, params: int, file_dtype: torch.dtype | None) -> torch.dtype:
    """The dtype the FaceSnap modules are stored and computed in: the chosen one, or for "auto" what ComfyUI's own
    loaders pick for the device (``unet_dtype``, then ``unet_manual_cast`` where the device cannot compute in it:
    without manual-cast layers the weights are stored in the compute dtype)."""
    chosen = dtype_option(option)
    if chosen is not None:
        return chosen
    dtype = comfy.model_management.unet_dtype(device, model_params=params, weight_dtype=file_dtype)
    return comfy.model_management.unet_manual_cast(dtype, device) or dtype


def backbone_files(controlnet_path: str | None) -> list[str]:
    """The files a diffusers ControlNet backbone is read from (a folder: its config and weights)."""
    if controlnet_path is None:
        return []
    if not os.path.isdir(controlnet_path):
        return [controlnet_path]
    names = ["config.json", *DIFFUSERS_WEIGHT_NAMES]
    return [os.path.join(controlnet_path, n) for n in names if os.path.isfile(os.path.join(controlnet_path, n))]


class FaceSnapBundle:
    """The FACESNAP_MODEL payload: mixer + (optional) FFRNet, each managed by a ComfyUI ModelPatcher.

    ``key`` identifies the FaceSnap file (its ID-Injector pairs with this file's controls, see unet_patches.py);
    without one the bundle gets a unique key."""

    def __init__(self, mixer: FacialAttributeMixer, ffrnet: FFRNet | None, metadata: dict, name: str = "",
                 dtype: str = "auto", key: str | None = None):
        device = comfy.model_management.get_torch_device()
        modules = [m for m in (mixer, ffrnet) if m is not None]
        params = sum(p.numel() for m in modules for p in m.parameters())
        file_dtype = next((ffrnet or mixer).parameters()).dtype
        self.dtype = choose_dtype(dtype, device, params, file_dtype)
        self.mixer = mixer.to(self.dtype)
        self.ffrnet = ffrnet.to(self.dtype) if ffrnet is not None else None
        self.metadata = metadata
        self.name = name
        self.key = key or f"{name or 'facesnap'}#{uuid.uuid4().hex}"
        self.mixer_patcher = comfy.model_patcher.ModelPatcher(
            mixer, load_device=device, offload_device=comfy.model_management.unet_offload_device())
        self.control = wrap_identity_model(self.ffrnet) if self.ffrnet is not None else None
        if self.has_injector:
            self.control.injector_key = self.key

    @property
    def has_injector(self) -> bool:
        return self.ffrnet is not None and self.ffrnet.id_injector is not None

    def _run_mixer(self, *args) -> torch.Tensor:
        comfy.model_management.load_models_gpu([self.mixer_patcher])
        device = self.mixer_patcher.load_device
        with torch.no_grad():
            out = self.mixer(*[a.to(device, self.dtype) for a in args])
        return out.to(comfy.model_management.intermediate_device(), torch.float32)

    def encode(self, features: FaceFeatures) -> torch.Tensor:
        """f_mix (1, 16, d) for all references of one person."""
        return self._run_mixer(*features.batched())

    def uncond_tokens(self) -> torch.Tensor:
        c = self.mixer.config
        return self._run_mixer(torch.zeros(1, 1, c.id_dim), torch.zeros(1, 1, c.clip_tokens, c.clip_dim))


def load_bundle(path: str, controlnet_path: str | None, name: str, dtype: str, key: str, operations=None):
    """Load a FaceSnap file (and its diffusers backbone) into a bundle; ``key`` = the file's identity."""
    dtype_option(dtype)  # refuse a bad option before reading the files
    mixer, ffrnet, metadata = load_facesnap(path, controlnet_path, operations=operations)
    return FaceSnapBundle(mixer, ffrnet, metadata, name=name, dtype=dtype, key=key)
