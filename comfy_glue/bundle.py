"""The FACESNAP_MODEL payload: the Facial Attribute Mixer and FFRNet, each managed by ComfyUI."""

from __future__ import annotations

import torch

import comfy.model_management
import comfy.model_patcher

from ..models.identity.attribute_mixer import FacialAttributeMixer
from ..models.identity.face_features import FaceFeatures
from ..models.identity.ffrnet import FFRNet
from .control import wrap_ffrnet


class FaceSnapBundle:
    """The FACESNAP_MODEL payload: mixer + (optional) FFRNet, each managed by a ComfyUI ModelPatcher."""

    def __init__(self, mixer: FacialAttributeMixer, ffrnet: FFRNet | None, metadata: dict, name: str = ""):
        self.mixer = mixer
        self.ffrnet = ffrnet
        self.metadata = metadata
        self.name = name
        device = comfy.model_management.get_torch_device()
        self.mixer_patcher = comfy.model_patcher.ModelPatcher(
            mixer, load_device=device, offload_device=comfy.model_management.unet_offload_device())
        self.control = wrap_ffrnet(ffrnet) if ffrnet is not None else None

    @property
    def has_injector(self) -> bool:
        return self.ffrnet is not None and self.ffrnet.id_injector is not None

    def _run_mixer(self, *args) -> torch.Tensor:
        comfy.model_management.load_models_gpu([self.mixer_patcher])
        device = self.mixer_patcher.load_device
        with torch.no_grad():
            out = self.mixer(*[a.to(device) for a in args])
        return out.to(comfy.model_management.intermediate_device(), torch.float32)

    def encode(self, features: FaceFeatures) -> torch.Tensor:
        """f_mix (1, 16, d) for all references of one person."""
        return self._run_mixer(*features.batched())

    def uncond_tokens(self) -> torch.Tensor:
        c = self.mixer.config
        return self._run_mixer(torch.zeros(1, 1, c.id_dim), torch.zeros(1, 1, c.clip_tokens, c.clip_dim))
