"""Checks shared by the managed-weights tests of FaceSnap's networks (test_managed_weights.py) and InstantID's
(test_instantid_managed_weights.py): which ComfyUI operation classes a loader must have picked, forced partial loads,
which layers a forward streamed, and what is left loaded after a prompt."""

from __future__ import annotations

import torch

from comfyui_facesnap.devkit.comfy_host import cached_output, streamable_layers
from operation_helpers import LAYER_TYPES, layers_and_raw_parameters

STORAGE = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp8_e4m3fn": torch.float8_e4m3fn}
# raw parameters (outside any layer) that the networks cast to the input's device and dtype at use
RAW_PARAMETERS = ("queries", "latents", "in_proj_weight", "in_proj_bias")
LAYER_NAMES = ("Linear", "Conv2d", "LayerNorm", "GroupNorm")


def expected_dtypes(option: str, file_dtype: torch.dtype = torch.float32):
    """(storage, manual cast dtype or None, operations) that loader option ``option`` must give on this device: what
    ComfyUI's ``controlnet_config`` computes (comfy/controlnet.py), restated here."""
    import comfy.model_management
    import comfy.ops

    device = comfy.model_management.get_torch_device()
    storage = STORAGE.get(option) or comfy.model_management.unet_dtype(device, model_params=-1, weight_dtype=file_dtype)
    manual_cast = comfy.model_management.unet_manual_cast(storage, device)
    return storage, manual_cast, comfy.ops.pick_operations(storage, manual_cast, disable_fast_fp8=True)


def assert_comfy_layers(name: str, module: torch.nn.Module, ops, storage: torch.dtype) -> None:
    """Every Linear/Conv2d/LayerNorm/GroupNorm of ``module`` is one of ``ops``' classes, every parameter is stored in
    ``storage``, and the only others are raw parameters cast at use."""
    own_classes = {getattr(ops, n) for n in LAYER_NAMES}
    layers, raw = layers_and_raw_parameters(module)
    assert layers and all(isinstance(m, LAYER_TYPES) for _, m in layers)
    wrong = [n for n, m in layers if type(m) not in own_classes]
    assert not wrong, f"{name}: {wrong[:5]} are not {ops.__name__} layers"
    assert all(n.rsplit(".", 1)[-1] in RAW_PARAMETERS for n in raw), (name, raw)
    assert {p.dtype for p in module.parameters()} == {storage}, name


def streamed_layers(module: torch.nn.Module) -> dict[str, bool]:
    """Layer -> whether ComfyUI's low-VRAM load set it to stream (cast its weights to the input's device per call)."""
    layers, _ = layers_and_raw_parameters(module)
    return {n: getattr(m, "comfy_cast_weights", False) and hasattr(m, "prev_comfy_cast_weights") for n, m in layers}


def record_forwards(monkeypatch, networks: dict[str, type]) -> list:
    """(network, lowvram flag, loaded bytes, {layer: streamed}) for every forward of the ``networks`` classes (name ->
    class of the executor's pack instance). The flags are those ModelPatcher sets on the module it manages (None on a
    module inside one)."""
    seen = []
    for name, network_class in networks.items():
        forward = network_class.forward

        def recording(self, *args, _forward=forward, _name=name, **kwargs):
            seen.append((_name, getattr(self, "model_lowvram", None), getattr(self, "model_loaded_weight_memory", None),
                         streamed_layers(self)))
            return _forward(self, *args, **kwargs)

        monkeypatch.setattr(network_class, "forward", recording)
    return seen


def force_partial_load(mm, monkeypatch, budget: str) -> None:
    """What ``load_models_gpu`` does on a GPU with too little free memory: ``model_load`` with a weight budget. With
    a CPU load device ComfyUI always loads fully (vram_state DISABLED -> lowvram_model_memory 0), so the budget is
    passed here: 1 byte (everything streams) or 3/4 of each model's streamable layers (some layers are loaded, the
    rest streams)."""
    model_load = mm.LoadedModel.model_load

    def with_budget(self, lowvram_model_memory=0, force_patch_weights=False):
        memory = 1 if budget == "one_byte" else sum(streamable_layers(self.model).values()) * 3 // 4
        return model_load(self, memory, force_patch_weights=force_patch_weights)

    monkeypatch.setattr(mm.LoadedModel, "model_load", with_budget)


def assert_streamed(budget: str, loaded: int, streamed: dict[str, bool], what: str) -> None:
    """The layers of one partially loaded network under ``force_partial_load(budget)``."""
    if budget == "one_byte":
        assert loaded == 0 and all(streamed.values()), (what, [n for n, s in streamed.items() if not s])
    else:
        assert 0 < loaded and any(streamed.values()) and not all(streamed.values()), (what, loaded)


def is_loaded(mm, patcher) -> bool:
    return any(loaded.model is patcher for loaded in mm.current_loaded_models)


def assert_released(mm, patchers) -> None:
    """After ComfyUI frees memory (``unload_all_models``): none of ``patchers`` is loaded, and no layer of theirs is
    left in low-VRAM mode (streaming flags, loaded-weight counters)."""
    mm.unload_all_models()
    for patcher in patchers:
        assert not is_loaded(mm, patcher)
        assert patcher.model.model_loaded_weight_memory == 0 and patcher.model.model_lowvram is False
        layers, _ = layers_and_raw_parameters(patcher.model)
        assert not any(m.comfy_cast_weights != type(m).comfy_cast_weights or hasattr(m, "prev_comfy_cast_weights")
                       for _, m in layers)


def storage_sample_errors(host, graph, loader: str, networks, plain_graph: dict) -> tuple[dict[str, float], float]:
    """Sample ``graph(option)`` for fp32 storage and every other storage option in one session (fp32 compute, as on
    a CPU). Each time the loader's ``networks(bundle)`` must hold that storage dtype and compute in fp32. Returns
    {option: ||L(option) - L(fp32)|| / effect} and the effect ||L(fp32) - L(plain_graph)||."""
    session = host.session()
    plain = _sampled(session.run(plain_graph))
    reference = _sampled(session.run(graph("fp32")))
    effect = float((reference - plain).norm())
    errors = {}
    for option in ("fp16", "bf16", "fp8_e4m3fn"):
        executor = session.run(graph(option))
        bundle = cached_output(executor, loader, 0)
        assert bundle.dtypes.compute == torch.float32 and bundle.control.manual_cast_dtype == torch.float32
        for name, module in networks(bundle).items():
            assert {p.dtype for p in module.parameters()} == {STORAGE[option]}, (option, name)
            assert getattr(module, "dtype", torch.float32) == torch.float32, (option, name)  # compute dtype
        sample = _sampled(executor)
        assert sample.dtype == torch.float32 and torch.isfinite(sample).all()
        errors[option] = float((sample - reference).norm()) / effect
    print(f"\nsample error / effect {errors}, effect / latent {effect / float(reference.norm()):.2e}")
    return errors, effect / float(plain.norm())


def _sampled(executor) -> torch.Tensor:
    return cached_output(executor, "sampler", 0)["samples"].clone()
