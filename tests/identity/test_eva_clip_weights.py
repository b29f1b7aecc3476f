"""EVA02_CLIP_L_336_psz14_s6B.pt: the published layout at full size (synthetic files with the names and shapes of
the official CLIP that loads it), the dict layouts eva_clip accepts, .safetensors conversions, and named refusals of
other files, decided before anything is built or read."""

import pytest
import torch

from comfyui_facesnap.models.errors import ModelFileError
from comfyui_facesnap.models.identity.pulid import eva_clip_weights
from comfyui_facesnap.models.identity.pulid.eva_clip_vision import EVAVisionConfig, EVAVisionTower
from comfyui_facesnap.models.identity.pulid.eva_clip_weights import (
    check_tower_shapes,
    expected_shapes,
    load_eva_clip_vision,
)
from reference_fixtures import load_reference
from weight_files import Payload, write_sparse_safetensors, zeros

FILE = "EVA02_CLIP_L_336_psz14_s6B.pt"
TINY = EVAVisionConfig.tiny()


@pytest.fixture(scope="module")
def layout() -> dict[str, tuple]:
    """The official CustomCLIP's state dict (names and shapes): what the published file holds."""
    return {k: tuple(v) for k, v in load_reference("pulid_eva_clip_reference.safetensors")[2]["clip_layout"].items()}


@pytest.fixture()
def refuse_building(monkeypatch):
    """Wrong files must be refused from their names and shapes: building or reading tensors fails the test."""
    def forbidden(*args, **kwargs):
        raise AssertionError("a refused file was built or read")

    monkeypatch.setattr(eva_clip_weights, "build_tower", forbidden)
    monkeypatch.setattr(eva_clip_weights, "read_tensors", forbidden)


def visual(layout: dict) -> dict[str, tuple]:
    return {k: s for k, s in layout.items() if k.startswith("visual.")}


def prefixed(shapes: dict, prefix: str = "visual.") -> dict:
    return {prefix + k: s for k, s in shapes.items()}


def test_the_published_layout_loads_at_full_size(tmp_path, layout):
    tower_keys = visual(layout)
    assert len(tower_keys) == 562 and "visual.blocks.7.attn.rope.freqs_cos" in tower_keys  # 25 copies of the tables
    assert any(k.startswith("text.") for k in layout) and "logit_scale" in layout
    path = tmp_path / FILE
    torch.save(zeros(layout), path)
    tower = load_eva_clip_vision(str(path))
    assert isinstance(tower, EVAVisionTower) and not tower.training
    assert {k: tuple(v.shape) for k, v in tower.state_dict().items()} == expected_shapes()
    assert tower.pos_embed.dtype == torch.float16 and tower.pos_embed.shape == (1, 577, 1024)


@pytest.mark.parametrize("wrap", ["state_dict", "model", "module.", "vision only"])
def test_the_layouts_eva_clip_accepts(tmp_path, layout, wrap):
    tensors = zeros(visual(layout))
    if wrap == "module.":
        tensors = {"module." + k: v for k, v in tensors.items()}
    elif wrap == "vision only":
        tensors = {k.removeprefix("visual."): v for k, v in tensors.items()}
    else:
        tensors = {wrap: tensors, "epoch": torch.tensor(3)}
    torch.save(tensors, tmp_path / FILE)
    assert load_eva_clip_vision(str(tmp_path / FILE)).head.weight.shape == (768, 1024)


@pytest.mark.parametrize("prefix", ["visual.", ""])
def test_safetensors_conversions_read_only_the_tower(tmp_path, layout, monkeypatch, prefix):
    shapes = layout if prefix else {k.removeprefix("visual."): s for k, s in visual(layout).items()}
    path = tmp_path / "EVA02_CLIP_L_336_psz14_s6B.safetensors"
    write_sparse_safetensors(path, shapes)
    read = []
    original = eva_clip_weights.read_tensors
    monkeypatch.setattr(eva_clip_weights, "read_tensors",
                        lambda p, names: read.extend(names) or original(p, names=names))
    tower = load_eva_clip_vision(str(path))
    assert tower.blocks[23].mlp.w3.weight.shape == (1024, 2730)
    assert sorted(read) == sorted(prefix + k for k in expected_shapes())  # no text tower, no RoPE copies


def _tower_of(config: EVAVisionConfig) -> dict[str, tuple]:
    return prefixed(expected_shapes(config))


OTHER_TOWERS = {
    "EVA02-CLIP-B-16": _tower_of(EVAVisionConfig(image_size=224, patch_size=16, width=768, layers=12, heads=12,
                                                 mlp_hidden=2048, embed_dim=512)),
    "EVA02-CLIP-L-14 at 224 px": _tower_of(EVAVisionConfig(image_size=224)),
    "EVA01-CLIP": {"visual.pos_embed": (1, 257, 1408), "visual.blocks.0.attn.qkv.weight": (4224, 1408),
                   "visual.blocks.0.mlp.fc1.weight": (6144, 1408), "visual.head.weight": (1024, 1408)},
    "MIM-pretrained backbone": {"pos_embed": (1, 257, 1024), "blocks.0.norm1.weight": (1024,),
                                "mask_token": (1, 1, 1024), "lm_head.weight": (1024, 1024)},
    "OpenAI / OpenCLIP ViT": {"visual.class_embedding": (1024,), "visual.positional_embedding": (577, 1024),
                              "visual.conv1.weight": (1024, 3, 14, 14),
                              "visual.transformer.resblocks.0.attn.in_proj_weight": (3072, 1024)},
    "transformers layout": {"vision_model.embeddings.patch_embedding.weight": (1024, 3, 14, 14)},
    "timm layout": {"visual.trunk.pos_embed": (1, 577, 1024), "visual.trunk.blocks.0.attn.qkv.weight": (3072, 1024)},
    "identity adapter": {"id_adapter.body.0.weight": (1024, 1280),
                         "id_adapter_attn_layers.1.id_to_k.weight": (640, 2048)},
    "holds no EVA-CLIP vision tower": {"model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3)},
}


@pytest.mark.parametrize("kind", OTHER_TOWERS)
def test_other_files_are_named_before_anything_is_read(tmp_path, refuse_building, kind):
    path = tmp_path / "model.safetensors"
    write_sparse_safetensors(path, OTHER_TOWERS[kind])
    with pytest.raises(ModelFileError, match=kind.replace("/", ".")) as err:
        load_eva_clip_vision(str(path))
    assert "QuanSun/EVA-CLIP" in str(err.value)


def test_big_e_and_unknown_towers_are_described():
    big_e = _tower_of(EVAVisionConfig(image_size=224, width=1792, layers=64, heads=16, mlp_hidden=15360,
                                      embed_dim=1024))
    with pytest.raises(ModelFileError, match="bigE"):
        check_tower_shapes(big_e, "big.pt")
    with pytest.raises(ModelFileError, match="64 wide with 6 blocks, 14 px patches at 56 px"):
        check_tower_shapes(_tower_of(TINY), "tiny.pt")


def _damaged(layout: dict, case: str) -> tuple[dict, str]:
    shapes = dict(visual(layout))
    if case == "missing":
        del shapes["visual.blocks.23.mlp.w3.bias"]
        return shapes, "no tensor 'visual.blocks.23.mlp.w3.bias'"
    if case == "shape":
        shapes["visual.head.weight"] = (512, 1024)
        return shapes, r"'visual.head.weight' .* shape \[512, 1024\], expected \[768, 1024\]"
    if case == "unexpected":
        shapes["visual.blocks.0.attn.relative_position_bias_table"] = (2212, 16)
        return shapes, "unexpected tensor 'visual.blocks.0.attn.relative_position_bias_table'"
    shapes["visual.blocks.3.attn.rope.freqs_cos"] = (256, 64)
    return shapes, "RoPE is for another image size"


@pytest.mark.parametrize("case", ["missing", "shape", "unexpected", "rope"])
def test_damaged_files_name_the_tensor(tmp_path, layout, refuse_building, case):
    shapes, message = _damaged(layout, case)
    path = tmp_path / FILE
    torch.save(zeros(shapes), path)
    with pytest.raises(ModelFileError, match=message):
        load_eva_clip_vision(str(path))


def _tiny_file_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    tower = EVAVisionTower(TINY).eval()
    for p in tower.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return {"visual." + k: v.detach().clone() for k, v in tower.state_dict().items()}


def test_truncated_unreadable_and_missing_files(tmp_path):
    path = tmp_path / FILE
    torch.save({**_tiny_file_tensors(), "logit_scale": torch.tensor(4.6)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated") as err:
        load_eva_clip_vision(str(path), config=TINY)
    assert FILE in str(err.value)
    torch.save([torch.zeros(1)], path)
    with pytest.raises(ModelFileError, match="not a dict"):
        load_eva_clip_vision(str(path), config=TINY)
    with pytest.raises(ModelFileError, match="not found"):
        load_eva_clip_vision(str(tmp_path / "missing.pt"))
    garbage = tmp_path / "clip.safetensors"
    garbage.write_bytes(b"\xff" * 64)
    with pytest.raises(ModelFileError, match="not a readable .safetensors"):
        load_eva_clip_vision(str(garbage))


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / FILE
    torch.save({"visual.pos_embed": Payload(marker)}, path)
    with pytest.raises(ModelFileError, match="refused") as err:
        load_eva_clip_vision(str(path))
    assert not marker.exists(), "nothing in the file may run"
    assert not any(w in str(err.value) for w in ("weights_only", "trust", "safe_globals", "allowlist"))


@pytest.mark.parametrize("bad", ["nan", "integer", "object"])
def test_corrupt_tensors_are_refused(tmp_path, bad):
    tensors = _tiny_file_tensors()
    if bad == "nan":
        tensors["visual.blocks.2.attn.q_bias"][5] = float("nan")
        message = "'visual.blocks.2.attn.q_bias' .* NaN"
    elif bad == "integer":
        tensors["visual.head.bias"] = tensors["visual.head.bias"].to(torch.int32)
        message = "'visual.head.bias' .* not floating point"
    else:
        tensors["visual.head.bias"] = [1.0, 2.0]
        message = "'visual.head.bias' is a list"
    path = tmp_path / FILE
    torch.save(tensors, path)
    with pytest.raises(ModelFileError, match=message):
        load_eva_clip_vision(str(path), config=TINY)


@torch.no_grad()
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_tiny_round_trip(tmp_path, suffix):
    from safetensors.torch import save_file

    tensors = _tiny_file_tensors()
    source = EVAVisionTower(TINY).eval()
    source.load_state_dict({k.removeprefix("visual."): v for k, v in tensors.items()})
    whole_clip = {**tensors, "text.positional_embedding": torch.zeros(77, 48), "logit_scale": torch.tensor(4.6)}
    path = tmp_path / f"tiny{suffix}"
    if suffix == ".pt":
        torch.save(whole_clip, path)
    else:
        save_file(whole_clip, str(path))
    pixels = torch.randn(2, 3, 56, 56)
    loaded = load_eva_clip_vision(str(path), config=TINY)
    expected = source(pixels)
    for ours, theirs in zip(loaded(pixels), expected, strict=True):
        for a, b in zip(ours if isinstance(ours, tuple) else [ours], theirs if isinstance(theirs, tuple) else [theirs],
                        strict=True):
            assert torch.equal(a, b)
    half = load_eva_clip_vision(str(path), config=TINY, dtype=torch.bfloat16, compute_dtype=torch.bfloat16)
    assert half.blocks[0].mlp.w1.weight.dtype == torch.bfloat16
    assert half(pixels).embedding.dtype == torch.bfloat16


@pytest.mark.parametrize("bad, message", [({"width": 0}, "eva_config.width = 0 is not an integer"),
                                          ({"heads": 3}, "multiple of 4 x heads"),
                                          ({"hidden_layers": [1, 2, 3, 4, 9]}, "eva_config.hidden_layers"),
                                          ({"depth": 3}, "unknown field"), ("[1]", "not an object")])
def test_a_safetensors_file_may_name_its_layout_which_is_checked(tmp_path, refuse_building, bad, message):
    """The tests' tiny towers carry their layout in an ``eva_config`` metadata entry; every value is checked before
    anything is built."""
    import json
    from dataclasses import asdict

    from safetensors.torch import save_file

    path = tmp_path / "tiny.safetensors"
    fields = json.dumps({**asdict(TINY), **bad}) if isinstance(bad, dict) else bad
    save_file(_tiny_file_tensors(), str(path), metadata={"eva_config": fields})
    with pytest.raises(ModelFileError, match=message):
        load_eva_clip_vision(str(path))


def test_a_tiny_tower_loads_with_the_layout_its_file_names(tmp_path):
    import json
    from dataclasses import asdict

    from safetensors.torch import save_file

    path = tmp_path / "tiny.safetensors"
    save_file(_tiny_file_tensors(), str(path), metadata={"eva_config": json.dumps(asdict(TINY))})
    assert load_eva_clip_vision(str(path)).config == TINY
