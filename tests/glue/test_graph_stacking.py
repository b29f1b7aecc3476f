"""Sampling glue in edited and stacked graphs, through ComfyUI's real executor.

One persistent executor (as a server keeps it) re-runs edited graphs; FaceSnap is stacked with a stock ControlNet
(both orders), with a second person, with other FaceSnap files and with another pack's patches on the same blocks.
"""

from __future__ import annotations

import os

import pytest
import torch

from comfy_test_nodes.tiny_models import tiny_conditioning, tiny_face_features
from identity_graphs import (
    add_apply,
    add_injector,
    add_loader,
    add_model_node,
    add_stock_controlnet,
    base_graph,
    cached,
    latent,
    pack_module,
    register_facesnap_folder,
    setup_face_pipeline,
)

pytestmark = pytest.mark.comfy

POINTS = 5  # ID-Injector points of the tiny SDXL: after the middle block and after each of its 4 decoder blocks


@pytest.fixture(scope="module")
def host(comfy_host, insightface_images, tmp_path_factory):
    register_facesnap_folder(tmp_path_factory.mktemp("facesnap"))
    setup_face_pipeline(comfy_host, insightface_images, tmp_path_factory.mktemp("insightface"))
    return comfy_host


@pytest.fixture()
def calls(host, monkeypatch):
    """Records, in order, every UNet call ("unet", x shape, control residual 0) and every ID-Injector
    application ("inject", h shape)."""
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    events = []
    unet_forward = UNetModel._forward

    def recording_unet(self, x, timesteps=None, context=None, y=None, control=None, *args, **kwargs):
        first = None if not control else control["output"][0].clone()
        events.append(("unet", tuple(x.shape), first))
        return unet_forward(self, x, timesteps, context, y, control, *args, **kwargs)

    injector = pack_module(host, "DiffPCIDInjector", "models.identity.facesnap.id_injector").IDInjector
    apply = injector.apply

    def recording_apply(h, phi, mu):
        events.append(("inject", tuple(h.shape), None))
        return apply(h, phi, mu)

    monkeypatch.setattr(UNetModel, "_forward", recording_unet)
    monkeypatch.setattr(injector, "apply", staticmethod(recording_apply))
    return events


def injections_per_unet_call(events) -> list[int]:
    counts = []
    for kind, _, _ in events:
        if kind == "unet":
            counts.append(0)
        else:
            counts[-1] += 1
    return counts


def record_contexts(monkeypatch, cls, into: list, tag: str):
    forward = cls.forward

    def recording(self, *args, **kwargs):
        into.append((tag, kwargs["context"].detach().float().clone()))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(cls, "forward", recording)


def count_head_calls(bundle) -> list[int]:
    counter = [0]
    for head in [*bundle.ffrnet.id_injector.phi, *bundle.ffrnet.id_injector.mu]:
        head.register_forward_hook(lambda *a: counter.__setitem__(0, counter[0] + 1))
    return counter


# --- item 1: re-patching never piles up ------------------------------------------------------------------------
def test_reruns_and_strength_toggles_in_one_executor_give_bit_identical_outputs(host, calls):
    session = host.session()

    def apply_facesnap_graph(strength):
        g = base_graph()
        loader = add_loader(g)
        apply = add_apply(g, loader, strength=strength)
        g[apply]["class_type"] = "ApplyFaceSnap"  # the all-in-one node patches the MODEL inside
        inputs = g[apply]["inputs"]
        del inputs["face_features"]
        inputs.update(model=["model", 0], faces=["faces", 1], clip_vision=["clip", 0])
        g["faces"] = {"class_type": "FaceSnapFaceCrop", "inputs": {
            "analyzer": ["analyzer", 0], "image": ["photo", 0], "selection": "largest", "index": 0, "size": 128,
            "margin": 0.5, "if_no_face": "error"}}
        g["analyzer"] = {"class_type": "FaceSnapFaceAnalyzerLoader",
                         "inputs": {"backend": "insightface", "provider": "CPU", "dlib_detector": "hog"}}
        g["photo"] = {"class_type": "LoadImage", "inputs": {"image": "Tom_Hanks_54745.png"}}
        g["clip"] = {"class_type": "FaceSnapTestTinyCLIPVision", "inputs": {"seed": 0}}
        g["sampler"]["inputs"]["model"] = [apply, 0]
        g["sampler"]["inputs"].update(positive=[apply, 1], negative=[apply, 2])
        return g

    toggled = [latent(session.run(apply_facesnap_graph(s))) for s in (1.0, 0.9, 1.0, 0.9, 1.0)]
    assert not torch.equal(toggled[0], toggled[1])
    for again in toggled[2::2]:
        assert torch.equal(again, toggled[0]), f"max difference {float((again - toggled[0]).abs().max())}"
    assert torch.equal(toggled[3], toggled[1])

    # Diff-PC ID-Injector re-run on the same loaded MODEL (its FaceSnap file changes to a copy and back)
    def injector_graph(name):
        g = base_graph()
        loader = add_loader(g, name, node="loader")
        add_apply(g, loader)
        add_injector(g, loader, node="injector")
        return g

    reruns = [latent(session.run(injector_graph(name))) for name in
              ("tiny_facesnap.safetensors", "tiny_facesnap_copy.safetensors", "tiny_facesnap.safetensors",
               "tiny_facesnap_copy.safetensors")]
    for again in reruns[1:]:
        assert torch.equal(again, reruns[0]), f"max difference {float((again - reruns[0]).abs().max())}"
    per_call = injections_per_unet_call(calls)
    assert per_call and set(per_call) == {POINTS}, f"injections per UNet call: {per_call}"


# --- item 2: each control reads its own tokens; stock ControlNets read the prompt -------------------------------
@pytest.mark.parametrize("stock_first", [True, False], ids=["stock-then-facesnap", "facesnap-then-stock"])
def test_stock_controlnet_in_the_chain_reads_the_prompt(host, monkeypatch, stock_first):
    import comfy.cldm.cldm

    seen = []
    record_contexts(monkeypatch, comfy.cldm.cldm.ControlNet, seen, "stock")
    record_contexts(monkeypatch, pack_module(host, "DiffPCIDInjector", "models.identity.facesnap.ffrnet").FFRNet, seen,
                    "ffrnet")
    g = base_graph(steps=1)
    loader = add_loader(g, node="loader")
    if stock_first:
        add_stock_controlnet(g)
    add_apply(g, loader, person=10)
    if not stock_first:
        add_stock_controlnet(g)
    executor = host.run(g)
    bundle = cached(executor, "loader")
    positive, negative = tiny_conditioning(seed=1)
    prompt = {"cond": positive[0][0], "uncond": negative[0][0]}
    identity = {"cond": bundle.run_mixer(*tiny_face_features(10).batched()), "uncond": bundle.uncond_tokens()}
    for tag, expected in (("stock", prompt), ("ffrnet", identity)):
        contexts = [ctx for t, ctx in seen if t == tag]
        assert contexts, f"the {tag} ControlNet never ran"
        for ctx in contexts:
            assert ctx.shape == (2, *expected["cond"].shape[1:]), f"{tag} got context {tuple(ctx.shape)}"
            rows = sorted(kind for row in ctx for kind, ref in expected.items()
                          if torch.allclose(row, ref[0], atol=1e-4))
            assert rows == ["cond", "uncond"], f"{tag}: each batch chunk must get its own {list(expected)} tokens"


def test_two_people_keep_two_identities_in_ffrnet_and_injector(host, monkeypatch):
    seen = []
    record_contexts(monkeypatch, pack_module(host, "DiffPCIDInjector", "models.identity.facesnap.ffrnet").FFRNet, seen,
                    "ffrnet")
    patches = pack_module(host, "DiffPCIDInjector", "comfy_glue.id_injector_patch")
    checked, phis = [], []
    if hasattr(patches, "IDInjectorPatch"):  # record point 0: the published features and the phi applied
        inject = patches.IDInjectorPatch.inject

        def checking(self, point, h, options):
            if point == 0:
                features = options[patches.FEATURES_KEY]
                heads = next(iter(self.heads.values()))
                source = heads.layout.source_indices[0]
                expected = sum(heads.phi[0](f.residuals[source]) * f.weights[source] for f in features)
                checked.append((len(features), [f.weights[source] for f in features], expected))
            return inject(self, point, h, options)

        monkeypatch.setattr(patches.IDInjectorPatch, "inject", checking)
        apply = patches.IDInjector.apply
        monkeypatch.setattr(patches.IDInjector, "apply",
                            staticmethod(lambda h, phi, mu: phis.append(phi) or apply(h, phi, mu)))

    g = base_graph(steps=1)
    loader = add_loader(g, node="loader")
    add_apply(g, loader, person=10, mask=(0, 0, 64, 128))  # left half
    add_apply(g, loader, person=11, mask=(64, 0, 64, 128))  # right half
    add_injector(g, loader)
    bundle = cached(host.run(g), "loader")

    people = {p: bundle.run_mixer(*tiny_face_features(p).batched())[0] for p in (10, 11)}
    fed = [next((p for p, ref in people.items() if torch.allclose(row, ref, atol=1e-4)), None)
           for _, ctx in seen for row in ctx]
    assert fed.count(10) and fed.count(11), f"FFRNet calls were fed persons {fed} (None = uncond tokens)"
    assert fed.count(10) == fed.count(11)
    count, weights, expected = checked[0]
    assert count == 2, "both controls publish their features for the injector"
    left, right = weights
    half = left.shape[-1] // 2
    assert float(left[..., half + 1:].abs().max()) == 0 and float(left[..., :half - 1].min()) > 0
    assert float(right[..., :half - 1].abs().max()) == 0 and float(right[..., half + 1:].min()) > 0
    torch.testing.assert_close(phis[0], expected)  # point 0: each control's phi, masked by its own mask, summed


# --- item 3: heads of the injector's own FaceSnap file; none computed without a paired injector -----------------
def test_heads_are_computed_only_by_the_injector_of_the_same_file(host):
    session = host.session()

    def graph(seed, injectors):
        g = base_graph(steps=1)
        g["sampler"]["inputs"]["seed"] = seed  # a new seed re-runs the sampler, nothing else
        loader = add_loader(g, node="loader")
        add_apply(g, loader)
        for name in injectors:
            add_injector(g, add_loader(g, name, node=name))
        return g

    session.run(graph(3, ["other_heads.safetensors"]))  # loads both files
    own = count_head_calls(cached(session.executor, "loader"))
    foreign = count_head_calls(cached(session.executor, "other_heads.safetensors"))
    plain = latent(session.run(graph(4, [])))
    assert own[0] == 0, "FFRNet computed ID-Injector heads that no injector uses"
    # the injector of another file: this file's controls are not its business
    assert torch.equal(latent(session.run(graph(4, ["other_heads.safetensors"]))), plain)
    assert own[0] == 0 and foreign[0] == 0
    # the file's own injector (chained with the other one)
    paired = latent(session.run(graph(4, ["other_heads.safetensors", "tiny_facesnap.safetensors"])))
    assert not torch.equal(paired, plain) and own[0] > 0 and foreign[0] == 0


def test_two_files_with_different_head_layouts_each_apply_their_own_heads(host, calls):
    session = host.session()

    def graph(seed):
        g = base_graph(steps=1)
        g["sampler"]["inputs"]["seed"] = seed
        first, second = add_loader(g, node="first"), add_loader(g, "other_heads.safetensors", node="second")
        add_apply(g, first, person=10, mask=(0, 0, 64, 128))
        add_apply(g, second, person=11, mask=(64, 0, 64, 128))
        add_injector(g, first)
        add_injector(g, second)
        return g

    session.run(graph(3))
    bundles = cached(session.executor, "first"), cached(session.executor, "second")
    assert bundles[0].ffrnet.id_injector.phi[0].kernel_size != bundles[1].ffrnet.id_injector.phi[0].kernel_size
    counters = [count_head_calls(b) for b in bundles]
    calls.clear()
    session.run(graph(4))
    per_call = injections_per_unet_call(calls)
    assert set(per_call) == {POINTS}
    # each file's heads (phi and mu at every point) ran once per UNet call, on its own control's features
    assert [c[0] for c in counters] == [2 * POINTS * len(per_call)] * 2


def test_an_ffrnet_that_does_not_fit_the_model_is_a_named_error(host):
    g = base_graph(steps=1)
    add_apply(g, add_loader(g, "deep_ffrnet.safetensors"))
    executor = host.run(g, expect_success=False)
    message = host.error_message(executor)
    assert not executor.success and "[FaceSnapApplyFFRNet]" in message and "res blocks" in message, message
    g = base_graph(steps=1)
    add_injector(g, add_loader(g, "deep_ffrnet.safetensors"))
    message = host.error_message(host.run(g, expect_success=False))
    assert "[DiffPCIDInjector]" in message and "SDXL" in message, message


# --- item 4: the mask follows the area of area conditioning --------------------------------------------------------
def rebuild_hints_like_newer_hosts(monkeypatch):
    """Newer ComfyUI (read in a v0.38-era tree) rebuilds a ControlNet's hint in ``get_control`` from its own cache
    keyed by the latent size, ignoring a ``cond_hint`` set beforehand: simulated by clearing it on every call."""
    import comfy.controlnet

    base = comfy.controlnet.ControlNet.get_control

    def rebuilding(self, *args, **kwargs):
        self.cond_hint = None
        return base(self, *args, **kwargs)

    monkeypatch.setattr(comfy.controlnet.ControlNet, "get_control", rebuilding)


def set_area(g: dict, area: str) -> None:
    """The positive covers only the right half of the 128x128 image."""
    if area == "pixels":
        g["area"] = {"class_type": "ConditioningSetArea", "inputs": {
            "conditioning": ["cond", 0], "width": 64, "height": 128, "x": 64, "y": 0, "strength": 1.0}}
    else:
        g["area"] = {"class_type": "ConditioningSetAreaPercentage", "inputs": {
            "conditioning": ["cond", 0], "width": 0.5, "height": 1.0, "x": 0.5, "y": 0.0, "strength": 1.0}}
    g["sampler"]["inputs"]["positive"] = ["area", 0]


@pytest.mark.parametrize("hint_cache", ["host", "rebuilt"])
@pytest.mark.parametrize("area", ["pixels", "percentage"])
def test_landmark_image_is_cropped_to_the_conditioning_area(host, monkeypatch, area, hint_cache):
    """The area chunk's FFRNet sees the right half of the landmark image (white), never the whole image squeezed,
    also where the host's ControlNet base class rebuilds hints its own way."""
    if hint_cache == "rebuilt":
        rebuild_hints_like_newer_hosts(monkeypatch)
    hints = []
    ffrnet = pack_module(host, "DiffPCIDInjector", "models.identity.facesnap.ffrnet").FFRNet
    forward = ffrnet.forward
    monkeypatch.setattr(ffrnet, "forward",
                        lambda self, *a, **k: hints.append(k["hint"].clone()) or forward(self, *a, **k))
    g = base_graph(steps=1)
    set_area(g, area)
    g["hint"] = {"class_type": "FaceSnapTestRectImage", "inputs": dict(width=128, height=128, x=64, y=0, w=64, h=128)}
    add_apply(g, add_loader(g))
    host.run(g)
    cropped = [h for h in hints if h.shape[-1] == 64]
    assert cropped, "the area conds were sampled on their 16x8 latent crop (64 px wide hints)"
    for hint in cropped:
        assert float(hint.min()) > 0.99, "the area's hint must be the right (white) half of the landmark image"
    assert any(h.shape[-1] == 128 for h in hints), "the whole-image negative saw the whole hint"


@pytest.mark.parametrize("area", ["pixels", "percentage"])
def test_mask_is_aligned_with_the_conditioning_area(host, calls, monkeypatch, area):
    raw = []
    ffrnet = pack_module(host, "DiffPCIDInjector", "models.identity.facesnap.ffrnet").FFRNet
    forward = ffrnet.forward
    monkeypatch.setattr(ffrnet, "forward", lambda self, *a, **k: raw.append(forward(self, *a, **k)) or raw[-1])
    g = base_graph(steps=1)
    set_area(g, area)
    add_apply(g, add_loader(g), mask=(64, 0, 32, 128))  # the left half of the area
    host.run(g)
    unet_calls = [(shape, control) for kind, shape, control in calls if kind == "unet"]
    assert len(unet_calls) == len(raw)
    area_calls = [(control, out["output"][0]) for (shape, control), out in zip(unet_calls, raw, strict=True)
                  if shape[-1] == 8]
    assert area_calls, "the area conds were sampled on their 16x8 latent crop"
    for merged, residual in area_calls:
        weight = (merged * residual).sum(dim=(0, 1, 2)) / (residual * residual).sum(dim=(0, 1, 2))  # per column
        assert float(weight[:3].min()) > 0.95 and float(weight[5:].max()) < 0.05, f"mask weight per column {weight}"


# --- item 5: other packs' patches on the same blocks keep working ---------------------------------------------------
@pytest.mark.parametrize("kind", ["last_block", "out"])
@pytest.mark.parametrize("foreign_first", [True, False], ids=["foreign-then-facesnap", "facesnap-then-foreign"])
def test_another_packs_patch_on_the_last_block_coexists(host, calls, kind, foreign_first):
    foreign = pack_module(host, "FaceSnapTestForeignPatch", "tiny_models").ForeignLayer
    foreign.calls = 0
    g = base_graph(steps=1)
    loader = add_loader(g)
    add_apply(g, loader)
    if foreign_first:
        add_model_node(g, "foreign", "FaceSnapTestForeignPatch", kind=kind)
    add_injector(g, loader)
    if not foreign_first:
        add_model_node(g, "foreign", "FaceSnapTestForeignPatch", kind=kind)
    host.run(g)
    per_call = injections_per_unet_call(calls)
    assert set(per_call) == {POINTS}, f"injections per UNet call: {per_call}"
    assert foreign.calls == len(per_call), "the other pack's layer must run once per UNet call"


# --- item 6: loader cache and dtype ----------------------------------------------------------------------------------
def test_loader_dtype_option_casts_mixer_and_ffrnet_together(host, tmp_path):
    from safetensors.torch import load_file, save_file

    import comfy.model_management
    import folder_paths

    source = folder_paths.get_full_path("facesnap", "tiny_facesnap.safetensors")
    half = tmp_path / "tiny_fp16.safetensors"
    from safetensors import safe_open

    with safe_open(source, framework="pt") as f:
        metadata = f.metadata()
    save_file({k: v.half() for k, v in load_file(source).items()}, str(half), metadata=metadata)  # an fp16 file
    folder_paths.add_model_folder_path("facesnap", str(tmp_path), is_default=True)
    auto = comfy.model_management.unet_dtype(comfy.model_management.get_torch_device(), weight_dtype=torch.float16)
    auto = comfy.model_management.unet_manual_cast(auto, comfy.model_management.get_torch_device()) or auto
    for dtype, expected in (("auto", auto), ("bf16", torch.bfloat16), ("fp32", torch.float32)):
        g = base_graph(steps=1)
        add_apply(g, add_loader(g, half.name, node="loader", dtype=dtype))
        bundle = cached(host.run(g), "loader")
        dtypes = {p.dtype for m in (bundle.mixer, bundle.ffrnet) for p in m.parameters()}
        assert dtypes == {expected}, f"dtype={dtype}: the mixer and FFRNet hold {dtypes}"


@pytest.fixture()
def backbone_files(host, tmp_path, monkeypatch):
    """A FaceSnap file without FFRNet + its diffusers ControlNet backbone in models/controlnet; records file reads."""
    import json

    from safetensors.torch import save_file

    import folder_paths

    from comfy_test_nodes.tiny_models import tiny_facesnap_models
    from comfyui_facesnap.models.identity.facesnap.checkpoint import save_facesnap

    reads = []
    for reader in ("models.identity.facesnap.checkpoint", "models.identity.diffusers_controlnet"):
        module = pack_module(host, "FaceSnapModelLoader", reader)
        read = module.read_tensors
        monkeypatch.setattr(module, "read_tensors", lambda path, interrupt=None, read=read:
                            reads.append(os.path.basename(path)) or read(path, interrupt))
    mixer, ffrnet = tiny_facesnap_models(seed=5)
    backbone = {k: v for k, v in ffrnet.state_dict().items() if not k.startswith("id_injector.")}
    controlnets = tmp_path / "controlnet"
    controlnets.mkdir()
    save_facesnap(str(tmp_path / "heads_only.safetensors"), mixer, ffrnet, include_backbone=False)
    metadata = {"config": json.dumps(ffrnet.config.diffusers_kwargs())}
    path = controlnets / "tiny_backbone.safetensors"
    save_file(backbone, str(path), metadata=metadata)
    folder_paths.add_model_folder_path("facesnap", str(tmp_path), is_default=True)  # first: same names as before
    folder_paths.add_model_folder_path("controlnet", str(controlnets), is_default=True)

    def rewrite_backbone():
        stat = os.stat(path)
        save_file({k: v + 0.01 for k, v in backbone.items()}, str(path), metadata=metadata)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))

    def graph(both=True):
        g = base_graph(steps=1)
        if both:
            add_apply(g, add_loader(g, node="first"), person=10)
        add_apply(g, add_loader(g, "heads_only.safetensors", node="second", controlnet_name=path.name), person=11)
        return g

    return graph, reads, rewrite_backbone


def test_two_loaders_in_one_graph_do_not_evict_each_other(host, backbone_files):
    graph, reads, _ = backbone_files
    g = graph()
    alive = host.run(g)  # a fresh executor each run; this one keeps its outputs alive, as a server's cache does
    assert {"heads_only.safetensors", "tiny_backbone.safetensors"} <= set(reads)
    reads.clear()
    again = host.run(g)
    assert reads == [], "two loaders in one graph must not evict each other"
    assert cached(again, "first") is cached(alive, "first") and cached(again, "second") is cached(alive, "second")


def test_a_changed_backbone_file_is_loaded_again(host, backbone_files):
    graph, reads, rewrite_backbone = backbone_files
    alive = host.run(graph(both=False))
    rewrite_backbone()  # same FaceSnap file; the ControlNet it names changed
    reads.clear()
    changed = host.run(graph(both=False))
    assert sorted(reads) == ["heads_only.safetensors", "tiny_backbone.safetensors"], reads
    assert cached(changed, "second") is not cached(alive, "second")


def test_a_bad_dtype_is_a_named_error(host):
    loader = host.node_classes["FaceSnapModelLoader"]
    node_error = pack_module(host, "FaceSnapModelLoader", "nodes.errors").FaceSnapNodeError
    with pytest.raises(node_error, match=r"\[FaceSnapModelLoader\] dtype = 'fp8' is not one of its choices"):
        loader.execute("tiny_facesnap.safetensors", "(FFRNet inside the FaceSnap file)", dtype="fp8")
