"""InstantID's networks as ComfyUI manages its own, through the loader node and the real executor (as
test_managed_weights.py checks FaceSnap's; both loaders share comfy_glue/weight_dtypes.py).

1. Built by the FaceSnap InstantID Loader, every Linear/Conv2d/LayerNorm/GroupNorm of the Resampler, the IP-attention
   layers and IdentityNet is a ComfyUI operation class, and with fp32 storage they compute what the torch.nn build
   computes. Neither loader picks ComfyUI's fp8-matmul layers (``--fast fp8_matrix_mult``).
2. fp16, bf16 and fp8 (e4m3fn) storage with fp32 compute (CPU: ComfyUI's manual cast) sample the tiny InstantID graph
   close to fp32 storage.
3. ComfyUI's partial load, forced with a small weight budget, streams the Resampler, IdentityNet and the IP layers
   (loaded with the patched MODEL) layer by layer with bit-identical samples; afterwards only what ComfyUI's model
   management keeps holds their weights.
"""

from __future__ import annotations

import pytest
import torch

from comfyui_facesnap.devkit.comfy_host import cached_output
from identity_graphs import base_graph, cached, latent, pack_module, setup_face_pipeline
from instantid_graphs import (
    CN_FILE,
    IP_FILE,
    add_apply_instantid,
    add_encode,
    add_instantid_loader,
    register_instantid_folders,
)
from managed_weights_helpers import (
    assert_comfy_layers,
    assert_released,
    assert_streamed,
    expected_dtypes,
    force_partial_load,
    is_loaded,
    record_forwards,
    storage_sample_errors,
    streamed_layers,
)
from operation_helpers import ffrnet_inputs

pytestmark = pytest.mark.comfy

# Relative error of InstantID's effect on the sampled latent, ||L(dtype) - L(fp32)|| / ||L(fp32) - L(without
# InstantID)|| (tiny graph, 2 euler steps, CFG 4, IP weight and IdentityNet strength 0.8, Resampler, IP layers and
# IdentityNet all in the storage dtype, CPU). Measured: fp16 4.3e-4, bf16 2.7e-3, fp8_e4m3fn 4.6e-2; bounds about 3x.
# (Relative to the whole latent: 2.9e-7, 1.8e-6, 3.1e-5.)
SAMPLE_TOLERANCE = {"fp16": 1.3e-3, "bf16": 8e-3, "fp8_e4m3fn": 1.4e-1}


@pytest.fixture(scope="module")
def host(comfy_host, insightface_images, tmp_path_factory):
    setup_face_pipeline(comfy_host, insightface_images, tmp_path_factory.mktemp("insightface"))
    register_instantid_folders(comfy_host, insightface_images, tmp_path_factory.mktemp("instantid"))
    return comfy_host


def instantid_graph(dtype: str = "auto", steps: int = 2) -> dict:
    """Tiny SDXL + FaceSnap Apply InstantID: the Resampler (encode), IdentityNet and the IP layers all run."""
    g = base_graph(steps=steps)
    loader = add_instantid_loader(g, dtype=dtype)
    add_apply_instantid(g, loader, add_encode(g, loader), weight=0.8, node="apply")
    return g


def networks(bundle) -> dict[str, torch.nn.Module]:
    return {"resampler": bundle.adapter.image_proj, "ip_layers": bundle.ip_layers, "identitynet": bundle.identitynet}


def instantid_classes(host) -> dict[str, type]:
    """The executor's classes of the three networks (IdentityNet is an SDXLControlNet)."""
    def module(name):
        return pack_module(host, "FaceSnapInstantIDLoader", name)

    return {"resampler": module("models.identity.instantid.resampler").Resampler,
            "identitynet": module("models.identity.sdxl_controlnet").SDXLControlNet,
            "ip_layer": module("models.identity.ip_attention").IPAttentionLayer}


# --- item 1 -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["auto", "fp8_e4m3fn"])
def test_the_loader_builds_every_instantid_network_from_comfy_operations(host, dtype):
    import comfy.model_management
    import comfy.ops

    executor = host.run(instantid_graph(dtype, steps=1))
    bundle = cached(executor, "instantid")
    storage, manual_cast, ops = expected_dtypes(dtype)
    assert (ops is comfy.ops.manual_cast) == (manual_cast is not None)
    assert bundle.dtypes.operations is ops
    for name, module in networks(bundle).items():
        assert_comfy_layers(name, module, ops, storage)
    compute = manual_cast or storage
    assert bundle.adapter.image_proj.dtype == bundle.identitynet.dtype == compute
    assert {layer.dtype for layer in bundle.ip_layers.values()} == {compute}

    # ComfyUI manages them: a ModelPatcher each; IdentityNet's is the control's, the IP layers' rides on the MODEL
    device, offload = comfy.model_management.get_torch_device(), comfy.model_management.unet_offload_device()
    assert bundle.control.manual_cast_dtype == manual_cast
    assert [m.model for m in bundle.control.get_models()] == [bundle.identitynet]
    assert bundle.resampler_patcher.model is bundle.adapter.image_proj
    assert bundle.ip_patcher.model is bundle.ip_layers
    assert bundle.ip_patcher in cached(executor, "apply").get_additional_models()
    for patcher in (bundle.resampler_patcher, bundle.ip_patcher, bundle.control.control_model_wrapped):
        assert patcher.load_device == device and patcher.offload_device == offload
    if dtype == "auto":
        assert_same_as_torch_nn(bundle)


def assert_same_as_torch_nn(bundle) -> None:
    """fp32 storage and compute on a CPU: the managed networks compute what the torch.nn build of the files does."""
    import folder_paths

    from comfyui_facesnap.models.identity.diffusers_controlnet import load_diffusers_controlnet
    from comfyui_facesnap.models.identity.instantid.weights import load_instantid

    if bundle.dtypes.storage != torch.float32 or bundle.dtypes.manual_cast is not None:
        pytest.skip("the comparison is for fp32 storage and compute, which ComfyUI picks on a CPU")
    adapter = load_instantid(folder_paths.get_full_path("instantid", IP_FILE))
    identitynet = load_diffusers_controlnet(folder_paths.get_full_path("controlnet", CN_FILE)).eval()
    g = torch.Generator().manual_seed(0)
    embeddings = torch.randn(2, 512, generator=g) * 20
    reference = adapter.encode_identity(embeddings, 0.35)
    ours = bundle.encode_embeddings(embeddings, 0.35)
    torch.testing.assert_close([ours.cond, ours.uncond], [reference.cond, reference.uncond])
    with torch.no_grad():
        tokens = torch.randn(2, 16, bundle.ip_layers.context_dim, generator=g)
        for number, layer in bundle.ip_layers.items():
            q = torch.randn(2, 64, bundle.ip_layers.sites[int(number)].channels, generator=g)
            torch.testing.assert_close(layer(q, tokens, heads=2), adapter.ip_adapter[number](q, tokens, heads=2))
        inputs = ffrnet_inputs(identitynet.config)
        ours, expected = bundle.identitynet(**inputs), identitynet(**inputs)
    torch.testing.assert_close(ours, expected)


def test_neither_loader_picks_fp8_matmul_layers(host, monkeypatch, tmp_path):
    """On a GPU with fp8 compute and ``--fast fp8_matrix_mult``, ComfyUI's stock SD ControlNet loader would build
    ``fp8_ops`` (activations quantised to fp8); both of the pack's loaders build ``manual_cast`` layers, as
    ComfyUI's ``controlnet_config`` does (``disable_fast_fp8=True``). Simulated on the CPU."""
    import comfy.model_management
    import comfy.ops
    import folder_paths

    from comfy_test_nodes.tiny_models import tiny_facesnap_models
    from comfyui_facesnap.comfy_glue.methods import facesnap as facesnap_method
    from comfyui_facesnap.comfy_glue.methods import instantid as instantid_method
    from comfyui_facesnap.models.identity.facesnap.checkpoint import save_facesnap

    monkeypatch.setattr(comfy.model_management, "supports_fp8_compute", lambda device=None: True)
    monkeypatch.setattr(comfy.ops.args, "fast", {comfy.ops.PerformanceFeature.Fp8MatrixMultiplication})  # --fast
    storage, manual_cast, _ = expected_dtypes("fp8_e4m3fn")
    assert comfy.ops.pick_operations(storage, manual_cast) is comfy.ops.fp8_ops  # what the flag changes

    facesnap_file = tmp_path / "facesnap.safetensors"
    save_facesnap(str(facesnap_file), *tiny_facesnap_models(seed=0), {"note": "test"})
    facesnap = facesnap_method.load(weights=str(facesnap_file), controlnet=None, name="facesnap", dtype="fp8_e4m3fn",
                                    pairing_key="test#fp8")
    instantid = instantid_method.load(weights=folder_paths.get_full_path("instantid", IP_FILE),
                                      controlnet=folder_paths.get_full_path("controlnet", CN_FILE), name="instantid",
                                      dtype="fp8_e4m3fn")
    built = {"mixer": facesnap.mixer, "ffrnet": facesnap.ffrnet, **networks(instantid)}
    for name, module in built.items():
        assert_comfy_layers(name, module, comfy.ops.manual_cast, storage)


# --- item 2 -----------------------------------------------------------------------------------------------------------
def test_storage_dtypes_sample_close_to_fp32_with_fp32_compute(host):
    import comfy.model_management

    if comfy.model_management.get_torch_device().type != "cpu":
        pytest.skip("the tolerances are for fp32 compute, which ComfyUI picks on a CPU")
    errors, effect = storage_sample_errors(host, instantid_graph, "instantid", networks, base_graph())
    assert effect > 1e-4, "InstantID must change the tiny sample"  # measured: 6.6e-4 of the latent
    assert all(0 < errors[name] < tolerance for name, tolerance in SAMPLE_TOLERANCE.items()), errors
    assert errors["fp16"] < errors["bf16"] < errors["fp8_e4m3fn"], errors


# --- item 3 -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,budget", [("auto", "one_byte"), ("auto", "three_quarters"), ("fp8_e4m3fn", "one_byte")])
def test_partial_load_streams_instantid_with_identical_samples(host, monkeypatch, fresh_model_management, dtype,
                                                               budget):
    mm = fresh_model_management
    seen = record_forwards(monkeypatch, instantid_classes(host))
    full = latent(host.run(instantid_graph(dtype)))
    assert {net for net, *_ in seen} == {"resampler", "identitynet", "ip_layer"}
    assert not any(any(streamed.values()) for *_, streamed in seen)
    assert all(lowvram is False for net, lowvram, *_ in seen if net != "ip_layer")

    mm.unload_all_models()
    seen.clear()
    force_partial_load(mm, monkeypatch, budget)
    executor = host.run(instantid_graph(dtype))  # a new executor: every node runs again
    assert torch.equal(latent(executor), full)
    assert {net for net, *_ in seen} == {"resampler", "identitynet", "ip_layer"}
    for net, lowvram, loaded, streamed in seen:
        if net != "ip_layer":  # the IP layers' flags are on their ModelPatcher's module, checked below
            assert lowvram is True, net
            assert_streamed(budget, loaded, streamed, net)
    ip_streams = {n: s for net, *_, streamed in seen if net == "ip_layer" for n, s in streamed.items()}
    assert ip_streams
    bundle = cached(executor, "instantid")
    ip_layers = bundle.ip_layers
    assert ip_layers.model_lowvram is True  # loaded with the MODEL, still loaded after the prompt
    assert_streamed(budget, ip_layers.model_loaded_weight_memory, streamed_layers(ip_layers), "ip_layers")
    if budget == "one_byte":
        assert all(ip_streams.values())

    # after the prompt: the weights are held only by the three ModelPatchers, which ComfyUI keeps loaded (as it keeps
    # its own ControlNets and the UNet) until it needs the memory; the identity and the patches hold no weights and
    # keep their tokens on ComfyUI's intermediate device
    patchers = [bundle.resampler_patcher, bundle.ip_patcher, bundle.control.control_model_wrapped]
    assert all(is_loaded(mm, p) for p in patchers)
    identity = cached(executor, "encode_tom")
    assert identity.cond.device == identity.uncond.device == mm.intermediate_device()
    positive = cached_output(executor, "apply", 1)
    control = positive[0][1]["control"]
    assert type(control).__name__ == "IdentityControlNet" and control.cond_hint is None  # cleaned up by the sampler
    assert_released(mm, patchers)  # ComfyUI freeing memory
