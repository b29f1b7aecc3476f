"""The FACESNAP_MODEL payload: the Facial Attribute Mixer and FFRNet (with the ID-Injector heads inside it), each
built from ComfyUI's operations and managed by ComfyUI, stored in one dtype and computed in another where needed."""

from __future__ import annotations

import os
import uuid

import torch

import comfy.model_management

from ...models.identity.facesnap.attribute_mixer import FacialAttributeMixer
from ...models.identity.facesnap.face_features import FaceFeatures
from ...models.identity.diffusers_controlnet import DIFFUSERS_WEIGHT_NAMES
from ...models.identity.facesnap.checkpoint import load_facesnap
from ...models.identity.facesnap.ffrnet import FFRNet
from ...models.identity.identity import weights_key
from ..control import wrap_identity_model
from ..id_injector_patch import patch_model_with_injector
from ..weight_dtypes import (DTYPE_OPTIONS, build_managed, choose_weight_dtypes, dtype_option, file_dtype,
                             managed_patcher)

__all__ = ["DTYPE_OPTIONS", "FaceSnapBundle", "backbone_files", "dtype_option", "load_bundle"]  # loaders import these


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

    ``key`` identifies the FaceSnap file (its ID-Injector pairs with this file's controls, see id_injector_patch.py);
    without one the bundle gets a unique key."""

    def __init__(self, mixer: FacialAttributeMixer, ffrnet: FFRNet | None, metadata: dict, name: str = "",
                 dtype: str = "auto", key: str | None = None):
        device = comfy.model_management.get_torch_device()
        self.dtypes = choose_weight_dtypes(dtype, device, file_dtype(mixer, ffrnet))
        self.dtype = self.dtypes.compute
        self.weights_key = weights_key(mixer.state_dict())  # the file's mixer, whatever the storage dtype
        self.mixer = build_managed(lambda ops, compute: FacialAttributeMixer(mixer.config, ops, compute), mixer,
                                   self.dtypes)
        self.ffrnet = None
        if ffrnet is not None:
            self.ffrnet = build_managed(lambda ops, compute: FFRNet(ffrnet.config, ops, compute), ffrnet, self.dtypes)
        self.metadata = metadata
        self.name = name
        self.key = key or f"{name or 'facesnap'}#{uuid.uuid4().hex}"
        self.mixer_patcher = managed_patcher(self.mixer)
        self.control = None
        if self.ffrnet is not None:  # its ModelPatcher is the control's control_model_wrapped (get_models())
            self.control = wrap_identity_model(self.ffrnet, manual_cast_dtype=self.dtypes.manual_cast)
        if self.has_injector:
            self.control.injector_key = self.key

    @property
    def has_injector(self) -> bool:
        return self.ffrnet is not None and self.ffrnet.id_injector is not None

    def inject(self, model_patcher, node_id: str = "DiffPCIDInjector"):
        """A clone of MODEL with this file's ID-Injector heads (``id_injector_patch.patch_model_with_injector``); the
        heads' network is loaded with the MODEL."""
        return patch_model_with_injector(model_patcher, self.ffrnet, self.key, node_id,
                                         ffrnet_patcher=self.control.control_model_wrapped)

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


def load_bundle(path: str, controlnet_path: str | None, name: str, dtype: str, key: str):
    """Load a FaceSnap file (and its diffusers backbone) into a bundle; ``key`` = the file's identity."""
    dtype_option(dtype)  # refuse a bad option before reading the files
    mixer, ffrnet, metadata = load_facesnap(path, controlnet_path,
                                            interrupt=comfy.model_management.throw_exception_if_processing_interrupted)
    return FaceSnapBundle(mixer, ffrnet, metadata, name=name, dtype=dtype, key=key)
