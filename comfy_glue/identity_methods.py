"""The identity methods the pack runs, registered in one place, and the interface each method's glue implements.

A method is four things (docs/add-identity-method.md):

1. a models sub-package ``models/identity/<name>/``: its networks and weight files, pure PyTorch;
2. one glue module ``comfy_glue/methods/<name>.py`` with the interface below;
3. its entry in ``METHODS`` here;
4. its nodes (``nodes/<name>_nodes.py``), which take and give the pack's identity type.

Nodes, evaluation and training read ``METHODS``; this module imports nothing from ComfyUI, so evaluation (which
reaches ComfyUI over HTTP only) can read it too. The glue module of a method is imported when it is first used.

Interface of a glue module: module-level functions, the bundle (what the method's loader node outputs) first and
every other argument keyword-only:

- ``encode(bundle, *, faces, clip_vision=None, **settings) -> Identity``: reference faces (FaceSnap Face Crop's
  output) of one person into an identity;
- ``apply(bundle, identity, *, request: ApplyRequest) -> Applied``: the identity on the MODEL and/or the
  conditioning;
- ``weights_key(bundle) -> str``: the key the identities it makes carry (``Identity.weights_key``), and which its
  apply accepts.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from dataclasses import dataclass
from typing import Any

from ..models.errors import InvalidInputError
from ..models.identity.ecomid.recipe import ECOMID_ENCODER
from ..models.identity.identity import FACESNAP_MIXER, INSTANTID_RESAMPLER, Identity
from ..models.identity.pulid.adapter import PULID_V1_1_ENCODER, PULID_V1_ENCODER

INTERFACE = ("encode", "apply", "weights_key")


@dataclass(frozen=True)
class IdentityMethod:
    name: str  # registry key, also the glue module's and the nodes module's name
    label: str  # for people: "InstantID"
    encoder: str  # ``Identity.encoder`` of the identities the method makes
    encoder_label: str  # what makes its tokens, for messages: "InstantID's Resampler"
    encode_nodes: tuple[str, ...]  # node ids that make its identities
    apply_nodes: tuple[str, ...]  # node ids that apply them
    module: str = ""  # the glue module's name when several entries share one (PuLID v1 and v1.1); default: name

    def glue(self):
        """The method's glue module (``comfy_glue/methods/<module or name>.py``)."""
        return importlib.import_module(f"{__package__}.methods.{self.module or self.name}")


FACESNAP = IdentityMethod("facesnap", "FaceSnap", FACESNAP_MIXER, "FaceSnap's Facial Attribute Mixer",
                          ("FaceSnapAttributeMixer",),
                          ("FaceSnapApplyIdentity", "FaceSnapApplyIdentityAdvancedV2", "ApplyFaceSnap"))
INSTANTID = IdentityMethod("instantid", "InstantID", INSTANTID_RESAMPLER, "InstantID's Resampler",
                           ("FaceSnapInstantIDEncode",), ("FaceSnapApplyInstantID", "FaceSnapApplyInstantIDAdvanced"))
PULID_NODES = (("FaceSnapPuLIDEncode",), ("FaceSnapApplyPuLID", "FaceSnapApplyPuLIDAdvanced"))
PULID_V1 = IdentityMethod("pulid", "PuLID v1", PULID_V1_ENCODER, "PuLID v1's ID encoder (IDEncoder)", *PULID_NODES)
PULID_V1_1 = IdentityMethod("pulid_v1_1", "PuLID v1.1", PULID_V1_1_ENCODER, "PuLID v1.1's ID encoder (IDFormer)",
                            *PULID_NODES, module="pulid")
ECOMID = IdentityMethod("ecomid", "EcomID", ECOMID_ENCODER, "EcomID's encoders (InstantID's Resampler + PuLID v1)",
                        ("FaceSnapEcomIDEncode",), ("FaceSnapApplyEcomID", "FaceSnapApplyEcomIDAdvanced"))
METHODS = {method.name: method for method in (FACESNAP, INSTANTID, PULID_V1, PULID_V1_1, ECOMID)}


def by_encoder(encoder: str) -> IdentityMethod | None:
    return next((m for m in METHODS.values() if m.encoder == encoder), None)


def encoder_label(encoder: str) -> str:
    method = by_encoder(encoder)
    return method.encoder_label if method is not None else encoder


def interface_problems(module) -> list[str]:
    """What a glue module lacks of the interface (empty when it implements it)."""
    problems = []
    for name in INTERFACE:
        function = getattr(module, name, None)
        if not callable(function):
            problems.append(f"no {name}()")
            continue
        params = list(inspect.signature(function).parameters.values())
        positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        wanted = {"encode": 1, "apply": 2, "weights_key": 1}[name]
        if len(positional) != wanted:
            problems.append(f"{name}() takes {len(positional)} positional arguments, the interface {wanted}")
        if name == "apply" and "request" not in {p.name for p in params if p.kind == p.KEYWORD_ONLY}:
            problems.append("apply() has no keyword-only request")
        if name == "encode" and "faces" not in {p.name for p in params if p.kind == p.KEYWORD_ONLY}:
            problems.append("encode() has no keyword-only faces")
    return problems


@dataclass(frozen=True, kw_only=True)
class ApplyRequest:
    """What an apply node asks of a method. Each method reads the fields it has and refuses a non-default value of a
    field it does not have (``refuse_unsupported``)."""

    model: Any = None  # the MODEL, for methods that patch it (None: conditioning only)
    positive: list
    negative: list
    control_image: Any  # ComfyUI IMAGE (B, H, W, C) over the whole picture: landmarks or keypoints
    strength: float = 1.0  # the identity ControlNet's strength on the positive
    uncond_strength: float | None = None  # on the negative (None: ``strength``)
    attention_weight: float = 1.0  # the identity attention's weight on the UNet's cross-attentions
    attention_mode: Any = None  # how the identity attention mixes in (PuLID: a preset name or pulid.AttentionMode)
    start: float = 0.0
    end: float = 1.0
    mask: Any = None  # where the identity acts, over the whole picture (None: everywhere)
    uncond_token_noise: float = 0.0  # Gaussian noise (fixed seed) added to the negative's identity tokens
    uncond_input_noise: float = 0.0  # the negative re-encoded from uniform noise of this amplitude
    positive_only: bool = False  # the identity ControlNet on the positive half of the batch only
    allow_other_weights: bool = False  # apply an identity made with other weights of the same kind
    node_id: str = ""  # the applying node, for messages

    def refuse_unsupported(self, method: str, *fields: str) -> None:
        """A non-default value of ``fields`` (which ``method`` does not have) is a wiring error, named."""
        for name in fields:
            default = ApplyRequest.__dataclass_fields__[name].default
            if getattr(self, name) != default:
                raise InvalidInputError(f"[{self.node_id}] {method} has no {name}", f"leave {name} at {default!r}")


@dataclass(frozen=True)
class Applied:
    model: Any
    positive: list
    negative: list


def check_window(start: float, end: float) -> None:
    if end < start:
        raise InvalidInputError(f"end_percent {end} is before start_percent {start}",
                                "set end_percent >= start_percent")


def check_identity(identity: Identity, *, method: IdentityMethod, keys: tuple[str, ...], file_name: str, width: int,
                   target: str, allow_other_weights: bool = False) -> None:
    """``identity`` must come from ``method``'s encoder with ``width``-wide tokens, made by the weights whose accepted
    keys are ``keys`` (file ``file_name``); identities of other weights of that kind pass, with a warning, only with
    ``allow_other_weights``."""
    if not isinstance(identity, Identity):
        raise InvalidInputError(f"expected an identity, got a {type(identity).__name__}",
                                "connect an identity output (Attribute Mixer, InstantID Encode, Load Identity)")
    if identity.encoder != method.encoder:
        raise InvalidInputError(
            f"this identity was made by {encoder_label(identity.encoder)} ({identity.made_with}); {target} reads "
            f"tokens of {method.encoder_label}", f"encode the person with the {method.label} encode node")
    if identity.width != width:
        raise InvalidInputError(f"the identity's tokens are {identity.width} wide, {target} reads {width}-wide tokens "
                                f"(the identity was made with {identity.made_with})",
                                "encode the person with the same model you apply")
    if identity.weights_key in keys:
        return
    if not allow_other_weights:
        raise InvalidInputError(
            f"this identity was made with {identity.made_with}, not with {file_name!r} (weights key {keys[0]}) "
            "that this node applies: tokens of other weights do not fit them",
            f"encode the person again with {file_name!r}, or load the identity you saved from it; to apply it anyway "
            "(for example with a bf16 copy of the same file), turn on allow_other_weights in the Advanced apply node")
    logging.warning("FaceSnap: identity %s was made with other %s weights (%s) than the ones applied (%s, %s)",
                    identity.describe(), method.encoder_label, identity.made_with, file_name, keys[0])
