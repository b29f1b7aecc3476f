"""EcomID's combination: which tokens go where, and its node's settings (see the package docstring for the sources).

    control tokens:   InstantID's Resampler (ArcFace, averaged over the photos)   -> IdentityNet's cross-attention
    attention tokens: PuLID v1's IDEncoder (ArcFace + EVA-CLIP)                    -> PuLID's ID attention in the UNet
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...errors import InvalidInputError
from ..identity import Identity
from ..pulid.adapter import V1, PuLIDAdapter
from ..pulid.id_attention import METHODS, SHARE_CUBIQ, IDAttentionMode

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
                  noise: float = 0.0, seed: int = 0) -> EcomIDIdentity:
    """Both token sets of one person from N photos: ``instantid`` is an ``InstantIDAdapter`` (its Resampler), ``pulid``
    a v1 ``PuLIDAdapter``; ArcFace (N, 512), EVA CLS (N, 768), 5 EVA hidden states (N, 577, 1024). ``noise`` > 0
    replaces both negatives' zeros by uniform noise (EcomID's ``noise``), from ``seed``."""
    check_pulid_for_ecomid(pulid)
    control = instantid.encode_identity(arcface, noise, seed)
    attention = pulid.encode_identity(arcface, eva_cls, eva_hidden, noise, seed)
    return EcomIDIdentity(control=control, attention=attention)
