"""The frozen SDXL the trainer builds on, loaded through ComfyUI's own loaders so training and inference share code.

``FrozenBase`` bundles what a training step needs from the base:
  * ``model``: ComfyUI's ``model_base.SDXL`` (UNet in ``model.diffusion_model``, noise schedule in ``model_sampling``);
  * ``text``: captions -> (context (B, 77, C), pooled (B, 1280)), ComfyUI's CLIP for real checkpoints;
  * ``codec``: pixels in [-1, 1] <-> model-space latents (the VAE plus SDXL's latent scale), differentiable decode.

``build_tiny_base`` makes a random, structurally-SDXL miniature for tests and the CPU learning benchmark.
"""

from __future__ import annotations

import json
import pathlib
from dataclasses import dataclass

import torch
from torch import nn

from ..models.errors import ModelFileError
from ..models.identity.sdxl_controlnet import random_init_


@dataclass
class FrozenBase:
    model: nn.Module
    text: "TextEncoder"
    codec: "LatentCodec"
    unet_config: dict

    @property
    def unet(self) -> nn.Module:
        return self.model.diffusion_model

    def alphas_cumprod(self) -> torch.Tensor:
        sigmas = self.model.model_sampling.sigmas.float()
        return 1.0 / (1.0 + sigmas**2)  # ComfyUI stores sigma = sqrt((1 - a) / a)

    def adm(self, pooled: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """SDXL's ADM vector y (pooled text + original/crop/target size embeddings), as ComfyUI builds it."""
        return self.model.encode_adm(pooled_output=pooled, width=width, height=height, crop_w=0, crop_h=0,
                                     target_width=width, target_height=height, device=pooled.device).to(pooled.device)


class TextEncoder:
    def __init__(self, clip):
        self.clip = clip

    @torch.no_grad()
    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        contexts, pooled = [], []
        for caption in captions:
            cond, pool = self.clip.encode_from_tokens(self.clip.tokenize(caption), return_pooled=True)
            contexts.append(cond[:, :77])  # prompts longer than 77 tokens are cut: one chunk per sample
            pooled.append(pool)
        return torch.cat(contexts).float(), torch.cat(pooled).float()


class HashedTextEncoder(nn.Module):
    """Tiny stand-in for CLIP in tests: frozen random byte embeddings, so captions still differ."""

    def __init__(self, context_dim: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("table", torch.randn(257, context_dim, generator=g) * 0.5)
        self.register_buffer("pool", torch.randn(context_dim, 1280, generator=g) / context_dim**0.5)

    @torch.no_grad()
    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.full((len(captions), 77), 256, dtype=torch.long)
        for i, caption in enumerate(captions):
            data = list(caption.encode("utf-8")[:77])
            ids[i, : len(data)] = torch.tensor(data, dtype=torch.long)
        context = self.table[ids]
        return context, context.mean(1) @ self.pool


class LatentCodec(nn.Module):
    """Pixels in [-1, 1] (B, 3, H, W) <-> model-space latents; wraps a ComfyUI first-stage model."""

    def __init__(self, first_stage: nn.Module, latent_format):
        super().__init__()
        self.first_stage = first_stage
        self.latent_format = latent_format

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        dtype = next(self.first_stage.parameters()).dtype
        return self.latent_format.process_in(self.first_stage.encode(pixels.to(dtype)).float())

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Differentiable (the ID loss backpropagates through it)."""
        dtype = next(self.first_stage.parameters()).dtype
        return self.first_stage.decode(self.latent_format.process_out(latents).to(dtype)).float().clamp(-1, 1)


def _not_sdxl(path, what: str) -> ModelFileError:
    return ModelFileError(
        f"{path} is not an SDXL base model ({what}). FaceSnap trains on a frozen SDXL (base 1.0 or a fine-tune).",
        "point base.path at an SDXL checkpoint (.safetensors with UNet, CLIP-L/G and VAE) or a diffusers SDXL folder",
    )


def _check_sdxl_model(model, path) -> None:
    import comfy.model_base

    if not isinstance(model, comfy.model_base.SDXL) or model.model_config.unet_config.get("in_channels") != 4:
        raise _not_sdxl(path, f"ComfyUI detected {type(model).__name__}")


def load_checkpoint(path: str) -> FrozenBase:
    """A single-file SDXL checkpoint, detected before its weights are built, so a wrong file fails at once."""
    import comfy.model_detection
    import comfy.sd
    import comfy.supported_models
    import comfy.utils

    path = pathlib.Path(path)
    if not path.is_file():
        raise ModelFileError(f"base checkpoint not found: {path}", "check base.path in the training config")
    sd, metadata = comfy.utils.load_torch_file(str(path), safe_load=True, return_metadata=True)
    prefix = comfy.model_detection.unet_prefix_from_state_dict(sd)
    config = comfy.model_detection.model_config_from_unet(sd, prefix, metadata=metadata)
    if config is None:
        raise _not_sdxl(path, "no known diffusion model was detected")
    if not isinstance(config, comfy.supported_models.SDXL):
        raise _not_sdxl(path, f"detected {type(config).__name__}")
    patcher, clip, vae, _ = comfy.sd.load_state_dict_guess_config(sd, output_vae=True, output_clip=True,
                                                                  metadata=metadata)
    if clip is None or vae is None:
        raise ModelFileError(f"{path} has no text encoders or no VAE",
                             "use a full SDXL checkpoint, not a UNet-only file")
    _check_sdxl_model(patcher.model, path)
    return _frozen(patcher.model, TextEncoder(clip), vae)


def load_diffusers_folder(path: str) -> FrozenBase:
    import comfy.diffusers_load

    root = pathlib.Path(path)
    config_file = root / "unet" / "config.json"
    if not config_file.is_file():
        raise ModelFileError(f"{config_file} not found",
                             "point base.path at a diffusers folder (model_index.json, unet/, vae/, ...)")
    unet_cfg = json.loads(config_file.read_text())
    if (unet_cfg.get("addition_embed_type") != "text_time" or unet_cfg.get("cross_attention_dim") != 2048
            or unet_cfg.get("in_channels") != 4):
        raise _not_sdxl(root, f"unet/config.json: cross_attention_dim={unet_cfg.get('cross_attention_dim')}, "
                              f"addition_embed_type={unet_cfg.get('addition_embed_type')}")
    patcher, clip, vae = comfy.diffusers_load.load_diffusers(str(root), output_vae=True, output_clip=True)
    _check_sdxl_model(patcher.model, root)
    return _frozen(patcher.model, TextEncoder(clip), vae)


def _frozen(model, text, vae) -> FrozenBase:
    codec = LatentCodec(vae.first_stage_model, model.latent_format)
    for module in (model, codec):
        module.requires_grad_(False).eval()
    return FrozenBase(model=model, text=text, codec=codec, unet_config=dict(model.model_config.unet_config))


TINY_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4, "model_channels": 32,
    "num_res_blocks": [1, 1], "transformer_depth": [0, 1], "transformer_depth_output": [0, 0, 1, 1],
    "channel_mult": [1, 2], "transformer_depth_middle": 1, "use_linear_in_transformer": True, "context_dim": 64,
    "num_head_channels": 16, "use_temporal_attention": False, "use_temporal_resblock": False,
}
TINY_VAE = {"double_z": True, "z_channels": 4, "resolution": 64, "in_channels": 3, "out_ch": 3, "ch": 32,
            "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}


@torch.no_grad()
def calibrate_latent_scale_(codec: LatentCodec, pixels: torch.Tensor) -> float:
    """Re-centre and re-scale a VAE's latent mean so that ``pixels`` encode to zero-mean, unit-std model latents.

    SDXL's latent scale factor assumes its trained VAE; a random or briefly fitted miniature encodes to latents
    about 100x smaller, and the diffusion loss then sees noise only (z_t carries ~1e-4 of the image's variance).
    The change is folded into quant_conv / post_quant_conv, so decode(encode(x)) is unchanged. Returns the gain."""
    vae = codec.first_stage
    raw = codec.encode(pixels)
    mean = raw.mean(dim=(0, 2, 3))
    gain = float(1.0 / (raw - mean.view(1, -1, 1, 1)).std().clamp_min(1e-8))
    embed = vae.post_quant_conv.in_channels
    scale = codec.latent_format.scale_factor
    # model latent = scale * (raw - shift) with raw = quant_conv(...)[:embed]; fold mean and gain into quant_conv
    shift = mean / scale
    vae.quant_conv.bias[:embed] -= shift
    vae.quant_conv.weight[:embed] *= gain
    vae.quant_conv.bias[:embed] *= gain
    post = vae.post_quant_conv  # decode sees latent / gain + shift: fold both into its 1x1 weights
    post.bias += post.weight[:, :, 0, 0] @ shift
    post.weight.div_(gain)
    return gain


def calibration_images(count: int = 16, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth random colour fields in [-1, 1] (B, 3, size, size): a stand-in image distribution for calibration."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand((count, 3, 4, 4), generator=g) * 2 - 1
    fine = torch.randn((count, 3, size, size), generator=g) * 0.1
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return (smooth + fine).clamp(-1, 1)


def build_tiny_base(seed: int = 0) -> FrozenBase:
    """A random miniature SDXL (1.4 M-parameter UNet, 32-channel VAE, hashed text encoder) for tests/benchmarks.

    Its VAE is calibrated so that images encode to unit-variance model latents, as SDXL's trained VAE does."""
    import comfy.ldm.models.autoencoder
    import comfy.supported_models

    g = torch.Generator().manual_seed(seed)
    config = dict(TINY_UNET, dtype=torch.float32)
    model = comfy.supported_models.SDXL(config).get_model({})
    random_init_(model, None, g)  # fan-in scaled: the learning benchmark pre-trains this base and its VAE
    vae = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=dict(TINY_VAE), embed_dim=4)
    random_init_(vae, None, g)
    codec = LatentCodec(vae, model.latent_format)
    for module in (model, codec):
        module.requires_grad_(False).eval()
    calibrate_latent_scale_(codec, calibration_images(seed=seed))
    return FrozenBase(model=model, text=HashedTextEncoder(TINY_UNET["context_dim"], seed), codec=codec,
                      unet_config=dict(TINY_UNET))


def load_base(kind: str, path: str = "", seed: int = 0) -> FrozenBase:
    if kind == "checkpoint":
        return load_checkpoint(path)
    if kind == "diffusers":
        return load_diffusers_folder(path)
    if kind == "tiny":
        return build_tiny_base(seed)
    raise ValueError(f"base.kind must be checkpoint, diffusers or tiny, not {kind!r}")
