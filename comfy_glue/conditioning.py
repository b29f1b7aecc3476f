"""Put FaceSnap's control and its identity tokens on positive and negative conditioning."""

from __future__ import annotations

import torch

from ..models.errors import InvalidInputError
from .bundle import FaceSnapBundle


def apply_facesnap_conditioning(positive, negative, bundle: FaceSnapBundle, f_mix: torch.Tensor,
                                uncond: torch.Tensor, landmark_image: torch.Tensor, strength: float,
                                start: float, end: float, mask: torch.Tensor | None = None,
                                uncond_strength: float | None = None):
    """Set ``control`` + ``cross_attn_controlnet`` on every positive and negative cond, chaining previous ones."""
    check_sdxl_conditioning(positive, negative)
    hint = landmark_image.movedim(-1, 1)
    cnets = {}
    out = []
    for conditioning, tokens in ((positive, f_mix), (negative, uncond)):
        result = []
        for text, opts in conditioning:
            d = opts.copy()
            prev = d.get("control")
            if prev not in cnets:
                c_net = bundle.control.copy().set_cond_hint(hint, strength, (start, end))
                c_net.uncond_strength = uncond_strength
                c_net.mask = mask
                c_net.set_previous_controlnet(prev)
                cnets[prev] = c_net
            d["control"] = cnets[prev]
            d["control_apply_to_uncond"] = False
            d["cross_attn_controlnet"] = tokens
            result.append([text, d])
        out.append(result)
    return out[0], out[1]


def check_sdxl_conditioning(*conditionings) -> None:
    for conditioning in conditionings:
        for _, opts in conditioning:
            pooled = opts.get("pooled_output")
            if pooled is not None and pooled.shape[-1] != 1280:
                raise InvalidInputError(
                    f"the conditioning carries a {pooled.shape[-1]}-D pooled text embedding (SD1.5/SD2 text "
                    "encoder); FaceSnap's FFRNet needs SDXL conditioning (1280-D pooled)",
                    "encode the prompt with the SDXL checkpoint's CLIP")
