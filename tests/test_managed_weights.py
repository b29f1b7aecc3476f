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
from identity_graphs import add_apply, add_injector, add_loader, base_graph, cached, latent, pack_module
from test_operations import LAYER_TYPES, RAW_PARAMETERS, ffrnet_outputs, layers_and_raw_parameters

pytestmark = pytest.mark.comfy

FILE = "managed_weights.safetensors"
STORAGE = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp8_e4m3fn": torch.float8_e4m3fn}
# Relative error of FaceSnap's effect on the sampled latent, ||L(dtype) - L(fp32)|| / ||L(fp32) - L(without FaceSnap)||
# (tiny graph, 2 euler steps, CFG 4, CPU). Measured: fp16 3.2e-4, bf16 2.6e-3, fp8_e4m3fn 4.3e-2; bounds about 3x.
# (Relative to the whole latent: 6.9e-7, 5.5e-6, 9.2e-5.)
SAMPLE_TOLERANCE = {"fp16": 1e-3, "bf16": 8e-3, "fp8_e4m3fn": 1.3e-1}


@pytest.fixture(scope="module")
def host(comfy_host, tmp_path_factory):
    import folder_paths

    from comfyui_facesnap.models.identity.facesnap_checkpoint import save_facesnap

    folder = tmp_path_factory.mktemp("managed_weights")
    save_facesnap(str(folder / FILE), *tiny_facesnap_models(seed=0), {"note": "test"})
    folder_paths.add_model_folder_path("facesnap", str(folder), is_default=True)
    return comfy_host


@pytest.fixture()
def fresh_model_management():
    """Nothing loaded before or after the test (a prompt's models stay loaded otherwise, as in a server)."""
    import comfy.model_management

    comfy.model_management.unload_all_models()
    yield comfy.model_management
    comfy.model_management.unload_all_models()


def facesnap_graph(dtype: str = "auto", steps: int = 2) -> dict:
    """Tiny SDXL + FaceSnap Apply FFRNet + Diff-PC ID-Injector: the mixer, FFRNet and the heads all run."""
    g = base_graph(steps=steps)
    loader = add_loader(g, FILE, node="loader", dtype=dtype)
    add_apply(g, loader, person=10, node="apply")
    add_injector(g, loader)
    return g


def networks(bundle) -> dict[str, torch.nn.Module]:
    return {"mixer": bundle.mixer, "ffrnet": bundle.ffrnet, "heads": bundle.ffrnet.id_injector}


# --- item 1 ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["auto", "fp8_e4m3fn"])
def test_the_loader_builds_every_network_from_comfy_operations(host, dtype):
    import comfy.model_management
    import comfy.ops
    import folder_paths

    from comfyui_facesnap.models.identity.facesnap_checkpoint import load_facesnap

    bundle = cached(host.run(facesnap_graph(dtype, steps=1)), "loader")
    device = comfy.model_management.get_torch_device()
    storage = STORAGE.get(dtype) or comfy.model_management.unet_dtype(device, model_params=-1,
                                                                       weight_dtype=torch.float32)
    manual_cast = comfy.model_management.unet_manual_cast(storage, device)
    ops = comfy.ops.pick_operations(storage, manual_cast)
    assert (ops is comfy.ops.manual_cast) == (manual_cast is not None)
    own_classes = {getattr(ops, name) for name in ("Linear", "Conv2d", "LayerNorm", "GroupNorm")}
    for name, module in networks(bundle).items():
        layers, raw = layers_and_raw_parameters(module)
        assert layers and all(isinstance(m, LAYER_TYPES) for _, m in layers)
        wrong = [n for n, m in layers if type(m) not in own_classes]
        assert not wrong, f"{name}: {wrong[:5]} are not {ops.__name__} layers"
        assert all(n.rsplit(".", 1)[-1] in RAW_PARAMETERS for n in raw), raw  # cast at use (cast_to_input)
        assert {p.dtype for p in module.parameters()} == {storage}
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
        torch.testing.assert_close([bundle.encode(features), bundle.uncond_tokens()], expected)
        torch.testing.assert_close(ffrnet_outputs(bundle.ffrnet), ffrnet_outputs(ffrnet))


# --- item 2 ------------------------------------------------------------------------------------------------------------
def test_storage_dtypes_sample_close_to_fp32_with_fp32_compute(host):
    import comfy.model_management

    device = comfy.model_management.get_torch_device()
    if device.type != "cpu":
        pytest.skip("the tolerances are for fp32 compute, which ComfyUI picks on a CPU")
    session = host.session()
    plain = latent(session.run(base_graph()))
    reference = latent(session.run(facesnap_graph("fp32")))
    effect = float((reference - plain).norm())
    assert effect > 1e-3 * float(plain.norm()), "FaceSnap must change the tiny sample"
    errors = {}
    for name, tolerance in SAMPLE_TOLERANCE.items():
        executor = session.run(facesnap_graph(name))
        bundle = cached(executor, "loader")
        for module in networks(bundle).values():
            assert {p.dtype for p in module.parameters()} == {STORAGE[name]}, name
        assert bundle.mixer.dtype == bundle.ffrnet.dtype == torch.float32
        assert bundle.control.manual_cast_dtype == torch.float32
        sample = latent(executor)
        assert sample.dtype == torch.float32 and torch.isfinite(sample).all()
        errors[name] = float((sample - reference).norm()) / effect
        assert 0 < errors[name] < tolerance, errors
    assert errors["fp16"] < errors["bf16"] < errors["fp8_e4m3fn"], errors


# --- item 3 ------------------------------------------------------------------------------------------------------------
def record_forwards(host, monkeypatch) -> list:
    """(network, lowvram flag, loaded bytes, {layer: streamed}) for every forward of the pack's mixer and FFRNet."""
    seen = []
    for name, module, cls in (("mixer", "models.identity.attribute_mixer", "FacialAttributeMixer"),
                              ("ffrnet", "models.identity.ffrnet", "FFRNet")):
        network_class = getattr(pack_module(host, "DiffPCIDInjector", module), cls)
        forward = network_class.forward

        def recording(self, *args, _forward=forward, _name=name, **kwargs):
            layers, _ = layers_and_raw_parameters(self)
            streamed = {n: getattr(m, "comfy_cast_weights", False) and hasattr(m, "prev_comfy_cast_weights")
                        for n, m in layers}
            seen.append((_name, getattr(self, "model_lowvram", None), getattr(self, "model_loaded_weight_memory", None),
                         streamed))
            return _forward(self, *args, **kwargs)

        monkeypatch.setattr(network_class, "forward", recording)
    return seen


def force_partial_load(mm, monkeypatch, budget: str) -> None:
    """What ``load_models_gpu`` does on a GPU with too little free memory: ``model_load`` with a weight budget. With
    a CPU load device ComfyUI always loads fully (vram_state DISABLED -> lowvram_model_memory 0), so the budget is
    passed here: 1 byte (everything streams) or 3/4 of each model (some layers are loaded, the rest streams)."""
    model_load = mm.LoadedModel.model_load

    def with_budget(self, lowvram_model_memory=0, force_patch_weights=False):
        memory = 1 if budget == "one_byte" else self.model.model_size() * 3 // 4
        return model_load(self, memory, force_patch_weights=force_patch_weights)

    monkeypatch.setattr(mm.LoadedModel, "model_load", with_budget)


@pytest.mark.parametrize("budget", ["one_byte", "three_quarters"])
def test_partial_load_streams_the_pack_with_identical_samples(host, monkeypatch, fresh_model_management, budget):
    mm = fresh_model_management
    seen = record_forwards(host, monkeypatch)
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
        if budget == "one_byte":
            assert loaded == 0 and all(streamed.values()), (net, [n for n, s in streamed.items() if not s])
        else:
            assert 0 < loaded and any(streamed.values()) and not all(streamed.values()), (net, loaded)
    ffrnet_streams = next(streamed for net, _, _, streamed in seen if net == "ffrnet")
    heads = [n for n in ffrnet_streams if n.startswith("id_injector.")]
    assert heads and (budget != "one_byte" or all(ffrnet_streams[n] for n in heads))

    # after the prompt: the pack's weights are held only by its ModelPatchers, which ComfyUI keeps loaded (as it keeps
    # its own ControlNets and the UNet) until it needs the memory
    bundle = cached(executor, "loader")
    patchers = [bundle.mixer_patcher, bundle.control.control_model_wrapped]
    assert all(any(loaded.model is p for loaded in mm.current_loaded_models) for p in patchers)
    positive = cached(executor, "apply")
    control = positive[0][1]["control"]
    assert type(control).__name__ == "IdentityControlNet" and control.cond_hint is None  # cleaned up by the sampler
    mm.unload_all_models()  # ComfyUI freeing memory
    assert not any(loaded.model is p for loaded in mm.current_loaded_models for p in patchers)
    for patcher in patchers:
        assert patcher.model.model_loaded_weight_memory == 0 and patcher.model.model_lowvram is False
        layers, _ = layers_and_raw_parameters(patcher.model)
        assert not any(m.comfy_cast_weights or hasattr(m, "prev_comfy_cast_weights") for _, m in layers)
