"""PuLID (v1 and v1.1) through ComfyUI's real executor on the tiny SDXL: EVA-CLIP, face parser and PuLID loaders,
encode (one face per photo, parsed, through the tiny EVA tower), PuLID's ID attention on the MODEL in every mode,
stacked with a second identity, a stock ControlNet and on a dynamic-VRAM MODEL; identities saved, loaded, blended;
wrong files and identities refused by name; full-size synthetic files through the loader nodes."""

from __future__ import annotations

import pytest
import torch

from identity_graphs import (
    add_stock_controlnet,
    base_graph,
    cached,
    latent,
    pack_module,
    sdxl_attn2_keys,
    sdxl_meta_patcher,
)
from instantid_graphs import (
    add_apply_instantid,
    add_encode,
    add_faces,
    add_instantid_loader,
    use_identity_folder,
)
from pulid_graphs import (
    EVA_FILE,
    PARSER_FILE,
    V1_1_FILE,
    V1_FILE,
    add_apply_pulid,
    add_feature_loaders,
    add_pulid_encode,
    add_pulid_loader,
    prepare_pulid_host,
)
from unet_calls import TINY_SITES, per_unet_call

pytestmark = pytest.mark.comfy
VERSIONS = {"v1": V1_FILE, "v1.1": V1_1_FILE}


@pytest.fixture(scope="module")
def host(comfy_host, insightface_images, tmp_path_factory):
    return prepare_pulid_host(comfy_host, insightface_images, tmp_path_factory)


def pulid_graph(name: str = V1_FILE, weight: float = 0.8, steps: int = 2, person: str = "tom", **apply) -> dict:
    g = base_graph(steps=steps)
    loader = add_pulid_loader(g, name)
    add_apply_pulid(g, loader, add_pulid_encode(g, loader, person), weight=weight, node="apply", **apply)
    return g


def glue(host, module: str = "comfy_glue.methods.pulid"):
    return pack_module(host, "FaceSnapApplyPuLID", module)


def recorded_terms(host, monkeypatch) -> list:
    """Every call of PuLID's term: (tokens, mask, projection, share, cond_or_uncond of the chunk rows)."""
    term = glue(host).IDAttentionTerm
    calls = []
    original = term.__call__

    def recording(self, layer, q, tokens, heads, weight, mask, text_out):
        calls.append((tokens.float(), mask, self.projection, self.share))
        return original(self, layer, q, tokens, heads, weight, mask, text_out)

    monkeypatch.setattr(term, "__call__", recording)
    return calls


@pytest.mark.parametrize("version", VERSIONS)
def test_every_id_attention_patch_is_hit_once_per_unet_call(host, layer_calls, version):
    host.run(pulid_graph(VERSIONS[version]))
    calls = per_unet_call(layer_calls)
    assert calls, "the UNet never ran"
    for keys in calls:
        assert sorted(keys) == sorted(TINY_SITES), f"ID attention patches hit per UNet call: {keys}"


@pytest.mark.parametrize("version", ["v1", "v1.1"])
def test_full_size_pulid_patches_all_70_sdxl_cross_attentions(host, version):
    ip_patch = glue(host, "comfy_glue.ip_attention_patch")
    adapter_module = glue(host, "models.identity.pulid.adapter")
    model = sdxl_meta_patcher()
    with torch.device("meta"):
        adapter = adapter_module.PuLIDAdapter(version)
    tokens = torch.zeros(1, 10, 2048)
    patched = ip_patch.patch_model_with_ip_attention(
        model, layers=adapter.ip_adapter, layers_patcher=None, layers_key="k", cond=tokens, uncond=tokens, weight=1.0,
        term=glue(host).IDAttentionTerm("ortho_v2", "official"))
    keys = set(patched.model_options["transformer_options"]["patches_replace"]["attn2"])
    assert len(keys) == 70 and keys == sdxl_attn2_keys(model)
    assert {k for k in keys if k[0] == "middle"} == {("middle", 0, t) for t in range(10)}


@pytest.mark.parametrize("version", VERSIONS)
def test_encode_is_the_models_pipeline_on_the_crop_nodes_face(host, version):
    """The node's tokens equal the models-layer pipeline run by hand on the crop node's face: aligned from the photo
    with its five keypoints, parsed, grey on white, EVA-CLIP, the ID encoder with the raw ArcFace embedding."""
    import folder_paths

    from comfyui_facesnap.devkit.comfy_host import cached_output
    from comfyui_facesnap.models.face_analysis.face_parsing import load_face_parser
    from comfyui_facesnap.models.identity.pulid.eva_clip_vision import eva_clip_input
    from comfyui_facesnap.models.identity.pulid.eva_clip_weights import load_eva_clip_vision
    from comfyui_facesnap.models.identity.pulid.face_input import pulid_face_images
    from comfyui_facesnap.models.identity.pulid.weights import load_pulid
    from comfyui_facesnap.models.identity.reference_faces import arcface_embeddings

    g = pulid_graph(VERSIONS[version], person="t1")
    executor = host.run(g)
    identity, faces = cached(executor, "encode_pulid_t1"), cached_output(executor, "faces_t1_insightface", 1)
    largest = 0
    parser = load_face_parser(folder_paths.get_full_path("facexlib", PARSER_FILE))
    tower = load_eva_clip_vision(folder_paths.get_full_path("text_encoders", EVA_FILE))
    adapter = load_pulid(folder_paths.get_full_path("pulid", VERSIONS[version]))
    grey = pulid_face_images([faces.images[largest]], [faces.records[largest].kps5], parser)
    eva = tower(eva_clip_input(grey, tower.config.image_size))
    arcface = arcface_embeddings(type(faces)([faces.records[largest]], [faces.images[largest]]), raw=True)
    expected = adapter.encode_identity(arcface, eva.embedding, eva.hidden_states)
    assert identity.encoder == expected.encoder == {"v1": "pulid-v1-idencoder", "v1.1": "pulid-v1.1-idformer"}[version]
    assert identity.num_references == 1 and identity.weights_key == adapter.weights_key
    torch.testing.assert_close(identity.cond, expected.cond, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(identity.uncond, expected.uncond, atol=1e-5, rtol=1e-4)
    assert identity.model_name == VERSIONS[version]


def test_each_mode_changes_the_output_and_default_is_the_files_official_one(host):
    session = host.session()
    plain = latent(session.run(base_graph()))
    runs = {method: latent(session.run(pulid_graph(method=method))) for method in ("default", "fidelity", "style",
                                                                                   "neutral")}
    runs["cubiq share"] = latent(session.run(pulid_graph(advanced={"share": "cubiq"})))
    runs["noise"] = latent(session.run(pulid_graph(advanced={"zero_token_noise": 0.5})))
    runs["20 zeros"] = latent(session.run(pulid_graph(advanced={"num_zero_tokens": 20})))
    runs["v1.1 default"] = latent(session.run(pulid_graph(V1_1_FILE, method="default")))
    runs["v1.1 20 zeros"] = latent(session.run(pulid_graph(V1_1_FILE, advanced={"num_zero_tokens": 20})))
    assert torch.equal(runs.pop("default"), runs["fidelity"]), "v1's default is fidelity (8 zeros, ortho_v2)"
    assert torch.equal(runs.pop("v1.1 default"), runs["v1.1 20 zeros"]), "v1.1's default: 20 zeros, ortho_v2"
    assert torch.equal(latent(session.run(pulid_graph(advanced={}))), runs["fidelity"]), "Advanced's defaults"
    names = list(runs)
    for i, a in enumerate(names):
        assert not torch.equal(runs[a], plain), a
        for b in names[i + 1:]:
            assert not torch.equal(runs[a], runs[b]), f"{a} and {b} give the same latent"


@pytest.mark.parametrize("method, zeros, projection", [("fidelity", 8, "ortho_v2"), ("style", 16, "ortho"),
                                                       ("neutral", 0, "none")])
def test_each_chunk_reads_its_own_padded_tokens(host, monkeypatch, method, zeros, projection):
    calls = recorded_terms(host, monkeypatch)
    executor = host.run(pulid_graph(method=method, steps=1))
    identity = cached(executor, "encode_pulid_tom")
    padding = torch.zeros(1, zeros, identity.width)
    wanted = {"cond": torch.cat([identity.cond, padding], 1)[0], "uncond": torch.cat([identity.uncond, padding], 1)[0]}
    seen = set()
    for tokens, _, used_projection, share in calls:
        assert (used_projection, share) == (projection, "official")
        for row in tokens:
            seen |= {name for name, ref in wanted.items() if row.shape == ref.shape and torch.allclose(row, ref)}
    assert seen == {"cond", "uncond"}, "the positive reads the identity, the negative its uncond tokens"


def test_zero_token_noise_pads_both_halves_alike(host, monkeypatch):
    calls = recorded_terms(host, monkeypatch)
    host.run(pulid_graph(steps=1, advanced={"zero_token_noise": 0.5, "num_zero_tokens": 4, "share": "cubiq"}))
    pads = {tuple(row[-4:].flatten().tolist()) for tokens, _, _, share in calls for row in tokens}
    assert len(pads) == 1 and calls[0][3] == "cubiq"
    pad = torch.tensor(next(iter(pads)))
    assert 0 < float(pad.min()) and float(pad.max()) < 0.5


def test_the_patch_adds_pulids_term_to_the_layers_text_output(host):
    from comfy.ldm.modules.attention import optimized_attention

    ip_patch = glue(host, "comfy_glue.ip_attention_patch")
    id_attention = glue(host, "models.identity.pulid.id_attention")
    ip = glue(host, "models.identity.ip_attention")
    g = torch.Generator().manual_seed(0)
    layer = ip.IPAttentionLayer(32, 64).eval()
    cond, uncond = torch.randn(1, 12, 32, generator=g), torch.randn(1, 12, 32, generator=g)
    q, k, v = (torch.randn(4, 64, 64, generator=g) for _ in range(3))
    options = {"n_heads": 4, "cond_or_uncond": [1, 0], "sigmas": torch.full((4,), 5.0)}
    tokens = torch.cat([uncond.expand(2, -1, -1), cond.expand(2, -1, -1)])
    with torch.no_grad():
        text = optimized_attention(q, k, v, 4)
        for projection, share in (("ortho_v2", "official"), ("ortho_v2", "cubiq"), ("ortho", "official")):
            patch = ip_patch.IPAttentionPatch(layer, cond, uncond, 0.7, (10.0, 1.0),
                                              term=glue(host).IDAttentionTerm(projection, share))
            expected = text + id_attention.id_attention_layer(layer, q, text, tokens, 4, 0.7, projection, share)
            torch.testing.assert_close(patch(q, k, v, options), expected)


def test_input_model_untouched_and_reruns_are_bit_identical(host):
    session = host.session()
    plain = latent(session.run(base_graph()))
    runs = [latent(session.run(pulid_graph(weight=w))) for w in (0.8, 0.5, 0.8, 0.0, 0.5, 0.8)]
    assert not torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], plain)
    assert torch.equal(runs[2], runs[0]) and torch.equal(runs[5], runs[0]) and torch.equal(runs[4], runs[1])
    assert torch.equal(runs[3], plain), "weight 0 leaves the graph as it was"
    again = latent(host.session().run(pulid_graph()))  # a fresh executor: loaded and encoded again
    assert torch.equal(again, runs[0])
    model = cached(session.executor, "model")
    assert "patches_replace" not in model.model_options.get("transformer_options", {})
    assert not model.get_additional_models()


def test_the_attention_layers_are_loaded_with_the_model(host):
    executor = host.run(pulid_graph())
    model, bundle = cached(executor, "apply"), cached(executor, "pulid")
    assert any(m.model is bundle.ip_patcher.model for m in model.get_additional_models())


# --- stacking -------------------------------------------------------------------------------------------------------
def test_two_identities_stack_each_with_its_own_mask(host, monkeypatch, layer_calls):
    calls = recorded_terms(host, monkeypatch)
    g = base_graph(steps=1)
    loader = add_pulid_loader(g)
    add_apply_pulid(g, loader, add_pulid_encode(g, loader, "tom"), mask=(0, 0, 64, 128), node="left")
    add_apply_pulid(g, loader, add_pulid_encode(g, loader, "t1"), mask=(64, 0, 64, 128), node="right")
    executor = host.run(g)
    people = {name: cached(executor, f"encode_pulid_{name}") for name in ("tom", "t1")}
    assert not torch.allclose(people["tom"].cond, people["t1"].cond)
    for keys in per_unet_call(layer_calls):
        assert sorted(keys) == sorted(TINY_SITES * 2), keys
    sides = {"tom": 0, "t1": 0}
    for tokens, mask, _, _ in calls:
        person = next(n for n, p in people.items() if any(torch.allclose(row[:10], p.cond[0]) for row in tokens))
        side = int(mask.shape[1] ** 0.5)
        grid = mask.reshape(mask.shape[0], side, side)
        own, other = grid[..., :side // 2 - 1], grid[..., side // 2 + 1:]
        if person == "t1":
            own, other = other, own
        assert float(own.min()) > 0 and float(other.abs().max()) == 0, f"{person}'s mask is not on its half"
        sides[person] += 1
    assert sides["tom"] == sides["t1"] > 0


def test_stacks_with_a_stock_controlnet_and_instantid(host, layer_calls):
    session = host.session()
    g = base_graph(steps=1)
    add_stock_controlnet(g)
    stock_only = latent(session.run(g))
    loader = add_pulid_loader(g)
    add_apply_pulid(g, loader, add_pulid_encode(g, loader))
    layer_calls.clear()
    both = latent(session.run(g))
    assert not torch.equal(both, stock_only)
    assert all(sorted(keys) == sorted(TINY_SITES) for keys in per_unet_call(layer_calls))
    instantid = add_instantid_loader(g)
    add_apply_instantid(g, instantid, add_encode(g, instantid))
    layer_calls.clear()
    three = latent(session.run(g))
    assert not torch.equal(three, both)
    assert all(sorted(keys) == sorted(TINY_SITES * 2) for keys in per_unet_call(layer_calls)), \
        "PuLID's and InstantID's patches both act at every cross-attention"


def test_a_dynamic_vram_model_samples_without_its_delegate(host, delegates_asked):
    g = pulid_graph()
    plain = latent(host.session().run(g))
    g["dynamic"] = {"class_type": "FaceSnapTestDynamicModel", "inputs": {"model": ["model", 0]}}
    g["apply"]["inputs"]["model"] = ["dynamic", 0]
    executor = host.session().run(g)
    patched = cached(executor, "apply")
    assert patched.is_dynamic() and delegates_asked() == 0
    assert torch.equal(latent(executor), plain)


# --- identities as data --------------------------------------------------------------------------------------------
def test_a_saved_pulid_identity_loads_and_samples_the_same(host, tmp_path):
    use_identity_folder(tmp_path)
    for version, name in VERSIONS.items():
        g = pulid_graph(name)
        g["save_identity"] = {"class_type": "FaceSnapSaveIdentity",
                     "inputs": {"identity": ["encode_pulid_tom", 0], "name": f"pulid_{version}", "overwrite": True}}
        direct = latent(host.session().run(g))
        del g["save_identity"]
        g["encode_pulid_tom"] = {"class_type": "FaceSnapLoadIdentity",
                                 "inputs": {"identity_name": f"pulid_{version}.safetensors"}}
        assert torch.equal(latent(host.session().run(g)), direct), version


def test_blend_mixes_pulid_identities_and_refuses_other_encoders(host):
    g = pulid_graph()
    loader = "pulid"
    g["blend"] = {"class_type": "FaceSnapBlendIdentities", "inputs": {
        "identity_a": ["encode_pulid_tom", 0], "identity_b": [add_pulid_encode(g, loader, "t1"), 0], "weight": 0.25}}
    g["apply"]["inputs"]["identity"] = ["blend", 0]
    executor = host.run(g)
    a, b, blend = (cached(executor, n) for n in ("encode_pulid_tom", "encode_pulid_t1", "blend"))
    torch.testing.assert_close(blend.cond, 0.75 * a.cond + 0.25 * b.cond)
    assert blend.num_references == 2 and blend.encoder == "pulid-v1-idencoder"
    for other, label in (("v1.1", "pulid-v1.1-idformer"), ("instantid", "instantid-resampler")):
        if other == "v1.1":
            source = add_pulid_encode(g, add_pulid_loader(g, V1_1_FILE, node="pulid_v1_1"), "t1")
        else:
            source = add_encode(g, add_instantid_loader(g), "t1")
        g["blend"]["inputs"]["identity_b"] = [source, 0]
        message = host.error_message(host.run(g, expect_success=False))
        assert "[FaceSnapBlendIdentities]" in message and label in message and "pulid-v1-idencoder" in message, \
            message


# --- refusals --------------------------------------------------------------------------------------------------------
def _error(host, g) -> str:
    executor = host.run(g, expect_success=False)
    assert not executor.success
    return host.error_message(executor)


@pytest.mark.parametrize("case", ["v1.1 identity", "instantid identity", "pulid to instantid", "other weights",
                                  "sd15", "window", "dlib"])
def test_wrong_identities_models_and_settings_are_named(host, case):
    g = pulid_graph()
    if case == "v1.1 identity":
        g["apply"]["inputs"]["identity"] = [add_pulid_encode(g, add_pulid_loader(g, V1_1_FILE, node="v11")), 0]
        expected = ["[FaceSnapApplyPuLID]", "PuLID v1.1's ID encoder", "PuLID v1 (tiny_pulid_v1.safetensors)"]
    elif case == "instantid identity":
        g["apply"]["inputs"]["identity"] = [add_encode(g, add_instantid_loader(g)), 0]
        expected = ["[FaceSnapApplyPuLID]", "InstantID's Resampler", "PuLID v1 encode node"]
    elif case == "pulid to instantid":
        add_apply_instantid(g, add_instantid_loader(g), "encode_pulid_tom", node="instantid_apply")
        expected = ["[FaceSnapApplyInstantID]", "PuLID v1's ID encoder"]
    elif case == "other weights":
        g["apply"]["inputs"]["identity"] = [add_pulid_encode(g, add_pulid_loader(
            g, "tiny_pulid_v1_other.safetensors", node="other")), 0]
        expected = ["[FaceSnapApplyPuLID]", "tiny_pulid_v1_other.safetensors", "allow_other_weights"]
    elif case == "sd15":
        g["model"]["inputs"]["sd15"] = True
        expected = ["[FaceSnapApplyPuLID]", "PuLID v1 needs SDXL"]
    elif case == "window":
        g["apply"]["inputs"].update(start_percent=0.7, end_percent=0.1)
        expected = ["[FaceSnapApplyPuLID]", "end_percent 0.1 is before start_percent 0.7"]
    else:
        g["encode_pulid_tom"]["inputs"]["faces"] = [add_faces(g, "tom", backend="dlib"), 1]
        expected = ["[FaceSnapPuLIDEncode]", "'dlib'", "insightface"]
    message = _error(host, g)
    assert all(part in message for part in expected), message


def test_other_weights_apply_with_the_advanced_option(host):
    g = pulid_graph(advanced={"allow_other_weights": True})
    g["apply"]["inputs"]["identity"] = [add_pulid_encode(g, add_pulid_loader(
        g, "tiny_pulid_v1_other.safetensors", node="other")), 0]
    assert host.run(g).success


@pytest.mark.parametrize("case", ["instantid as pulid", "pulid as eva", "eva as parser", "hostile pickle"])
def test_wrong_files_are_named_by_the_loaders(host, tmp_path, case):
    import folder_paths

    from instantid_files import published_shapes
    from weight_files import Payload, flat, write_sparse_safetensors

    g = pulid_graph()
    marker = tmp_path / "pwned"
    (tmp_path / "pulid").mkdir()
    folder_paths.add_model_folder_path("pulid", str(tmp_path / "pulid"))
    if case == "instantid as pulid":
        write_sparse_safetensors(tmp_path / "pulid" / "ip-adapter.safetensors", flat(published_shapes()))
        g["pulid"]["inputs"]["pulid_file"] = "ip-adapter.safetensors"
        expected = ["[FaceSnapPuLIDLoader]", "InstantID's ip-adapter", "models/instantid"]
    elif case == "pulid as eva":
        g["eva"]["inputs"]["eva_clip_file"] = V1_FILE
        folder_paths.add_model_folder_path("text_encoders", folder_paths.get_folder_paths("pulid")[0])
        expected = ["[FaceSnapEVACLIPLoader]", "not the EVA-CLIP vision tower"]
    elif case == "eva as parser":
        g["parser"]["inputs"]["parser_file"] = EVA_FILE
        folder_paths.add_model_folder_path("facexlib", folder_paths.get_folder_paths("text_encoders")[0])
        expected = ["[FaceSnapFaceParserLoader]", "not facexlib's BiSeNet face parser"]
    else:
        torch.save({"id_adapter": {"body.0.weight": Payload(marker)}}, tmp_path / "pulid" / "hostile.bin")
        g["pulid"]["inputs"]["pulid_file"] = "hostile.bin"
        expected = ["[FaceSnapPuLIDLoader]", "refused"]
    message = _error(host, g)
    assert all(part in message for part in expected), message
    assert not marker.exists()
    assert not any(w in message for w in ("weights_only=False", "trust", "safe_globals"))


# --- both published layouts, tiny and full size -----------------------------------------------------------------------
@pytest.mark.parametrize("version", VERSIONS)
def test_both_published_layouts_load_through_the_node_and_encode_alike(host, version):
    g = base_graph(steps=1)
    converted = add_pulid_encode(g, add_pulid_loader(g, VERSIONS[version], node="converted"))
    official = add_pulid_encode(g,
                                add_pulid_loader(g, VERSIONS[version].replace(".safetensors", "_official.safetensors"),
                                                    node="official"))
    add_apply_pulid(g, "converted", converted)
    add_apply_pulid(g, "official", official)
    executor = host.run(g)
    a, b = cached(executor, converted), cached(executor, official)
    assert a.weights_key == b.weights_key and torch.equal(a.cond, b.cond) and torch.equal(a.uncond, b.uncond)
    assert cached(executor, "official").version == {"v1": "v1", "v1.1": "v1.1"}[version]


FULL_SIZE = {"pulid_v1.bin": ("v1", True, 395_673_600), "pulid_v1.1.safetensors": ("v1.1", True, 492_185_600),
             "ip-adapter_pulidv1.1_sdxl_fp16.safetensors": ("v1.1", False, 492_185_600)}


@pytest.mark.parametrize("name", FULL_SIZE)
def test_full_size_published_files_load_through_the_loader_nodes(host, tmp_path, name):
    """PuLID files with the published names and shapes (zero-filled, written sparsely or as views of one storage),
    EVA02_CLIP_L_336_psz14_s6B.pt with the official CLIP's names and shapes, and facexlib's parser, through the
    three loader nodes."""
    import folder_paths

    from pulid_files import write_published
    from reference_fixtures import load_reference
    from weight_files import zeros

    version, official, parameters = FULL_SIZE[name]
    for folder in ("pulid", "clip", "facexlib"):
        (tmp_path / folder).mkdir()
        folder_paths.add_model_folder_path(folder, str(tmp_path / folder), is_default=True)
    write_published(tmp_path / "pulid" / name, version, official)
    clip = {k: tuple(v) for k, v in load_reference("pulid_eva_clip_reference.safetensors")[2]["clip_layout"].items()}
    torch.save(zeros(clip), tmp_path / "clip" / "EVA02_CLIP_L_336_psz14_s6B.pt")
    parser = {k: tuple(v) for k, v in
              load_reference("pulid_face_input_reference.safetensors")[2]["official_shapes"].items()}
    torch.save(zeros(parser, torch.float32), tmp_path / "facexlib" / PARSER_FILE)
    g = {"pulid": {"class_type": "FaceSnapPuLIDLoader", "inputs": {"pulid_file": name, "dtype": "fp16"}}}
    add_feature_loaders(g)
    g["eva"]["inputs"].update(eva_clip_file="EVA02_CLIP_L_336_psz14_s6B.pt", dtype="fp16")
    if "PreviewAny" not in host.node_classes:
        host.load_builtin_nodes("nodes_preview_any.py")
    for node in ("pulid", "eva", "parser"):  # an output node, so that ComfyUI runs the loaders
        g[f"show_{node}"] = {"class_type": "PreviewAny", "inputs": {"source": [node, 0]}}
    executor = host.run(g)
    bundle, eva, parser_bundle = (cached(executor, n) for n in ("pulid", "eva", "parser"))
    count = sum(p.numel() for p in bundle.adapter.parameters())
    print(f"\nfull-size {name} through the loader node: {count:,} parameters, EVA tower "
          f"{sum(p.numel() for p in eva.tower.parameters()):,}, parser "
          f"{sum(p.numel() for p in parser_bundle.parser.parameters()):,}")
    assert bundle.version == version and count == parameters and len(bundle.ip_layers) == 70
    assert {p.dtype for p in bundle.adapter.parameters()} == {torch.float16}
    assert eva.tower.pos_embed.shape == (1, 577, 1024) and eva.tower.head.weight.shape == (768, 1024)
    assert {p.dtype for p in parser_bundle.parser.parameters()} == {torch.float32}
