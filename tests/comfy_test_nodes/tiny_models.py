"""Tiny random-weight stand-ins for SDXL, its VAE, CLIP-ViT-H and FaceSnap weights (tests only, CPU).

The tiny UNet has SDXL's structure (ADM 2816, a first level without attention) at 32/64 channels; the matching
FaceSnap weights use ``FFRNetConfig.tiny()`` and ``MixerConfig.tiny()``.
"""

from __future__ import annotations

import json
import os
import tempfile

import torch

CONTEXT_DIM = 64  # the tiny UNet's text width; FFRNet's f_mix width is the mixer's dim (also 64)
CPU = torch.device("cpu")
TINY_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "num_classes": "sequential", "adm_in_channels": 2816, "dtype": torch.float32, "in_channels": 4,
    "model_channels": 32, "num_res_blocks": [1, 1], "transformer_depth": [0, 1],
    "transformer_depth_output": [0, 0, 1, 1],
    "channel_mult": [1, 2], "transformer_depth_middle": 1, "use_linear_in_transformer": True,
    "context_dim": CONTEXT_DIM, "num_head_channels": 16, "use_temporal_attention": False,
    "use_temporal_resblock": False,
}
TINY_SD15 = dict(TINY_UNET, num_classes=None, adm_in_channels=None, context_dim=768)
TINY_CLIP_VISION = {
    "attention_dropout": 0.0, "dropout": 0.0, "hidden_act": "gelu", "hidden_size": 32, "image_size": 224,
    "initializer_factor": 1.0, "initializer_range": 0.02, "intermediate_size": 64, "layer_norm_eps": 1e-05,
    "model_type": "clip_vision_model", "num_attention_heads": 2, "num_channels": 3, "num_hidden_layers": 3,
    "patch_size": 112, "projection_dim": 16, "torch_dtype": "float32",
}  # 224 / 112 = 2x2 patches + class token = 5 tokens of width 32 (CLIP-ViT-H: 257 x 1280)
TINY_VAE = {"embed_dim": 4, "ddconfig": {
    "double_z": True, "z_channels": 4, "resolution": 64, "in_channels": 3, "out_ch": 3, "ch": 32,
    "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}}


def init_(module: torch.nn.Module, seed: int, std: float = 0.02) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


def tiny_unet_patcher(seed: int = 0, sd15: bool = False):
    import comfy.model_patcher
    import comfy.supported_models

    cfg = TINY_SD15 if sd15 else TINY_UNET
    family = comfy.supported_models.SD15 if sd15 else comfy.supported_models.SDXL
    model = init_(family(cfg).get_model({}), seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=CPU, offload_device=CPU)


class TinyClip:
    """The tiny checkpoint's CLIP: no text encoder (FaceSnapTestCLIPTextEncode makes the conditioning); it takes
    LoRA patches the way ComfyUI's CLIP does (LoraLoader clones it and adds patches) and keeps them."""

    def __init__(self, seed: int = 0, patches: tuple = ()):
        self.seed = seed
        self.patches = patches
        self.cond_stage_model = torch.nn.Module()

    def clone(self):
        return TinyClip(self.seed, self.patches)

    def add_patches(self, patches, strength_patch=1.0, strength_model=1.0):
        self.patches = (*self.patches, (patches, strength_patch))
        return []


def tiny_lora(seed: int = 0, rank: int = 2, std: float = 0.2) -> dict:
    """A LoRA for the tiny SDXL in kohya's layout (lora_unet_<key>.lora_up/lora_down/alpha) on every 2-D weight of
    its transformer blocks."""
    unet = tiny_unet_patcher(seed).model
    g = torch.Generator().manual_seed(seed + 100)
    lora = {}
    for key, weight in unet.state_dict().items():
        if "transformer_blocks" not in key or weight.ndim != 2 or not key.startswith("diffusion_model."):
            continue
        name = "lora_unet_" + key[len("diffusion_model."):-len(".weight")].replace(".", "_")
        lora[f"{name}.lora_up.weight"] = torch.randn(weight.shape[0], rank, generator=g) * std
        lora[f"{name}.lora_down.weight"] = torch.randn(rank, weight.shape[1], generator=g) * std
        lora[f"{name}.alpha"] = torch.tensor(float(rank))
    return lora


def tiny_vae(seed: int = 0):
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL

    ae = init_(AutoencoderKL(**TINY_VAE), seed, std=0.05)
    return comfy.sd.VAE(sd=ae.state_dict(), config={"params": TINY_VAE})


def tiny_clip_vision(seed: int = 0):
    import comfy.clip_vision

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(TINY_CLIP_VISION, f)
    try:
        clip_vision = comfy.clip_vision.ClipVisionModel(f.name)
    finally:
        os.unlink(f.name)
    init_(clip_vision.model, seed)
    return clip_vision


def tiny_conditioning(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    positive = [[torch.randn(1, 77, CONTEXT_DIM, generator=g), {"pooled_output": torch.randn(1, 1280, generator=g)}]]
    negative = [[torch.zeros(1, 77, CONTEXT_DIM), {"pooled_output": torch.zeros(1, 1280)}]]
    return positive, negative


def tiny_facesnap_models(seed: int = 0, injector_std: float = 0.05, residual_std: float = 0.05, **config):
    """Mixer + FFRNet(+ injector) with non-zero residuals and (unless injector_std == 0) non-zero heads.
    ``config`` overrides ``FFRNetConfig.tiny()`` fields (e.g. injector_kernel_size, layers_per_block)."""
    from comfyui_facesnap.models.identity.facesnap.attribute_mixer import FacialAttributeMixer, MixerConfig
    from comfyui_facesnap.models.identity.facesnap.ffrnet import FFRNet, FFRNetConfig

    torch.manual_seed(seed)
    mixer = FacialAttributeMixer(MixerConfig.tiny(dim=64)).eval()  # CLIP tokens: 5 x 32, as TINY_CLIP_VISION
    cfg = FFRNetConfig.tiny(cross_attention_dim=64)
    for name, value in config.items():
        setattr(cfg, name, value)
    ffrnet = FFRNet(cfg).reset_parameters(generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for conv in [*ffrnet.controlnet_down_blocks, ffrnet.controlnet_mid_block]:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * residual_std)
        for head in [*ffrnet.id_injector.phi, *ffrnet.id_injector.mu]:
            head.weight.copy_(torch.randn(head.weight.shape, generator=g) * injector_std)
    return mixer, ffrnet.eval()


def tiny_stock_controlnet(seed: int = 0):
    """A stock ComfyUI ControlNet (comfy.cldm) with the tiny UNet's layout, random non-zero weights."""
    import comfy.cldm.cldm
    import comfy.controlnet
    import comfy.ops

    cfg = dict(TINY_UNET)
    cfg.pop("out_channels")
    cfg.update(hint_channels=3, operations=comfy.ops.disable_weight_init, device=CPU)
    return comfy.controlnet.ControlNet(init_(comfy.cldm.cldm.ControlNet(**cfg), seed), load_device=CPU)


def tiny_face_features(seed: int = 0, references: int = 1):
    """One person's FaceFeatures as FaceSnap Face Encode makes them (512-D ArcFace, 5 x 32 tiny CLIP tokens)."""
    from comfyui_facesnap.models.identity.facesnap.face_features import FaceFeatures

    g = torch.Generator().manual_seed(seed)
    ids = torch.nn.functional.normalize(torch.randn(references, 512, generator=g), dim=-1)
    return FaceFeatures(id_embeds=ids, clip_tokens=torch.randn(references, 5, 32, generator=g))


def rect_mask(width: int, height: int, x: int, y: int, w: int, h: int) -> torch.Tensor:
    mask = torch.zeros(1, height, width)
    mask[:, y:y + h, x:x + w] = 1.0
    return mask


class ForeignLayer(torch.nn.Module):
    """Another pack's layer added to the last decoder block or before the UNet's output: shifts h a little."""

    calls = 0

    def forward(self, x):
        type(self).calls += 1
        return x + 0.05


def foreign_patch(model, kind: str):
    """What another pack might do to the MODEL: wrap the last decoder block (object patch + its own
    forward_timestep_embed_patch), or the UNet's output layers (object patch)."""
    from comfy.ldm.modules.diffusionmodules.openaimodel import TimestepEmbedSequential

    m = model.clone()
    if kind == "last_block":
        last = f"diffusion_model.output_blocks.{len(m.get_model_object('diffusion_model.output_blocks')) - 1}"
        m.add_object_patch(last, TimestepEmbedSequential(*m.get_model_object(last), ForeignLayer()))
        m.set_model_forward_timestep_embed_patch((ForeignLayer, lambda layer, x, *args: layer(x)))
    else:
        m.add_object_patch("diffusion_model.out",
                           torch.nn.Sequential(ForeignLayer(), *m.get_model_object("diffusion_model.out")))
    return m


TINY_IP_OUTPUT_DIM = 48  # the tiny Resampler's token width (InstantID: 2048); differs from the text width on purpose


def tiny_instantid_files(folder, seed: int = 0, ip_std: float = 0.2, output_dim: int = TINY_IP_OUTPUT_DIM,
                         prefix: str = "tiny_") -> tuple[str, str]:
    """A tiny InstantID pair with the published names: ``tiny_ip-adapter.safetensors`` (Resampler + IP layers for the
    tiny SDXL, the layout in its metadata) and ``tiny_identitynet.safetensors`` (a diffusers ControlNet reading
    ``output_dim``-wide tokens, config in its metadata, non-zero outputs); ``prefix`` replaces ``tiny_``. Returns their
    paths."""
    import dataclasses

    from safetensors.torch import save_file

    from comfyui_facesnap.models.identity.instantid.resampler import ResamplerConfig
    from comfyui_facesnap.models.identity.instantid.weights import InstantIDAdapter
    from comfyui_facesnap.models.identity.sdxl_controlnet import ControlNetConfig, SDXLControlNet
    from comfyui_facesnap.models.identity.unet_sites import REQUIRED

    config = ResamplerConfig.tiny(output_dim=output_dim)
    unet = {k: TINY_UNET[k] for k in REQUIRED}
    torch.manual_seed(seed)
    adapter = InstantIDAdapter(config, unet)
    init_(adapter.ip_adapter, seed + 1, std=ip_std)
    ip_path = os.path.join(folder, f"{prefix}ip-adapter.safetensors")
    save_file({k: v.contiguous() for k, v in adapter.state_dict().items()}, ip_path,
              metadata={"resampler_config": json.dumps(dataclasses.asdict(config)), "unet_config": json.dumps(unet)})
    cfg = ControlNetConfig.tiny(cross_attention_dim=output_dim)
    net = SDXLControlNet(cfg).reset_parameters(generator=torch.Generator().manual_seed(seed + 2))
    g = torch.Generator().manual_seed(seed + 3)
    with torch.no_grad():
        for conv in [*net.controlnet_down_blocks, net.controlnet_mid_block, net.controlnet_cond_embedding.conv_out]:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.05)
    cn_path = os.path.join(folder, f"{prefix}identitynet.safetensors")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, cn_path,
              metadata={"config": json.dumps(cfg.diffusers_kwargs())})
    return ip_path, cn_path


def foreign_attn2(model, shift: float = 0.01):
    """What another pack's attention patch does: an attn2 replace at every cross-attention of the tiny UNet that
    computes the plain attention plus a constant. Counts its calls on ``ForeignAttention.calls``."""
    from comfy.ldm.modules.attention import optimized_attention

    m = model.clone()
    for key in (("input", 3, 0), ("middle", 0, 0), ("output", 0, 0), ("output", 1, 0)):
        m.set_model_attn2_replace(ForeignAttention(shift), *key)
    ForeignAttention.attention = staticmethod(optimized_attention)
    return m


class ForeignAttention:
    calls = 0
    attention = None

    def __init__(self, shift: float):
        self.shift = shift

    def __call__(self, q, k, v, extra_options):
        type(self).calls += 1
        return self.attention(q, k, v, extra_options["n_heads"]) + self.shift
