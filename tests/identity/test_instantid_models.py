"""InstantID's pieces in pure PyTorch: the Resampler and the IP-attention against diffusers' implementations, the
UNet cross-attention layout (InstantID numbering <-> ComfyUI attn2 patch keys), and IdentityNet as an SDXLControlNet."""

import dataclasses

import pytest
import torch

from comfyui_facesnap.devkit.sdxl_diffusers import sdxl_unet_on_meta
from comfyui_facesnap.models.errors import InvalidInputError
from comfyui_facesnap.models.identity.diffusers_controlnet import infer_diffusers_config, load_diffusers_controlnet
from comfyui_facesnap.models.identity.instantid.resampler import Resampler, ResamplerConfig
from comfyui_facesnap.models.identity.ip_attention import (
    IPAttentionLayer,
    IPAttentionLayers,
    attention_grid,
    ip_attention,
    mask_to_tokens,
)
from comfyui_facesnap.models.identity.sdxl_controlnet import ControlNetConfig, SDXLControlNet
from comfyui_facesnap.models.identity.unet_sites import SDXL_UNET_CONFIG, cross_attention_sites, ip_adapter_layer_sites
from instantid_files import diffusers_name_to_patch_key, identitynet_config

diffusers = pytest.importorskip("diffusers")

SD15_UNET_CONFIG = {  # ComfyUI's model detection for SD1.5 (comfy/model_detection.py, unet_config_from_diffusers_unet)
    "model_channels": 320, "channel_mult": [1, 2, 4, 4], "num_res_blocks": [2, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "transformer_depth_middle": 1,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], "context_dim": 768,
}


# --- Resampler -----------------------------------------------------------------------------------------------------

def resampler_to_diffusers(state: dict) -> dict:
    """InstantID's image_proj names -> diffusers' IPAdapterPlusImageProjection names, the mapping diffusers'
    ``UNet2DConditionLoadersMixin._convert_ip_adapter_image_proj_to_diffusers`` applies (its "IP-Adapter Plus"
    branch): norm1/norm2 -> ln0/ln1, to_q/to_out -> attn.to_q/attn.to_out.0, to_kv split into attn.to_k/attn.to_v,
    feed-forward 0/1/3 -> ff.0 / ff.1.net.0.proj / ff.1.net.2."""
    attention = {"norm1": "ln0", "norm2": "ln1", "to_q": "attn.to_q", "to_out": "attn.to_out.0"}
    feed_forward = {"0": "ff.0", "1": "ff.1.net.0.proj", "3": "ff.1.net.2"}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] != "layers":
            out[key] = value
            continue
        layer, part, module, param = parts[1], parts[2], parts[3], parts[-1]
        prefix = f"layers.{layer}."
        if part == "1":
            out[prefix + f"{feed_forward[module]}.{param}"] = value
        elif module == "to_kv":
            k, v = value.chunk(2, dim=0)
            out[prefix + "attn.to_k.weight"], out[prefix + "attn.to_v.weight"] = k, v
        else:
            out[prefix + f"{attention[module]}.{param}"] = value
    return out


def _tiny_resampler(seed=0, dim_head=64):
    cfg = ResamplerConfig(dim=128, depth=2, dim_head=dim_head, heads=128 // dim_head, num_queries=16,
                          embedding_dim=512, output_dim=96)
    torch.manual_seed(seed)
    model = Resampler(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))  # non-trivial norms and biases
    return model.eval()


@torch.no_grad()
def test_resampler_matches_diffusers_ip_adapter_plus_projection():
    ours = _tiny_resampler()
    cfg = ours.config
    ref = diffusers.models.embeddings.IPAdapterPlusImageProjection(
        embed_dims=cfg.embedding_dim, output_dims=cfg.output_dim, hidden_dims=cfg.dim, depth=cfg.depth,
        dim_head=cfg.dim_head, heads=cfg.heads, num_queries=cfg.num_queries, ffn_ratio=cfg.ff_mult).eval()
    ref.load_state_dict(resampler_to_diffusers(ours.state_dict()), strict=True)
    x = torch.randn(3, 2, cfg.embedding_dim, generator=torch.Generator().manual_seed(1)) * 20  # raw ArcFace norm ~20
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-4)
    single = x[:, 0]
    assert ours(single).shape == (3, cfg.num_queries, cfg.output_dim)
    torch.testing.assert_close(ours(single), ref(single[:, None]), atol=1e-5, rtol=1e-4)
    with pytest.raises(InvalidInputError, match="512"):
        ours(torch.zeros(1, 128))


def test_resampler_state_dict_is_instantids_image_proj():
    with torch.device("meta"):
        model = Resampler(ResamplerConfig.instantid())
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = {"latents": (1, 16, 1280), "proj_in.weight": (1280, 512), "proj_in.bias": (1280,),
                "proj_out.weight": (2048, 1280), "proj_out.bias": (2048,), "norm_out.weight": (2048,),
                "norm_out.bias": (2048,)}
    for i in range(4):
        expected.update({f"layers.{i}.0.{n}.{p}": (1280,) for n in ("norm1", "norm2") for p in ("weight", "bias")})
        expected.update({f"layers.{i}.0.to_q.weight": (1280, 1280), f"layers.{i}.0.to_kv.weight": (2560, 1280),
                         f"layers.{i}.0.to_out.weight": (1280, 1280), f"layers.{i}.1.0.weight": (1280,),
                         f"layers.{i}.1.0.bias": (1280,), f"layers.{i}.1.1.weight": (5120, 1280),
                         f"layers.{i}.1.3.weight": (1280, 5120)})
    assert shapes == expected
    count = sum(p.numel() for p in model.parameters())
    print(f"\nInstantID Resampler parameters: {count:,}")
    assert count == 81_978_624


class _CountingOps:
    """An ``operations`` namespace whose layers record that they were built through it."""

    built = []

    class Linear(torch.nn.Linear):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            _CountingOps.built.append("Linear")

    class LayerNorm(torch.nn.LayerNorm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            _CountingOps.built.append("LayerNorm")


def test_layers_are_built_through_operations():
    _CountingOps.built.clear()
    with torch.device("meta"):
        model = Resampler(ResamplerConfig.tiny(), operations=_CountingOps)
        layers = IPAttentionLayers(ip_adapter_layer_sites(), 64, operations=_CountingOps)
    plain = [m for m in [*model.modules(), *layers.modules()]
             if type(m) in (torch.nn.Linear, torch.nn.LayerNorm, torch.nn.Conv2d)]
    assert not plain, "every Linear/LayerNorm comes from `operations`"
    resampler_layers = 2 + 1 + 2 * (5 + 3)  # proj_in/out, norm_out, per layer 2 norms + 3 linears + ff 1 norm + 2
    assert len(_CountingOps.built) == resampler_layers + 140
    reference = Resampler(ResamplerConfig.tiny())
    assert model.state_dict().keys() == reference.state_dict().keys()


# --- IP-attention ------------------------------------------------------------------------------------------------

def _attention_pair(hidden=64, context=48, heads=4, tokens=16, scale=0.7, seed=0):
    from diffusers.models.attention_processor import Attention, IPAdapterAttnProcessor2_0

    torch.manual_seed(seed)
    attn = Attention(query_dim=hidden, cross_attention_dim=context, heads=heads, dim_head=hidden // heads).eval()
    layer = IPAttentionLayer(context, hidden).eval()
    processor = IPAdapterAttnProcessor2_0(hidden_size=hidden, cross_attention_dim=context, num_tokens=(tokens,),
                                          scale=scale)
    processor.load_state_dict({"to_k_ip.0.weight": layer.to_k_ip.weight, "to_v_ip.0.weight": layer.to_v_ip.weight})
    attn.set_processor(processor)
    return attn, layer


@torch.no_grad()
@pytest.mark.parametrize("masked", [False, True])
def test_ip_attention_matches_diffusers_processor(masked):
    import torch.nn.functional as F

    heads, weight, batch = 4, 0.7, 2
    attn, layer = _attention_pair(heads=heads, scale=weight)
    g = torch.Generator().manual_seed(5)
    hidden = torch.randn(batch, 64, 64, generator=g)  # an 8x8 attention grid of a 16x16 latent
    text, tokens = torch.randn(batch, 7, 48, generator=g), torch.randn(batch, 16, 48, generator=g)
    mask = torch.rand(1, 8, 8, generator=g)
    kwargs = {"ip_adapter_masks": [mask[:, None]]} if masked else {}
    expected = attn(hidden, encoder_hidden_states=(text, [tokens[:, None]]), **kwargs)

    q, k, v = attn.to_q(hidden), attn.to_k(text), attn.to_v(text)
    split = lambda t: t.view(batch, -1, heads, 16).transpose(1, 2)  # noqa: E731
    text_out = F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).reshape(batch, 64, 64)
    token_mask = mask_to_tokens(mask, 64, (16, 16)) if masked else None
    ours = attn.to_out[0](text_out + layer(q, tokens, heads, weight, token_mask))
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_ip_attention_math():
    g = torch.Generator().manual_seed(0)
    q, key, value = (torch.randn(2, 10, 8, generator=g), torch.randn(1, 3, 8, generator=g),
                     torch.randn(1, 3, 8, generator=g))
    plain = torch.softmax(q @ key.transpose(1, 2) / 8 ** 0.5, dim=-1) @ value  # one head
    torch.testing.assert_close(ip_attention(q, key, value, heads=1), plain)
    torch.testing.assert_close(ip_attention(q, key, value, 1, weight=0.25), 0.25 * plain)
    mask = (torch.arange(10) < 4).float()[None, :, None]
    masked = ip_attention(q, key, value, 1, mask=mask)
    assert torch.equal(masked[:, 4:], torch.zeros(2, 6, 8)) and torch.allclose(masked[:, :4], plain[:, :4])
    with pytest.raises(InvalidInputError, match="heads"):
        ip_attention(q, key, value, heads=3)
    with pytest.raises(InvalidInputError, match="wide"):
        ip_attention(q, key[..., :4], value[..., :4], heads=1)


def test_attention_grid_follows_the_unets_downsamplers():
    assert attention_grid(128 * 128, (128, 128)) == (128, 128)
    assert attention_grid(32 * 32, (128, 128)) == (32, 32)
    assert attention_grid(4 * 5, (13, 17)) == (4, 5)  # 13x17 -> 7x9 -> 4x5 (ceil at each stride-2 conv)
    assert attention_grid(7 * 9, (13, 17)) == (7, 9)
    with pytest.raises(InvalidInputError, match="no downscale"):
        attention_grid(50, (16, 16))
    mask = torch.zeros(64, 64)
    mask[:, :32] = 1
    tokens = mask_to_tokens(mask, 16, (32, 32)).reshape(4, 4)
    assert torch.equal(tokens, torch.tensor([[1.0, 1, 0, 0]] * 4))
    with pytest.raises(InvalidInputError, match="mask"):
        mask_to_tokens(torch.zeros(1, 1, 8, 8), 16, (8, 8))


# --- where the layers are ----------------------------------------------------------------------------------------

def _cubiq_enumeration():
    """cubiq's ApplyInstantID loop (InstantID.py), with its ("middle", 1) corrected to ComfyUI's ("middle", 0)."""
    keys = [("input", i, t) for i in (4, 5, 7, 8) for t in range(2 if i in (4, 5) else 10)]
    keys += [("output", i, t) for i in range(6) for t in range(10 if i < 3 else 2)]
    return keys + [("middle", 0, t) for t in range(10)]


def test_sdxl_layer_numbering():
    sites = ip_adapter_layer_sites()
    assert list(sites) == list(range(1, 140, 2))
    keys = [s.patch_key for s in sites.values()]
    assert len(set(keys)) == 70
    assert keys == _cubiq_enumeration()
    middle = [k for k in keys if k[0] == "middle"]
    assert middle == [("middle", 0, t) for t in range(10)]
    assert not any(k[:2] == ("middle", 1) for k in keys)
    widths = [s.channels for s in sites.values()]
    assert widths == [640] * 4 + [1280] * 20 + [1280] * 30 + [640] * 6 + [1280] * 10
    layers = IPAttentionLayers(sites)
    assert layers.for_patch_key(("middle", 0, 9)) is layers["139"]
    assert layers.for_patch_key(("input", 4, 0)) is layers["1"] and len(layers.patch_keys) == 70


def test_numbering_is_diffusers_attn_processor_order():
    """InstantID loads ip_adapter into ModuleList(unet.attn_processors.values()): check that order on diffusers'
    real SDXL UNet (built on the meta device from the SDXL base config)."""
    unet = sdxl_unet_on_meta()
    names = list(unet.attn_processors)
    assert len(names) == 140 and all(n.endswith("attn1.processor") for n in names[0::2])
    cross = names[1::2]
    assert all(n.endswith("attn2.processor") for n in cross)
    sites = ip_adapter_layer_sites()
    assert [diffusers_name_to_patch_key(n, 2) for n in cross] == [sites[2 * k + 1].patch_key for k in range(70)]
    channels = [unet.get_submodule(n.rsplit(".", 1)[0]).to_q.in_features for n in cross]
    assert channels == [sites[2 * k + 1].channels for k in range(70)]


def test_sd15_layout_has_16_layers():
    inputs, middle, outputs = cross_attention_sites(SD15_UNET_CONFIG)
    assert [s.patch_key[1] for s in inputs] == [1, 2, 4, 5, 7, 8]
    assert middle == [middle[0]] and middle[0].patch_key == ("middle", 0, 0)
    assert [s.patch_key[1] for s in outputs] == list(range(3, 12))
    assert len(ip_adapter_layer_sites(SD15_UNET_CONFIG)) == 16
    with pytest.raises(InvalidInputError, match="lacks"):
        cross_attention_sites({"model_channels": 320})


@pytest.mark.comfy
def test_layout_matches_comfyuis_sdxl_unet():
    """ComfyUI's own SDXL detection and UNetModel: every SpatialTransformer block is one patch key we name."""
    import comfy.model_detection
    import comfy.ops
    from comfy.ldm.modules.attention import SpatialTransformer
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    diffusers_unet = sdxl_unet_on_meta()
    config = comfy.model_detection.unet_config_from_diffusers_unet(diffusers_unet.state_dict())
    assert {k: config[k] for k in SDXL_UNET_CONFIG} == SDXL_UNET_CONFIG
    unet = UNetModel(**config, device="meta", operations=comfy.ops.disable_weight_init)
    found = []
    for block_name, blocks in (("input", unet.input_blocks), ("middle", [unet.middle_block]),
                               ("output", unet.output_blocks)):
        for block_id, block in enumerate(blocks):
            for module in block:
                if isinstance(module, SpatialTransformer):
                    found += [((block_name, block_id, t), b.attn2.to_q.in_features)
                              for t, b in enumerate(module.transformer_blocks)]
    inputs, middle, outputs = cross_attention_sites(config)
    assert sorted(found) == sorted((s.patch_key, s.channels) for s in inputs + middle + outputs)
    assert len(found) == 70


# --- IdentityNet -------------------------------------------------------------------------------------------------


def test_identitynet_full_size_layout_is_an_sdxl_controlnet():
    config = identitynet_config()
    with torch.device("meta"):
        ref = diffusers.ControlNetModel(**config)
        ours = SDXLControlNet(ControlNetConfig.from_diffusers(config))
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == ref_shapes
    inferred = ControlNetConfig.from_diffusers(infer_diffusers_config(ref.state_dict()))
    with torch.device("meta"):
        from_single_file = SDXLControlNet(inferred)
    assert {k: tuple(v.shape) for k, v in from_single_file.state_dict().items()} == ref_shapes
    count = sum(p.numel() for p in ref.parameters())
    print(f"\nIdentityNet (SDXL ControlNet, 2048-wide context) parameters: {count:,}")
    assert 1.20e9 < count < 1.30e9


@pytest.mark.parametrize("layout", ["folder", "single_file"])
def test_identitynet_tiny_loads_and_reads_identity_tokens(tmp_path, layout):
    from diffusers.models.embeddings import Timesteps
    from safetensors.torch import save_file

    resampler = _tiny_resampler(seed=3)
    # one head per level: a config-less file is read with SDXL's 64-wide heads, the only width it can infer
    cfg = dataclasses.replace(ControlNetConfig.tiny(cross_attention_dim=resampler.config.output_dim),
                              attention_head_dim=(1, 1))
    torch.manual_seed(4)
    ref = diffusers.ControlNetModel(**cfg.diffusers_kwargs())
    with torch.no_grad():
        for p in ref.parameters():
            torch.nn.init.normal_(p, std=0.05)
    if layout == "folder":  # as InstantID publishes it: ControlNetModel/{config.json, diffusion_pytorch_model...}
        ref.save_pretrained(tmp_path / "ControlNetModel")
        path = tmp_path / "ControlNetModel"
    else:  # renamed single file in models/controlnet, no config
        path = tmp_path / "instantid_controlnet.safetensors"
        save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    ours = load_diffusers_controlnet(str(path))
    assert type(ours) is SDXLControlNet and ours.config.cross_attention_dim == resampler.config.output_dim

    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        tokens = resampler(torch.randn(2, 512, generator=g) * 20)
        x, hint, t = (torch.randn(2, 4, 16, 16, generator=g), torch.rand(2, 3, 128, 128, generator=g),
                      torch.tensor([5.0, 900.0]))
        text, time_ids = torch.randn(2, 1280, generator=g), torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024]] * 2)
        y = torch.cat([text, Timesteps(256, True, 0)(time_ids.flatten()).reshape(2, -1)], dim=1)
        down, mid = ref(x, t, encoder_hidden_states=tokens, controlnet_cond=hint,
                        added_cond_kwargs={"text_embeds": text, "time_ids": time_ids}, return_dict=False)
        out = ours(x, hint, t, tokens, y=y)
    for a, b in zip(down, out["output"], strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out["middle"][0], mid, atol=1e-5, rtol=1e-4)


@pytest.mark.comfy
@torch.no_grad()
def test_comfy_ops_build_the_same_model():
    """ComfyUI's cast-on-the-fly layers: weights stored in bfloat16 run in the float32 compute dtype without
    converting the model."""
    import comfy.ops

    reference = _tiny_resampler(seed=7)
    with torch.device("meta"):
        cast = Resampler(reference.config, operations=comfy.ops.manual_cast, compute_dtype=torch.float32)
    cast.load_state_dict({k: v.to(torch.bfloat16) for k, v in reference.state_dict().items()}, assign=True)
    assert cast.proj_in.weight.dtype == torch.bfloat16
    x = torch.randn(2, 512, generator=torch.Generator().manual_seed(8)) * 20
    out = cast(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, reference(x), atol=0.1, rtol=0.05)
    layer = IPAttentionLayer(96, 64, operations=comfy.ops.manual_cast, compute_dtype=torch.float32)
    layer.load_state_dict({k: v.to(torch.bfloat16) for k, v in IPAttentionLayer(96, 64).state_dict().items()})
    assert layer(torch.randn(2, 10, 64), out, heads=4).dtype == torch.float32
