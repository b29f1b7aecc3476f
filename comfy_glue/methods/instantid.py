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

from ...models.errors import InvalidInputError, ModelFileError
from ...models.face_analysis.record import FaceSet
from ...models.identity.diffusers_controlnet import load_diffusers_controlnet
from ...models.identity.identity import Identity
from ...models.identity.instantid.weights import (
    InstantIDAdapter,
    build_instantid,
    expected_shapes,
    file_layout,
    read_instantid_tensors,
)
from ...models.identity.reference_faces import arcface_embeddings
from ...models.identity.sdxl_controlnet import SDXLControlNet
from ..conditioning import apply_identity_control
from ..control import wrap_identity_model
from ..controlnet_files import controlnet_location
from ..identity_methods import INSTANTID, Applied, ApplyRequest, check_identity, check_window
from ..ip_attention_patch import patch_model_with_ip_attention
from ..weight_dtypes import build_managed, choose_weight_dtypes, dtype_option, file_dtype, managed_patcher


class InstantIDBundle:
    """``adapter`` (Resampler ``image_proj`` + IP layers ``ip_adapter``) and IdentityNet (``identitynet``, the
    ``control``'s model), rebuilt from ComfyUI's operations in the storage dtype of loader option ``dtype``."""

    def __init__(self, adapter: InstantIDAdapter, identitynet: SDXLControlNet, name: str = "", dtype: str = "auto"):
        device = comfy.model_management.get_torch_device()
        self.dtypes = choose_weight_dtypes(dtype, device, file_dtype(adapter, identitynet))
        self.adapter = build_managed(lambda ops, compute: InstantIDAdapter(adapter.config, adapter.unet_config, ops,
                                                                           compute), adapter, self.dtypes)
        self.adapter.weights_key, self.adapter.legacy_weights_key = adapter.weights_key, adapter.legacy_weights_key
        self.identitynet = build_managed(lambda ops, compute: SDXLControlNet(identitynet.config, ops, compute),
                                         identitynet, self.dtypes)
        self.name = name
        self.models_key = f"facesnap_instantid#{uuid.uuid4().hex}"  # this load's additional-models key on a MODEL
        self.resampler_patcher = managed_patcher(self.adapter.image_proj)
        self.ip_patcher = managed_patcher(self.adapter.ip_adapter)
        self.control = wrap_identity_model(self.identitynet, manual_cast_dtype=self.dtypes.manual_cast)

    @property
    def weights_key(self) -> str:
        return self.adapter.weights_key

    @property
    def accepted_keys(self) -> tuple[str, str]:
        """The weights keys of identities this file's apply takes (the current one, and the one saved before)."""
        return self.adapter.weights_key, self.adapter.legacy_weights_key

    @property
    def ip_layers(self):
        return self.adapter.ip_adapter

    def encode_embeddings(self, embeddings: torch.Tensor, uncond_noise: float = 0.0, seed: int = 0) -> Identity:
        """An identity from raw ArcFace embeddings (N, 512); tokens as float32 on ComfyUI's intermediate device."""
        comfy.model_management.load_models_gpu([self.resampler_patcher])
        identity = self.adapter.encode_identity(embeddings, uncond_noise, seed, self.resampler_patcher.load_device)
        out = comfy.model_management.intermediate_device()
        return replace(identity, cond=identity.cond.to(out, torch.float32),
                       uncond=identity.uncond.to(out, torch.float32), model_name=self.name)


def load(*, weights: str, controlnet: str, name: str = "", dtype: str = "auto") -> InstantIDBundle:
    """InstantID's ip-adapter file and its IdentityNet (a diffusers SDXL ControlNet) as one bundle."""
    ip_path, controlnet_path = weights, controlnet
    dtype_option(dtype)  # refuse a bad option before reading the files
    interrupt = comfy.model_management.throw_exception_if_processing_interrupted
    config, unet_config = file_layout(ip_path)
    adapter = build_instantid(read_instantid_tensors(ip_path, expected_shapes(config, unet_config), interrupt), config,
                              unet_config)
    identitynet = load_diffusers_controlnet(controlnet_location(controlnet_path), interrupt=interrupt)
    width = identitynet.config.cross_attention_dim
    if width != config.output_dim:
        raise ModelFileError(
            f"the ControlNet {os.path.basename(controlnet_path)!r} reads {width}-wide tokens, but InstantID's "
            f"Resampler in {os.path.basename(ip_path)!r} makes {config.output_dim}-wide ones: it is not InstantID's "
            "IdentityNet",
            "pick InstantID's IdentityNet (ControlNetModel/diffusion_pytorch_model.safetensors) in models/controlnet")
    return InstantIDBundle(adapter, identitynet, name, dtype)


def weights_key(bundle: InstantIDBundle) -> str:
    return bundle.weights_key


def encode(bundle: InstantIDBundle, *, faces: FaceSet, clip_vision=None, uncond_noise: float = 0.0) -> Identity:
    """One person's identity: insightface's raw ArcFace embeddings of the faces, averaged (as cubiq's node does),
    through the Resampler; the negative is the Resampler of zeros, or of ``uncond_noise`` x uniform noise."""
    if clip_vision is not None:
        raise InvalidInputError("InstantID reads no CLIP-vision tokens", "leave clip_vision unconnected")
    embeddings = arcface_embeddings(faces, raw=True, purpose="InstantID's Resampler")
    return bundle.encode_embeddings(embeddings, uncond_noise)


def apply(bundle: InstantIDBundle, identity: Identity, *, request: ApplyRequest) -> Applied:
    """IP-attention on a clone of the MODEL (``attention_weight``) and IdentityNet on the conditioning
    (``strength``). ``uncond_input_noise`` > 0 re-makes the negative tokens as the Resampler of that much uniform
    noise (cubiq's option) instead of the identity's own."""
    request.refuse_unsupported(INSTANTID.label, "uncond_strength", "uncond_token_noise", "attention_mode")
    check_window(request.start, request.end)
    check_identity(identity, method=INSTANTID, keys=bundle.accepted_keys, file_name=bundle.name,
                   width=bundle.ip_layers.context_dim, target="InstantID",
                   allow_other_weights=request.allow_other_weights)
    uncond = identity.uncond
    if request.uncond_input_noise > 0:
        if identity.id_embedding is None:
            raise InvalidInputError("this identity carries no ArcFace embedding, so its negative cannot be re-made",
                                    "set uncond_noise to 0, or encode the person again with FaceSnap InstantID Encode")
        uncond = bundle.encode_embeddings(identity.id_embedding[None], request.uncond_input_noise).uncond
    model, positive, negative = request.model, request.positive, request.negative
    if request.attention_weight != 0:
        model = patch_model_with_ip_attention(model, layers=bundle.ip_layers, layers_patcher=bundle.ip_patcher,
                                              layers_key=bundle.models_key, cond=identity.cond, uncond=uncond,
                                              weight=request.attention_weight, start=request.start, end=request.end,
                                              mask=request.mask, method=INSTANTID.label)
    if request.strength != 0:
        positive, negative = apply_identity_control(
            positive, negative, bundle.control, cond_tokens=identity.cond, uncond_tokens=uncond,
            hint=request.control_image, strength=request.strength, start=request.start, end=request.end,
            mask=request.mask, positive_only=request.positive_only, node_id=request.node_id)
    return Applied(model, positive, negative)
