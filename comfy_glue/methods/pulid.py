"""PuLID SDXL (v1 and v1.1) in ComfyUI: the FACESNAP_PULID payload and the identity-method interface.

The bundle holds the identity encoder (``image_proj``: v1's IDEncoder or v1.1's IDFormer) and the ID attention's
keys and values at every UNet cross-attention (``ip_adapter``), built like InstantID's (``weight_dtypes.py``), each
with its own ModelPatcher: the encoder is loaded when a person is encoded, the attention layers with the patched MODEL.
EVA-CLIP and the face parser come from their own loaders (``pulid_features.py``).

Encoding follows the official pipelines and cubiq's node: one face per photo, insightface's raw ArcFace embedding
and the EVA-CLIP features of PuLID's grey, background-free face; v1 averages the photos' tokens, v1.1 encodes them
together. The negative encodes zeros, or ``uncond_noise`` x uniform noise (cubiq's ``noise``), from a fixed seed.

Applying puts PuLID's ID attention (``models/identity/pulid/id_attention.py``) on all 70 SDXL cross-attentions through
the generic attention patch (``ip_attention_patch.py``), the layer's text output as the projection's reference. The
mode (``AttentionMode``): how many zero tokens pad the identity tokens (cond and uncond with the same padding, zeros or
uniform noise), the projection (none, ortho, ortho_v2) and how ortho_v2 measures the identity's share of the attention
(the official processor's, per head and query; or cubiq's, over all heads and queries).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

import torch

import comfy.model_management

from ...models.errors import InvalidInputError
from ...models.face_analysis.record import FaceSet
from ...models.identity.identity import Identity
from ...models.identity.pulid.adapter import V1, V1_1, PuLIDAdapter
from ...models.identity.pulid.id_attention import (
    METHODS,
    SHARE_OFFICIAL,
    SHARES,
    V1_1_DEFAULT,
    IDAttentionMode,
    append_zero_tokens,
    id_attention_layer,
)
from ...models.identity.pulid.weights import build_pulid, read_pulid
from ..identity_methods import PULID_V1, PULID_V1_1, Applied, ApplyRequest, check_identity, check_window
from ..ip_attention_patch import patch_model_with_ip_attention
from ..pulid_features import EVAClipBundle, FaceParserBundle, pulid_features
from ..weight_dtypes import build_managed, choose_weight_dtypes, dtype_option, file_dtype, managed_patcher

VERSION_METHODS = {V1: PULID_V1, V1_1: PULID_V1_1}
DEFAULT_PRESET = "default"  # the official demo's setting for the file's version
PRESETS = (DEFAULT_PRESET, *METHODS)
OFFICIAL_DEFAULTS = {V1: METHODS["fidelity"], V1_1: V1_1_DEFAULT}


@dataclass(frozen=True)
class AttentionMode:
    """PuLID's ID attention as an apply node sets it: ``num_zero`` zero tokens (uniform [0, ``zero_noise``) draws
    when it is not 0, cubiq's Advanced ``noise``), ``projection`` and the ortho_v2 ``share``."""

    num_zero: int
    projection: str
    share: str = SHARE_OFFICIAL
    zero_noise: float = 0.0

    def __post_init__(self):
        IDAttentionMode(self.num_zero, self.projection)  # checks both
        if self.share not in SHARES:
            raise InvalidInputError(f"unknown ortho_v2 share {self.share!r}", f"use one of {', '.join(SHARES)}")
        if not 0.0 <= self.zero_noise <= 1.0:
            raise InvalidInputError(f"zero_token_noise {self.zero_noise} is outside 0..1", "use 0 for zero tokens")

    @classmethod
    def preset(cls, name: str, version: str, share: str = SHARE_OFFICIAL, zero_noise: float = 0.0) -> "AttentionMode":
        """cubiq's fidelity / style / neutral, or ``default``: the official demo's for ``version`` (v1: fidelity;
        v1.1: 20 zero tokens, ortho_v2)."""
        if name not in PRESETS:
            raise InvalidInputError(f"unknown PuLID method {name!r}", f"use one of {', '.join(PRESETS)}")
        mode = OFFICIAL_DEFAULTS[version] if name == DEFAULT_PRESET else METHODS[name]
        return cls(mode.num_zero, mode.projection, share, zero_noise)

    def padded(self, tokens: torch.Tensor) -> torch.Tensor:
        """The identity tokens followed by the zero tokens; cond and uncond get the same draws (seed 0)."""
        return append_zero_tokens(tokens, self.num_zero, self.zero_noise, torch.Generator().manual_seed(0))


@dataclass(frozen=True)
class IDAttentionTerm:
    """The attention patch's term (``ip_attention_patch.IPAttentionPatch``): PuLID's ID attention over the layer's
    text output."""

    projection: str
    share: str

    def __call__(self, layer, q, tokens, heads: int, weight: float, mask, text_out):
        return id_attention_layer(layer, q, text_out, tokens, heads, weight, self.projection, self.share, mask)


class PuLIDBundle:
    """``adapter`` (encoder ``image_proj`` + ID attention layers ``ip_adapter``) rebuilt from ComfyUI's operations in
    the storage dtype of loader option ``dtype``."""

    def __init__(self, adapter: PuLIDAdapter, name: str = "", dtype: str = "auto"):
        device = comfy.model_management.get_torch_device()
        self.dtypes = choose_weight_dtypes(dtype, device, file_dtype(adapter))
        self.adapter = build_managed(lambda ops, compute: PuLIDAdapter(adapter.version, adapter.encoder_config,
                                                                       adapter.unet_config, ops, compute),
                                     adapter, self.dtypes)
        self.adapter.weights_key = adapter.weights_key  # of the file's tensors, whatever the storage dtype
        self.name = name
        self.models_key = f"facesnap_pulid#{uuid.uuid4().hex}"  # this load's additional-models key on a MODEL
        self.encoder_patcher = managed_patcher(self.adapter.image_proj)
        self.ip_patcher = managed_patcher(self.adapter.ip_adapter)

    @property
    def version(self) -> str:
        return self.adapter.version

    @property
    def method(self):
        return VERSION_METHODS[self.version]

    @property
    def weights_key(self) -> str:
        return self.adapter.weights_key

    @property
    def ip_layers(self):
        return self.adapter.ip_adapter

    def encode_features(self, arcface, eva_cls, eva_hidden, uncond_noise: float = 0.0) -> Identity:
        """An identity from PuLID's features (``pulid_features``); tokens float32 on the intermediate device."""
        comfy.model_management.load_models_gpu([self.encoder_patcher])
        identity = self.adapter.encode_identity(arcface, eva_cls, eva_hidden, uncond_noise, 0,
                                                self.encoder_patcher.load_device)
        out = comfy.model_management.intermediate_device()
        return replace(identity, cond=identity.cond.to(out, torch.float32),
                       uncond=identity.uncond.to(out, torch.float32), model_name=self.name)

    def patch_model(self, model, cond: torch.Tensor, uncond: torch.Tensor, mode: AttentionMode,
                    request: ApplyRequest, method: str):
        """A clone of MODEL with the ID attention of ``cond`` / ``uncond`` (the identity tokens, before padding)."""
        if model is None:
            raise InvalidInputError(f"{method} puts its attention on a MODEL, and none was given", "connect a MODEL")
        return patch_model_with_ip_attention(
            model, layers=self.ip_layers, layers_patcher=self.ip_patcher, layers_key=self.models_key,
            cond=mode.padded(cond), uncond=mode.padded(uncond), weight=request.attention_weight, start=request.start,
            end=request.end, mask=request.mask, method=method, term=IDAttentionTerm(mode.projection, mode.share))


def load(*, weights: str, name: str = "", dtype: str = "auto") -> PuLIDBundle:
    """A PuLID SDXL file (v1 or v1.1, official or converted layout) as a bundle."""
    dtype_option(dtype)  # refuse a bad option before reading the file
    return PuLIDBundle(build_pulid(*read_pulid(weights)), name, dtype)


def weights_key(bundle: PuLIDBundle) -> str:
    return bundle.weights_key


def check_inputs(clip_vision, face_parser, method: str) -> None:
    if not isinstance(clip_vision, EVAClipBundle):
        raise InvalidInputError(f"{method} reads the faces with EVA02-CLIP-L-14-336, and no EVA-CLIP tower was given",
                                "connect FaceSnap EVA-CLIP Loader to eva_clip")
    if not isinstance(face_parser, FaceParserBundle):
        raise InvalidInputError(f"{method} whitens each face's background with the BiSeNet face parser, and none "
                                "was given", "connect FaceSnap Face Parser Loader to face_parser")


def encode(bundle: PuLIDBundle, *, faces: FaceSet, clip_vision=None, face_parser=None,
           uncond_noise: float = 0.0) -> Identity:
    """One person's identity (see the module docstring); ``clip_vision`` is the EVA-CLIP tower's bundle."""
    check_inputs(clip_vision, face_parser, bundle.method.label)
    features = pulid_features(faces, clip_vision, face_parser, f"{bundle.method.label}'s ID encoder")
    return bundle.encode_features(*features, uncond_noise=uncond_noise)


def attention_mode(request: ApplyRequest, version: str, share: str = SHARE_OFFICIAL) -> AttentionMode:
    """The request's mode: an ``AttentionMode``, a preset name, or None (the file's official default)."""
    mode = request.attention_mode
    if isinstance(mode, AttentionMode):
        return mode
    return AttentionMode.preset(mode or DEFAULT_PRESET, version, share)


def apply(bundle: PuLIDBundle, identity: Identity, *, request: ApplyRequest) -> Applied:
    """PuLID's ID attention on a clone of the MODEL; the conditioning passes through."""
    method = bundle.method
    request.refuse_unsupported(method.label, "strength", "uncond_strength", "uncond_token_noise",
                               "uncond_input_noise", "positive_only")
    check_window(request.start, request.end)
    check_identity(identity, method=method, keys=(bundle.weights_key,), file_name=bundle.name,
                   width=bundle.ip_layers.context_dim, target=f"{method.label} ({bundle.name})",
                   allow_other_weights=request.allow_other_weights)
    mode = attention_mode(request, bundle.version)
    model = request.model
    if request.attention_weight != 0:
        model = bundle.patch_model(model, identity.cond, identity.uncond, mode, request, method.label)
    return Applied(model, request.positive, request.negative)
