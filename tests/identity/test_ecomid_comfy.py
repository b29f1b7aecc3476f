"""EcomID through ComfyUI's real executor on the tiny SDXL: its loader (InstantID's Resampler, PuLID v1, its
IdentityNet), encode (both token sets in one identity), apply (IdentityNet on the conditioning + PuLID's attention on
the MODEL) with EcomID's settings; stacking, re-runs, Save/Load/Blend, refusals, full-size synthetic files."""

from __future__ import annotations

import pytest
import torch

from identity_graphs import add_stock_controlnet, base_graph, cached, latent, pack_module
from instantid_graphs import use_identity_folder
from pulid_graphs import (
    V1_1_FILE,
    V1_FILE,
    add_apply_ecomid,
    add_apply_pulid,
    add_ecomid_encode,
    add_ecomid_loader,
    add_pulid_encode,
    add_pulid_loader,
    prepare_pulid_host,
)
from unet_calls import TINY_SITES, per_unet_call

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def host(comfy_host, insightface_images, tmp_path_factory):
    return prepare_pulid_host(comfy_host, insightface_images, tmp_path_factory)


def ecomid_graph(weight: float = 0.8, steps: int = 2, **apply) -> dict:
    g = base_graph(steps=steps)
    loader = add_ecomid_loader(g)
    add_apply_ecomid(g, loader, add_ecomid_encode(g, loader), weight=weight, node="apply", **apply)
    return g


@pytest.fixture()
def identitynet_contexts(host, monkeypatch) -> list:
    ffrnet = pack_module(host, "FaceSnapApplyEcomID", "models.identity.sdxl_controlnet").SDXLControlNet
    contexts = []
    forward = ffrnet.forward
    monkeypatch.setattr(ffrnet, "forward", lambda self, *a, **k: contexts.append(k["context"].float())
                        or forward(self, *a, **k))
    return contexts


def test_identitynet_reads_the_control_tokens_and_the_unet_the_attention_tokens(host, monkeypatch, layer_calls,
                                                                               identitynet_contexts):
    term = pack_module(host, "FaceSnapApplyEcomID", "comfy_glue.methods.pulid").IDAttentionTerm
    attention = []
    call = term.__call__
    monkeypatch.setattr(term, "__call__", lambda self, layer, q, tokens, *a: attention.append(
        (tokens.float(), self.projection, self.share)) or call(self, layer, q, tokens, *a))
    executor = host.run(ecomid_graph())
    identity = cached(executor, "encode_ecomid_tom")
    assert identity.encoder == "ecomid-resampler+pulid-v1" and identity.cond.shape == (1, 16 + 10, 64)
    for keys in per_unet_call(layer_calls):
        assert sorted(keys) == sorted(TINY_SITES)
    control = {"cond": identity.cond[0, :16], "uncond": identity.uncond[0, :16]}
    rows = {name for context in identitynet_contexts for row in context for name, ref in control.items()
            if torch.allclose(row, ref, atol=1e-5)}
    assert rows == {"cond", "uncond"}, "IdentityNet reads the Resampler's cond and uncond tokens"
    noise = 0.35 * torch.rand(1, 8, 64, generator=torch.Generator().manual_seed(0))  # EcomID's simple node
    wanted = {"cond": torch.cat([identity.cond[:, 16:], noise], 1)[0],
              "uncond": torch.cat([identity.uncond[:, 16:], noise], 1)[0]}
    seen = set()
    for tokens, projection, share in attention:
        assert (projection, share) == ("ortho_v2", "cubiq"), "fidelity with cubiq's share, as EcomID's node"
        seen |= {name for row in tokens for name, ref in wanted.items() if torch.allclose(row, ref, atol=1e-6)}
    assert seen == {"cond", "uncond"}


def test_encode_joins_instantids_resampler_and_pulid_v1(host):
    """The identity's two parts are what InstantID's Resampler and PuLID v1 make of the same face on their own."""
    g = ecomid_graph()
    pulid = add_pulid_loader(g, V1_FILE)
    g["encode_pulid"] = dict(g["encode_ecomid_tom"], class_type="FaceSnapPuLIDEncode")
    g["encode_pulid"]["inputs"] = dict(g["encode_ecomid_tom"]["inputs"], pulid=[pulid, 0])
    del g["encode_pulid"]["inputs"]["ecomid"]
    add_apply_pulid(g, pulid, "encode_pulid")
    executor = host.run(g)
    ecomid, pulid_identity, bundle = (cached(executor, n) for n in ("encode_ecomid_tom", "encode_pulid", "ecomid"))
    torch.testing.assert_close(ecomid.cond[:, 16:], pulid_identity.cond)
    torch.testing.assert_close(ecomid.uncond[:, 16:], pulid_identity.uncond)  # both from 0.35 x noise, seed 0
    weights = pack_module(host, "FaceSnapApplyEcomID", "models.identity.instantid.weights")
    expected = weights.resampler_identity(bundle.resampler, ecomid.id_embedding[None], 0.35)
    torch.testing.assert_close(ecomid.cond[:, :16], expected.cond)
    torch.testing.assert_close(ecomid.uncond[:, :16], expected.uncond)
    assert ecomid.weights_key == bundle.weights_key and ecomid.model_name == bundle.name


def test_methods_weights_and_advanced_settings_change_the_output(host):
    session = host.session()
    plain = latent(session.run(base_graph()))
    runs = {method: latent(session.run(ecomid_graph(method=method))) for method in ("fidelity", "style", "neutral")}
    runs["ip only"] = latent(session.run(ecomid_graph(advanced={"cn_strength": 0.0})))
    runs["cn only"] = latent(session.run(ecomid_graph(weight=0.0, advanced={"cn_strength": 0.8})))
    runs["advanced"] = latent(session.run(ecomid_graph(advanced={})))
    runs["zero noise"] = latent(session.run(ecomid_graph(advanced={"zero_token_noise": 0.35})))
    runs["positive only"] = latent(session.run(ecomid_graph(advanced={"positive_only": True})))
    assert torch.equal(runs["zero noise"], runs["fidelity"]), "the simple node: one weight, 0.35 zero-token noise"
    del runs["zero noise"]
    names = list(runs)
    for i, a in enumerate(names):
        assert not torch.equal(runs[a], plain), a
        for b in names[i + 1:]:
            assert not torch.equal(runs[a], runs[b]), f"{a} and {b} give the same latent"
    assert torch.equal(latent(session.run(ecomid_graph(weight=0.0))), plain), "weight 0: nothing applied"


def test_reruns_are_bit_identical_and_stack_with_a_stock_controlnet(host, layer_calls):
    first = latent(host.session().run(ecomid_graph()))
    assert torch.equal(latent(host.session().run(ecomid_graph())), first)
    g = ecomid_graph(steps=1)
    add_stock_controlnet(g)
    stacked = latent(host.run(g))
    assert not torch.equal(stacked, latent(host.run(ecomid_graph(steps=1))))
    assert all(sorted(keys) == sorted(TINY_SITES) for keys in per_unet_call(layer_calls))


def test_a_dynamic_vram_model_samples_without_its_delegate(host, delegates_asked):
    g = ecomid_graph()
    plain = latent(host.session().run(g))
    g["dynamic"] = {"class_type": "FaceSnapTestDynamicModel", "inputs": {"model": ["model", 0]}}
    g["apply"]["inputs"]["model"] = ["dynamic", 0]
    executor = host.session().run(g)
    assert cached(executor, "apply").is_dynamic() and delegates_asked() == 0
    assert torch.equal(latent(executor), plain)


def test_a_saved_ecomid_identity_loads_applies_the_same_and_blends(host, tmp_path):
    use_identity_folder(tmp_path)
    g = ecomid_graph()
    g["save_identity"] = {"class_type": "FaceSnapSaveIdentity",
                          "inputs": {"identity": ["encode_ecomid_tom", 0], "name": "ecomid_tom", "overwrite": True}}
    direct = latent(host.session().run(g))
    del g["save_identity"]
    g["encode_ecomid_tom"] = {"class_type": "FaceSnapLoadIdentity",
                              "inputs": {"identity_name": "ecomid_tom.safetensors"}}
    assert torch.equal(latent(host.session().run(g)), direct)
    g["blend"] = {"class_type": "FaceSnapBlendIdentities", "inputs": {
        "identity_a": ["encode_ecomid_tom", 0], "identity_b": [add_ecomid_encode(g, "ecomid", "t1"), 0],
        "weight": 0.0}}
    g["apply"]["inputs"]["identity"] = ["blend", 0]
    assert torch.equal(latent(host.session().run(g)), direct), "a blend with weight 0 is the first identity"
    g["blend"]["inputs"]["identity_b"] = [add_pulid_encode(g, add_pulid_loader(g), "t1"), 0]
    message = host.error_message(host.run(g, expect_success=False))
    assert "[FaceSnapBlendIdentities]" in message and "pulid-v1-idencoder" in message, message


@pytest.mark.parametrize("case", ["pulid v1.1", "pulid identity", "ecomid to pulid", "wrong controlnet", "window"])
def test_wrong_files_and_identities_are_named(host, case):
    g = ecomid_graph()
    if case == "pulid v1.1":
        g["ecomid"]["inputs"]["pulid_file"] = V1_1_FILE
        expected = ["[FaceSnapEcomIDLoader]", "PuLID v1's ID attention", "v1.1"]
    elif case == "pulid identity":
        g["apply"]["inputs"]["identity"] = [add_pulid_encode(g, add_pulid_loader(g)), 0]
        expected = ["[FaceSnapApplyEcomID]", "PuLID v1's ID encoder", "EcomID encode node"]
    elif case == "ecomid to pulid":
        add_apply_pulid(g, add_pulid_loader(g), "encode_ecomid_tom", node="pulid_apply")
        expected = ["[FaceSnapApplyPuLID]", "EcomID's encoders"]
    elif case == "wrong controlnet":  # InstantID's tiny IdentityNet reads 48-wide tokens
        g["ecomid"]["inputs"]["controlnet_name"] = "tiny_identitynet.safetensors"
        expected = ["[FaceSnapEcomIDLoader]", "one token width", "the ControlNet 48"]
    else:
        g["apply"]["inputs"].update(start_percent=0.9, end_percent=0.5)
        expected = ["[FaceSnapApplyEcomID]", "end_percent 0.5 is before start_percent 0.9"]
    executor = host.run(g, expect_success=False)
    message = host.error_message(executor)
    assert all(part in message for part in expected), message


def test_full_size_published_files_load_through_the_loader_node(host, tmp_path):
    """InstantID's ip-adapter.bin, ip-adapter_pulid_sdxl_fp16.safetensors and SDXL-EcomID's single-file IdentityNet
    with the published names and shapes (zero-filled, sparse), loaded in fp16: the Resampler alone is kept of
    InstantID's file."""
    import diffusers

    import folder_paths

    from instantid_files import identitynet_config, published_shapes
    from pulid_files import write_published
    from weight_files import write_sparse_safetensors, zero_views

    for folder in ("instantid", "pulid", "controlnet"):
        (tmp_path / folder).mkdir()
        folder_paths.add_model_folder_path(folder, str(tmp_path / folder), is_default=True)
    torch.save(zero_views(published_shapes()), tmp_path / "instantid" / "ip-adapter.bin")
    write_published(tmp_path / "pulid" / "ip-adapter_pulid_sdxl_fp16.safetensors", "v1", False)
    with torch.device("meta"):
        reference = diffusers.ControlNetModel(**identitynet_config())
    write_sparse_safetensors(tmp_path / "controlnet" / "ecomid_identitynet.safetensors",
                             {k: tuple(v.shape) for k, v in reference.state_dict().items()}, "F16")
    if "PreviewAny" not in host.node_classes:
        host.load_builtin_nodes("nodes_preview_any.py")
    g = {"loader": {"class_type": "FaceSnapEcomIDLoader", "inputs": {
        "instantid_file": "ip-adapter.bin", "pulid_file": "ip-adapter_pulid_sdxl_fp16.safetensors",
        "controlnet_name": "ecomid_identitynet.safetensors", "dtype": "fp16"}},
        "show": {"class_type": "PreviewAny", "inputs": {"source": ["loader", 0]}}}
    bundle = cached(host.run(g), "loader")
    counts = (sum(p.numel() for p in bundle.resampler.parameters()),
              sum(p.numel() for p in bundle.pulid.adapter.parameters()),
              sum(p.numel() for p in bundle.identitynet.parameters()))
    print(f"\nfull-size EcomID through the loader node: Resampler {counts[0]:,}, PuLID v1 {counts[1]:,}, "
          f"IdentityNet {counts[2]:,} parameters")
    assert counts == (81_978_624, 395_673_600, 1_251_014_160)
    assert (bundle.control_tokens, bundle.attention_tokens) == (16, 10) and len(bundle.pulid.ip_layers) == 70
