"""InstantID through ComfyUI's real executor on the tiny SDXL: loader, encode, keypoints, IP-attention on the MODEL
and IdentityNet on the conditioning, stacked with a second identity, a foreign attention patch and area conds."""

from __future__ import annotations

import pytest
import torch

from identity_graphs import (
    base_graph,
    cached,
    latent,
    pack_module,
    sdxl_attn2_keys,
    sdxl_meta_patcher,
    setup_face_pipeline,
)
from instantid_graphs import (
    add_apply_instantid,
    add_encode,
    add_faces,
    add_instantid_loader,
    register_instantid_folders,
    use_identity_folder,
)
from unet_calls import TINY_SITES, per_unet_call

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def host(comfy_host, insightface_images, tmp_path_factory):
    setup_face_pipeline(comfy_host, insightface_images, tmp_path_factory.mktemp("insightface"))
    register_instantid_folders(comfy_host, insightface_images, tmp_path_factory.mktemp("instantid"))
    return comfy_host


def instantid_graph(weight=0.8, steps=2, **apply):
    g = base_graph(steps=steps)
    loader = add_instantid_loader(g)
    add_apply_instantid(g, loader, add_encode(g, loader), weight=weight, node="apply", **apply)
    return g


def test_every_ip_layer_is_hit_once_per_unet_call(host, layer_calls):
    host.run(instantid_graph())
    calls = per_unet_call(layer_calls)
    assert calls, "the UNet never ran"
    for keys in calls:
        assert sorted(keys) == sorted(TINY_SITES), f"IP-attention patches hit per UNet call: {keys}"


def test_identitynet_reads_the_identitys_tokens_and_the_model_is_patched(host, monkeypatch):
    identitynet = pack_module(host, "FaceSnapApplyInstantID", "models.identity.sdxl_controlnet").SDXLControlNet
    contexts = []
    forward = identitynet.forward
    monkeypatch.setattr(identitynet, "forward", lambda self, *a, **k: contexts.append(k["context"].float())
                        or forward(self, *a, **k))
    executor = host.run(instantid_graph())
    identity = cached(executor, "encode_tom")
    assert identity.encoder == "instantid-resampler" and identity.cond.shape == (1, 16, 48)
    assert contexts, "IdentityNet never ran"
    for context in contexts:  # each CFG chunk reads its own tokens, never the prompt
        rows = sorted(name for row in context for name, ref in (("cond", identity.cond), ("uncond", identity.uncond))
                      if torch.allclose(row, ref[0], atol=1e-5))
        assert rows == ["cond", "uncond"], "IdentityNet must read the identity's cond and uncond tokens"
    model = cached(executor, "apply")
    loader = cached(executor, "instantid")
    assert any(m.model is loader.ip_patcher.model for m in model.get_additional_models()), \
        "ComfyUI must load the IP layers with the MODEL"


def test_input_model_untouched_and_reruns_are_bit_identical(host):
    session = host.session()
    plain = latent(session.run(base_graph()))
    runs = [latent(session.run(instantid_graph(w))) for w in (0.8, 0.5, 0.8, 0.0, 0.5, 0.8)]
    assert not torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], plain)
    for again in (runs[2], runs[5]):
        assert torch.equal(again, runs[0]), f"max difference {float((again - runs[0]).abs().max())}"
    assert torch.equal(runs[4], runs[1]) and torch.equal(runs[3], plain), "weight 0 leaves the graph as it was"
    model = cached(session.executor, "model")
    assert "patches_replace" not in model.model_options.get("transformer_options", {})
    assert not model.get_additional_models() and not model.wrappers.get("calc_cond_batch")


def test_patch_output_is_the_pure_ip_attention_math(host):
    import torch.nn.functional as F

    glue = pack_module(host, "FaceSnapApplyInstantID", "comfy_glue.ip_attention_patch")
    ip = pack_module(host, "FaceSnapApplyInstantID", "models.identity.ip_attention")
    g = torch.Generator().manual_seed(0)
    layer = ip.IPAttentionLayer(48, 64).eval()
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    cond, uncond = torch.randn(1, 16, 48, generator=g), torch.randn(1, 16, 48, generator=g)
    q, k, v = (torch.randn(4, 64, 64, generator=g), torch.randn(4, 77, 64, generator=g),
               torch.randn(4, 77, 64, generator=g))
    mask = torch.rand(1, 128, 128, generator=g)
    options = {"n_heads": 4, "cond_or_uncond": [1, 0], "sigmas": torch.full((4,), 5.0), "uuids": ["a", "b"],
               "original_shape": [4, 4, 16, 16]}  # an 8x8 attention grid of a 16x16 latent

    def attention(key, value):
        split = lambda t: t.reshape(t.shape[0], t.shape[1], 4, 16).transpose(1, 2)  # noqa: E731
        return F.scaled_dot_product_attention(split(q), split(key), split(value)).transpose(1, 2).reshape(4, 64, 64)

    tokens = torch.cat([uncond.expand(2, -1, -1), cond.expand(2, -1, -1)])  # chunk 0 is the negative
    grid = F.interpolate(mask[:, None], size=(8, 8), mode="bilinear").reshape(1, 64, 1)
    expected_ip = 0.7 * attention(tokens @ layer.to_k_ip.weight.T, tokens @ layer.to_v_ip.weight.T) * grid
    text = attention(k, v)
    with torch.no_grad():
        patch = glue.IPAttentionPatch(layer, cond, uncond, 0.7, (10.0, 1.0), mask)
        torch.testing.assert_close(patch(q, k, v, options), text + expected_ip, atol=1e-5, rtol=1e-4)
        inner = glue.IPAttentionPatch(layer, cond, uncond, 0.7, (10.0, 1.0), mask, inner=lambda *a: 2 * text)
        torch.testing.assert_close(inner(q, k, v, options), 2 * text + expected_ip, atol=1e-5, rtol=1e-4)
        late = dict(options, sigmas=torch.full((4,), 0.5))  # past end_percent: the text attention only
        torch.testing.assert_close(patch(q, k, v, late), text, atol=1e-5, rtol=1e-4)


def test_an_sdxl_model_gets_all_70_layers_including_the_middle_block(host):
    glue = pack_module(host, "FaceSnapApplyInstantID", "comfy_glue.ip_attention_patch")
    weights = pack_module(host, "FaceSnapApplyInstantID", "models.identity.instantid.weights")
    model = sdxl_meta_patcher()
    with torch.device("meta"):
        adapter = weights.InstantIDAdapter()
    tokens = torch.zeros(1, 16, 2048)
    patched = glue.patch_model_with_ip_attention(model, layers=adapter.ip_adapter, layers_patcher=None, layers_key="k",
                                                 cond=tokens, uncond=tokens, weight=0.8)
    keys = set(patched.model_options["transformer_options"]["patches_replace"]["attn2"])
    assert len(keys) == 70 and keys == sdxl_attn2_keys(model)
    assert {k for k in keys if k[0] == "middle"} == {("middle", 0, t) for t in range(10)}
    assert "patches_replace" not in model.model_options.get("transformer_options", {}), "the input MODEL is untouched"


# --- stacking ---------------------------------------------------------------------------------------------------
def test_two_identities_stack_each_with_its_own_mask(host, monkeypatch, layer_calls):
    ip = pack_module(host, "FaceSnapApplyInstantID", "models.identity.ip_attention").IPAttentionLayer
    seen = []
    forward = ip.forward
    monkeypatch.setattr(ip, "forward", lambda self, q, tokens, heads, weight=1.0, mask=None: seen.append(
        (tokens.float(), mask)) or forward(self, q, tokens, heads, weight, mask))
    g = base_graph(steps=1)
    loader = add_instantid_loader(g)
    add_apply_instantid(g, loader, add_encode(g, loader, "tom"), mask=(0, 0, 64, 128), node="left")  # left half
    add_apply_instantid(g, loader, add_encode(g, loader, "t1"), mask=(64, 0, 64, 128), node="right")
    executor = host.run(g)
    people = {name: cached(executor, f"encode_{name}") for name in ("tom", "t1")}
    assert not torch.allclose(people["tom"].cond, people["t1"].cond)
    for keys in per_unet_call(layer_calls):  # both patches at every layer: the second calls the first
        assert sorted(keys) == sorted(TINY_SITES * 2), keys
    halves = {"tom": 0, "t1": 0}
    for tokens, mask in seen:
        person = next(n for n, p in people.items() if any(torch.allclose(row, p.cond[0], atol=1e-5) for row in tokens))
        side = int(mask.shape[1] ** 0.5)
        grid = mask.reshape(mask.shape[0], side, side)
        own, other = (grid[..., :side // 2 - 1], grid[..., side // 2 + 1:])
        if person == "t1":
            own, other = other, own
        assert float(own.min()) > 0 and float(other.abs().max()) == 0, f"{person}'s mask is not on its half"
        halves[person] += 1
    assert halves["tom"] == halves["t1"] > 0


def test_a_foreign_attention_patch_at_the_same_layer_is_called_then_ours_added(host, layer_calls):
    foreign = pack_module(host, "FaceSnapTestForeignAttn2", "tiny_models").ForeignAttention
    foreign.calls = 0
    g = base_graph(steps=1)
    g["foreign"] = {"class_type": "FaceSnapTestForeignAttn2", "inputs": {"model": ["model", 0]}}
    g["sampler"]["inputs"]["model"] = ["foreign", 0]
    foreign_only = latent(host.run(g))
    calls_alone = foreign.calls
    loader = add_instantid_loader(g)
    add_apply_instantid(g, loader, add_encode(g, loader))
    layer_calls.clear()
    foreign.calls = 0
    both = latent(host.run(g))
    unet_calls = per_unet_call(layer_calls)
    assert foreign.calls == calls_alone == len(TINY_SITES) * len(unet_calls), "the foreign patch still runs once"
    assert all(sorted(keys) == sorted(TINY_SITES) for keys in unet_calls)
    assert not torch.equal(both, foreign_only)


def test_the_mask_follows_the_conditioning_area(host, monkeypatch):
    glue = pack_module(host, "FaceSnapApplyInstantID", "comfy_glue.ip_attention_patch")
    seen = []
    monkeypatch.setattr(glue, "token_mask", _recording(glue.token_mask, seen))
    g = base_graph(steps=1)
    g["area"] = {"class_type": "ConditioningSetArea", "inputs": {  # the right half of the 128x128 image
        "conditioning": ["cond", 0], "width": 64, "height": 128, "x": 64, "y": 0, "strength": 1.0}}
    g["sampler"]["inputs"]["positive"] = ["area", 0]
    loader = add_instantid_loader(g)
    add_apply_instantid(g, loader, add_encode(g, loader), mask=(64, 0, 32, 128))  # the left half of the area
    host.run(g)
    columns = {}
    for shape, seq_len, tokens in seen:
        if seq_len == shape[0] * shape[1] // 4:  # the 64-channel level: latent / 2
            grid = tokens.reshape(tokens.shape[0], shape[0] // 2, shape[1] // 2)
            columns[shape] = (grid[0].mean(0) > 0.5).int().tolist()
    assert columns[(16, 8)] == [1, 1, 0, 0], columns  # the area's latent crop: the mask's left half of it
    assert columns[(16, 16)] == [0, 0, 0, 0, 1, 1, 0, 0], columns  # the whole latent (the negative)


def _recording(function, into):
    def recording(mask, seq_len, options, batch):
        out = function(mask, seq_len, options, batch)
        into.append((tuple(options["original_shape"][2:]), seq_len, out))
        return out
    return recording


# --- Advanced node ---------------------------------------------------------------------------------------------------
def test_positive_only_and_uncond_noise(host, monkeypatch):
    identitynet = pack_module(host, "FaceSnapApplyInstantID", "models.identity.sdxl_controlnet").SDXLControlNet
    contexts = []
    forward = identitynet.forward
    monkeypatch.setattr(identitynet, "forward", lambda self, *a, **k: contexts.append(k["context"].float())
                        or forward(self, *a, **k))
    executor = host.run(instantid_graph(advanced={"positive_only": True}))
    identity = cached(executor, "encode_tom")
    rows = [row for context in contexts for row in context]
    assert rows and all(torch.allclose(row, identity.cond[0], atol=1e-5) for row in rows), \
        "with positive_only IdentityNet runs on the positive only"
    contexts.clear()
    executor = host.run(instantid_graph(advanced={"uncond_noise": 0.5}))
    bundle = cached(executor, "instantid")
    noisy = bundle.encode_embeddings(identity.id_embedding[None], 0.5).uncond
    rows = [row for context in contexts for row in context]
    assert any(torch.allclose(row, noisy[0], atol=1e-5) for row in rows)
    assert not any(torch.allclose(row, identity.uncond[0], atol=1e-5) for row in rows)


# --- errors ---------------------------------------------------------------------------------------------------------
def _error(host, g) -> str:
    executor = host.run(g, expect_success=False)
    assert not executor.success
    return host.error_message(executor)


def test_dlib_faces_are_refused_by_the_encode_node(host):
    g = instantid_graph()
    g["encode_tom"]["inputs"]["faces"] = [add_faces(g, "tom", backend="dlib"), 1]
    message = _error(host, g)
    assert "[FaceSnapInstantIDEncode]" in message and "'dlib'" in message and "insightface" in message, message


def test_an_sd15_model_is_refused_by_the_apply_node(host):
    g = instantid_graph()
    g["model"]["inputs"]["sd15"] = True
    message = _error(host, g)
    assert "[FaceSnapApplyInstantID]" in message and "InstantID needs SDXL" in message and "SD15" in message, message


def test_a_facesnap_identity_is_refused_by_instantid(host, tmp_path):
    from identity_graphs import register_facesnap_folder

    register_facesnap_folder(tmp_path)
    g = instantid_graph()
    g["features"] = {"class_type": "FaceSnapTestFaceFeatures", "inputs": {"seed": 3}}
    g["facesnap"] = {"class_type": "FaceSnapModelLoader", "inputs": {
        "facesnap_name": "tiny_facesnap.safetensors", "controlnet_name": "(FFRNet inside the FaceSnap file)"}}
    g["mixer"] = {"class_type": "FaceSnapAttributeMixer",
                  "inputs": {"facesnap_model": ["facesnap", 0], "face_features": ["features", 0]}}
    g["apply"]["inputs"]["identity"] = ["mixer", 0]
    message = _error(host, g)
    assert "[FaceSnapApplyInstantID]" in message and "Facial Attribute Mixer" in message, message


@pytest.mark.parametrize("case", ["sd15", "pickle", "not_identitynet", "window"])
def test_loader_and_apply_errors_name_the_node(host, tmp_path, case):
    import folder_paths

    from instantid_files import sd15_ip_adapter_shapes
    from weight_files import Payload, zero_views

    g = instantid_graph()
    folder = tmp_path / "instantid"
    folder.mkdir()
    folder_paths.add_model_folder_path("instantid", str(folder), is_default=True)
    marker = tmp_path / "pwned"
    if case == "sd15":
        torch.save(zero_views(sd15_ip_adapter_shapes()), folder / "ip-adapter_sd15.bin")
        g["instantid"]["inputs"]["instantid_file"] = "ip-adapter_sd15.bin"
        expected = ["[FaceSnapInstantIDLoader]", "SD1.5", "needs SDXL"]
    elif case == "pickle":
        torch.save({"image_proj": {"latents": Payload(marker)}, "ip_adapter": {}}, folder / "hostile.bin")
        g["instantid"]["inputs"]["instantid_file"] = "hostile.bin"
        expected = ["[FaceSnapInstantIDLoader]", "refused", "Nothing in it was run"]
    elif case == "not_identitynet":  # a ControlNet reading 64-wide tokens, not the Resampler's 48
        _write_foreign_controlnet(tmp_path)
        g["instantid"]["inputs"]["controlnet_name"] = "foreign_controlnet.safetensors"
        expected = ["[FaceSnapInstantIDLoader]", "not InstantID's IdentityNet"]
    else:
        g["apply"]["inputs"].update(start_percent=0.6, end_percent=0.2)
        expected = ["[FaceSnapApplyInstantID]", "end_percent 0.2 is before start_percent 0.6"]
    message = _error(host, g)
    assert all(part in message for part in expected), message
    assert not marker.exists()
    assert not any(w in message for w in ("weights_only=False", "trust", "safe_globals"))


def _write_foreign_controlnet(tmp_path):
    import json

    from safetensors.torch import save_file

    import folder_paths

    from comfy_test_nodes.tiny_models import tiny_facesnap_models

    _, ffrnet = tiny_facesnap_models(seed=5)
    folder = tmp_path / "controlnet"
    folder.mkdir()
    state = {k: v.contiguous() for k, v in ffrnet.state_dict().items() if not k.startswith("id_injector.")}
    save_file(state, str(folder / "foreign_controlnet.safetensors"),
              metadata={"config": json.dumps(ffrnet.config.diffusers_kwargs())})
    folder_paths.add_model_folder_path("controlnet", str(folder), is_default=True)


# --- full-size files through the loader node -----------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["folder", "single_file"])
def test_full_size_published_files_load_through_the_loader_node(host, tmp_path, layout):
    """ip-adapter.bin (torch pickle, 422.8 M parameters) and IdentityNet (diffusers SDXL ControlNet with 2048-wide
    context, 1.25 B) with the published names and shapes: zero-filled, written sparsely, loaded in fp16 (no copy), so
    it takes about 0.5 GB and a second. The node then encodes a face into 16 x 2048 tokens."""
    import json

    import diffusers

    import folder_paths

    from instantid_files import identitynet_config, published_shapes
    from weight_files import write_sparse_safetensors, zero_views

    instantid, controlnet = tmp_path / "instantid", tmp_path / "controlnet"
    (controlnet / "InstantID").mkdir(parents=True)
    instantid.mkdir()
    torch.save(zero_views(published_shapes()), instantid / "ip-adapter.bin")
    with torch.device("meta"):
        reference = diffusers.ControlNetModel(**identitynet_config())
    shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    if layout == "folder":  # InstantID's ControlNetModel/ folder, placed in models/controlnet
        name = "InstantID/diffusion_pytorch_model.safetensors"
        reference.save_config(controlnet / "InstantID")  # every field, as diffusers writes config.json
        assert "_class_name" in json.loads((controlnet / "InstantID" / "config.json").read_text())
    else:  # renamed single file without config: the layout is inferred from the shapes
        name = "instantid_identitynet.safetensors"
    write_sparse_safetensors(controlnet / name, shapes, "F16")
    folder_paths.add_model_folder_path("instantid", str(instantid), is_default=True)
    folder_paths.add_model_folder_path("controlnet", str(controlnet), is_default=True)
    use_identity_folder(tmp_path / "identities")
    g = {"loader": {"class_type": "FaceSnapInstantIDLoader",
                    "inputs": {"instantid_file": "ip-adapter.bin", "controlnet_name": name, "dtype": "fp16"}}}
    g["encode"] = {"class_type": "FaceSnapInstantIDEncode",
                   "inputs": {"instantid": ["loader", 0], "faces": [add_faces(g), 1], "uncond_noise": 0.35}}
    g["save"] = {"class_type": "FaceSnapSaveIdentity",
                 "inputs": {"identity": ["encode", 0], "name": f"full_size_{layout}", "overwrite": True}}
    executor = host.run(g)
    bundle, identity = cached(executor, "loader"), cached(executor, "encode")
    counts = (sum(p.numel() for p in bundle.adapter.image_proj.parameters()),
              sum(p.numel() for p in bundle.ip_layers.parameters()),
              sum(p.numel() for p in bundle.control.control_model.parameters()))
    print(f"\nfull-size InstantID through the loader node: Resampler {counts[0]:,}, IP layers {counts[1]:,} "
          f"({len(bundle.ip_layers)} layers), IdentityNet {counts[2]:,} parameters")
    assert counts == (81_978_624, 340_787_200, 1_251_014_160) and len(bundle.ip_layers) == 70
    assert identity.cond.shape == identity.uncond.shape == (1, 16, 2048) and identity.cond.dtype == torch.float32
    assert {p.dtype for p in bundle.control.control_model.parameters()} == {torch.float16}
    assert bundle.control.control_model.config.cross_attention_dim == 2048
    assert (tmp_path / "identities" / f"full_size_{layout}.safetensors").is_file()
