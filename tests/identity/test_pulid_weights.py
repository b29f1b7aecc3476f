"""PuLID's SDXL weight files: the four published layouts at full size (synthetic files with the exact names and
shapes), tiny files with their layout in the metadata, and every wrong, damaged or hostile file refused by name."""

import json
import pickle

import pytest
import torch

from comfyui_facesnap.models.errors import ModelFileError
from comfyui_facesnap.models.identity.instantid.weights import load_instantid
from comfyui_facesnap.models.identity.pulid.adapter import (
    PULID_V1_1_ENCODER,
    PULID_V1_ENCODER,
    V1,
    V1_1,
    default_config,
)
from comfyui_facesnap.models.identity.pulid.weights import (
    check_pulid_file,
    load_pulid,
    official_name,
    read_pulid,
)
from comfyui_facesnap.models.identity.unet_sites import SDXL_UNET_CONFIG
from instantid_files import published_shapes, sd15_ip_adapter_shapes
from pulid_files import TINY, TINY_UNET, published, save_tiny, tiny_adapter, tiny_features, write_published
from weight_files import Payload, flat, write_sparse_safetensors, zero_views


def test_full_size_layouts_match_the_published_files():
    v1, v1_1 = published(V1, True), published(V1_1, True)
    encoder = [k for k in v1 if k.startswith("id_adapter.")]
    assert len(encoder) == 110 and len(v1) - len(encoder) == 140  # vitrun's v1/v1.1 test: 110 / 172 encoder tensors
    assert len([k for k in v1_1 if k.startswith("id_adapter.")]) == 172
    assert v1["id_adapter_attn_layers.139.id_to_v.weight"] == (1280, 2048)
    assert v1["id_adapter_attn_layers.1.id_to_k.weight"] == (640, 2048)
    assert v1_1["id_adapter.latents"] == (1, 32, 1024) and v1_1["id_adapter.proj_out"] == (1024, 2048)
    count = {version: sum(torch.Size(s).numel() for s in published(version, True).values()) for version in TINY}
    # float16: 791 MB (ip-adapter_pulid_sdxl_fp16.safetensors) and ~984 MB (pulid_v1.1.safetensors)
    assert count == {V1: 395_673_600, V1_1: 492_185_600}
    assert "ip_adapter.139.to_k_ip.weight" in published(V1, False) and "image_proj.body.6.bias" in published(V1, False)


LAYOUTS = {"pulid_v1.bin": (V1, True), "ip-adapter_pulid_sdxl_fp16.safetensors": (V1, False),
           "pulid_v1.1.safetensors": (V1_1, True), "ip-adapter_pulidv1.1_sdxl_fp16.safetensors": (V1_1, False)}


@pytest.mark.parametrize("name", LAYOUTS)
def test_each_published_layout_is_recognised_from_its_header(tmp_path, name):
    version, official = LAYOUTS[name]
    path = tmp_path / name
    write_published(path, version, official)
    shapes = None
    if path.suffix == ".bin":
        shapes = {k: tuple(v.shape) for k, v in torch.load(path, weights_only=True).items()}
    assert check_pulid_file(str(path), shapes) == (version, default_config(version), SDXL_UNET_CONFIG)


@pytest.mark.parametrize("name", ["pulid_v1.bin", "ip-adapter_pulidv1.1_sdxl_fp16.safetensors"])
def test_full_size_files_load(tmp_path, name):
    version, official = LAYOUTS[name]
    path = tmp_path / name
    write_published(path, version, official)
    adapter = load_pulid(str(path))
    assert adapter.version == version
    assert adapter.encoder_name == {V1: PULID_V1_ENCODER, V1_1: PULID_V1_1_ENCODER}[version]
    assert adapter.ip_adapter.for_patch_key(("middle", 0, 9)) is adapter.ip_adapter["139"]
    assert adapter.ip_adapter["63"].to_k_ip.weight.dtype == (torch.float32 if path.suffix == ".bin" else torch.float16)
    assert adapter.weights_key


# --- tiny files: the layout in the metadata ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", [V1, V1_1])
def test_tiny_files_in_both_layouts_load_the_same_model(tmp_path, version):
    adapter = tiny_adapter(version)
    for official in (True, False):
        path = tmp_path / f"{version}_{official}.safetensors"
        save_tiny(path, adapter, official)
        loaded = load_pulid(str(path))
        assert loaded.version == version and loaded.encoder_config == adapter.encoder_config
        for key, value in adapter.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key
        one, two = loaded.encode_identity(*tiny_features(1)), loaded.encode_identity(*tiny_features(3))
        assert one.cond.shape == (1, 10 if version == V1 else 8, 64) and two.num_references == 3
        assert one.weights_key == loaded.weights_key == adapter.fingerprint()
    half = load_pulid(str(path), dtype=torch.bfloat16)
    assert half.ip_adapter["3"].to_v_ip.weight.dtype == torch.bfloat16


# --- refusals ---------------------------------------------------------------------------------------------------------

def refused(path, pattern: str) -> str:
    with pytest.raises(ModelFileError, match=pattern) as err:
        load_pulid(str(path))
    message = str(err.value)
    assert "Fix:" in message and not any(w in message for w in ("weights_only", "safe_globals", "trust"))
    return message


def test_instantid_and_other_ip_adapters_are_named(tmp_path):
    instantid = tmp_path / "ip-adapter.safetensors"
    write_sparse_safetensors(instantid, flat(published_shapes()))
    assert "models/instantid" in refused(instantid, "InstantID's ip-adapter")
    binary = tmp_path / "ip-adapter.bin"
    torch.save(zero_views(published_shapes()), binary)
    refused(binary, "InstantID's ip-adapter")
    clip = tmp_path / "ip-adapter_sdxl.safetensors"
    layers = {k: v for k, v in flat(published_shapes()).items() if k.startswith("ip_adapter.")}
    write_sparse_safetensors(clip,
                             {"image_proj.proj.weight": (8192, 1280), "image_proj.norm.weight": (2048,), **layers})
    refused(clip, "IP-Adapter for CLIP image embeddings")
    faceid = tmp_path / "ip-adapter-faceid-plusv2_sdxl.safetensors"
    write_sparse_safetensors(faceid, {"image_proj.perceiver_resampler.proj_in.weight": (1280, 1280),
                                      "ip_adapter.1.to_k_ip.weight": (640, 2048)})
    refused(faceid, "FaceID")


def test_sd15_variants_are_named(tmp_path):
    ip_sd15 = tmp_path / "ip-adapter_sd15.bin"
    torch.save(zero_views(sd15_ip_adapter_shapes()), ip_sd15)
    assert "16 attention layers" in refused(ip_sd15, "for SD1.5.*needs SDXL")
    # a PuLID-layout file for SD1.5's 16 cross-attentions (768-wide context): no such release, but named all the same
    shapes = published(V1, True)
    shapes = {k: v for k, v in shapes.items() if k.startswith("id_adapter.")}
    widths = [320, 320, 640, 640, 1280, 1280, 1280, 1280, 1280, 640, 640, 640, 320, 320, 320, 1280]
    shapes.update({f"id_adapter_attn_layers.{2 * k + 1}.id_to_{kv}.weight": (c, 768)
                   for k, c in enumerate(widths) for kv in "kv"})
    sd15 = tmp_path / "pulid_sd15.safetensors"
    write_sparse_safetensors(sd15, shapes)
    refused(sd15, "adapter for SD1.5 .*768-wide")


def test_other_models_are_named(tmp_path):
    from safetensors.torch import save_file

    def file(name, tensors):
        path = tmp_path / name
        save_file({k: torch.zeros(s) for k, s in tensors.items()}, str(path))
        return path

    flux = file("pulid_flux_v0.9.1.safetensors", {"pulid_encoder.latents": (1, 32, 1024),
                                                   "pulid_ca.0.to_q.weight": (2048, 3072)})
    refused(flux, "PuLID for FLUX")
    controlnet = file("diffusion_pytorch_model.safetensors",
                      {"controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3)})
    assert "models/controlnet" in refused(controlnet, "ControlNet .EcomID's or InstantID's IdentityNet")
    eva = file("EVA02_CLIP_L_336_psz14_s6B.safetensors", {"visual.cls_token": (1, 1, 1024), "logit_scale": ()})
    refused(eva, "EVA-CLIP")
    lora = file("lora.safetensors", {"lora_unet_down.alpha": ()})
    refused(lora, "no tensors in PuLID's layout.*lora_unet_down.alpha")
    empty = file("empty.safetensors", {})
    refused(empty, "no tensors in PuLID's layout")
    encoderless = file("layers_only.safetensors", {"ip_adapter.1.to_k_ip.weight": (640, 2048)})
    refused(encoderless, "no identity encoder")


@pytest.mark.parametrize("case", ["wrong_shape", "missing", "unexpected", "stray", "duplicate"])
def test_shape_errors_name_the_tensor(tmp_path, case):
    shapes = published(V1_1, True)
    tensor = {"wrong_shape": "id_adapter_attn_layers.77.id_to_v.weight", "missing": "id_adapter.layers.3.1.3.weight",
              "unexpected": "id_adapter_attn_layers.141.id_to_k.weight", "stray": "unet.conv_in.weight",
              "duplicate": "image_proj.latents"}[case]
    if case == "wrong_shape":
        shapes[tensor] = (640, 2048)
    elif case == "missing":
        del shapes[tensor]
    else:
        shapes[tensor] = (1, 32, 1024)
    path = tmp_path / "bad.safetensors"
    write_sparse_safetensors(path, shapes)
    pattern = "both the official and the converted names" if case == "duplicate" else tensor.replace(".", r"\.")
    refused(path, pattern)


def test_damaged_files_are_named(tmp_path):
    good = tmp_path / "pulid_v1.1.safetensors"
    save_tiny(good, tiny_adapter(V1_1), official=True)
    data = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) - 1000])
    refused(cut, "truncated: it holds .* of the .* bytes")
    stub = tmp_path / "stub.safetensors"
    stub.write_bytes(data[:40])
    refused(stub, "truncated")
    binary = tmp_path / "pulid_v1.bin"
    torch.save({official_name(k): v for k, v in tiny_adapter(V1).state_dict().items()}, binary)
    raw = binary.read_bytes()
    binary.write_bytes(raw[: len(raw) // 2])
    refused(binary, "damaged or truncated")
    with pytest.raises(ModelFileError, match="not found"):
        load_pulid(str(tmp_path / "missing.bin"))


def test_nan_and_integer_weights_are_named(tmp_path):
    from safetensors.torch import save_file

    adapter = tiny_adapter(V1)
    state = {k: v.clone() for k, v in adapter.state_dict().items()}
    state["image_proj.mapping_patch_2.3.weight"][0, 0] = float("nan")
    metadata = {"pulid_config": json.dumps(adapter.encoder_config.to_dict()), "unet_config": json.dumps(TINY_UNET)}
    save_file(state, str(tmp_path / "nan.safetensors"), metadata=metadata)
    refused(tmp_path / "nan.safetensors", r"image_proj\.mapping_patch_2\.3\.weight.*NaN")
    state = {official_name(k): v.clone() for k, v in adapter.state_dict().items()}
    state["id_adapter_attn_layers.3.id_to_k.weight"][1] = float("inf")
    save_file(state, str(tmp_path / "inf.safetensors"), metadata=metadata)
    refused(tmp_path / "inf.safetensors", r"id_adapter_attn_layers\.3\.id_to_k\.weight.*infinite")
    state = {k: v.clone() for k, v in adapter.state_dict().items()}
    state["image_proj.body.0.bias"] = state["image_proj.body.0.bias"].to(torch.int32)
    save_file(state, str(tmp_path / "int.safetensors"), metadata=metadata)
    refused(tmp_path / "int.safetensors", "body.0.bias.*not floating point")


def test_nan_in_a_full_size_bin_is_named(tmp_path):
    shapes = published(V1, True)
    state = zero_views({"flat": shapes}, torch.float16)["flat"]
    state["id_adapter_attn_layers.101.id_to_v.weight"] = torch.full((1280, 2048), float("nan"), dtype=torch.float16)
    torch.save(state, tmp_path / "pulid_v1.bin")
    refused(tmp_path / "pulid_v1.bin", r"id_adapter_attn_layers\.101\.id_to_v\.weight.*NaN")


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "pulid_v1.bin"
    torch.save({"id_adapter.body.0.weight": Payload(marker)}, path)
    message = refused(path, "refused")
    assert not marker.exists(), "nothing in the file may run"
    assert "open" in message and "Nothing in it was run" in message
    live = tmp_path / "live"  # the payload is live: a plain pickle load runs it (checked on the payload alone)
    pickle.loads(pickle.dumps(Payload(live))).close()
    assert live.exists()


def test_corrupt_metadata_is_named(tmp_path):
    adapter = tiny_adapter(V1)
    path = tmp_path / "tiny.safetensors"
    save_tiny(path, adapter, official=False)
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    for metadata in ({"pulid_config": "{not json"}, {"pulid_config": json.dumps({"num_tokens": -1})},
                     {"unet_config": json.dumps({"model_channels": 32})},
                     {"pulid_config": json.dumps(adapter.encoder_config.to_dict()),
                      "unet_config": json.dumps({**TINY_UNET, "transformer_depth": [0, 1, 1]})}):
        save_file(tensors, str(path), metadata=metadata)
        refused(path, "corrupt layout")


def test_instantid_loader_names_a_pulid_file(tmp_path):
    path = tmp_path / "ip-adapter_pulid_sdxl_fp16.safetensors"
    write_sparse_safetensors(path, published(V1, False))
    with pytest.raises(ModelFileError, match="PuLID's identity encoder.*models/pulid"):
        load_instantid(str(path))


def test_read_checks_before_building(tmp_path):
    """read_pulid returns the converted layout's names whatever the file's; nothing is built."""
    path = tmp_path / "official.safetensors"
    save_tiny(path, tiny_adapter(V1_1), official=True)
    version, config, unet, tensors = read_pulid(str(path))
    assert version == V1_1 and config == TINY[V1_1] and unet == TINY_UNET
    assert all(k.startswith(("image_proj.", "ip_adapter.")) for k in tensors)
