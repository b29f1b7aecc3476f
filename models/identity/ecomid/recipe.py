"""EcomID's combination: which tokens go where, and its node's settings (see the package docstring for the sources).

    control tokens:   InstantID's Resampler (ArcFace, averaged over the photos)   -> IdentityNet's cross-attention
    attention tokens: PuLID v1's IDEncoder (ArcFace + EVA-CLIP)                    -> PuLID's ID attention in the UNet
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ...errors import InvalidInputError
from ..identity import INSTANTID_RESAMPLER, Identity
from ..pulid.adapter import PULID_V1_ENCODER, V1, PuLIDAdapter
from ..pulid.id_attention import METHODS, SHARE_CUBIQ, IDAttentionMode

ECOMID_ENCODER = "ecomid-resampler+pulid-v1"  # Identity.encoder of EcomID's joined tokens


@dataclass(frozen=True)
class EcomIDSettings:
    """ApplyEcomIDAdvanced's defaults; ``EXAMPLE_WORKFLOWS`` holds the published workflows' values."""
    method: str = "fidelity"
    ip_weight: float = 0.8
    cn_strength: float = 0.8
    noise: float = 0.0
    start_at: float = 0.0
    end_at: float = 1.0
    share: str = SHARE_CUBIQ  # EcomID's node runs cubiq's pulid_attention

    @property
    def mode(self) -> IDAttentionMode:
        if self.method not in METHODS:
            raise InvalidInputError(f"unknown EcomID method {self.method!r}", f"use one of {', '.join(METHODS)}")
        return METHODS[self.method]


EXAMPLE_WORKFLOWS = {"ecomid_basic_workflow": EcomIDSettings(ip_weight=0.3),
                     "ecomid_face_only": EcomIDSettings(ip_weight=0.5)}
EXAMPLE_SAMPLER = {"steps": 25, "cfg": 3.5, "sampler_name": "dpm_2", "scheduler": "karras"}
README_CFG = 6.0  # "values from 1 to 7 are acceptable, with 6 being recommended"


@dataclass(frozen=True)
class EcomIDIdentity:
    """control: InstantID Resampler tokens (1, 16, 2048) for the IdentityNet (positive) and the Resampler of zeros or
    noise (negative); attention: PuLID v1 tokens (1, 10, 2048) and their negative for the UNet's ID attention."""
    control: Identity
    attention: Identity

    def joined(self, weights_key: str, model_name: str = "") -> Identity:
        """Both token sets as one identity (``ECOMID_ENCODER``): cond and uncond are the control tokens followed by
        the attention tokens, (1, 16 + 10, 2048), so Save, Load and Blend Identity treat it as any other identity
        (a blend mixes both sets alike). ``split_identity`` takes it apart."""
        control, attention = self.control, self.attention
        if control.width != attention.width:
            raise InvalidInputError(f"InstantID's Resampler makes {control.width}-wide tokens, PuLID's encoder "
                                    f"{attention.width}-wide ones: they are not EcomID's pair",
                                    "load InstantID's and PuLID v1's SDXL files (both 2048 wide)")
        joined = [torch.cat([a, b.to(a)], dim=1) for a, b in ((control.cond, attention.cond),
                                                            (control.uncond, attention.uncond))]
        return Identity(cond=joined[0], uncond=joined[1], encoder=ECOMID_ENCODER, weights_key=weights_key,
                        num_references=control.num_references, id_embedding=control.id_embedding,
                        model_name=model_name)


def split_identity(identity: Identity, control_tokens: int, attention_tokens: int) -> EcomIDIdentity:
    """An ``ECOMID_ENCODER`` identity -> its control tokens (the first ``control_tokens``) and attention tokens."""
    if identity.encoder != ECOMID_ENCODER or identity.num_tokens != control_tokens + attention_tokens:
        raise InvalidInputError(f"expected an EcomID identity of {control_tokens} + {attention_tokens} tokens, got "
                                f"{identity.describe()}", "encode the person with FaceSnap EcomID Encode")
    part = {name: (getattr(identity, name)[:, :control_tokens], getattr(identity, name)[:, control_tokens:])
            for name in ("cond", "uncond")}
    return EcomIDIdentity(
        control=replace(identity, cond=part["cond"][0], uncond=part["uncond"][0], encoder=INSTANTID_RESAMPLER),
        attention=replace(identity, cond=part["cond"][1], uncond=part["uncond"][1], encoder=PULID_V1_ENCODER))


def check_pulid_for_ecomid(pulid: PuLIDAdapter) -> None:
    if pulid.version != V1:
        raise InvalidInputError(f"EcomID was trained with PuLID v1's ID attention frozen; this PuLID file is "
                                f"{pulid.version}", "load ip-adapter_pulid_sdxl_fp16.safetensors (or pulid_v1.bin)")


def check_identitynet(cross_attention_dim: int, control: Identity) -> None:
    """The ControlNet must read the control tokens' width (EcomID's IdentityNet and InstantID's Resampler: 2048)."""
    if cross_attention_dim != control.width:
        raise InvalidInputError(f"the ControlNet's cross-attention is {cross_attention_dim} wide, the identity tokens "
                                f"{control.width}", "use EcomID's IdentityNet (SDXL-EcomID) with SDXL weights")


@torch.no_grad()
def encode_ecomid(instantid, pulid: PuLIDAdapter, arcface: torch.Tensor, eva_cls: torch.Tensor, eva_hidden,
                  noise: float = 0.0, seed: int = 0, device: torch.device | None = None) -> EcomIDIdentity:
    """Both token sets of one person from N photos: ``instantid`` is an ``InstantIDAdapter`` (or anything with its
    ``encode_identity``: the Resampler is all EcomID reads of it), ``pulid`` a v1 ``PuLIDAdapter``; ArcFace (N, 512),
    EVA CLS (N, 768), 5 EVA hidden states (N, 577, 1024). ``noise`` > 0 replaces both negatives' zeros by uniform
    noise (EcomID's ``noise``), from ``seed``. ``device``: where both encoders run (default: where their weights
    are)."""
    check_pulid_for_ecomid(pulid)
    control = instantid.encode_identity(arcface, noise, seed, device)
    attention = pulid.encode_identity(arcface, eva_cls, eva_hidden, noise, seed, device)
    return EcomIDIdentity(control=control, attention=attention)
