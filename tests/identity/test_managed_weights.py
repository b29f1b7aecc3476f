"""The pack's networks as ComfyUI manages its own, through the loader node and the real executor.

1. Built by the FaceSnap Model Loader, every Linear/Conv2d/LayerNorm/GroupNorm of the mixer, FFRNet and the ID-Injector
   heads is a ComfyUI operation class, and the networks compute what their torch.nn build computes.
2. fp16, bf16 and fp8 (e4m3fn) storage with fp32 compute (CPU: ComfyUI's manual cast) sample the tiny graph close to
   fp32 storage.
3. ComfyUI's partial load, forced with a small weight budget, streams the pack's networks layer by layer with
   bit-identical samples; afterwards only what ComfyUI's model management keeps holds the pack's weights.
"""

from __future__ import annotations

import pytest
import torch

from comfy_test_nodes.tiny_models import tiny_face_features, tiny_facesnap_models
from comfyui_facesnap.devkit.comfy_host import comfyui_version
from identity_graphs import add_apply, add_injector, add_loader, base_graph, cached, latent, pack_module
from managed_weights_helpers import (
    assert_comfy_layers,
    assert_released,
    assert_streamed,
    expected_dtypes,
    force_partial_load,
    is_loaded,
    record_forwards,
    storage_sample_errors,
)
from operation_helpers import LAYER_TYPES, ffrnet_outputs, layers_and_raw_parameters

pytestmark = pytest.mark.comfy

FILE = "managed_weights.safetensors"
# Relative error of FaceSnap's effect on the sampled latent, ||L(dtype) - L(fp32)|| / ||L(fp32) - L(without FaceSnap)||
# (tiny graph, 2 euler steps, CFG 4, CPU). Measured: fp16 3.2e-4, bf16 2.6e-3, fp8_e4m3fn 4.3e-2; bounds about 3x.
# (Relative to the whole latent: 6.9e-7, 5.5e-6, 9.2e-5.)
SAMPLE_TOLERANCE = {"fp16": 1e-3, "bf16": 8e-3, "fp8_e4m3fn": 1.3e-1}


@pytest.fixture(scope="module")
def host(comfy_host, tmp_path_factory):
    import folder_paths

    from comfyui_facesnap.models.identity.facesnap.checkpoint import save_facesnap

    folder = tmp_path_factory.mktemp("managed_weights")
    save_facesnap(str(folder / FILE), *tiny_facesnap_models(seed=0), {"note": "test"})
    folder_paths.add_model_folder_path("facesnap", str(folder), is_default=True)
    return comfy_host


def facesnap_graph(dtype: str = "auto", steps: int = 2) -> dict:
    """Tiny SDXL + FaceSnap Apply FFRNet + Diff-PC ID-Injector: the mixer, FFRNet and the heads all run."""
    g = base_graph(steps=steps)
    loader = add_loader(g, FILE, node="loader", dtype=dtype)
    add_apply(g, loader, person=10, node="apply")
    add_injector(g, loader)
    return g


def networks(bundle) -> dict[str, torch.nn.Module]:
    return {"mixer": bundle.mixer, "ffrnet": bundle.ffrnet, "heads": bundle.ffrnet.id_injector}


# --- item 1 -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["auto", "fp8_e4m3fn"])
def test_the_loader_builds_every_network_from_comfy_operations(host, dtype):
    import comfy.model_management
    import comfy.ops
    import folder_paths

    from comfyui_facesnap.models.identity.facesnap.checkpoint import load_facesnap

    device = comfy.model_management.get_torch_device()
    bundle = cached(host.run(facesnap_graph(dtype, steps=1)), "loader")
    storage, manual_cast, ops = expected_dtypes(dtype)
    assert (ops is comfy.ops.manual_cast) == (manual_cast is not None)
    for name, module in networks(bundle).items():
        assert_comfy_layers(name, module, ops, storage)
        assert name == "heads" or module.dtype == (manual_cast or storage)  # compute dtype (heads: the residuals')

    # ComfyUI manages them: FFRNet (heads inside) is the control's ModelPatcher, the mixer has its own
    assert bundle.control.manual_cast_dtype == manual_cast
    assert [m.model for m in bundle.control.get_models()] == [bundle.ffrnet]
    assert bundle.control.copy().get_models()[0] is bundle.control.control_model_wrapped
    assert bundle.mixer_patcher.model is bundle.mixer
    for patcher in (bundle.control.control_model_wrapped, bundle.mixer_patcher):
        assert patcher.load_device == device
        assert patcher.offload_device == comfy.model_management.unet_offload_device()

    if dtype == "auto":  # fp32 storage and compute on a CPU: what the torch.nn build computes
        mixer, ffrnet, _ = load_facesnap(folder_paths.get_full_path("facesnap", FILE))
        assert all(type(m) in LAYER_TYPES for _, m in layers_and_raw_parameters(ffrnet)[0])
        features = tiny_face_features(10)
        with torch.no_grad():
            expected = [mixer(*features.batched()), mixer.uncond_tokens()]
        torch.testing.assert_close([bundle.run_mixer(*features.batched()), bundle.uncond_tokens()], expected)
        torch.testing.assert_close(ffrnet_outputs(bundle.ffrnet), ffrnet_outputs(ffrnet))


# --- item 2 -----------------------------------------------------------------------------------------------------------
def test_storage_dtypes_sample_close_to_fp32_with_fp32_compute(host):
    import comfy.model_management

    device = comfy.model_management.get_torch_device()
    if device.type != "cpu":
        pytest.skip("the tolerances are for fp32 compute, which ComfyUI picks on a CPU")
    errors, effect = storage_sample_errors(host, facesnap_graph, "loader", networks, base_graph())
    assert effect > 1e-3, "FaceSnap must change the tiny sample"
    assert all(0 < errors[name] < tolerance for name, tolerance in SAMPLE_TOLERANCE.items()), errors
    assert errors["fp16"] < errors["bf16"] < errors["fp8_e4m3fn"], errors


# --- item 3 -----------------------------------------------------------------------------------------------------------
def facesnap_classes(host) -> dict[str, type]:
    return {"mixer": pack_module(host, "DiffPCIDInjector",
                                 "models.identity.facesnap.attribute_mixer").FacialAttributeMixer,
            "ffrnet": pack_module(host, "DiffPCIDInjector", "models.identity.facesnap.ffrnet").FFRNet}


@pytest.mark.parametrize("budget", ["one_byte", "three_quarters"])
def test_partial_load_streams_the_pack_with_identical_samples(host, monkeypatch, fresh_model_management, budget):
    mm = fresh_model_management
    if budget == "three_quarters" and comfyui_version() < (0, 3, 75):
        pytest.skip("ComfyUI 0.3.48's partial loader loads the tiny mixer whole at 3/4 of its layers (its layer "
                    "accounting differs); the one-byte case streams everything there too")
    seen = record_forwards(monkeypatch, facesnap_classes(host))
    full = latent(host.run(facesnap_graph()))
    assert {net for net, *_ in seen} == {"mixer", "ffrnet"}
    assert all(lowvram is False and not any(streamed.values()) for _, lowvram, _, streamed in seen)

    mm.unload_all_models()
    seen.clear()
    force_partial_load(mm, monkeypatch, budget)
    executor = host.run(facesnap_graph())  # a new executor: every node runs again
    assert torch.equal(latent(executor), full)
    assert {net for net, *_ in seen} == {"mixer", "ffrnet"}
    for net, lowvram, loaded, streamed in seen:
        assert lowvram is True, net
        assert_streamed(budget, loaded, streamed, net)
    ffrnet_streams = next(streamed for net, _, _, streamed in seen if net == "ffrnet")
    heads = [n for n in ffrnet_streams if n.startswith("id_injector.")]
    assert heads and (budget != "one_byte" or all(ffrnet_streams[n] for n in heads))

    # after the prompt: the pack's weights are held only by its ModelPatchers, which ComfyUI keeps loaded (as it keeps
    # its own ControlNets and the UNet) until it needs the memory
    bundle = cached(executor, "loader")
    patchers = [bundle.mixer_patcher, bundle.control.control_model_wrapped]
    assert all(is_loaded(mm, p) for p in patchers)
    positive = cached(executor, "apply")
    control = positive[0][1]["control"]
    assert type(control).__name__ == "IdentityControlNet" and control.cond_hint is None  # cleaned up by the sampler
    assert_released(mm, patchers)  # ComfyUI freeing memory
