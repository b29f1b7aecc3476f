"""PuLID's pieces beyond the reference comparison: the presets, zero tokens, weight and mask, dtypes, the identity
encoding (several photos, the negative, noise) and the inputs it refuses."""

import pytest
import torch

from comfyui_facesnap.models.errors import InvalidInputError
from comfyui_facesnap.models.identity.ip_attention import IPAttentionLayer, ip_attention
from comfyui_facesnap.models.identity.pulid.adapter import V1, V1_1, PuLIDAdapter, id_features
from comfyui_facesnap.models.identity.pulid.id_attention import (
    METHODS,
    SHARE_CUBIQ,
    SHARE_OFFICIAL,
    V1_1_DEFAULT,
    IDAttentionMode,
    append_zero_tokens,
    id_attention,
    id_attention_layer,
)
from comfyui_facesnap.models.identity.pulid.id_encoder import IDEncoder, IDEncoderConfig
from comfyui_facesnap.models.identity.pulid.id_former import IDFormer, IDFormerConfig
from pulid_files import TINY, tiny_adapter, tiny_features

HEADS = 4


def attention_inputs(seed=0, batch=2, length=16, channels=32, tokens=10):
    g = torch.Generator().manual_seed(seed)
    q, text_out = torch.randn(batch, length, channels, generator=g), torch.randn(batch, length, channels, generator=g)
    key, value = torch.randn(batch, tokens, channels, generator=g), torch.randn(batch, tokens, channels, generator=g)
    return q, text_out, key, value


def test_presets_are_the_official_demos_and_cubiqs():
    assert METHODS == {"fidelity": IDAttentionMode(8, "ortho_v2"), "style": IDAttentionMode(16, "ortho"),
                       "neutral": IDAttentionMode(0, "none")}
    assert V1_1_DEFAULT == IDAttentionMode(20, "ortho_v2")
    with pytest.raises(InvalidInputError, match="projection"):
        IDAttentionMode(8, "orthogonal")
    with pytest.raises(InvalidInputError, match="num_zero"):
        IDAttentionMode(-1, "none")


@pytest.mark.parametrize("projection", ["none", "ortho", "ortho_v2"])
@pytest.mark.parametrize("share", [SHARE_OFFICIAL, SHARE_CUBIQ])
def test_zero_tokens_are_zero_keys_and_values(projection, share):
    layer = IPAttentionLayer(24, 32)
    tokens = torch.randn(2, 10, 24, generator=torch.Generator().manual_seed(1))
    q, text_out, _, _ = attention_inputs()
    padded = append_zero_tokens(tokens, 6)
    assert padded.shape == (2, 16, 24) and not padded[:, 10:].any()
    key, value = (torch.cat([t, torch.zeros(2, 6, 32)], dim=1) for t in layer.keys_values(tokens, q.device))
    with torch.no_grad():
        ours = id_attention_layer(layer, q, text_out, padded, HEADS, 0.7, projection, share)
    torch.testing.assert_close(ours, id_attention(q, text_out, key, value, HEADS, 0.7, projection, share))
    if projection == "none":  # zeros dilute the identity attention: without them it is plain attention
        torch.testing.assert_close(id_attention(q, text_out, key[:, :10], value[:, :10], HEADS),
                                   ip_attention(q, key[:, :10], value[:, :10], HEADS))


def test_noise_padding_is_seeded():
    tokens = torch.zeros(1, 10, 8)
    first = append_zero_tokens(tokens, 4, noise=0.5, generator=torch.Generator().manual_seed(3))
    again = append_zero_tokens(tokens, 4, noise=0.5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, again) and first[:, 10:].min() >= 0 and first[:, 10:].max() < 0.5
    assert append_zero_tokens(tokens, 0) is tokens


def test_the_terms_follow_their_definitions():
    q, text_out, key, value = attention_inputs(2)
    plain = ip_attention(q, key, value, HEADS)
    dot = (text_out * plain).sum(dim=1, keepdim=True)
    projected = dot / (text_out * text_out).sum(dim=1, keepdim=True) * text_out
    torch.testing.assert_close(id_attention(q, text_out, key, value, HEADS, 2.0), 2.0 * plain)
    ortho = id_attention(q, text_out, key, value, HEADS, 1.0, "ortho")
    torch.testing.assert_close(ortho, plain - projected)
    # the projection is removed per channel over the sequence: what is left is orthogonal to the text output
    assert (ortho * text_out).sum(dim=1).abs().max() < 1e-3
    share = torch.softmax(q @ key.transpose(1, 2), dim=-1).mean(dim=1, keepdim=True)[..., :5].sum(-1, keepdim=True)
    torch.testing.assert_close(id_attention(q, text_out, key, value, HEADS, 1.0, "ortho_v2", SHARE_CUBIQ),
                               plain + (share - 1) * projected)


def test_weight_and_mask():
    q, text_out, key, value = attention_inputs(3)
    full = id_attention(q, text_out, key, value, HEADS, 1.0, "ortho_v2")
    mask = torch.zeros(1, q.shape[1], 1)
    mask[:, :5] = 1
    masked = id_attention(q, text_out, key, value, HEADS, 1.0, "ortho_v2", mask=mask)
    torch.testing.assert_close(masked[:, :5], full[:, :5])
    assert not masked[:, 5:].any()
    per_sample = torch.tensor([0.0, 1.5]).view(2, 1, 1)
    weighted = id_attention(q, text_out, key, value, HEADS, per_sample, "ortho_v2")
    assert not weighted[0].any()
    torch.testing.assert_close(weighted[1], 1.5 * full[1])


def test_a_silent_text_channel_gives_no_nan():
    q, text_out, key, value = attention_inputs(4)
    text_out[:, :, 3] = 0
    for projection in ("ortho", "ortho_v2"):
        term = id_attention(q, text_out, key, value, HEADS, 1.0, projection)
        assert torch.isfinite(term).all()
        torch.testing.assert_close(term[:, :, 3], id_attention(q, text_out, key, value, HEADS)[:, :, 3])


def test_half_precision_queries():
    q, text_out, key, value = attention_inputs(5)
    reference = id_attention(q, text_out, key, value, HEADS, 1.0, "ortho_v2")
    half = id_attention(q.half(), text_out.half(), key.half(), value.half(), HEADS, 1.0, "ortho_v2")
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), reference, atol=2e-2, rtol=2e-2)


def test_bad_attention_inputs_are_named():
    q, text_out, key, value = attention_inputs(6)
    with pytest.raises(InvalidInputError, match="projection"):
        id_attention(q, text_out, key, value, HEADS, projection="ortho_v3")
    with pytest.raises(InvalidInputError, match="share"):
        id_attention(q, text_out, key, value, HEADS, projection="ortho_v2", share="mean")
    with pytest.raises(InvalidInputError, match="text attention output"):
        id_attention(q, text_out[:, :4], key, value, HEADS)
    layer = IPAttentionLayer(24, 32)
    with pytest.raises(InvalidInputError, match="identity tokens"):
        id_attention_layer(layer, q, text_out, torch.zeros(1, 10, 16), HEADS)
    with pytest.raises(InvalidInputError, match="identity tokens"):
        id_attention_layer(layer, q, text_out, torch.zeros(1, 3, 24), HEADS)


# --- encoding an identity --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=[V1, V1_1])
def adapter(request):
    return tiny_adapter(request.param, seed=5)


def test_one_identity_from_several_photos(adapter):
    arcface, eva_cls, hidden = tiny_features(3)
    identity = adapter.encode_identity(arcface, eva_cls, hidden)
    assert identity.num_references == 3 and identity.encoder == adapter.encoder_name
    torch.testing.assert_close(identity.id_embedding, arcface.mean(dim=0))
    features = id_features(arcface, eva_cls)
    with torch.no_grad():
        if adapter.version == V1:  # the photos' tokens averaged, in any order
            expected = adapter.image_proj(features, hidden).mean(dim=0, keepdim=True)
            order = [2, 0, 1]
            shuffled = adapter.encode_identity(arcface[order], eva_cls[order], [h[order] for h in hidden])
            torch.testing.assert_close(shuffled.cond, identity.cond)
        else:  # the photos encoded together: 5 ID tokens each, hidden states side by side
            expected = adapter.image_proj(features[None], [h.reshape(1, -1, h.shape[-1]) for h in hidden])
    torch.testing.assert_close(identity.cond, expected)


def test_the_negative_encodes_zeros_or_seeded_noise(adapter):
    first, second = adapter.encode_identity(*tiny_features(1)), adapter.encode_identity(*tiny_features(2))
    torch.testing.assert_close(first.uncond, second.uncond)  # the same for every face
    arcface, eva_cls, hidden = tiny_features(1)
    with torch.no_grad():
        zeros = adapter.image_proj(torch.zeros(1, 1280), [torch.zeros_like(h) for h in hidden])
    torch.testing.assert_close(first.uncond, zeros)
    noisy = adapter.encode_identity(arcface, eva_cls, hidden, uncond_noise=0.3, seed=7)
    assert torch.equal(noisy.uncond, adapter.encode_identity(arcface, eva_cls, hidden, uncond_noise=0.3, seed=7).uncond)
    assert not torch.allclose(noisy.uncond, adapter.encode_identity(arcface, eva_cls, hidden, 0.3, seed=8).uncond)
    assert torch.equal(noisy.cond, first.cond)


def test_eva_cls_is_normalised(adapter):
    arcface, eva_cls, hidden = tiny_features(1)
    torch.testing.assert_close(adapter.encode_identity(arcface, eva_cls * 7, hidden).cond,
                               adapter.encode_identity(arcface, eva_cls, hidden).cond)


def test_bad_features_are_named(adapter):
    arcface, eva_cls, hidden = tiny_features(2)
    with pytest.raises(InvalidInputError, match="ArcFace"):
        adapter.encode_identity(arcface[:, :500], eva_cls, hidden)
    with pytest.raises(InvalidInputError, match="EVA-CLIP embeddings, one per ArcFace"):
        adapter.encode_identity(arcface, eva_cls[:1], hidden)
    with pytest.raises(InvalidInputError, match="five hidden states|reads 5"):
        adapter.encode_identity(arcface, eva_cls, hidden[:4])
    with pytest.raises(InvalidInputError, match="hidden states"):
        adapter.encode_identity(arcface, eva_cls, [h[:1] for h in hidden])
    with pytest.raises(InvalidInputError, match="hidden states must be"):
        adapter.encode_identity(arcface, eva_cls, [h[..., :16] for h in hidden])
    with pytest.raises(InvalidInputError, match="version"):
        PuLIDAdapter("v2")


@pytest.mark.comfy
@torch.no_grad()
def test_comfy_ops_build_the_same_encoders():
    """ComfyUI's cast-on-the-fly layers: bfloat16 storage, float32 compute, the same tokens."""
    import comfy.ops

    features = id_features(*tiny_features(1)[:2])
    hidden = tiny_features(1)[2]
    for cls, config in ((IDEncoder, IDEncoderConfig.tiny()), (IDFormer, IDFormerConfig.tiny())):
        torch.manual_seed(0)
        reference = cls(config).eval()
        with torch.device("meta"):
            cast = cls(config, operations=comfy.ops.manual_cast, compute_dtype=torch.float32)
        cast.load_state_dict({k: v.to(torch.bfloat16) for k, v in reference.state_dict().items()}, assign=True)
        out = cast(features, hidden)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, reference(features, hidden), atol=0.05, rtol=0.05)
    assert TINY[V1] == IDEncoderConfig.tiny()
