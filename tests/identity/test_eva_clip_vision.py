"""The EVA02-CLIP-L-14-336 vision tower against the official eva_clip code (PuLID's copy) at full size: seeded
random weights, fp32 on the CPU, reference tensors from scripts/reference_pulid_parts.py. Each tolerance is shown
to catch a swapped layer. Also: layers through ``operations``, input checks, and the tower's input preprocessing."""

import pytest
import torch

from comfyui_facesnap.devkit.comfy_host import streamable_layers
from comfyui_facesnap.devkit.seeded_weights import eva_clip_spec, fingerprint, seeded_tensors
from comfyui_facesnap.models.errors import InvalidInputError
from comfyui_facesnap.models.identity.pulid import eva_clip_vision
from comfyui_facesnap.models.identity.pulid.eva_clip_vision import (
    EVA_MEAN,
    EVA_STD,
    EVAVisionConfig,
    EVAVisionTower,
    eva_clip_input,
    l2_normalise,
    rope_tables,
)
from comfyui_facesnap.models.identity.pulid.eva_clip_weights import build_tower, expected_shapes
from operation_helpers import STORAGE_TOLERANCE, layers_and_raw_parameters, relative_error, to_storage
from reference_fixtures import load_reference

EVA_FIXTURE = "pulid_eva_clip_reference.safetensors"
# Largest |pack - official| allowed: about ten times the differences measured (printed by the first test), where the
# residual stream reaches |x| ~ 33 and the embedding ~ 3. The swap tests show each is far below a layer's effect.
HIDDEN_ATOL = 5e-4
EMBEDDING_ATOL = 5e-5


@pytest.fixture(scope="module")
def reference():
    return load_reference(EVA_FIXTURE)


@pytest.fixture(scope="module")
def tower(reference):
    _, _, ref = reference
    weights = seeded_tensors(eva_clip_spec(expected_shapes()), ref["eva_seed"])
    assert fingerprint(weights) == ref["weights_fingerprint"], \
        "torch's generator drew other weights than when the fixture was written: rerun the reference script"
    return build_tower(weights)


@pytest.fixture(scope="module")
def pixels(reference):
    return torch.randn(1, 3, 336, 336, generator=torch.Generator().manual_seed(reference[2]["input_seed"]))


@pytest.fixture(scope="module")
def output(tower, pixels):
    """The one full forward of this module (about 20 s on 2 CPU cores)."""
    with torch.no_grad():
        return tower(pixels)


def hidden_error(hidden: torch.Tensor, layer: int, reference) -> float:
    """Largest difference of one hidden state (1, 577, 1024) to the official one: the stored tokens, and every
    token projected on the stored random directions."""
    tensors, _, ref = reference
    projection = torch.randn(1024, ref["projections"], generator=torch.Generator().manual_seed(ref["projection_seed"]))
    tokens = (hidden[0, ref["tokens"]] - tensors["hidden_tokens"][layer]).abs().max()
    projected = (hidden[0] @ (projection / 32) - tensors["hidden_projected"][layer]).abs().max()
    return float(max(tokens, projected))


def embedding_error(embedding: torch.Tensor, reference) -> float:
    return float((embedding - reference[0]["embedding"]).abs().max())


def test_the_file_layout_is_the_official_towers(reference):
    """The names and shapes the loader expects are those of the official module that loads the published file
    (its RoPE tables aside, which the tower computes)."""
    official = {k: tuple(v) for k, v in reference[2]["official_shapes"].items()}
    assert expected_shapes() == official
    assert sum(torch.Size(s).numel() for s in official.values()) == 304_432_832  # parameters


def test_rope_tables_are_the_officials(reference):
    tensors, _, ref = reference
    cos, sin = rope_tables(EVAVisionConfig())
    assert torch.equal(cos[ref["rope_rows"]], tensors["rope_cos_rows"])
    assert torch.equal(sin[ref["rope_rows"]], tensors["rope_sin_rows"])


@pytest.mark.slow
def test_embedding_and_hidden_states_match_the_official_tower(output, reference):
    assert len(output.hidden_states) == 5 and all(h.shape == (1, 577, 1024) for h in output.hidden_states)
    errors = [hidden_error(h, i, reference) for i, h in enumerate(output.hidden_states)]
    print(f"\nEVA tower vs official, max |diff|: hidden states {['%.2e' % e for e in errors]}, embedding "
          f"{embedding_error(output.embedding, reference):.2e}")
    assert max(errors) <= HIDDEN_ATOL
    assert embedding_error(output.embedding, reference) <= EMBEDDING_ATOL
    torch.testing.assert_close(output.features, l2_normalise(output.embedding), rtol=0, atol=0)
    assert torch.allclose(output.features.norm(dim=-1), torch.ones(1))


def _swap(module_list, a: int, b: int):
    module_list[a], module_list[b] = module_list[b], module_list[a]


@pytest.mark.slow
def test_the_hidden_tolerance_catches_swapped_blocks(tower, pixels, output, reference):
    """Blocks 2 and 3 exchanged: the stream entering block 4 (PuLID's first hidden state) is off by far more than
    the tolerance. Only blocks 0-3 run."""
    _swap(tower.blocks, 2, 3)
    try:
        with torch.no_grad():
            swapped, _ = tower.run_blocks(tower.embed(pixels), 0, 4)
    finally:
        _swap(tower.blocks, 2, 3)
    assert hidden_error(output.hidden_states[0], 0, reference) <= HIDDEN_ATOL
    print(f"\nblocks 2 and 3 swapped: hidden state 0 off by {hidden_error(swapped, 0, reference):.3g}")
    assert hidden_error(swapped, 0, reference) > 100 * HIDDEN_ATOL


@pytest.mark.slow
def test_the_hidden_tolerance_catches_transposed_rope(tower, pixels, reference, monkeypatch):
    """Rows and columns of the 2-D RoPE exchanged (the two halves of each head's channels)."""
    original = eva_clip_vision.rope_tables

    def transposed(config, device=None, dtype=None):
        half = config.head_dim // 2
        return tuple(torch.cat([t[:, half:], t[:, :half]], dim=1) for t in original(config, device, dtype))

    monkeypatch.setattr(eva_clip_vision, "rope_tables", transposed)
    with torch.no_grad():
        swapped, _ = tower.run_blocks(tower.embed(pixels), 0, 4)
    print(f"\nRoPE rows and columns swapped: hidden state 0 off by {hidden_error(swapped, 0, reference):.3g}")
    assert hidden_error(swapped, 0, reference) > 100 * HIDDEN_ATOL


@pytest.mark.slow
def test_the_embedding_tolerance_catches_swapped_heads(tower, output, reference):
    """In block 20 the values of heads 0 and 1 exchanged (the projection left as it is): blocks 20-23 rerun from
    the stream PuLID reads before block 20."""
    v_proj, v_bias = tower.blocks[20].attn.v_proj.weight, tower.blocks[20].attn.v_bias
    order = torch.cat([torch.arange(64, 128), torch.arange(0, 64), torch.arange(128, 1024)])
    original = v_proj.data.clone(), v_bias.data.clone()
    v_proj.data, v_bias.data = original[0][order], original[1][order]
    try:
        with torch.no_grad():
            last, _ = tower.run_blocks(output.hidden_states[4], 20)
            swapped = tower.project(last)
    finally:
        v_proj.data, v_bias.data = original
    assert embedding_error(output.embedding, reference) <= EMBEDDING_ATOL
    print(f"\nvalue heads 0 and 1 of block 20 swapped: embedding off by {embedding_error(swapped, reference):.3g}")
    assert embedding_error(swapped, reference) > 100 * EMBEDDING_ATOL


def _tiny_tower(operations=None) -> EVAVisionTower:
    """Seeded weights (ComfyUI's operations skip initialisation, so they are copied in)."""
    torch.manual_seed(0)
    tower = EVAVisionTower(EVAVisionConfig.tiny()).eval()
    with torch.no_grad():
        for p in tower.parameters():
            p.add_(0.05 * torch.randn_like(p))  # non-trivial norms and biases
    if operations is None:
        return tower
    built = EVAVisionTower(EVAVisionConfig.tiny(), operations).eval()
    built.load_state_dict(tower.state_dict())
    return built


def _outputs(tower: EVAVisionTower) -> list[torch.Tensor]:
    pixels = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = tower(pixels)
    return [out.embedding, out.features, *out.hidden_states]


# fp8 storage rounds the tiny tower's LayerNorm scales (~1) by up to 6 %: measured relative errors up to 0.14
TOWER_STORAGE_TOLERANCE = {**STORAGE_TOLERANCE, torch.float8_e4m3fn: 0.25}


@pytest.mark.comfy
@pytest.mark.parametrize("storage", list(TOWER_STORAGE_TOLERANCE), ids=lambda d: str(d).split(".")[-1])
def test_comfy_operations_build_every_layer_and_cast_stored_weights(storage):
    """Built from comfy.ops: every Linear/Conv2d/LayerNorm is ComfyUI's, the raw parameters are the four the forward
    casts; fp32 storage gives identical outputs, fp16/bf16/fp8 storage with fp32 compute stays close."""
    import comfy.ops

    ops = comfy.ops.manual_cast
    expected = _outputs(_tiny_tower())
    tower = _tiny_tower(ops)
    layers, raw = layers_and_raw_parameters(tower)
    assert layers and all(type(m) in (ops.Linear, ops.Conv2d, ops.LayerNorm) for _, m in layers)
    assert {n.rsplit(".", 1)[-1] for n in raw} == {"cls_token", "pos_embed", "q_bias", "v_bias"}
    assert list(tower.state_dict()) == list(_tiny_tower().state_dict())
    torch.testing.assert_close(_outputs(tower), expected, atol=0, rtol=0)
    to_storage(tower, storage).compute_dtype = torch.float32
    got = _outputs(tower)
    assert all(t.dtype == torch.float32 for t in got)
    errors = [relative_error(a, b) for a, b in zip(got, expected, strict=True)]
    assert 0 < max(errors) < TOWER_STORAGE_TOLERANCE[storage], errors


@pytest.mark.comfy
def test_lowvram_partial_load_streams_every_layer_with_identical_outputs():
    import comfy.model_patcher
    import comfy.ops

    cpu = torch.device("cpu")
    expected = _outputs(_tiny_tower())
    tower = _tiny_tower(comfy.ops.disable_weight_init)
    patcher = comfy.model_patcher.ModelPatcher(tower, load_device=cpu, offload_device=cpu)
    streamed = set(streamable_layers(patcher))
    layers, raw = layers_and_raw_parameters(tower)
    assert {n for n, _ in layers} <= streamed
    patcher.patch_model(device_to=cpu, lowvram_model_memory=1)
    try:
        assert tower.model_lowvram and all(m.comfy_cast_weights for _, m in layers)
        torch.testing.assert_close(_outputs(tower), expected, atol=0, rtol=0)
    finally:
        patcher.unpatch_model(cpu)


def test_hidden_states_are_the_inputs_of_the_named_blocks():
    """PuLID reads the inputs of blocks 4, 8, 12, 16 and 20, unnormalised; the tiny config names its own."""
    torch.manual_seed(0)
    config = EVAVisionConfig.tiny()
    tower = EVAVisionTower(config).eval()
    pixels = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        out = tower(pixels)
        for layer, hidden in zip(config.hidden_layers, out.hidden_states, strict=True):
            assert torch.equal(hidden, tower.run_blocks(tower.embed(pixels), 0, layer)[0])
    assert [h.shape for h in out.hidden_states] == [(1, 17, 64)] * 5
    assert EVAVisionConfig().hidden_layers == (4, 8, 12, 16, 20)


@pytest.mark.parametrize("shape", [(1, 3, 224, 224), (1, 4, 336, 336), (0, 3, 336, 336), (3, 336, 336)])
def test_wrong_input_sizes_are_refused(shape):
    with torch.device("meta"):
        tower = EVAVisionTower()
    with pytest.raises(InvalidInputError, match="336"):
        tower.embed(torch.zeros(shape, device="meta"))


@pytest.mark.parametrize("antialias", [True, False])
def test_tower_input_is_pulids_resize_and_normalise(antialias):
    """PuLID: torchvision ``normalize(resize(x, 336, BICUBIC), mean, std)``, the mean/std eva_clip sets on the tower
    (OpenAI's); antialiasing as the installed torchvision does by default (on since 0.17), or off (0.15.2)."""
    tv = pytest.importorskip("torchvision.transforms.functional")
    faces = torch.rand(2, 3, 512, 512, generator=torch.Generator().manual_seed(3))
    expected = tv.normalize(tv.resize(faces, 336, tv.InterpolationMode.BICUBIC, antialias=antialias), EVA_MEAN, EVA_STD)
    assert torch.equal(eva_clip_input(faces, antialias=antialias), expected)
    other = tv.normalize(tv.resize(faces, 336, tv.InterpolationMode.BICUBIC, antialias=not antialias), EVA_MEAN,
                         EVA_STD)
    assert not torch.allclose(eva_clip_input(faces, antialias=antialias), other, atol=1e-3)
    with pytest.raises(InvalidInputError):
        eva_clip_input(torch.zeros(3, 512, 512))
