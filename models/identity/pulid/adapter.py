"""A PuLID SDXL model as one module: the identity encoder (``image_proj``) and the ID attention's keys and values at
every UNet cross-attention (``ip_adapter``), in the layout of cubiq's conversion (``image_proj.*``,
``ip_adapter.{n}.to_k_ip.weight``), to which ``weights.py`` maps the official files.

``ip_adapter`` numbers the layers as PuLID does: the official pipeline keeps
``nn.ModuleList(unet.attn_processors.values())``, whose odd positions 1, 3, ..., 139 are the cross-attentions in
diffusers' order (down, up, mid blocks): InstantID's numbering, so ``instantid.unet_sites`` maps them to ComfyUI's
attn2 patch keys and ``instantid.ip_attention.IPAttentionLayers`` holds them (``id_to_k`` is stored as
``to_k_ip``). ``id_attention.py`` computes the ID attention from them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import InvalidInputError
from ..identity import ARCFACE_DIM, Identity, weights_key
from ..ip_attention import IPAttentionLayers
from ..unet_sites import SDXL_UNET_CONFIG, ip_adapter_layer_sites
from .id_encoder import EVA_CLS_DIM, IDEncoder, IDEncoderConfig
from .id_former import IDFormer, IDFormerConfig

V1, V1_1 = "v1", "v1.1"
VERSIONS = (V1, V1_1)
PULID_V1_ENCODER = "pulid-v1-idencoder"
PULID_V1_1_ENCODER = "pulid-v1.1-idformer"
ENCODER_NAMES = {V1: PULID_V1_ENCODER, V1_1: PULID_V1_1_ENCODER}
CONFIGS = {V1: IDEncoderConfig, V1_1: IDFormerConfig}


def default_config(version: str):
    if version not in VERSIONS:
        raise InvalidInputError(f"unknown PuLID version {version!r}", f"use one of {', '.join(VERSIONS)}")
    return CONFIGS[version]()


def id_features(arcface: torch.Tensor, eva_cls: torch.Tensor) -> torch.Tensor:
    """[ArcFace ; EVA CLS / |EVA CLS|] (N, 1280), the official pipelines' ``id_cond``. ``arcface`` is insightface's
    ``Face.embedding`` (not ``normed_embedding``); ``eva_cls`` the EVA-CLIP tower's 768-d output, raw or normalised."""
    if arcface.ndim != 2 or arcface.shape[1] != ARCFACE_DIM or arcface.shape[0] == 0:
        raise InvalidInputError(f"expected (references, {ARCFACE_DIM}) ArcFace embeddings, got {list(arcface.shape)}",
                                "connect at least one face with an ArcFace embedding")
    if eva_cls.shape != (arcface.shape[0], EVA_CLS_DIM):
        raise InvalidInputError(f"expected ({arcface.shape[0]}, {EVA_CLS_DIM}) EVA-CLIP embeddings, one per ArcFace "
                                f"embedding, got {list(eva_cls.shape)}", "encode the same faces with EVA-CLIP")
    return torch.cat([arcface.float(), F.normalize(eva_cls.float(), dim=-1)], dim=-1)


class PuLIDAdapter(nn.Module):
    """``version``: ``V1`` (IDEncoder, 10 tokens) or ``V1_1`` (IDFormer, 32 tokens); ``encoder_config`` defaults to
    the published one; ``unet_config`` gives the cross-attentions (SDXL: 70). ``operations`` / ``compute_dtype``:
    layer classes and compute dtype as in the InstantID adapter (ComfyUI: ``comfy.ops`` with manual cast)."""

    def __init__(self, version: str = V1, encoder_config=None, unet_config: dict = SDXL_UNET_CONFIG, operations=None,
                 compute_dtype: torch.dtype | None = None):
        super().__init__()
        self.version = version
        self.encoder_config = encoder_config or default_config(version)
        encoder = IDEncoder if version == V1 else IDFormer
        self.image_proj = encoder(self.encoder_config, operations, compute_dtype)
        self.unet_config = unet_config
        self.ip_adapter = IPAttentionLayers(ip_adapter_layer_sites(unet_config), self.context_dim, operations,
                                            compute_dtype)
        self.weights_key = ""

    @property
    def context_dim(self) -> int:
        cfg = self.encoder_config
        return cfg.context_dim if self.version == V1 else cfg.output_dim

    @property
    def encoder_name(self) -> str:
        return ENCODER_NAMES[self.version]

    def _uncond_inputs(self, features: torch.Tensor, hidden_states, noise: float, seed: int):
        """Zeros, as the official pipelines feed for the negative, or uniform [0, noise) draws (cubiq's ``noise``).
        v1 encodes each image's negative (then averages, as cubiq); v1.1 one negative of one image's size."""
        if self.version == V1_1:
            per_image = hidden_states[0].shape[1] // features.shape[0]
            features = features[:1]
            hidden_states = [h[:, :per_image] for h in hidden_states]
        if not noise:
            return torch.zeros_like(features), [torch.zeros_like(h) for h in hidden_states]
        g = torch.Generator().manual_seed(int(seed))
        draw = [torch.rand(t.shape, generator=g) * noise for t in (features, *hidden_states)]
        return draw[0].to(features), [d.to(h) for d, h in zip(draw[1:], hidden_states, strict=True)]

    @torch.no_grad()
    def encode_identity(self, arcface: torch.Tensor, eva_cls: torch.Tensor, eva_hidden, uncond_noise: float = 0.0,
                        seed: int = 0, device: torch.device | None = None) -> Identity:
        """One identity from N photos of one person: ArcFace embeddings (N, 512), EVA-CLIP CLS embeddings (N, 768)
        and the 5 EVA hidden states, each (N, 577, 1024). v1 averages the N photos' tokens (cubiq's node; the
        official v1 demo concatenates them instead); v1.1 encodes them together (the official v1.1 pipeline).
        The negative encodes zeros (``uncond_noise`` > 0: uniform noise from ``seed``)."""
        device = device or next(self.image_proj.parameters()).device
        features = id_features(arcface, eva_cls).to(device)
        hidden = [h.to(device) for h in eva_hidden]
        if len(hidden) and any(h.shape[0] != features.shape[0] for h in hidden):
            raise InvalidInputError(f"{features.shape[0]} ArcFace embeddings but EVA hidden states for "
                                    f"{[h.shape[0] for h in hidden]} images", "encode the same faces with EVA-CLIP")
        if self.version == V1:
            uncond_features, uncond_hidden = self._uncond_inputs(features, hidden, uncond_noise, seed)
            cond = self.image_proj(features, hidden).mean(dim=0, keepdim=True)
            uncond = self.image_proj(uncond_features, uncond_hidden).mean(dim=0, keepdim=True)
        else:
            joint = [h.reshape(1, -1, h.shape[-1]) for h in hidden]  # one sample, the images side by side
            uncond_features, uncond_hidden = self._uncond_inputs(features, joint, uncond_noise, seed)
            cond = self.image_proj(features[None], joint)
            uncond = self.image_proj(uncond_features, uncond_hidden)
        return Identity(cond=cond, uncond=uncond, encoder=self.encoder_name, weights_key=self.weights_key,
                        num_references=features.shape[0], id_embedding=arcface.float().mean(dim=0).cpu())

    def fingerprint(self) -> str:
        """``weights_key``: which weights made an identity (the encoder's; the attention layers do not change it)."""
        return weights_key(self.image_proj.state_dict())
