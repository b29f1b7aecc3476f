"""Identities as data through ComfyUI's executor: FaceSnap Attribute Mixer, the identity apply nodes (the face-feature
apply nodes they replace keep running, bit for bit), Save / Load / Blend Identity for FaceSnap and InstantID identities,
and names that would leave the identity folder."""

from __future__ import annotations

import copy

import pytest
import torch

from identity_graphs import (
    add_apply,
    add_loader,
    base_graph,
    cached,
    latent,
    pack_module,
)
from instantid_graphs import (
    add_apply_instantid,
    add_encode,
    add_instantid_loader,
    use_identity_folder,
)

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def host(identity_host):
    return identity_host


@pytest.fixture()
def identities(tmp_path):
    folder = tmp_path / "identities"
    use_identity_folder(folder)
    return folder


def mixer_graph(advanced: bool = False, person: int = 10, **settings) -> dict:
    """Face features -> FaceSnap Attribute Mixer -> FaceSnap Apply Identity (Advanced) -> KSampler."""
    g = base_graph()
    loader = add_loader(g, node="loader")
    apply = add_apply(g, loader, person=person, node="apply")
    inputs = g[apply]["inputs"]
    g["mixer"] = {"class_type": "FaceSnapAttributeMixer",
                  "inputs": {"facesnap_model": [loader, 0], "face_features": inputs.pop("face_features")}}
    inputs["identity"] = ["mixer", 0]
    g[apply]["class_type"] = "FaceSnapApplyIdentity"
    if advanced:
        _make_advanced(g[apply], "FaceSnapApplyIdentityAdvanced", **settings)
    return g


def _make_advanced(node: dict, class_type: str, **settings):
    node["class_type"] = class_type
    inputs = node["inputs"]
    inputs["cond_strength"] = inputs.pop("strength")
    inputs.update(uncond_strength=0.5, uncond_noise=0.1, **settings)


def test_identity_path_equals_the_face_feature_nodes_it_replaces(host):
    session = host.session()
    old = base_graph()
    add_apply(old, add_loader(old, node="loader"), node="apply")  # FaceSnap Apply FFRNet, as saved workflows have it
    assert torch.equal(latent(session.run(old)), latent(session.run(mixer_graph())))
    identity, bundle = cached(session.executor, "mixer"), cached(session.executor, "loader")
    _make_advanced(old["apply"], "FaceSnapApplyFFRNetAdvanced")
    assert torch.equal(latent(session.run(old)), latent(session.run(mixer_graph(advanced=True, positive_only=False))))
    assert identity.encoder == "facesnap-mixer" and identity.num_references == 1
    features = pack_module(host, "FaceSnapTestFaceFeatures", "tiny_models").tiny_face_features(10)
    assert torch.equal(identity.cond, bundle.run_mixer(*features.batched()))
    for node_id in ("FaceSnapApplyFFRNet", "FaceSnapApplyFFRNetAdvanced"):
        assert host.node_classes[node_id].GET_SCHEMA().is_deprecated, f"{node_id} stays loadable but hidden"


def _save(g: dict, source: str, name: str, overwrite: bool = True) -> None:
    g[f"save_{name}"] = {"class_type": "FaceSnapSaveIdentity",
                         "inputs": {"identity": [source, 0], "name": name, "overwrite": overwrite}}


@pytest.mark.parametrize("kind", ["facesnap", "instantid"])
def test_a_saved_identity_loads_without_photos_or_face_models_and_samples_the_same(host, identities, kind):
    if kind == "facesnap":
        g, source = mixer_graph(), "mixer"
    else:
        g = base_graph()
        loader = add_instantid_loader(g)
        source = add_encode(g, loader)
        add_apply_instantid(g, loader, source)
    _save(g, source, "people/alice")
    session = host.session()
    direct = latent(session.run(g))
    saved = identities / "people" / "alice.safetensors"
    assert saved.is_file() and saved.stat().st_size < 200_000
    reloaded = dict(g)
    reloaded[source] = {"class_type": "FaceSnapLoadIdentity", "inputs": {"identity_name": "people/alice.safetensors"}}
    del reloaded["save_people/alice"]  # the encoder's inputs stay in the graph, unused: ComfyUI never runs them
    assert torch.equal(latent(host.session().run(reloaded)), direct)  # a fresh executor, nothing cached
    loaded = cached(host.run(reloaded), source)
    original = cached(session.executor, source)
    assert loaded.encoder == original.encoder and loaded.weights_key == original.weights_key
    assert torch.equal(loaded.cond, original.cond) and torch.equal(loaded.uncond, original.uncond)


def test_loading_needs_no_insightface_or_clip(host, identities, monkeypatch):
    g = mixer_graph()
    _save(g, "mixer", "bob")
    host.run(g)
    import builtins

    real_import = builtins.__import__

    def no_face_models(name, *args, **kwargs):
        if name.split(".")[0] in ("insightface", "onnxruntime", "open_clip"):
            raise ImportError(f"{name} is not installed")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_face_models)
    g = {"load": {"class_type": "FaceSnapLoadIdentity", "inputs": {"identity_name": "bob.safetensors"}},
         "save": {"class_type": "FaceSnapSaveIdentity", "inputs": {"identity": ["load", 0], "name": "bob_copy",
                                                                   "overwrite": False}}}
    executor = host.run(g)
    assert cached(executor, "load").describe().endswith("16 x 64 tokens from 1 reference")
    assert (identities / "bob_copy.safetensors").is_file()


def test_blend_mixes_two_identities_of_one_encoder_and_refuses_two_encoders(host, identities):
    g = mixer_graph()
    g["other"] = {"class_type": "FaceSnapTestFaceFeatures", "inputs": {"seed": 11}}
    g["mixer_b"] = {"class_type": "FaceSnapAttributeMixer",
                    "inputs": {"facesnap_model": ["loader", 0], "face_features": ["other", 0]}}
    g["blend"] = {"class_type": "FaceSnapBlendIdentities",
                  "inputs": {"identity_a": ["mixer", 0], "identity_b": ["mixer_b", 0], "weight": 0.25}}
    g["apply"]["inputs"]["identity"] = ["blend", 0]
    executor = host.run(g)
    a, b, blend = (cached(executor, n) for n in ("mixer", "mixer_b", "blend"))
    torch.testing.assert_close(blend.cond, 0.75 * a.cond + 0.25 * b.cond)
    torch.testing.assert_close(blend.uncond, 0.75 * a.uncond + 0.25 * b.uncond)
    assert blend.num_references == 2
    loader = add_instantid_loader(g)
    g["blend"]["inputs"]["identity_b"] = [add_encode(g, loader), 0]
    executor = host.run(g, expect_success=False)
    message = host.error_message(executor)
    assert "[FaceSnapBlendIdentities]" in message and "different spaces" in message, message


def test_an_instantid_identity_is_refused_by_the_facesnap_apply_node(host):
    g = mixer_graph()
    loader = add_instantid_loader(g)
    g["apply"]["inputs"]["identity"] = [add_encode(g, loader), 0]
    message = host.error_message(host.run(g, expect_success=False))
    assert "[FaceSnapApplyIdentity]" in message and "InstantID's Resampler" in message, message


@pytest.mark.parametrize("name", ["../escape", "/etc/evil", "a/../../b", "C:\\evil", "..", "con", "nul.txt",
                                  "", " ", "people//x", ".hidden", "x\x00y", "a/b/", "ok\nline"])
def test_hostile_names_are_refused(host, identities, tmp_path, name):
    data_nodes = pack_module(host, "FaceSnapSaveIdentity", "nodes.identity_data_nodes")
    errors = pack_module(host, "FaceSnapSaveIdentity", "nodes.errors")
    identity = pack_module(host, "FaceSnapSaveIdentity", "models.identity.identity").Identity(
        cond=torch.zeros(1, 4, 8), uncond=torch.zeros(1, 4, 8), encoder="facesnap-mixer")
    with pytest.raises(errors.FaceSnapNodeError, match=r"\[FaceSnapSaveIdentity\] identity name .* not allowed"):
        data_nodes.FaceSnapSaveIdentity.execute(identity, name, True)
    with pytest.raises(errors.FaceSnapNodeError, match=r"\[FaceSnapLoadIdentity\]"):
        data_nodes.FaceSnapLoadIdentity.execute(name + ".safetensors")
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not written, f"nothing may be written: {written}"


def test_save_keeps_existing_files_unless_told_to_overwrite(host, identities):
    g = mixer_graph()
    _save(g, "mixer", "carol", overwrite=False)
    host.run(g)
    g["features_again"] = {"class_type": "FaceSnapTestFaceFeatures", "inputs": {"seed": 12}}
    g["mixer"]["inputs"]["face_features"] = ["features_again", 0]
    host.run(g)
    assert sorted(p.name for p in identities.iterdir()) == ["carol.safetensors", "carol_00001.safetensors"]
    first = (identities / "carol.safetensors").read_bytes()
    g["save_carol"]["inputs"]["overwrite"] = True
    host.run(g)
    assert (identities / "carol.safetensors").read_bytes() != first
    load = pack_module(host, "FaceSnapSaveIdentity", "models.identity.identity").load_identity
    (now, _), (second, _) = (load(str(identities / n)) for n in ("carol.safetensors", "carol_00001.safetensors"))
    assert torch.equal(now.cond, second.cond)


def test_a_rewritten_identity_file_is_loaded_again_in_a_running_server(host, identities):
    identity = pack_module(host, "FaceSnapSaveIdentity", "models.identity.identity")
    people = [identity.Identity(cond=torch.full((1, 4, 8), float(i)), uncond=torch.zeros(1, 4, 8),
                                encoder="facesnap-mixer") for i in (1, 2)]
    load = {"load": {"class_type": "FaceSnapLoadIdentity", "inputs": {"identity_name": "dave.safetensors"}},
            "blend": {"class_type": "FaceSnapBlendIdentities",
                      "inputs": {"identity_a": ["load", 0], "identity_b": ["load", 0], "weight": 0.5}},
            "save": {"class_type": "FaceSnapSaveIdentity", "inputs": {"identity": ["blend", 0], "name": "copy",
                                                                      "overwrite": True}}}
    session = host.session()
    identity.save_identity(str(identities / "dave.safetensors"), people[0])
    assert torch.equal(cached(session.run(copy.deepcopy(load)), "load").cond, people[0].cond)
    identity.save_identity(str(identities / "dave.safetensors"), people[1])  # replaced while the server runs
    again = session.run(copy.deepcopy(load))  # a server gets each prompt fresh (the executor writes into it)
    assert torch.equal(cached(again, "load").cond, people[1].cond), "the node must notice the new file"


def test_apply_identity_advanced_runs_ffrnet_on_the_positive_only(host, monkeypatch):
    ffrnet = pack_module(host, "FaceSnapApplyIdentity", "models.identity.facesnap.ffrnet").FFRNet
    contexts = []
    forward = ffrnet.forward
    monkeypatch.setattr(ffrnet, "forward", lambda self, *a, **k: contexts.append(k["context"].float())
                        or forward(self, *a, **k))
    executor = host.run(mixer_graph(advanced=True, positive_only=True))
    identity = cached(executor, "mixer")
    rows = [row for context in contexts for row in context]
    assert rows and all(torch.allclose(row, identity.cond[0], atol=1e-5) for row in rows)
