"""Apply an identity (``models.identity.identity.Identity``) to a graph: FaceSnap's FFRNet, or InstantID's IP-attention
and IdentityNet. The apply nodes (the identity ones and the older FaceSnap ones) all come through here.

An identity is applied only by the kind of model that made it (``encoder``): tokens of FaceSnap's mixer and of
InstantID's Resampler live in different spaces. Its ``model_key`` names the weights that made it
(``identity.weights_key``: the same for a file, its fp16 copy and any loader dtype): tokens from other weights are
refused, naming the file that made them, unless the apply node's ``allow_other_weights`` is on (then a warning).
Identities saved before the key ignored the dtype carry the older key of the same weights, which is accepted too.
"""

from __future__ import annotations

import logging
import weakref

import torch

from ..models.errors import InvalidInputError, ModelFileError
from ..models.identity.facesnap.face_features import FaceFeatures
from ..models.identity.identity import FACESNAP_MIXER, INSTANTID_RESAMPLER, Identity, legacy_weights_key
from .conditioning import apply_identity_control
from .ip_attention_patch import patch_model_with_ip_attention

_LEGACY_KEYS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
KIND_NAMES = {FACESNAP_MIXER: "FaceSnap's Facial Attribute Mixer", INSTANTID_RESAMPLER: "InstantID's Resampler"}


def require_ffrnet(bundle) -> None:
    if bundle.control is None:
        raise ModelFileError(f"the FaceSnap file {bundle.name!r} holds no FFRNet",
                             "select the matching diffusers SDXL ControlNet in FaceSnap Model Loader")


def legacy_mixer_key(bundle) -> str:
    """The key identities of a FaceSnap bundle's mixer were saved with before the key ignored the dtype: of the mixer
    as held by ComfyUI (computed once per loaded bundle)."""
    if bundle not in _LEGACY_KEYS:
        _LEGACY_KEYS[bundle] = legacy_weights_key(bundle.mixer.state_dict())
    return _LEGACY_KEYS[bundle]


def mixer_identity(bundle, features: FaceFeatures) -> Identity:
    """FaceSnap Eq. 1-2 over all references of one person; the negative is the mixer's output for zeroed features."""
    return Identity(cond=bundle.encode(features), uncond=bundle.uncond_tokens(), encoder=FACESNAP_MIXER,
                    model_key=bundle.weights_key, num_references=len(features), model_name=bundle.name)


def check_identity(identity: Identity, encoder: str, keys: tuple[str, ...], file_name: str, width: int, target: str,
                   allow_other_weights: bool = False) -> None:
    """``identity`` must come from ``encoder`` with ``width``-wide tokens, made by the weights whose accepted keys are
    ``keys`` (file ``file_name``); other weights of that kind only warn with ``allow_other_weights``."""
    if not isinstance(identity, Identity):
        raise InvalidInputError(f"expected an identity, got a {type(identity).__name__}",
                                "connect an identity output (Attribute Mixer, InstantID Encode, Load Identity)")
    kind = KIND_NAMES.get(encoder, encoder)
    if identity.encoder != encoder:
        made_by = KIND_NAMES.get(identity.encoder, identity.encoder)
        raise InvalidInputError(
            f"this identity was made by {made_by} ({identity.made_with}); {target} reads tokens of {kind}",
            f"encode the person with the {kind} node that matches this apply node")
    if identity.width != width:
        raise InvalidInputError(f"the identity's tokens are {identity.width} wide, {target} reads {width}-wide tokens "
                                f"(the identity was made with {identity.made_with})",
                                "encode the person with the same model you apply")
    if identity.model_key in keys:
        return
    if not allow_other_weights:
        raise InvalidInputError(
            f"this identity was made with {identity.made_with}, not with {file_name!r} (weights key {keys[0]}) "
            "that this node applies: tokens of other weights do not fit them",
            f"encode the person again with {file_name!r}, or load the identity you saved from it; to apply it anyway "
            "(for example with a bf16 copy of the same file), turn on allow_other_weights in the Advanced apply node")
    logging.warning("FaceSnap: identity %s was made with other %s weights (%s) than the ones applied (%s, %s)",
                    identity.describe(), kind, identity.made_with, file_name, keys[0])


def check_window(start: float, end: float) -> None:
    if end < start:
        raise InvalidInputError(f"end_percent {end} is before start_percent {start}", "set end_percent >= start_percent")


def apply_facesnap_identity(positive, negative, bundle, identity: Identity, hint: torch.Tensor, strength: float,
                            start: float, end: float, mask=None, uncond_strength=None, uncond_noise: float = 0.0,
                            positive_only: bool = False, allow_other_weights: bool = False, *, node_id: str = ""):
    """FFRNet of a FaceSnap bundle with ``identity``'s tokens on positive and negative -> (positive, negative).
    ``uncond_noise``: Gaussian noise (fixed seed) added to the negative's tokens."""
    require_ffrnet(bundle)
    check_window(start, end)
    check_identity(identity, FACESNAP_MIXER, (bundle.weights_key, legacy_mixer_key(bundle)), bundle.name,
                   bundle.ffrnet.config.cross_attention_dim, "this FaceSnap file's FFRNet", allow_other_weights)
    uncond = identity.uncond
    if uncond_noise > 0:
        noise = torch.randn(uncond.shape, generator=torch.Generator().manual_seed(0))
        uncond = uncond + uncond_noise * noise.to(uncond)
    return apply_identity_control(positive, negative, bundle.control, identity.cond, uncond, hint, strength, start, end,
                                  mask, uncond_strength, positive_only, node_id=node_id)


def apply_instantid(model, positive, negative, bundle, identity: Identity, hint: torch.Tensor, ip_weight: float,
                    cn_strength: float, start: float, end: float, mask=None, uncond_noise: float = 0.0,
                    positive_only: bool = False, allow_other_weights: bool = False, *, node_id: str = ""):
    """InstantID with ``identity``: IP-attention on a clone of MODEL (``ip_weight``) and IdentityNet on the
    conditioning (``cn_strength``) -> (model, positive, negative). ``uncond_noise`` > 0 re-makes the negative tokens
    as the Resampler of that much uniform noise (cubiq's option) instead of the identity's own."""
    check_window(start, end)
    check_identity(identity, INSTANTID_RESAMPLER, bundle.accepted_keys, bundle.name, bundle.ip_layers.context_dim,
                   "InstantID", allow_other_weights)
    uncond = identity.uncond
    if uncond_noise > 0:
        if identity.id_embedding is None:
            raise InvalidInputError("this identity carries no ArcFace embedding, so its negative cannot be re-made",
                                    "set uncond_noise to 0, or encode the person again with FaceSnap InstantID Encode")
        uncond = bundle.encode(identity.id_embedding[None], uncond_noise).uncond
    if ip_weight != 0:
        model = patch_model_with_ip_attention(model, bundle.ip_layers, bundle.ip_patcher, bundle.key, identity.cond,
                                              uncond, ip_weight, start, end, mask)
    if cn_strength != 0:
        positive, negative = apply_identity_control(positive, negative, bundle.control, identity.cond, uncond, hint,
                                                    cn_strength, start, end, mask, None, positive_only,
                                                    node_id=node_id)
    return model, positive, negative
