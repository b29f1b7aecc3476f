"""A warm start from InstantID's public weights: FFRNet from IdentityNet, and f_mix distilled from its Resampler.

IdentityNet is an SDXL ControlNet whose cross-attention was trained on the Resampler's 16 x 2048 tokens of a face.
Started from it, FFRNet already reads tokens of that kind; the distillation term pulls the mixer's f_mix (which
starts random) into the same token space first, so the diffusion loss does not have to discover it:

    L_distill = || f_mix - R(e) ||^2 / || R(e) ||^2    per sample, R = the frozen Resampler, e = the raw ArcFace

Why this distance: FFRNet's keys and values are linear in the tokens, so what IdentityNet learned depends on their
magnitude and per-channel gain and offset (the Resampler's ``norm_out``), which a cosine or an MSE of re-normalised
tokens would leave free. The mixer ends in an affine LayerNorm like ``norm_out``, so it can match the raw tokens
exactly. Dividing by the target's energy makes the term scale-free (it is 1 for f_mix = 0, whatever the gains of
the user's file), so lambda_distill means the same for any file. Tokens are matched in order: IdentityNet's
cross-attention ignores token order, and the mixer's learnable queries are free to take the Resampler's.

The Resampler reads insightface's raw embedding (not L2-normalised), as InstantID's pipeline feeds it. Shards store
the normalised one (``arcface.npy``) and its norm (``arcface_norm`` in the sample's json); the teacher gets their
product. It runs on the fly, frozen, in float32: about 2.6 GFLOP per sample, nothing next to an SDXL step, and no
16 x 2048 tokens per sample on disk.
"""

from __future__ import annotations

import logging
import os

import torch

from ..models.errors import ModelFileError
from ..models.identity.facesnap.attribute_mixer import MixerConfig
from ..models.identity.instantid.resampler import Resampler, ResamplerConfig
from .config import Config, DistillConfig

log = logging.getLogger("facesnap.train")

FFRNET_INIT_KEYWORDS = ("unet", "instantid")


def check_warm_start_config(cfg: Config) -> None:
    """Config errors before anything is loaded; settings that are set but unused are only logged."""
    m, d = cfg.model, cfg.distill
    init = m.ffrnet_init
    if init == "instantid" and not m.instantid_controlnet:
        raise ValueError("model.ffrnet_init is instantid but model.instantid_controlnet is empty: set it to "
                         "InstantID's IdentityNet (the ControlNetModel folder, or its "
                         "diffusion_pytorch_model.safetensors)")
    if init not in FFRNET_INIT_KEYWORDS and not os.path.exists(init):
        raise ValueError(f"model.ffrnet_init must be unet, instantid or the path of a diffusers SDXL ControlNet; "
                         f"{init!r} is neither a keyword nor an existing path")
    if m.instantid_controlnet and init != "instantid":
        log.warning("model.instantid_controlnet is set but unused: model.ffrnet_init is %r, not instantid", init)
    if init != "unet" and (m.ffrnet_preset or m.ffrnet_overrides):
        log.warning("model.ffrnet_preset / ffrnet_overrides shape a copy of the UNet only: FFRNet takes the layout "
                    "of the ControlNet it starts from")
    if d.weight < 0 or d.decay_steps < 0:
        raise ValueError(f"distill.weight ({d.weight}) and distill.decay_steps ({d.decay_steps}) must be >= 0")
    if d.weight > 0 and not m.instantid_ip_adapter:
        raise ValueError("distill.weight > 0 needs a teacher: set model.instantid_ip_adapter to InstantID's "
                         "ip-adapter.bin (its Resampler), or set distill.weight: 0")
    if m.instantid_ip_adapter and d.weight == 0:
        log.warning("model.instantid_ip_adapter is set but unused: distill.weight is 0")


def resampler_config(cfg: Config, mixer: MixerConfig) -> ResamplerConfig:
    """The published Resampler (the tests' tiny mixer preset pairs with the tiny one of its width); it must emit as
    many tokens, as wide, as the mixer."""
    config = ResamplerConfig.tiny(mixer.dim) if cfg.model.mixer_preset == "tiny" else ResamplerConfig.instantid()
    if (mixer.mix_tokens, mixer.dim) != (config.num_queries, config.output_dim):
        raise ValueError(f"the distillation compares f_mix ({mixer.mix_tokens} x {mixer.dim}) with InstantID's "
                         f"Resampler tokens ({config.num_queries} x {config.output_dim}): keep the mixer's SDXL "
                         "defaults (model.mixer) or set distill.weight: 0")
    return config


def load_teacher(cfg: Config, unet_config: dict, mixer: MixerConfig) -> tuple[Resampler, str]:
    """InstantID's Resampler from ``model.instantid_ip_adapter``, frozen, float32; and its weights fingerprint."""
    from ..models.identity.instantid.weights import load_instantid

    config = resampler_config(cfg, mixer)
    try:
        adapter = load_instantid(cfg.model.instantid_ip_adapter, config=config, unet_config=unet_config)
    except ModelFileError as err:
        raise ModelFileError(f"model.instantid_ip_adapter: {err.message}", err.fix) from err
    teacher = adapter.image_proj.float().requires_grad_(False).eval()
    return teacher, adapter.weights_key


def distill_weight(d: DistillConfig, step: int) -> float:
    """lambda_distill at optimizer step ``step`` (0-based): constant, or linear to 0 at ``decay_steps``."""
    if d.decay_steps <= 0:
        return d.weight
    return d.weight * max(0.0, 1.0 - step / d.decay_steps)


def raw_arcface(batch: dict, device) -> torch.Tensor:
    """insightface's raw embedding of each reference: the stored normalised one times its stored norm."""
    norms = batch["arcface_norm"].to(device)
    missing = batch["has_arcface"].to(device) & (norms <= 0)
    if missing.any():
        raise ValueError("the distillation needs the raw ArcFace embedding, but these shards store no arcface_norm "
                         "(prepared before the warm start existed): re-run prepare into a new folder, or set "
                         "distill.weight: 0")
    return batch["arcface"].to(device).float() * norms[:, None]


def distillation_loss(f_mix: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """|| f_mix - target ||^2 / || target ||^2 per sample (B,), over all tokens and channels."""
    f_mix, target = f_mix.float(), target.float()
    error = (f_mix - target).pow(2).flatten(1).sum(1)
    return error / target.pow(2).flatten(1).sum(1).clamp_min(1e-12)
