"""EcomID in ComfyUI: the FACESNAP_ECOMID payload and the identity-method interface.

EcomID (``models/identity/ecomid``) = InstantID's Resampler (from InstantID's ``ip-adapter.bin``; its IP-attention
layers are not kept) feeding EcomID's IdentityNet (a diffusers SDXL ControlNet) + PuLID v1's ID attention on the UNet.
The bundle holds a ``PuLIDBundle`` for the PuLID part, and the Resampler and IdentityNet built like InstantID's, each
with its own ModelPatcher.

Its identity carries both token sets in one ``Identity`` (``EcomIDIdentity.joined``): cond and uncond are the 16
Resampler tokens followed by the 10 PuLID tokens, so Save, Load and Blend Identity work unchanged and a blend mixes
both sets alike. Apply takes them apart by the counts of the loaded files.

Apply = IdentityNet on the conditioning (``strength``, the keypoint image) + PuLID's attention on the MODEL
(``attention_weight``), with EcomID's node's defaults: method fidelity and cubiq's ortho_v2 share.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace

import torch

import comfy.model_management

from ...models.errors import ModelFileError
from ...models.face_analysis.record import FaceSet
from ...models.identity.diffusers_controlnet import load_diffusers_controlnet
from ...models.identity.ecomid.recipe import (
    EcomIDSettings,
    check_identitynet,
    check_pulid_for_ecomid,
    encode_ecomid,
    split_identity,
)
from ...models.identity.identity import Identity
from ...models.identity.instantid.resampler import Resampler
from ...models.identity.instantid.weights import (
    build_instantid,
    expected_shapes,
    file_layout,
    read_instantid_tensors,
    resampler_identity,
)
from ...models.identity.pulid.id_encoder import EVA_LAYERS
from ...models.identity.pulid.weights import build_pulid, read_pulid
from ...models.identity.sdxl_controlnet import SDXLControlNet
from ..conditioning import apply_identity_control
from ..control import wrap_identity_model
from ..controlnet_files import controlnet_location
from ..identity_methods import ECOMID, Applied, ApplyRequest, check_identity, check_window
from ..pulid_features import pulid_features
from ..weight_dtypes import build_managed, choose_weight_dtypes, dtype_option, file_dtype, managed_patcher
from .pulid import PuLIDBundle, attention_mode, check_inputs

SETTINGS = EcomIDSettings()


class EcomIDBundle:
    """InstantID's Resampler (``resampler``), EcomID's IdentityNet (``identitynet``, the ``control``'s model) and
    PuLID v1 (``pulid``), in the storage dtype of loader option ``dtype``."""

    def __init__(self, resampler: Resampler, resampler_key: str, identitynet: SDXLControlNet, pulid: PuLIDBundle,
                 name: str = "", dtype: str = "auto"):
        device = comfy.model_management.get_torch_device()
        self.dtypes = choose_weight_dtypes(dtype, device, file_dtype(resampler, identitynet))
        self.resampler = build_managed(lambda ops, compute: Resampler(resampler.config, ops, compute), resampler,
                                       self.dtypes)
        self.identitynet = build_managed(lambda ops, compute: SDXLControlNet(identitynet.config, ops, compute),
                                         identitynet, self.dtypes)
        self.pulid = pulid
        self.name = name
        self.resampler_key = resampler_key
        self.weights_key = hashlib.sha256(f"{resampler_key}+{pulid.weights_key}".encode()).hexdigest()[:16]
        self.resampler_patcher = managed_patcher(self.resampler)
        self.control = wrap_identity_model(self.identitynet, manual_cast_dtype=self.dtypes.manual_cast)

    @property
    def control_tokens(self) -> int:
        return self.resampler.config.num_queries

    @property
    def attention_tokens(self) -> int:
        return self.pulid.adapter.encoder_config.num_tokens + EVA_LAYERS  # the body's, then one per EVA state

    def encode_identity(self, embeddings: torch.Tensor, uncond_noise: float, seed: int, device) -> Identity:
        """The control tokens (what ``encode_ecomid`` reads of InstantID's file)."""
        return resampler_identity(self.resampler, embeddings, uncond_noise, seed, device, self.resampler_key)


def load(*, instantid: str, pulid: str, controlnet: str, name: str = "", dtype: str = "auto") -> EcomIDBundle:
    """InstantID's ip-adapter (its Resampler), PuLID v1 and EcomID's IdentityNet as one bundle."""
    dtype_option(dtype)  # refuse a bad option before reading the files
    interrupt = comfy.model_management.throw_exception_if_processing_interrupted
    pulid_adapter = build_pulid(*read_pulid(pulid))
    check_pulid_for_ecomid(pulid_adapter)
    config, unet_config = file_layout(instantid)
    adapter = build_instantid(read_instantid_tensors(instantid, expected_shapes(config, unet_config), interrupt),
                              config, unet_config)
    identitynet = load_diffusers_controlnet(controlnet_location(controlnet), interrupt=interrupt)
    widths = {"InstantID's Resampler": config.output_dim, "PuLID's encoder": pulid_adapter.context_dim,
              "the ControlNet": identitynet.config.cross_attention_dim}
    if len(set(widths.values())) != 1:
        found = ", ".join(f"{part} {width}" for part, width in widths.items())
        raise ModelFileError(f"EcomID's three files must share one token width; here {found} "
                             f"({os.path.basename(controlnet)!r} may not be EcomID's IdentityNet)",
                             "pick InstantID's ip-adapter.bin, PuLID v1 for SDXL and SDXL-EcomID's "
                             "diffusion_pytorch_model.safetensors")
    pulid_bundle = PuLIDBundle(pulid_adapter, os.path.basename(pulid), dtype)
    return EcomIDBundle(adapter.image_proj, adapter.weights_key, identitynet, pulid_bundle, name, dtype)


def weights_key(bundle: EcomIDBundle) -> str:
    return bundle.weights_key


def encode(bundle: EcomIDBundle, *, faces: FaceSet, clip_vision=None, face_parser=None,
           uncond_noise: float = 0.35) -> Identity:
    """Both token sets of one person (see the module docstring); ``uncond_noise`` makes both negatives from uniform
    noise instead of zeros (EcomID's ``noise``; 0.35 is its simple node's)."""
    check_inputs(clip_vision, face_parser, ECOMID.label)
    arcface, eva_cls, hidden = pulid_features(faces, clip_vision, face_parser, "EcomID's encoders")
    comfy.model_management.load_models_gpu([bundle.resampler_patcher, bundle.pulid.encoder_patcher])
    device = bundle.resampler_patcher.load_device
    both = encode_ecomid(bundle, bundle.pulid.adapter, arcface, eva_cls, hidden, uncond_noise, 0, device)
    identity = both.joined(bundle.weights_key, bundle.name)
    out = comfy.model_management.intermediate_device()
    return replace(identity, cond=identity.cond.to(out, torch.float32), uncond=identity.uncond.to(out, torch.float32))


def apply(bundle: EcomIDBundle, identity: Identity, *, request: ApplyRequest) -> Applied:
    """IdentityNet with the control tokens on the conditioning and PuLID's attention with the attention tokens on a
    clone of the MODEL (EcomID's fidelity / style / neutral, cubiq's ortho_v2 share)."""
    request.refuse_unsupported(ECOMID.label, "uncond_strength", "uncond_token_noise", "uncond_input_noise")
    check_window(request.start, request.end)
    check_identity(identity, method=ECOMID, keys=(bundle.weights_key,), file_name=bundle.name,
                   width=bundle.identitynet.config.cross_attention_dim, target="EcomID",
                   allow_other_weights=request.allow_other_weights)
    parts = split_identity(identity, bundle.control_tokens, bundle.attention_tokens)
    check_identitynet(bundle.identitynet.config.cross_attention_dim, parts.control)
    mode = attention_mode(request, bundle.pulid.version, SETTINGS.share)
    model, positive, negative = request.model, request.positive, request.negative
    if request.attention_weight != 0:
        model = bundle.pulid.patch_model(model, parts.attention.cond, parts.attention.uncond, mode, request,
                                         ECOMID.label)
    if request.strength != 0:
        positive, negative = apply_identity_control(
            positive, negative, bundle.control, cond_tokens=parts.control.cond, uncond_tokens=parts.control.uncond,
            hint=request.control_image, strength=request.strength, start=request.start, end=request.end,
            mask=request.mask, positive_only=request.positive_only, node_id=request.node_id)
    return Applied(model, positive, negative)

