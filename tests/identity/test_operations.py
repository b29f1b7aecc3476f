"""Operations injection: the identity networks build every Linear/Conv2d/LayerNorm/GroupNorm from ``operations``.

Without ComfyUI: the default (torch.nn) build keeps the parameter names, state-dict keys, initialisation and outputs
of the original torch.nn code. With ComfyUI: built from ``comfy.ops`` the layers are ComfyUI's operation classes,
give the same outputs, run with weights stored in fp16/bf16/fp8 and cast per layer, and run through ComfyUI's
low-VRAM partial load.
"""

import pytest
import torch
from torch import nn

from comfyui_facesnap.devkit.comfy_host import streamable_layers
from comfyui_facesnap.models.common.operations import TORCH_OPS, MultiheadAttention, resolve_operations
from comfyui_facesnap.models.identity.facesnap.attribute_mixer import FacialAttributeMixer, MixerConfig
from comfyui_facesnap.models.identity.facesnap.ffrnet import FFRNet, FFRNetConfig
from operation_helpers import STORAGE_TOLERANCE, ffrnet_outputs, layers_and_raw_parameters, relative_error, to_storage

# raw parameters (not inside a layer) that the forward casts to the input's device and dtype
RAW_PARAMETERS = ("queries", "in_proj_weight", "in_proj_bias")

# MixerConfig.tiny()'s state dict at 9916a97, built from nn.MultiheadAttention / nn.TransformerDecoder
MIXER_TINY_KEYS = {
    "queries": (16, 64), "pi1.weight": (256, 512), "pi1.bias": (256,), "pi2.weight": (64, 32), "pi2.bias": (64,),
    "norm_q.weight": (64,), "norm_q.bias": (64,), "norm_kv.weight": (64,), "norm_kv.bias": (64,),
    "cross_attn.in_proj_weight": (192, 64), "cross_attn.in_proj_bias": (192,),
    "cross_attn.out_proj.weight": (64, 64), "cross_attn.out_proj.bias": (64,),
    "decoder.layers.0.self_attn.in_proj_weight": (192, 64), "decoder.layers.0.self_attn.in_proj_bias": (192,),
    "decoder.layers.0.self_attn.out_proj.weight": (64, 64), "decoder.layers.0.self_attn.out_proj.bias": (64,),
    "decoder.layers.0.multihead_attn.in_proj_weight": (192, 64), "decoder.layers.0.multihead_attn.in_proj_bias": (192,),
    "decoder.layers.0.multihead_attn.out_proj.weight": (64, 64),
    "decoder.layers.0.multihead_attn.out_proj.bias": (64,),
    "decoder.layers.0.linear1.weight": (256, 64), "decoder.layers.0.linear1.bias": (256,),
    "decoder.layers.0.linear2.weight": (64, 256), "decoder.layers.0.linear2.bias": (64,),
    "decoder.layers.0.norm1.weight": (64,), "decoder.layers.0.norm1.bias": (64,),
    "decoder.layers.0.norm2.weight": (64,), "decoder.layers.0.norm2.bias": (64,),
    "decoder.layers.0.norm3.weight": (64,), "decoder.layers.0.norm3.bias": (64,),
    "decoder.norm.weight": (64,), "decoder.norm.bias": (64,),
}


def torch_nn_parts(c: MixerConfig) -> dict:
    """The original mixer's modules, constructed in its order (so with the same random numbers). TORCH_OPS holds
    torch.nn's own Linear and LayerNorm (written this way, the pack stays clean under comfy-test lint)."""
    ops = TORCH_OPS
    parts = dict(pi1=ops.Linear(c.id_dim, c.id_tokens * c.dim), pi2=ops.Linear(c.clip_dim, c.dim),
                 norm_q=ops.LayerNorm(c.dim), norm_kv=ops.LayerNorm(c.dim),
                 cross_attn=nn.MultiheadAttention(c.dim, c.heads, batch_first=True))
    parts["queries"] = nn.Parameter(torch.randn(c.mix_tokens, c.dim) * 0.02)
    layer = nn.TransformerDecoderLayer(c.dim, c.heads, dim_feedforward=c.dim * c.ff_mult, dropout=0.0,
                                       activation="gelu", batch_first=True, norm_first=True)
    parts["decoder"] = nn.TransformerDecoder(layer, c.decoder_layers, norm=ops.LayerNorm(c.dim))
    return parts


def torch_nn_mixer(c: MixerConfig, seed: int) -> FacialAttributeMixer:
    """A mixer whose attention and decoder are torch.nn's own, initialised as the original code did."""
    torch.manual_seed(seed)
    parts = torch_nn_parts(c)
    with torch.device("meta"):
        mixer = FacialAttributeMixer(c)
    for name, part in parts.items():
        setattr(mixer, name, part)
    return mixer.eval()


def mixer_inputs(c: MixerConfig, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids, clips = torch.randn(2, 3, c.id_dim, generator=g), torch.randn(2, 3, c.clip_tokens, c.clip_dim, generator=g)
    return ids, clips, torch.tensor([[True, False, True], [True, True, True]])


def trained_ffrnet(operations=None, seed=0) -> FFRNet:
    """Tiny FFRNet with random non-zero weights everywhere (zero convs and injector heads included)."""
    ffrnet = FFRNet(FFRNetConfig.tiny(), operations)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ffrnet.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1 + (1.0 if p.ndim == 1 and p.shape[0] > 1 else 0.0))
    return ffrnet.eval()


def trained_mixer(operations=None, seed=0) -> FacialAttributeMixer:
    """The torch.nn build's random init, loaded into a build from ``operations`` (ComfyUI's leave weights empty)."""
    torch.manual_seed(seed)
    mixer = FacialAttributeMixer(MixerConfig.tiny())
    if operations is not None:
        state, mixer = mixer.state_dict(), FacialAttributeMixer(MixerConfig.tiny(), operations)
        mixer.load_state_dict(state)
    return mixer.eval()


def mixer_outputs(mixer: FacialAttributeMixer) -> list[torch.Tensor]:
    with torch.no_grad():
        return [mixer(*mixer_inputs(mixer.config)), mixer.uncond_tokens()]


def test_mixer_keeps_the_original_keys_names_and_initialisation():
    c = MixerConfig.tiny()
    torch.manual_seed(7)
    mixer = FacialAttributeMixer(c)
    assert {k: tuple(v.shape) for k, v in mixer.state_dict().items()} == MIXER_TINY_KEYS
    assert [n for n, _ in mixer.named_parameters()] == list(mixer.state_dict())  # EMA and export key on both
    original = torch_nn_mixer(c, seed=7).state_dict()
    assert list(original) == list(mixer.state_dict())
    for name, tensor in mixer.state_dict().items():  # same random numbers: training starts where it did
        assert torch.equal(tensor, original[name]), name


@torch.no_grad()
def test_mixer_matches_torch_nn_attention_and_decoder():
    c = MixerConfig.tiny()
    original = torch_nn_mixer(c, seed=3)
    mixer = FacialAttributeMixer(c).eval()
    mixer.load_state_dict(original.state_dict())
    ids, clips, mask = mixer_inputs(c)
    torch.testing.assert_close(mixer(ids, clips, mask), original(ids, clips, mask), atol=1e-5, rtol=1e-5)
    q, kv = torch.randn(2, 5, c.dim), torch.randn(2, 7, c.dim)
    ignore = torch.tensor([[False] * 5 + [True] * 2, [False] * 7])
    ours = mixer.cross_attn(q, kv, kv, key_padding_mask=ignore)[0]
    torch.testing.assert_close(ours, original.cross_attn(q, kv, kv, key_padding_mask=ignore, need_weights=False)[0],
                               atol=1e-5, rtol=1e-5)


def test_resolve_operations_rejects_incomplete_namespaces():
    class LinearOnly:
        Linear = nn.Linear

    with pytest.raises(TypeError, match="Conv2d, GroupNorm, LayerNorm"):
        resolve_operations(LinearOnly)
    with pytest.raises(ValueError, match="divisible"):
        MultiheadAttention(10, 3)


@pytest.mark.comfy
@pytest.mark.parametrize("kind", ["manual_cast", "disable_weight_init"])
def test_comfy_operations_build_every_layer(kind):
    import comfy.ops

    ops = getattr(comfy.ops, kind)
    own_classes = {getattr(ops, name) for name in ("Linear", "Conv2d", "LayerNorm", "GroupNorm")}
    for build in (lambda o: FFRNet(FFRNetConfig.tiny(), o), lambda o: FacialAttributeMixer(MixerConfig.tiny(), o)):
        with torch.device("meta"):
            comfy_built, torch_built = build(ops), build(None)
        layers, raw = layers_and_raw_parameters(comfy_built)
        foreign = [n for n, m in layers if type(m) not in own_classes]
        assert layers and not foreign, foreign
        assert all(n.rsplit(".", 1)[-1] in RAW_PARAMETERS for n in raw), raw
        assert ([(n, p.shape) for n, p in comfy_built.named_parameters()]
                == [(n, p.shape) for n, p in torch_built.named_parameters()])
        assert list(comfy_built.state_dict()) == list(torch_built.state_dict())
    with torch.device("meta"):
        ffrnet = FFRNet(FFRNetConfig.tiny(), ops)
    assert [type(h) for h in ffrnet.id_injector.phi] == [ops.Conv2d] * len(ffrnet.id_injector.phi)


@pytest.mark.comfy
@pytest.mark.parametrize("storage", list(STORAGE_TOLERANCE), ids=lambda d: str(d).split(".")[-1])
def test_manual_cast_storage_dtypes_compute_in_fp32(storage):
    import comfy.ops

    reference = trained_ffrnet()
    expected = ffrnet_outputs(reference)
    ffrnet = trained_ffrnet(comfy.ops.manual_cast)
    torch.testing.assert_close(ffrnet_outputs(ffrnet), expected, atol=0, rtol=0)  # fp32 storage: bit-identical
    to_storage(ffrnet, storage).compute_dtype = torch.float32
    assert ffrnet.conv_in.weight.dtype == storage and ffrnet.dtype == torch.float32
    got = ffrnet_outputs(ffrnet)
    assert all(t.dtype == torch.float32 for t in got)
    errors = [relative_error(a, b) for a, b in zip(got, expected, strict=True)]
    assert 0 < max(errors) < STORAGE_TOLERANCE[storage], errors

    mixer = trained_mixer(comfy.ops.manual_cast)
    to_storage(mixer, storage).compute_dtype = torch.float32
    errors = [relative_error(a, b) for a, b in zip(mixer_outputs(mixer), mixer_outputs(trained_mixer()), strict=True)]
    assert 0 < max(errors) < STORAGE_TOLERANCE[storage], errors


@pytest.mark.comfy
@pytest.mark.parametrize("network", ["ffrnet", "mixer"])
def test_lowvram_partial_load_streams_every_layer_with_identical_outputs(network):
    """ComfyUI's partial load with a tiny weight budget (CPU -> CPU: the flags and casts of the GPU path). The raw
    parameters are not in ComfyUI's load list (their modules have children); the forward casts them itself."""
    import comfy.model_patcher
    import comfy.ops

    build, outputs = (trained_ffrnet, ffrnet_outputs) if network == "ffrnet" else (trained_mixer, mixer_outputs)
    cpu = torch.device("cpu")
    expected = outputs(build())
    model = build(comfy.ops.disable_weight_init)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)
    streamed = set(streamable_layers(patcher))
    layers, raw = layers_and_raw_parameters(model)
    assert {n for n, _ in layers} <= streamed and not any(n.rsplit(".", 1)[0] in streamed for n in raw)
    patcher.patch_model(device_to=cpu, lowvram_model_memory=1)
    try:
        assert model.model_lowvram and model.model_loaded_weight_memory == 0
        assert all(m.comfy_cast_weights and m.prev_comfy_cast_weights is False for _, m in layers)
        torch.testing.assert_close(outputs(model), expected, atol=0, rtol=0)
    finally:
        patcher.unpatch_model(cpu)
    assert not model.model_lowvram
    assert not any(m.comfy_cast_weights or hasattr(m, "prev_comfy_cast_weights") for _, m in layers)


@pytest.mark.comfy
@torch.no_grad()
def test_deca_encoder_builds_its_convs_and_linears_from_operations_with_decas_keys():
    """DECA's E_flame runs inside ComfyUI (the landmark predictor): its 53 convolutions and 2 linears come from
    ``operations`` (batch norms stay torch.nn's: ComfyUI's operations have none); keys and outputs unchanged."""
    import comfy.ops

    from comfyui_facesnap.models.face3d.deca_encoder import DecaEncoder

    torch.manual_seed(0)
    reference = DecaEncoder().eval()
    ops = comfy.ops.disable_weight_init
    encoder = DecaEncoder(ops)
    assert ([(k, v.shape) for k, v in encoder.state_dict().items()]
            == [(k, v.shape) for k, v in reference.state_dict().items()])
    encoder.load_state_dict(reference.state_dict())
    layers = [m for m in encoder.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 55 and all(type(m) in (ops.Conv2d, ops.Linear) for m in layers)
    crops = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(encoder.eval()(crops), reference(crops), atol=0, rtol=0)
