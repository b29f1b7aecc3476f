"""The FACESNAP_INSTANTID payload: InstantID's Resampler, IP-attention layers and IdentityNet, managed by ComfyUI.

All three are built like FaceSnap's networks (``weight_dtypes.py``, the one code path): one storage dtype chosen by the
loader's option (auto: as ComfyUI's ControlNet loader picks it for the files' dtype), the compute dtype ComfyUI's
manual cast pairs with it, and ComfyUI's operation classes for every Linear/Conv2d/LayerNorm/GroupNorm. fp8 storage
computes through manual cast. The IP layers compute their keys and values in the compute dtype; the attention runs in
the dtype of the UNet's queries.

Each part has its own ModelPatcher, so ComfyUI loads, streams (low-VRAM partial load) and offloads it: the Resampler
when an identity is encoded, the IP layers as an additional model of the patched MODEL (loaded with it), IdentityNet
as the control's model.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import replace

import torch

import comfy.model_management

from ...models.errors import ModelFileError
from ...models.identity.diffusers_controlnet import DIFFUSERS_WEIGHT_NAMES, load_diffusers_controlnet
from ...models.identity.identity import Identity
from ...models.identity.sdxl_controlnet import SDXLControlNet
from ...models.identity.instantid.weights import (InstantIDAdapter, build_instantid, expected_shapes, file_layout,
                                                  read_instantid_tensors)
from .facesnap import backbone_files
from ..control import wrap_identity_model
from ..weight_dtypes import build_managed, choose_weight_dtypes, dtype_option, file_dtype, managed_patcher


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


class InstantIDBundle:
    """``adapter`` (Resampler ``image_proj`` + IP layers ``ip_adapter``) and IdentityNet (``identitynet``, the
    ``control``'s model), rebuilt from ComfyUI's operations in the storage dtype of loader option ``dtype``."""

    def __init__(self, adapter: InstantIDAdapter, identitynet: SDXLControlNet, name: str = "", dtype: str = "auto"):
        device = comfy.model_management.get_torch_device()
        self.dtypes = choose_weight_dtypes(dtype, device, file_dtype(adapter, identitynet))
        self.adapter = build_managed(lambda ops, compute: InstantIDAdapter(adapter.config, adapter.unet_config, ops,
                                                                           compute), adapter, self.dtypes)
        self.adapter.model_key, self.adapter.legacy_model_key = adapter.model_key, adapter.legacy_model_key
        self.identitynet = build_managed(lambda ops, compute: SDXLControlNet(identitynet.config, ops, compute), identitynet,
                                         self.dtypes)
        self.name = name
        self.key = f"facesnap_instantid#{uuid.uuid4().hex}"  # this load's additional-model key on a MODEL
        self.resampler_patcher = managed_patcher(self.adapter.image_proj)
        self.ip_patcher = managed_patcher(self.adapter.ip_adapter)
        self.control = wrap_identity_model(self.identitynet, manual_cast_dtype=self.dtypes.manual_cast)

    @property
    def model_key(self) -> str:
        return self.adapter.model_key

    @property
    def accepted_keys(self) -> tuple[str, str]:
        """The weights keys of identities this file's apply takes (the current one, and the one saved before)."""
        return self.adapter.model_key, self.adapter.legacy_model_key

    @property
    def ip_layers(self):
        return self.adapter.ip_adapter

    def encode(self, embeddings: torch.Tensor, uncond_noise: float = 0.0, seed: int = 0) -> Identity:
        """An identity from raw ArcFace embeddings (N, 512); tokens as float32 on ComfyUI's intermediate device."""
        comfy.model_management.load_models_gpu([self.resampler_patcher])
        identity = self.adapter.encode_identity(embeddings, uncond_noise, seed, self.resampler_patcher.load_device)
        out = comfy.model_management.intermediate_device()
        return replace(identity, cond=identity.cond.to(out, torch.float32), uncond=identity.uncond.to(out, torch.float32),
                       model_name=self.name)


def load_instantid_bundle(ip_path: str, controlnet_path: str, name: str = "", dtype: str = "auto") -> InstantIDBundle:
    """InstantID's ip-adapter file and its IdentityNet (a diffusers SDXL ControlNet) as one bundle."""
    dtype_option(dtype)  # refuse a bad option before reading the files
    interrupt = comfy.model_management.throw_exception_if_processing_interrupted
    config, unet_config = file_layout(ip_path)
    adapter = build_instantid(read_instantid_tensors(ip_path, expected_shapes(config, unet_config), interrupt), config,
                              unet_config)
    identitynet = load_diffusers_controlnet(identitynet_path(controlnet_path), interrupt=interrupt)
    width = identitynet.config.cross_attention_dim
    if width != config.output_dim:
        raise ModelFileError(
            f"the ControlNet {os.path.basename(controlnet_path)!r} reads {width}-wide tokens, but InstantID's Resampler "
            f"in {os.path.basename(ip_path)!r} makes {config.output_dim}-wide ones: it is not InstantID's IdentityNet",
            "pick InstantID's IdentityNet (ControlNetModel/diffusion_pytorch_model.safetensors) in models/controlnet")
    return InstantIDBundle(adapter, identitynet, name, dtype)
