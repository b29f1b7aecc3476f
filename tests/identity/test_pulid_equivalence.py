"""PuLID SDXL v1 / v1.1 and EcomID's ID attention against the official code, at full size, fp32 on the CPU.

``tests/fixtures/pulid_reference.safetensors`` holds samples of what the official modules computed
(``scripts/reference_pulid.py``, whose docstring names the upstream commits); the weights and inputs are rebuilt
here from the same seeds (``devkit/pulid_reference_cases.py``). Each tolerance is shown to catch a swapped layer,
mapping head or attention head, and the wrong ortho_v2 share.
"""

import json
import pathlib
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F

from comfyui_facesnap.devkit import pulid_reference_cases as cases
from comfyui_facesnap.devkit.seeded_weights import seeded_state
from comfyui_facesnap.models.identity.ip_attention import IPAttentionLayer, ip_attention, mask_to_tokens
from comfyui_facesnap.models.identity.pulid.adapter import V1, V1_1, PuLIDAdapter, id_features
from comfyui_facesnap.models.identity.pulid.id_attention import (
    SHARE_CUBIQ,
    SHARE_OFFICIAL,
    append_zero_tokens,
    id_attention_layer,
)
from comfyui_facesnap.models.identity.pulid.weights import official_name, pack_name
from comfyui_facesnap.models.identity.unet_sites import ip_adapter_layer_sites

FIXTURE = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "pulid_reference.safetensors"
TINY_UNET = {"model_channels": 32, "channel_mult": [1, 2], "num_res_blocks": [1, 1], "transformer_depth": [0, 1],
             "transformer_depth_middle": 1, "transformer_depth_output": [0, 0, 1, 1]}
# largest difference allowed, relative to the largest reference value (fp32, different attention kernels)
TOLERANCE = {"idencoder": 2e-6, "idformer": 2e-5, "attention": 2e-6}
CAUGHT = 100  # a swap must move the output by at least this many tolerances


@pytest.fixture(scope="module")
def reference():
    from safetensors import safe_open

    with safe_open(str(FIXTURE), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return float((ours - theirs).abs().max() / theirs.abs().max())


def seeded_adapter(version: str) -> PuLIDAdapter:
    """The full-size encoder with the reference's weights (drawn under the official file's names); a tiny UNet's
    attention layers, which encoding does not use."""
    with torch.device("meta"):
        adapter = PuLIDAdapter(version, unet_config=TINY_UNET)
    shapes = {k: tuple(v.shape) for k, v in adapter.state_dict().items()}
    adapter.load_state_dict(seeded_state(shapes, cases.WEIGHT_SEEDS[version], rename=official_name), assign=True)
    return adapter.eval()


def encoded(adapter: PuLIDAdapter) -> torch.Tensor:
    """One photo's positive and negative tokens, and two photos' positive: as the script stores them."""
    one = adapter.encode_identity(*cases.encoder_inputs(1))
    two = adapter.encode_identity(*cases.encoder_inputs(2, offset=1))
    return cases.sample_tokens(torch.cat([one.cond, one.uncond, two.cond]), adapter.version)


@torch.no_grad()
def encoded_once(adapter: PuLIDAdapter) -> torch.Tensor:
    """Only the first of ``encoded``, one photo's positive tokens, from the encoder alone."""
    arcface, eva_cls, hidden = cases.encoder_inputs(1)
    return cases.sample_tokens(adapter.image_proj(id_features(arcface, eva_cls), hidden), adapter.version)


@contextmanager
def swapped(first: torch.nn.Module, second: torch.nn.Module):
    saved = {k: v.clone() for k, v in first.state_dict().items()}
    first.load_state_dict(second.state_dict())
    second.load_state_dict(saved)
    try:
        yield
    finally:
        saved = {k: v.clone() for k, v in first.state_dict().items()}
        first.load_state_dict(second.state_dict())
        second.load_state_dict(saved)


# --- encoders -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def v1_adapter():
    return seeded_adapter(V1)


@pytest.fixture(scope="module")
def v1_1_adapter():
    return seeded_adapter(V1_1)


def test_idencoder_tokens_match_the_official_encoder(v1_adapter, reference):
    error = relative_error(encoded(v1_adapter), reference[0]["idencoder"])
    print(f"\nIDEncoder (v1) max |difference| / max |reference|: {error:.2e}")
    assert error < TOLERANCE["idencoder"]


def test_a_swapped_eva_mapping_is_caught(v1_adapter, reference):
    encoder, expected = v1_adapter.image_proj, reference[0]["idencoder"][:1]
    for first, second in ((encoder.mapping_1, encoder.mapping_2), (encoder.mapping_3, encoder.mapping_patch_3)):
        with swapped(first, second):
            error = relative_error(encoded_once(v1_adapter), expected)
        print(f"\nswapped mapping heads: {error:.2e}")
        assert error > CAUGHT * TOLERANCE["idencoder"], error


def test_idformer_tokens_match_the_official_encoder(v1_1_adapter, reference):
    error = relative_error(encoded(v1_1_adapter), reference[0]["idformer"])
    print(f"\nIDFormer (v1.1) max |difference| / max |reference|: {error:.2e}")
    assert error < TOLERANCE["idformer"]


def test_a_swapped_perceiver_layer_is_caught(v1_1_adapter, reference):
    layers = v1_1_adapter.image_proj.layers
    with swapped(layers[3], layers[4]):
        error = relative_error(encoded_once(v1_1_adapter), reference[0]["idformer"][:1])
    print(f"\nperceiver layers 3 and 4 swapped: {error:.2e}")
    assert error > CAUGHT * TOLERANCE["idformer"], error


# --- the ID attention at one UNet cross-attention -------------------------------------------------------------------

def id_layer(number: int = cases.LAYER) -> IPAttentionLayer:
    layer = IPAttentionLayer(cases.CONTEXT, cases.CHANNELS)
    layer.load_state_dict({pack_name(k).split(".", 2)[2]: v for k, v in cases.id_layer_weights(number).items()})
    return layer.eval()


@pytest.fixture(scope="module")
def attention_call():
    """The layer's queries, its text attention output (what ComfyUI's attn2 computes before a replace patch) and its
    ``to_out``, from the reference's weights and inputs."""
    weights, inputs = cases.cross_attention_weights(), cases.attention_inputs()
    q = inputs["hidden"] @ weights["attn2.to_q.weight"].T
    k, v = (inputs["text"] @ weights[f"attn2.to_{kv}.weight"].T for kv in "kv")
    text_out = ip_attention(q, k, v, cases.HEADS)

    def to_out(x):
        return F.linear(x, weights["attn2.to_out.0.weight"], weights["attn2.to_out.0.bias"])

    return q, text_out, to_out, inputs


def run_mode(layer, attention_call, projection, num_zero, tokens, share, masked=False):
    q, text_out, _, inputs = attention_call
    padded = append_zero_tokens(inputs[tokens], num_zero)
    mask = mask_to_tokens(inputs["mask"], q.shape[1], cases.GRID) if masked else None
    with torch.no_grad():
        return text_out + id_attention_layer(layer, q, text_out, padded, cases.HEADS, cases.ID_SCALE, projection,
                                             share, mask)


def official_output(layer, attention_call, mode, share=SHARE_OFFICIAL):
    _, projection, num_zero, tokens = mode
    return cases.sample_attention(attention_call[2](run_mode(layer, attention_call, projection, num_zero, tokens,
                                                             share)))


def comfyui_output(layer, attention_call, mode, share=SHARE_CUBIQ):
    _, projection, num_zero, masked = mode
    return cases.sample_attention(run_mode(layer, attention_call, projection, num_zero, "v1", share, masked))


@pytest.fixture(scope="module")
def layer():
    return id_layer()


@pytest.mark.parametrize("mode", cases.OFFICIAL_MODES, ids=[m[0] for m in cases.OFFICIAL_MODES])
def test_id_attention_matches_the_official_processor(layer, attention_call, reference, mode):
    error = relative_error(official_output(layer, attention_call, mode), reference[0][mode[0]])
    print(f"\n{mode[0]}: {error:.2e}")
    assert error < TOLERANCE["attention"]


@pytest.mark.parametrize("mode", cases.CUBIQ_MODES + cases.ECOMID_MODES,
                         ids=[m[0] for m in cases.CUBIQ_MODES + cases.ECOMID_MODES])
def test_id_attention_matches_cubiq_and_ecomid(layer, attention_call, reference, mode):
    error = relative_error(comfyui_output(layer, attention_call, mode), reference[0][mode[0]])
    print(f"\n{mode[0]}: {error:.2e}")
    assert error < TOLERANCE["attention"]


def test_the_neighbouring_layer_or_swapped_heads_are_caught(layer, attention_call, reference):
    limit = CAUGHT * TOLERANCE["attention"]
    neighbour, heads = id_layer(cases.NEIGHBOUR_LAYER), id_layer()
    with torch.no_grad():
        rows = heads.to_k_ip.weight.view(cases.HEADS, -1, cases.CONTEXT)
        rows[[0, 1]] = rows[[1, 0]].clone()
    for wrong, what in ((neighbour, "layer 65 for 63"), (heads, "heads 0 and 1 of id_to_k swapped")):
        errors = [relative_error(official_output(wrong, attention_call, mode), reference[0][mode[0]])
                  for mode in cases.OFFICIAL_MODES]
        print(f"\n{what}: smallest error {min(errors):.2e}")
        assert min(errors) > limit, errors


def test_the_two_ortho_v2_shares_differ_beyond_the_tolerance(layer, attention_call, reference):
    """The official share (per query, per head) and cubiq's (per image, all heads) are different computations: each
    reference is met only by its own."""
    fidelity, v2 = cases.CUBIQ_MODES[0], cases.OFFICIAL_MODES[1]
    errors = (relative_error(comfyui_output(layer, attention_call, fidelity, SHARE_OFFICIAL),
                             reference[0][fidelity[0]]),
              relative_error(official_output(layer, attention_call, v2, SHARE_CUBIQ), reference[0][v2[0]]))
    print(f"\nthe other share: {errors[0]:.2e} (cubiq's reference), {errors[1]:.2e} (the official one)")
    assert min(errors) > CAUGHT * TOLERANCE["attention"]


# --- where the layers are -------------------------------------------------------------------------------------------

def test_official_layer_numbering_is_the_pack_sites(reference):
    """The numbers of the official ``id_adapter_attn_layers`` (``hack_unet_attn_layers`` on diffusers' SDXL UNet)
    and their widths are the pack's sites; their diffusers names map to the sites' ComfyUI attn2 keys."""
    from instantid_files import diffusers_name_to_patch_key

    numbering = json.loads(reference[1]["official_numbering"])
    sites = ip_adapter_layer_sites()
    assert [n for n, _, _ in numbering] == list(sites)
    assert [width for _, _, width in numbering] == [s.channels for s in sites.values()]
    assert [diffusers_name_to_patch_key(name, 2) for _, name, _ in numbering] == [s.patch_key for s in sites.values()]
    assert sites[cases.LAYER].patch_key == ("output", 0, 7)
    assert sites[cases.NEIGHBOUR_LAYER].patch_key == ("output", 0, 8)


def test_the_fixture_records_the_upstream_commits(reference):
    metadata = reference[1]
    assert metadata["pulid_commit"].startswith("1aa2fc7") and metadata["cubiq_commit"].startswith("4e1fd40")
    assert json.loads(metadata["weight_seeds"]) == cases.WEIGHT_SEEDS
    assert int(metadata["input_seed"]) == cases.INPUT_SEED
    assert FIXTURE.stat().st_size < 300_000
