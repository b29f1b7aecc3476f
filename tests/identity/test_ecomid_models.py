"""EcomID: its IdentityNet (a single-file diffusers SDXL ControlNet without config.json) loads at full size through
the pack's ControlNet reader, and its combination feeds InstantID's Resampler tokens to the ControlNet and PuLID v1's
tokens to the UNet."""

import dataclasses
import json

import pytest
import torch

from comfyui_facesnap.models.errors import InvalidInputError, ModelFileError
from comfyui_facesnap.models.identity.diffusers_controlnet import load_diffusers_controlnet
from comfyui_facesnap.models.identity.ecomid.recipe import (
    EXAMPLE_WORKFLOWS,
    EcomIDSettings,
    check_identitynet,
    check_pulid_for_ecomid,
    encode_ecomid,
)
from comfyui_facesnap.models.identity.instantid.resampler import ResamplerConfig
from comfyui_facesnap.models.identity.instantid.weights import InstantIDAdapter
from comfyui_facesnap.models.identity.pulid.adapter import V1, V1_1
from comfyui_facesnap.models.identity.pulid.id_attention import METHODS, SHARE_CUBIQ
from comfyui_facesnap.models.identity.sdxl_controlnet import ControlNetConfig
from instantid_files import TINY_UNET_CONFIG
from pulid_files import tiny_adapter, tiny_features
from weight_files import write_sparse_safetensors

diffusers = pytest.importorskip("diffusers")

# The SDXL IdentityNet config (InstantID's ControlNetModel/config.json fields; EcomID publishes no config.json and
# describes its ControlNet as InstantID's IdentityNet architecture)
IDENTITYNET_CONFIG = {
    "_class_name": "ControlNetModel", "in_channels": 4, "conditioning_channels": 3,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "block_out_channels": [320, 640, 1280], "layers_per_block": 2, "transformer_layers_per_block": [1, 2, 10],
    "cross_attention_dim": 2048, "attention_head_dim": [5, 10, 20], "use_linear_projection": True,
    "addition_embed_type": "text_time", "addition_time_embed_dim": 256, "projection_class_embeddings_input_dim": 2816,
    "conditioning_embedding_out_channels": [16, 32, 96, 256], "norm_num_groups": 32, "norm_eps": 1e-5,
}
ECOMID_PARAMETERS = 1_251_014_160  # x 4 bytes = the published file's 5.0 GB


@pytest.fixture(scope="module")
def identitynet_shapes():
    config = {k: v for k, v in IDENTITYNET_CONFIG.items() if not k.startswith("_")}
    with torch.device("meta"):
        reference = diffusers.ControlNetModel(**config)
    return {k: tuple(v.shape) for k, v in reference.state_dict().items()}


def test_the_published_single_file_loads_with_its_inferred_config(tmp_path, identitynet_shapes):
    path = tmp_path / "diffusion_pytorch_model.safetensors"  # as published: float32, no config.json beside it
    write_sparse_safetensors(path, identitynet_shapes, dtype="F32")
    assert 5.0e9 < path.stat().st_size < 5.01e9
    net = load_diffusers_controlnet(str(path))
    published = ControlNetConfig.from_diffusers(IDENTITYNET_CONFIG)
    assert dataclasses.replace(net.config, extra={}) == dataclasses.replace(published, extra={})
    assert net.config.cross_attention_dim == 2048 and tuple(net.config.transformer_layers_per_block) == (1, 2, 10)
    assert sum(p.numel() for p in net.parameters()) == ECOMID_PARAMETERS
    assert net.conv_in.weight.dtype == torch.float32


def test_a_folder_with_the_config_json_fields_loads(tmp_path, identitynet_shapes):
    folder = tmp_path / "SDXL-EcomID"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(IDENTITYNET_CONFIG))
    write_sparse_safetensors(folder / "diffusion_pytorch_model.safetensors", identitynet_shapes, dtype="F16")
    net = load_diffusers_controlnet(str(folder))
    assert net.config.cross_attention_dim == 2048 and net.conv_in.weight.dtype == torch.float16


def test_a_truncated_or_foreign_identitynet_is_named(tmp_path, identitynet_shapes):
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    write_sparse_safetensors(path, identitynet_shapes, dtype="F32")
    with open(path, "r+b") as f:  # an interrupted 5 GB download
        f.truncate(path.stat().st_size // 3)
    with pytest.raises(ModelFileError, match="truncated: it holds"):
        load_diffusers_controlnet(str(path))
    pulid = tmp_path / "ip-adapter_pulid_sdxl_fp16.safetensors"
    write_sparse_safetensors(pulid,
                             {"image_proj.body.0.weight": (1024, 1280), "ip_adapter.1.to_k_ip.weight": (640, 2048)})
    with pytest.raises(ModelFileError, match="not a diffusers ControlNet"):
        load_diffusers_controlnet(str(pulid))


def test_settings_are_the_advanced_nodes_and_the_examples():
    settings = EcomIDSettings()
    assert (settings.ip_weight, settings.cn_strength, settings.noise) == (0.8, 0.8, 0.0)
    assert settings.mode == METHODS["fidelity"] and settings.share == SHARE_CUBIQ
    assert [s.ip_weight for s in EXAMPLE_WORKFLOWS.values()] == [0.3, 0.5]
    with pytest.raises(InvalidInputError, match="method"):
        _ = EcomIDSettings(method="strong").mode


@pytest.fixture(scope="module")
def instantid():
    torch.manual_seed(0)
    return InstantIDAdapter(ResamplerConfig.tiny(output_dim=64), TINY_UNET_CONFIG).eval()


def test_the_controlnet_reads_instantids_tokens_and_the_unet_pulids(instantid):
    pulid = tiny_adapter(V1, seed=2)
    arcface, eva_cls, hidden = tiny_features(2)
    both = encode_ecomid(instantid, pulid, arcface, eva_cls, hidden)
    expected_control = instantid.encode_identity(arcface)
    torch.testing.assert_close(both.control.cond, expected_control.cond)
    torch.testing.assert_close(both.control.uncond, expected_control.uncond)
    torch.testing.assert_close(both.attention.cond, pulid.encode_identity(arcface, eva_cls, hidden).cond)
    assert both.control.num_tokens == 16 and both.attention.num_tokens == 10
    noisy = encode_ecomid(instantid, pulid, arcface, eva_cls, hidden, noise=0.35, seed=4)
    assert not torch.allclose(noisy.control.uncond, both.control.uncond)
    assert not torch.allclose(noisy.attention.uncond, both.attention.uncond)
    torch.testing.assert_close(noisy.attention.cond, both.attention.cond)
    check_identitynet(64, both.control)
    with pytest.raises(InvalidInputError, match="cross-attention is 2048 wide"):
        check_identitynet(2048, both.control)


def test_pulid_v1_1_is_refused(instantid):
    with pytest.raises(InvalidInputError, match="PuLID v1.*v1.1"):
        encode_ecomid(instantid, tiny_adapter(V1_1), *tiny_features(1))
    check_pulid_for_ecomid(tiny_adapter(V1))
