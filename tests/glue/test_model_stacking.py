"""What artists put on the MODEL, stacked with both identity methods, through ComfyUI's executor.

Each graph: the tiny checkpoint's MODEL as dynamic VRAM presents it with no non-dynamic delegate (a custom loader's
MODEL, comfy_test_nodes/dynamic_vram.py), an artist's MODEL node, FaceSnap (Apply Identity + ID-Injector) and
InstantID (IP-attention + IdentityNet) together, sampled twice in one executor with a strength toggled in between.
Checked: the node acts (the result differs without it), re-runs are bit-identical, and the ID-Injector runs at each of
its points once per UNet call. No cond carries hooks (conftest's conds_without_hooks).
"""

from __future__ import annotations

import pytest
import torch

from identity_graphs import add_apply, add_injector, add_loader, add_model_node, base_graph, latent, pack_module
from instantid_graphs import add_apply_instantid, add_encode, add_instantid_loader

pytestmark = pytest.mark.comfy

POINTS = 5  # ID-Injector points of the tiny SDXL
LORA = "tiny_lora.safetensors"

# name -> (class_type, inputs, before: placed before the identity applies, as loaders are; else after)
ARTIST_NODES = {
    "LoraLoader": ("LoraLoader", {"lora_name": LORA, "strength_model": 1.0, "strength_clip": 1.0}, True),
    "FreeU_V2": ("FreeU_V2", {"b1": 1.3, "b2": 1.4, "s1": 0.9, "s2": 0.2}, False),
    "PerturbedAttentionGuidance": ("PerturbedAttentionGuidance", {"scale": 3.0}, False),
    "ModelSamplingDiscrete-lcm": ("ModelSamplingDiscrete", {"sampling": "lcm", "zsnr": False}, True),
    "ModelSamplingDiscrete-v_prediction": ("ModelSamplingDiscrete", {"sampling": "v_prediction", "zsnr": False}, True),
    "custom-loader-only": (None, {}, True),
}


@pytest.fixture(scope="module")
def host(identity_host, tmp_path_factory):
    from safetensors.torch import save_file

    import folder_paths

    from comfy_test_nodes.tiny_models import tiny_lora

    identity_host.load_builtin_nodes("nodes_freelunch.py", "nodes_pag.py", "nodes_model_advanced.py")
    loras = tmp_path_factory.mktemp("loras")
    save_file(tiny_lora(), str(loras / LORA))
    folder_paths.add_model_folder_path("loras", str(loras), is_default=True)
    return identity_host


@pytest.fixture()
def injections(host, monkeypatch):
    """Per UNet call, how many ID-Injector points ran."""
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    counts = []
    unet_forward = UNetModel._forward

    def counting_unet(self, *args, **kwargs):
        counts.append(0)
        return unet_forward(self, *args, **kwargs)

    injector = pack_module(host, "DiffPCIDInjector", "models.identity.facesnap.id_injector").IDInjector
    apply = injector.apply

    def counting_apply(h, phi, mu):
        counts[-1] += 1
        return apply(h, phi, mu)

    monkeypatch.setattr(UNetModel, "_forward", counting_unet)
    monkeypatch.setattr(injector, "apply", staticmethod(counting_apply))
    return counts


def stacked_graph(artist: str | None, strength: float = 1.0) -> dict:
    g = base_graph(steps=2)
    g["model"] = {"class_type": "FaceSnapTestTinyCheckpoint", "inputs": {"seed": 0}}
    g["sampler"]["inputs"]["model"] = ["model", 0]
    add_model_node(g, "dynamic", "FaceSnapTestDynamicModel")
    class_type, inputs, before = ARTIST_NODES[artist] if artist else (None, {}, True)

    def add_artist_node():
        if class_type is not None:
            add_model_node(g, "artist", class_type, **inputs)
            if class_type == "LoraLoader":
                g["artist"]["inputs"]["clip"] = ["model", 1]

    if before:
        add_artist_node()
    loader = add_loader(g)
    add_apply(g, loader, strength=strength)
    add_injector(g, loader)
    instantid = add_instantid_loader(g)
    apply = add_apply_instantid(g, instantid, add_encode(g, instantid))
    g["sampler"]["inputs"]["model"] = [apply, 0]
    if not before:
        add_artist_node()
    return g


@pytest.fixture(scope="module")
def without_artist_node(host):
    return latent(host.run(stacked_graph(None)))


@pytest.mark.parametrize("artist", list(ARTIST_NODES))
def test_artist_model_node_stacks_with_both_identities(host, injections, without_artist_node, artist):
    session = host.session()
    first = latent(session.run(stacked_graph(artist)))
    toggled = latent(session.run(stacked_graph(artist, strength=0.9)))
    again = latent(session.run(stacked_graph(artist)))
    assert not torch.equal(first, toggled), "the identity strength acts"
    assert torch.equal(first, again), f"re-run after a toggle: max difference {float((first - again).abs().max())}"
    if ARTIST_NODES[artist][0] is not None:
        assert not torch.equal(first, without_artist_node), f"{artist} acts on the result"
    assert injections and set(injections) == {POINTS}, f"ID-Injector points per UNet call: {injections}"
