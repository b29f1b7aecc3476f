"""The pack's side networks are managed the way the host manages its own (comfy_glue/host_compat.py).

- Every patcher the pack makes is of the class the host's loaders use at that moment (``CoreModelPatcher``, which
  ComfyUI rebinds to ``ModelPatcherDynamic`` under dynamic VRAM): simulated by rebinding it to a recording subclass.
- The ID-Injector heads run through their layer call, so ComfyUI's casting and streaming apply: with fp16 storage on a
  CPU (fp32 compute, ComfyUI's manual cast), the heads' layers run, once each per point and UNet call.
- The FFRNet that holds the heads is loaded with the MODEL that carries the injector.
"""

from __future__ import annotations

import pytest
import torch

from identity_graphs import add_apply, add_injector, add_loader, base_graph, cached
from instantid_graphs import add_apply_instantid, add_encode, add_instantid_loader

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def host(identity_host):
    """The FaceSnap + InstantID host (tests/nodes/conftest.py)."""
    return identity_host


POINTS = 5  # ID-Injector points of the tiny SDXL


@pytest.fixture()
def rebound_patcher_class(monkeypatch):
    """``comfy.model_patcher.CoreModelPatcher`` rebound to a subclass, as ComfyUI's main.py does for dynamic VRAM."""
    import comfy.model_patcher

    class HostLoadersPatcher(comfy.model_patcher.ModelPatcher):
        pass

    monkeypatch.setattr(comfy.model_patcher, "CoreModelPatcher", HostLoadersPatcher, raising=False)
    return HostLoadersPatcher


def test_side_networks_use_the_patcher_class_of_the_hosts_loaders(host, rebound_patcher_class):
    g = base_graph(steps=1)
    add_apply(g, add_loader(g, node="facesnap", dtype="fp32"), person=10)
    loader = add_instantid_loader(g, dtype="fp32")
    add_apply_instantid(g, loader, add_encode(g, loader))
    executor = host.run(g)
    facesnap, instantid = cached(executor, "facesnap"), cached(executor, loader)
    patchers = {"mixer": facesnap.mixer_patcher, "resampler": instantid.resampler_patcher,
                "IP layers": instantid.ip_patcher}
    wrong = {name: type(p).__name__ for name, p in patchers.items() if not isinstance(p, rebound_patcher_class)}
    assert not wrong, f"patchers not of the host loaders' class: {wrong}"


def test_injector_heads_run_through_their_layer_call_with_cast_weights(host, monkeypatch):
    g = base_graph(steps=1)
    loader = add_loader(g, node="half", dtype="fp16")  # fp16 storage; a CPU computes it in fp32 (manual cast)
    add_apply(g, loader)
    add_injector(g, loader)
    session = host.session()
    bundle = cached(session.run(g), "half")
    heads = [*bundle.ffrnet.id_injector.phi, *bundle.ffrnet.id_injector.mu]
    assert {p.dtype for h in heads for p in h.parameters()} == {torch.float16}
    assert bundle.dtypes.manual_cast is not None
    calls = []
    for head in heads:
        monkeypatch.setattr(head, "forward", _counting(head.forward, calls))
    unet_calls = []
    unet = bundle.ffrnet  # any module run once per UNet call with the control: FFRNet itself
    monkeypatch.setattr(unet, "forward", _counting(unet.forward, unet_calls))
    g["sampler"]["inputs"]["seed"] = 5  # re-sample with the loaded bundle
    session.run(g)
    assert unet_calls and len(calls) == 2 * POINTS * len(unet_calls), (len(calls), len(unet_calls))


def test_the_heads_network_is_loaded_with_the_injected_model(host):
    g = base_graph(steps=1)
    loader = add_loader(g, node="loader")
    add_injector(g, loader, node="injected")
    executor = host.run(g)
    bundle, model = cached(executor, "loader"), cached(executor, "injected")
    assert bundle.control.control_model_wrapped in model.get_additional_models()


def _counting(forward, into: list):
    def counted(*args, **kwargs):
        into.append(1)
        return forward(*args, **kwargs)

    return counted
