"""InstantID's ip-adapter file: the published layout at full size (synthetic files, exact names and shapes), the
.bin and .safetensors forms, refusing pickles that run code, and errors that name the tensor or the base model."""

import pickle

import pytest
import torch

from comfyui_facesnap.models.errors import ModelFileError
from comfyui_facesnap.models.identity.identity import INSTANTID_RESAMPLER
from comfyui_facesnap.models.identity.instantid.resampler import ResamplerConfig
from comfyui_facesnap.models.identity.instantid.weights import InstantIDAdapter, load_instantid
from instantid_files import TINY_UNET_CONFIG, published_shapes, sd15_ip_adapter_shapes
from weight_files import Payload, flat, write_sparse_safetensors, zero_views


def test_full_size_model_has_the_published_names_and_shapes():
    with torch.device("meta"):
        adapter = InstantIDAdapter()
    assert {k: tuple(v.shape) for k, v in adapter.state_dict().items()} == flat(published_shapes())
    counts = {part: sum(p.numel() for p in getattr(adapter, part).parameters())
              for part in ("image_proj", "ip_adapter")}
    print(f"\nInstantID ip-adapter parameters: image_proj {counts['image_proj']:,}  ip_adapter {counts['ip_adapter']:,}"
          f"  total {sum(counts.values()):,} ({sum(counts.values()) * 4 / 1e9:.2f} GB in fp32)")
    assert counts == {"image_proj": 81_978_624, "ip_adapter": 340_787_200}


def test_full_size_bin_loads_through_torch_load_weights_only(tmp_path):
    path = tmp_path / "ip-adapter.bin"
    torch.save(zero_views(published_shapes()), path)
    assert path.stat().st_size < 20e6
    adapter = load_instantid(str(path))
    assert sum(p.numel() for p in adapter.parameters()) == 422_765_824
    assert adapter.image_proj.latents.dtype == torch.float16 and not adapter.image_proj.latents.is_meta
    identity = adapter.encode_identity(torch.randn(2, 512))
    assert identity.cond.shape == identity.uncond.shape == (1, 16, 2048)
    assert identity.encoder == INSTANTID_RESAMPLER and identity.num_references == 2 and len(identity.weights_key) == 16


def test_full_size_safetensors_loads(tmp_path):
    path = tmp_path / "ip-adapter.safetensors"
    write_sparse_safetensors(path, flat(published_shapes()), "F16")
    adapter = load_instantid(str(path))
    assert sum(p.numel() for p in adapter.parameters()) == 422_765_824
    assert adapter.ip_adapter["139"].to_v_ip.weight.shape == (1280, 2048)
    assert adapter.ip_adapter.for_patch_key(("middle", 0, 9)) is adapter.ip_adapter["139"]


def test_sd15_ip_adapter_needs_sdxl(tmp_path):
    path = tmp_path / "ip-adapter_sd15.bin"
    torch.save(zero_views(sd15_ip_adapter_shapes()), path)
    with pytest.raises(ModelFileError, match="SD1.5.*needs SDXL") as err:
        load_instantid(str(path))
    assert "ip_adapter.1.to_k_ip.weight" in str(err.value) and "16 layers" in str(err.value)
    st = tmp_path / "ip-adapter_sd15.safetensors"
    write_sparse_safetensors(st, flat(sd15_ip_adapter_shapes()))
    with pytest.raises(ModelFileError, match="needs SDXL"):
        load_instantid(str(st))


def test_clip_ip_adapter_plus_is_named(tmp_path):
    shapes = published_shapes()
    shapes["image_proj"]["proj_in.weight"] = (1280, 1280)  # ip-adapter-plus_sdxl: CLIP-H hidden states in
    path = tmp_path / "ip-adapter-plus_sdxl_vit-h.safetensors"
    write_sparse_safetensors(path, flat(shapes))
    with pytest.raises(ModelFileError, match="CLIP image features.*image_proj.proj_in.weight.*1280, 1280"):
        load_instantid(str(path))
    plain = {"image_proj": {"proj.weight": (8192, 1280), "proj.bias": (8192,), "norm.weight": (2048,),
                            "norm.bias": (2048,)}, "ip_adapter": shapes["ip_adapter"]}  # ip-adapter_sdxl: 4 tokens
    write_sparse_safetensors(tmp_path / "ip-adapter_sdxl.safetensors", flat(plain))
    with pytest.raises(ModelFileError, match="CLIP image embeddings, not InstantID's"):
        load_instantid(str(tmp_path / "ip-adapter_sdxl.safetensors"))


@pytest.mark.parametrize("case", ["wrong_shape", "missing", "unexpected", "stray_prefix"])
def test_shape_errors_name_the_tensor(tmp_path, case):
    shapes = flat(published_shapes())
    tensor = {"wrong_shape": "ip_adapter.77.to_v_ip.weight", "missing": "image_proj.layers.3.1.3.weight",
              "unexpected": "ip_adapter.141.to_k_ip.weight", "stray_prefix": "unet.conv_in.weight"}[case]
    if case == "wrong_shape":
        shapes[tensor] = (640, 2048)
    elif case == "missing":
        del shapes[tensor]
    else:
        shapes[tensor] = (1280, 2048)
    path = tmp_path / "bad.safetensors"
    write_sparse_safetensors(path, shapes)
    with pytest.raises(ModelFileError, match=tensor.replace(".", r"\.")):
        load_instantid(str(path))


def test_other_files_are_named(tmp_path):
    from safetensors.torch import save_file

    controlnet = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file({"controlnet_cond_embedding.conv_in.weight": torch.zeros(16, 3, 3, 3)}, str(controlnet))
    with pytest.raises(ModelFileError, match="ControlNet.*models/controlnet"):
        load_instantid(str(controlnet))
    other = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down.alpha": torch.zeros(1)}, str(other))
    with pytest.raises(ModelFileError, match="no image_proj / ip_adapter"):
        load_instantid(str(other))
    garbage = tmp_path / "ip-adapter.bin"
    garbage.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(ModelFileError, match="not a readable torch weights file"):
        load_instantid(str(garbage))
    listed = tmp_path / "list.bin"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(ModelFileError, match="not a dict"):
        load_instantid(str(listed))
    with pytest.raises(ModelFileError, match="not found"):
        load_instantid(str(tmp_path / "missing.bin"))


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "ip-adapter.bin"
    torch.save({"image_proj": {"latents": Payload(marker)}, "ip_adapter": {}}, path)
    with pytest.raises(ModelFileError, match="refused") as err:
        load_instantid(str(path))
    assert not marker.exists(), "nothing in the file may run"
    message = str(err.value)
    assert "open" in message and not any(w in message for w in ("weights_only", "trust", "safe_globals", "allowlist"))
    # the payload is live: a plain pickle load does run it (checked on a copy of the payload alone)
    live = tmp_path / "live"
    pickle.loads(pickle.dumps(Payload(live))).close()
    assert live.exists()


@torch.no_grad()
@pytest.mark.parametrize("suffix", [".bin", ".safetensors"])
def test_tiny_round_trip_both_formats(tmp_path, suffix):
    from safetensors.torch import save_file

    config = ResamplerConfig.tiny(output_dim=48)
    torch.manual_seed(0)
    adapter = InstantIDAdapter(config, TINY_UNET_CONFIG).eval()
    assert list(adapter.ip_adapter) == ["1", "3", "5", "7"]
    state = adapter.state_dict()
    path = tmp_path / f"ip-adapter{suffix}"
    if suffix == ".bin":  # nested, as InstantID saves it
        torch.save({part: {k.split(".", 1)[1]: v for k, v in state.items() if k.startswith(part + ".")}
                    for part in ("image_proj", "ip_adapter")}, path)
    else:
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    loaded = load_instantid(str(path), config=config, unet_config=TINY_UNET_CONFIG)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in state.items())
    embeds = torch.randn(3, 512) * 20
    identity = loaded.encode_identity(embeds)
    torch.testing.assert_close(identity.cond, adapter.image_proj(embeds.mean(0, keepdim=True)))
    torch.testing.assert_close(identity.uncond, adapter.image_proj(torch.zeros(1, 512)))
    torch.testing.assert_close(identity.id_embedding, embeds.mean(0))
    noisy = loaded.encode_identity(embeds, uncond_noise=0.35)
    assert torch.equal(noisy.cond, identity.cond) and not torch.allclose(noisy.uncond, identity.uncond)
    assert torch.equal(noisy.uncond, loaded.encode_identity(embeds, uncond_noise=0.35).uncond)
    other = InstantIDAdapter(config, TINY_UNET_CONFIG)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "other.safetensors"))
    other = load_instantid(str(tmp_path / "other.safetensors"), config=config, unet_config=TINY_UNET_CONFIG)
    other_key = other.weights_key
    assert identity.weights_key == loaded.weights_key != other_key


def test_layout_from_metadata_and_storage_dtype(tmp_path):
    """A .safetensors may name a non-published layout in its metadata (the tests' tiny files do); a published file's
    layout is InstantID's. ``dtype`` converts the storage; the weights key stays the file's."""
    import dataclasses
    import json

    from safetensors.torch import save_file

    config = ResamplerConfig.tiny(output_dim=48)
    adapter = InstantIDAdapter(config, TINY_UNET_CONFIG)
    state = {k: v.contiguous() for k, v in adapter.state_dict().items()}
    layout = {"resampler_config": json.dumps(dataclasses.asdict(config)), "unet_config": json.dumps(TINY_UNET_CONFIG)}
    path = tmp_path / "tiny.safetensors"
    save_file(state, str(path), metadata=layout)
    loaded = load_instantid(str(path))
    assert loaded.image_proj.config == config and list(loaded.ip_adapter) == ["1", "3", "5", "7"]
    half = load_instantid(str(path), dtype=torch.bfloat16)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16} and half.weights_key == loaded.weights_key
    for bad in ({"resampler_config": '{"dim": -3}'}, {"resampler_config": "not json"},
                {"unet_config": '{"model_channels": 32}'}, {"resampler_config": '{"depth": 2.5}'}):
        save_file(state, str(path), metadata={**layout, **bad})
        with pytest.raises(ModelFileError, match=r"tiny\.safetensors: .*(resampler|unet)_config"):
            load_instantid(str(path))
