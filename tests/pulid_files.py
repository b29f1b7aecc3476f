"""PuLID weight files for the tests of several folders: the published layouts at full size (zeros that take almost
no disk), and tiny random adapters saved with their layout in the metadata."""

import json

import torch

from comfyui_facesnap.models.identity.pulid.adapter import V1, V1_1, PuLIDAdapter, default_config
from comfyui_facesnap.models.identity.pulid.id_encoder import IDEncoderConfig
from comfyui_facesnap.models.identity.pulid.id_former import IDFormerConfig
from comfyui_facesnap.models.identity.pulid.weights import expected_shapes, official_name
from comfyui_facesnap.models.identity.unet_sites import SDXL_UNET_CONFIG
from weight_files import write_sparse_safetensors, zero_views

TINY_UNET = {"model_channels": 32, "channel_mult": [1, 2], "num_res_blocks": [1, 1], "transformer_depth": [0, 1],
             "transformer_depth_middle": 1, "transformer_depth_output": [0, 0, 1, 1]}
TINY = {V1: IDEncoderConfig.tiny(), V1_1: IDFormerConfig.tiny()}


def published(version: str, official: bool) -> dict[str, tuple]:
    """The full-size file's names and shapes: ``id_adapter.*`` / ``id_adapter_attn_layers.*`` (guozinan/PuLID) or
    ``image_proj.*`` / ``ip_adapter.*`` (the IP-Adapter-style conversions)."""
    shapes = expected_shapes(version, default_config(version), SDXL_UNET_CONFIG)
    return {official_name(k): v for k, v in shapes.items()} if official else shapes


def write_published(path, version: str, official: bool) -> None:
    """A full-size file of zeros: a .bin whose tensors share one storage (13 MB), or a sparse .safetensors."""
    shapes = published(version, official)
    if path.suffix == ".bin":
        torch.save(zero_views({"flat": shapes}, torch.float32)["flat"], path)
    else:
        write_sparse_safetensors(path, shapes)


def tiny_adapter(version: str, seed: int = 0) -> PuLIDAdapter:
    torch.manual_seed(seed)
    adapter = PuLIDAdapter(version, TINY[version], TINY_UNET)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    return adapter.eval()


def save_tiny(path, adapter: PuLIDAdapter, official: bool, dtype=torch.float32) -> None:
    from safetensors.torch import save_file

    tensors = {(official_name(k) if official else k): v.to(dtype).contiguous() for k, v in adapter.state_dict().items()}
    metadata = {"pulid_config": json.dumps(adapter.encoder_config.to_dict()), "unet_config": json.dumps(TINY_UNET)}
    save_file(tensors, str(path), metadata=metadata)


def tiny_features(images: int, vit_dim: int = 32, tokens: int = 9):
    g = torch.Generator().manual_seed(images)
    return (torch.randn(images, 512, generator=g), torch.randn(images, 768, generator=g),
            [torch.randn(images, tokens, vit_dim, generator=g) for _ in range(5)])
