"""Identities as data: validation, the small safetensors file (round trip and hostile files), weighted blends."""

import pytest
import torch

from comfyui_facesnap.models.errors import InvalidInputError, ModelFileError
from comfyui_facesnap.models.identity.identity import (
    FACESNAP_MIXER,
    INSTANTID_RESAMPLER,
    Identity,
    blend_identities,
    load_identity,
    save_identity,
    weights_key,
)


def _identity(seed=0, encoder=INSTANTID_RESAMPLER, key="abc", refs=1, tokens=16, width=32, embedding=True):
    g = torch.Generator().manual_seed(seed)
    return Identity(cond=torch.randn(1, tokens, width, generator=g), uncond=torch.randn(1, tokens, width, generator=g),
                    encoder=encoder, weights_key=key, num_references=refs,
                    id_embedding=torch.randn(512, generator=g) if embedding else None)


def test_identity_fields_and_validation():
    person = _identity(refs=3)
    assert (person.num_tokens, person.width, person.num_references) == (16, 32, 3)
    assert person.describe() == "instantid-resampler [abc]: 16 x 32 tokens from 3 references"
    bad = [
        dict(cond=torch.zeros(16, 32)),  # no batch axis
        dict(cond=torch.zeros(2, 16, 32), uncond=torch.zeros(2, 16, 32)),  # two people
        dict(uncond=torch.zeros(1, 8, 32)),  # cond/uncond differ
        dict(cond=torch.zeros(1, 16, 32, dtype=torch.int64), uncond=torch.zeros(1, 16, 32, dtype=torch.int64)),
        dict(encoder=""),
        dict(num_references=0),
        dict(id_embedding=torch.zeros(128)),
    ]
    base = dict(cond=torch.zeros(1, 16, 32), uncond=torch.zeros(1, 16, 32), encoder=FACESNAP_MIXER)
    for fields in bad:
        with pytest.raises(InvalidInputError):
            Identity(**{**base, **fields})


def test_save_load_round_trip(tmp_path):
    person = _identity(refs=2)
    path = tmp_path / "people" / "ada.safetensors"
    save_identity(str(path), person, {"name": "Ada", "encoder": "spoofed"})
    loaded, metadata = load_identity(str(path))
    assert metadata == {"name": "Ada"}
    assert (loaded.encoder, loaded.weights_key, loaded.num_references) == (INSTANTID_RESAMPLER, "abc", 2)
    for name in ("cond", "uncond", "id_embedding"):
        assert torch.equal(getattr(loaded, name), getattr(person, name))
    assert path.stat().st_size < 200_000
    plain = _identity(encoder=FACESNAP_MIXER, key="", embedding=False)
    half = Identity(cond=plain.cond.half(), uncond=plain.uncond.half(), encoder=FACESNAP_MIXER)
    save_identity(str(tmp_path / "plain.safetensors"), half)
    again, _ = load_identity(str(tmp_path / "plain.safetensors"))
    assert again.id_embedding is None and again.cond.dtype == torch.float32 and again.weights_key == ""


def _write(path, tensors, metadata):
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)


GOOD_META = {"facesnap_identity": "1", "encoder": INSTANTID_RESAMPLER, "model_key": "k", "num_references": "1",
             "tokens": "16", "width": "32"}


@pytest.mark.parametrize("case, match", [
    ("not_identity", "not a FaceSnap identity file"),
    ("future_format", "format '2'"),
    ("bad_metadata", "incomplete identity metadata"),
    ("shape_vs_metadata", r"'cond'.*\[1, 16, 64\].*\[1, 16, 32\]"),
    ("missing_uncond", "no 'uncond'"),
    ("extra_tensor", "unexpected tensor 'payload'"),
    ("nan", "NaN"),
    ("integer", "not floating point"),
    ("zero_references", "at least one reference"),
])
def test_bad_identity_files(tmp_path, case, match):
    tensors = {"cond": torch.zeros(1, 16, 32), "uncond": torch.zeros(1, 16, 32)}
    meta = dict(GOOD_META)
    if case == "not_identity":
        meta = {}
    elif case == "future_format":
        meta["facesnap_identity"] = "2"
    elif case == "bad_metadata":
        meta["tokens"] = "sixteen"
    elif case == "shape_vs_metadata":
        tensors["cond"] = torch.zeros(1, 16, 64)
    elif case == "missing_uncond":
        del tensors["uncond"]
    elif case == "extra_tensor":
        tensors["payload"] = torch.zeros(4)
    elif case == "nan":
        tensors["cond"][0, 3, 5] = float("nan")
    elif case == "integer":
        tensors = {k: v.long() for k, v in tensors.items()}
    elif case == "zero_references":
        meta["num_references"] = "0"
    path = tmp_path / "bad.safetensors"
    _write(path, tensors, meta)
    with pytest.raises(ModelFileError, match=match):
        load_identity(str(path))


def test_unreadable_identity_files(tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header at all")
    with pytest.raises(ModelFileError, match="not a readable"):
        load_identity(str(garbage))
    with pytest.raises(ModelFileError, match="not found"):
        load_identity(str(tmp_path / "missing.safetensors"))


def test_blend_is_weighted_and_needs_one_encoder():
    a, b = _identity(0, refs=2), _identity(1, refs=3)
    mix = blend_identities(a, b, 0.25)
    torch.testing.assert_close(mix.cond, 0.75 * a.cond + 0.25 * b.cond)
    torch.testing.assert_close(mix.uncond, 0.75 * a.uncond + 0.25 * b.uncond)
    torch.testing.assert_close(mix.id_embedding, 0.75 * a.id_embedding + 0.25 * b.id_embedding)
    assert mix.num_references == 5 and (mix.encoder, mix.weights_key) == (a.encoder, a.weights_key)
    assert torch.equal(blend_identities(a, b, 0.0).cond, a.cond) and torch.equal(blend_identities(a, b, 1.0).cond,
                                                                                 b.cond)
    assert blend_identities(a, _identity(2, embedding=False), 0.5).id_embedding is None
    with pytest.raises(InvalidInputError,
                       match="facesnap-mixer.*instantid-resampler|instantid-resampler.*facesnap-mixer"):
        blend_identities(_identity(0, encoder=FACESNAP_MIXER), b, 0.5)
    with pytest.raises(InvalidInputError, match=r"\[other\]"):
        blend_identities(a, _identity(1, key="other"), 0.5)
    with pytest.raises(InvalidInputError, match="tokens"):
        blend_identities(a, _identity(1, width=64), 0.5)
    with pytest.raises(InvalidInputError, match="outside 0..1"):
        blend_identities(a, b, 1.5)


def test_weights_key_tells_weights_apart():
    torch.manual_seed(0)
    layer = torch.nn.Linear(512, 64)
    key = weights_key(layer.state_dict())
    assert key == weights_key({k: v.clone() for k, v in layer.state_dict().items()}) and len(key) == 16
    with torch.no_grad():
        layer.weight.add_(1e-3)
    assert weights_key(layer.state_dict()) != key
