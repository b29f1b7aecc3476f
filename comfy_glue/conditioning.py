"""Attach an identity ControlNet (FaceSnap's FFRNet, InstantID's IdentityNet) to positive and negative conditioning.

``apply_identity_control`` is the one entry point (FaceSnap's apply nodes use it; so can any identity ControlNet
wrapped as ``control.IdentityControlNet``). The tokens travel on the control object, never on the conditioning:
``cross_attn_controlnet`` is not set, so stock ControlNets chained before or after keep reading the prompt, and two
identity controls (two people) each read their own tokens. Each cond also gets the ``area_probe`` entry through which
its control learns the cond's area.
"""

from __future__ import annotations

import torch

from ..models.errors import InvalidInputError
from . import area_probe
from .control import IdentityControlNet


def apply_identity_control(positive, negative, control: IdentityControlNet, *, cond_tokens: torch.Tensor,
                           uncond_tokens: torch.Tensor, hint: torch.Tensor, strength: float, start: float, end: float,
                           mask: torch.Tensor | None = None, uncond_strength: float | None = None,
                           positive_only: bool = False, node_id: str = ""):
    """Chain a configured copy of ``control`` after each cond's existing ControlNet; returns (positive, negative).

    ``cond_tokens``/``uncond_tokens``: (1, T, D) identity tokens for the positive / negative batch chunks.
    ``hint``: ComfyUI IMAGE (B, H, W, C). ``mask``: (H, W) or (N, H, W) over the whole image, None = everywhere.
    ``uncond_strength``: strength on the negative (None = ``strength``). ``positive_only``: the control goes on the
    positive conds only, so it runs on the positive half of the batch only (like diffusers' ``guess_mode``); the
    negative keeps its own ControlNets. ``node_id`` names the applying node in errors raised while sampling.
    Positive and negative share one control copy (per previous ControlNet), so ComfyUI batches them together.
    """
    check_sdxl_conditioning(positive, negative)
    for name, tokens in (("cond_tokens", cond_tokens), ("uncond_tokens", uncond_tokens)):
        if tokens.ndim != 3 or tokens.shape[0] != 1:
            raise InvalidInputError(f"{name} must have shape (1, T, D), got {tuple(tokens.shape)}",
                                    "encode one identity per apply node")
    if cond_tokens.shape[-1] != uncond_tokens.shape[-1]:
        raise InvalidInputError(f"cond tokens are {cond_tokens.shape[-1]} wide, uncond tokens "
                                f"{uncond_tokens.shape[-1]}", "make both with the same encoder")
    if mask is not None and mask.ndim == 2:
        mask = mask[None]
    settings = dict(cond_tokens=cond_tokens, uncond_tokens=uncond_tokens, uncond_strength=uncond_strength,
                    positive_only=positive_only, mask=mask, node_id=node_id)
    hint = hint.movedim(-1, 1)
    copies = {}

    def attach(conditioning):
        out = []
        for text, opts in conditioning:
            d = area_probe.with_probe(opts)
            previous = d.get("control")
            if previous not in copies:
                c_net = control.copy().set_cond_hint(hint, strength, (start, end))
                for name, value in settings.items():
                    setattr(c_net, name, value)
                copies[previous] = c_net.set_previous_controlnet(previous)
            d["control"] = copies[previous]
            d["control_apply_to_uncond"] = False
            out.append([text, d])
        return out

    return attach(positive), (negative if positive_only else attach(negative))


def check_sdxl_conditioning(*conditionings) -> None:
    for conditioning in conditionings:
        for _, opts in conditioning:
            pooled = opts.get("pooled_output")
            if pooled is not None and pooled.shape[-1] != 1280:
                raise InvalidInputError(
                    f"the conditioning carries a {pooled.shape[-1]}-D pooled text embedding (SD1.5/SD2 text "
                    "encoder); FaceSnap's FFRNet needs SDXL conditioning (1280-D pooled)",
                    "encode the prompt with the SDXL checkpoint's CLIP")
