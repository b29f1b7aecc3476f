"""FFRNet and the ID-Injector inside ComfyUI's sampler (tiny SDXL, CPU, in-process)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from comfy_test_nodes.tiny_models import tiny_conditioning, tiny_facesnap_models, tiny_unet_patcher

pytestmark = pytest.mark.comfy

LATENT = 16  # 128 px


@pytest.fixture(scope="module")
def fs():
    import types

    from comfyui_facesnap.comfy_glue import conditioning, control, encoder_copy
    from comfyui_facesnap.comfy_glue import id_injector_patch as unet_patches
    from comfyui_facesnap.comfy_glue.methods import facesnap as bundle

    modules = (bundle, conditioning, control, encoder_copy, unet_patches)
    return types.SimpleNamespace(**{k: v for m in modules for k, v in vars(m).items() if not k.startswith("__")})


@pytest.fixture(scope="module")
def base_model():
    return tiny_unet_patcher(seed=0)


def make_bundle(fs, injector_std=0.05):
    mixer, ffrnet = tiny_facesnap_models(seed=0, injector_std=injector_std)
    return fs.FaceSnapBundle(mixer, ffrnet, {}, name="tiny")


@pytest.fixture(scope="module")
def bundle(fs):
    return make_bundle(fs)


def features(n=2, seed=5):
    from comfyui_facesnap.models.identity.facesnap.face_features import FaceFeatures

    g = torch.Generator().manual_seed(seed)
    ids = torch.nn.functional.normalize(torch.randn(n, 512, generator=g), dim=-1)
    return FaceFeatures(id_embeds=ids, clip_tokens=torch.randn(n, 5, 32, generator=g))


def conditioned(fs, bundle, hint_size=(LATENT * 8, LATENT * 8), start=0.0, end=1.0, **kw):
    positive, negative = tiny_conditioning(seed=1)
    hint = torch.rand(1, hint_size[0], hint_size[1], 3, generator=torch.Generator().manual_seed(2))
    f_mix, uncond = bundle.run_mixer(*features().batched()), bundle.uncond_tokens()
    return fs.apply_identity_control(positive, negative, bundle.control, cond_tokens=f_mix, uncond_tokens=uncond,
                                     hint=hint, strength=1.0, start=start, end=end, **kw)


def sample(model, positive, negative, steps=2):
    import comfy.sample

    latent = torch.zeros(1, 4, LATENT, LATENT)
    noise = comfy.sample.prepare_noise(latent, 7)
    return comfy.sample.sample(model, noise, steps, 4.0, "euler", "normal", positive, negative, latent,
                               disable_pbar=True, seed=7)


def test_ffrnet_sees_f_mix_on_cond_and_uncond(fs, bundle, base_model):
    seen = []
    hook = bundle.ffrnet.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["context"].clone()),
                                                   with_kwargs=True)
    try:
        positive, negative = conditioned(fs, bundle)
        sample(base_model, positive, negative, steps=1)
    finally:
        hook.remove()
    assert seen and all(ctx.shape == (2, 16, 64) for ctx in seen)  # 16 f_mix tokens, never the 77 text tokens
    f_mix, uncond = bundle.run_mixer(*features().batched()), bundle.uncond_tokens()
    rows = {0: None, 1: None}
    for row in seen[0]:
        for key, ref in ((0, f_mix[0]), (1, uncond[0])):
            if torch.allclose(row, ref, atol=1e-5):
                rows[key] = True
    assert rows == {0: True, 1: True}, "one batch row must carry f_mix, the other the zero-feature tokens"


def test_every_injection_point_is_hit_once_per_unet_call(fs, bundle, base_model, monkeypatch):
    hits, unet_calls = [], []
    original = fs.IDInjectorPatch.inject

    def recording(self, point, h, options):
        hits.append((point, h.shape[1], bool(options.get(fs.FEATURES_KEY))))
        return original(self, point, h, options)

    monkeypatch.setattr(fs.IDInjectorPatch, "inject", recording)
    model = fs.patch_model_with_injector(base_model, bundle.ffrnet, bundle.pairing_key)
    unet = base_model.model.diffusion_model
    hook = unet.register_forward_pre_hook(lambda *a: unet_calls.append(len(hits)))
    try:
        positive, negative = conditioned(fs, bundle)
        sample(model, positive, negative, steps=2)
    finally:
        hook.remove()
    layout = bundle.ffrnet.id_injector.layout
    expected = [(p, c, True) for p, c in enumerate(layout.target_channels)]
    assert len(unet_calls) == 2 and hits == expected * len(unet_calls)
    # patching an already patched model with the same file does not double the hooks
    again = fs.patch_model_with_injector(model, bundle.ffrnet, bundle.pairing_key)
    assert len(again.model_options["transformer_options"]["patches"]["output_block_patch"]) == 1
    assert len(again.get_wrappers(fs.DIFFUSION_MODEL, fs.WRAPPER_KEY)) == 1
    assert list(fs.find_injector_patch(again).heads) == [bundle.pairing_key]


def test_zero_heads_are_a_no_op_and_the_input_model_is_untouched(fs, base_model):
    zero = make_bundle(fs, injector_std=0.0)
    live = make_bundle(fs, injector_std=0.05)
    unet = base_model.model.diffusion_model
    plain = sample(base_model, *conditioned(fs, zero), steps=1)
    with_zero = sample(fs.patch_model_with_injector(base_model, zero.ffrnet, zero.pairing_key), *conditioned(fs, zero),
                       steps=1)
    torch.testing.assert_close(with_zero, plain, rtol=0, atol=0)
    with_live = sample(fs.patch_model_with_injector(base_model, live.ffrnet, live.pairing_key), *conditioned(fs, live),
                       steps=1)
    assert (with_live - plain).abs().max() > 1e-3
    assert torch.equal(sample(base_model, *conditioned(fs, zero), steps=1), plain)
    # nothing is replaced or left behind on the shared UNet
    assert not base_model.object_patches and not unet.out._forward_pre_hooks
    assert not any(isinstance(layer, torch.nn.Module) and layer._forward_pre_hooks for layer in unet.modules())
    # outside the start/end window the control publishes nothing: same as sampling without FaceSnap at all
    idle = sample(fs.patch_model_with_injector(base_model, live.ffrnet, live.pairing_key),
                  *conditioned(fs, live, start=1.0, end=1.0), steps=1)
    torch.testing.assert_close(idle, sample(base_model, *tiny_conditioning(seed=1), steps=1), rtol=0, atol=0)


def _merged_controls(fs, monkeypatch):
    """(cond_or_uncond, merged middle residual, ID-Injector weight of point 0's source) per control call."""
    merged = []
    original = fs.IdentityControlNet._merge

    def recording(self, control, control_prev, chunks, options):
        out = original(self, control, control_prev, chunks, options)
        features = options[fs.FEATURES_KEY][-1]
        source = bundle_layout(self).source_indices[0]
        weight = features.weights[source] * torch.ones_like(features.residuals[source])
        merged.append((options["cond_or_uncond"], out["middle"][0].clone(), weight))
        return out

    monkeypatch.setattr(fs.IdentityControlNet, "_merge", recording)
    return merged


def bundle_layout(control):
    return control.control_model.id_injector.layout


def test_separate_uncond_strength(fs, bundle, base_model, monkeypatch):
    merged = _merged_controls(fs, monkeypatch)
    positive, negative = conditioned(fs, bundle, uncond_strength=0.0)
    sample(fs.patch_model_with_injector(base_model, bundle.ffrnet, bundle.pairing_key), positive, negative, steps=1)
    order, middle, mu = merged[0]
    assert sorted(order) == [0, 1]
    for row, kind in enumerate(order):
        peak_res, peak_mu = float(middle[row].abs().max()), float(mu[row].abs().max())
        assert (peak_res == 0 and peak_mu == 0) if kind == 1 else (peak_res > 0 and peak_mu > 0)


def test_positive_only_runs_the_control_on_the_positive_half(fs, bundle, base_model):
    seen = []
    hook = bundle.ffrnet.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["context"].clone()),
                                                   with_kwargs=True)
    try:
        sample(base_model, *conditioned(fs, bundle, positive_only=True), steps=1)
    finally:
        hook.remove()
    f_mix = bundle.run_mixer(*features().batched())
    assert len(seen) == 1 and seen[0].shape == (1, 16, 64)
    torch.testing.assert_close(seen[0][0], f_mix[0])


def test_mask_limits_residuals_and_injector(fs, bundle, base_model, monkeypatch):
    merged = _merged_controls(fs, monkeypatch)
    mask = torch.zeros(1, 32, 32)
    mask[:, :, :16] = 1.0  # left half only
    sample(base_model, *conditioned(fs, bundle, mask=mask), steps=1)
    _, middle, mu = merged[0]
    for tensor in (middle, mu):
        half = tensor.shape[-1] // 2
        assert float(tensor[..., half + 1:].abs().max()) == 0 and float(tensor[..., :half - 1].abs().max()) > 0


@torch.no_grad()
def test_ffrnet_initialised_from_the_unet_reproduces_its_middle_block(fs, base_model):
    from comfyui_facesnap.models.identity.facesnap.ffrnet import FFRNet, FFRNetConfig

    ffrnet = FFRNet(FFRNetConfig.tiny(cross_attention_dim=64)).reset_parameters()
    untouched = fs.init_ffrnet_from_unet(ffrnet, base_model)
    assert all(k.startswith(("controlnet_", "id_injector.")) for k in untouched)
    ffrnet.controlnet_mid_block.weight.copy_(torch.eye(64)[:, :, None, None])  # expose the features under it
    unet = base_model.model.diffusion_model
    seen = []
    hook = unet.middle_block[-1].register_forward_hook(lambda m, a, out: seen.append(out))
    g = torch.Generator().manual_seed(0)
    x, context = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 77, 64, generator=g)
    y = torch.randn(1, 2816, generator=g)
    t = torch.tensor([500.0])
    try:
        unet(x, t, context=context, y=y)
    finally:
        hook.remove()
    out = ffrnet(x, torch.zeros(1, 3, 128, 128), t, context, y=y)  # the hint embedding starts at zero
    torch.testing.assert_close(out["middle"][0], seen[0], atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_a_shallower_ffrnet_takes_the_first_layers_of_each_unet_block(fs):
    """How FFRNetConfig.sdxl_light() (2 of SDXL's 10 layers) starts from the UNet: here 1 of 2 layers."""
    import comfy.model_patcher
    import comfy.supported_models

    from comfy_test_nodes.tiny_models import CPU, TINY_UNET, init_
    from comfyui_facesnap.models.identity.facesnap.ffrnet import FFRNet, FFRNetConfig

    deeper = dict(TINY_UNET, transformer_depth=[0, 2], transformer_depth_middle=2,
                  transformer_depth_output=[0, 0, 2, 2])
    model = init_(comfy.supported_models.SDXL(deeper).get_model({}), seed=3)
    ffrnet = FFRNet(FFRNetConfig.tiny(cross_attention_dim=64)).reset_parameters()
    untouched = fs.init_ffrnet_from_unet(ffrnet, comfy.model_patcher.ModelPatcher(model, CPU, CPU))
    assert all(k.startswith(("controlnet_", "id_injector.")) for k in untouched)
    unet = model.diffusion_model
    pairs = [(ffrnet.down_blocks[1].attentions[0], unet.input_blocks[3][1]),
             (ffrnet.mid_block.attentions[0], unet.middle_block[1])]
    for ours, theirs in pairs:
        assert len(ours.transformer_blocks) == 1 and len(theirs.transformer_blocks) == 2
        copied, first = ours.transformer_blocks[0].state_dict(), theirs.transformer_blocks[0].state_dict()
        assert copied.keys() == first.keys() and all(torch.equal(copied[k], first[k]) for k in copied)
        second = theirs.transformer_blocks[1].state_dict()
        assert not torch.equal(copied["attn1.to_q.weight"], second["attn1.to_q.weight"])


def test_previous_controlnets_are_chained(fs, bundle):
    positive, negative = tiny_conditioning(seed=1)
    earlier = bundle.control.copy()
    for conditioning in (positive, negative):
        conditioning[0][1]["control"] = earlier
    f_mix, uncond = torch.zeros(1, 16, 64), torch.ones(1, 16, 64)
    positive, negative = fs.apply_identity_control(positive, negative, bundle.control, cond_tokens=f_mix,
                                                   uncond_tokens=uncond, hint=torch.zeros(1, 64, 64, 3), strength=1.0,
                                                   start=0.0, end=1.0)
    control = positive[0][1]["control"]
    assert isinstance(control, fs.IdentityControlNet) and control.previous_controlnet is earlier
    assert negative[0][1]["control"] is control and positive[0][1]["control_apply_to_uncond"] is False
    assert control.cond_tokens is f_mix and control.uncond_tokens is uncond
    assert "cross_attn_controlnet" not in positive[0][1] and "cross_attn_controlnet" not in negative[0][1]
    only_positive = fs.apply_identity_control(*tiny_conditioning(seed=1), bundle.control, cond_tokens=f_mix,
                                              uncond_tokens=uncond, hint=torch.zeros(1, 64, 64, 3), strength=1.0,
                                              start=0.0, end=1.0, positive_only=True)
    assert "control" in only_positive[0][0][1] and "control" not in only_positive[1][0][1]


def test_bad_inputs(fs, bundle, base_model):
    from comfyui_facesnap.models.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="aspect ratio"):
        sample(base_model, *conditioned(fs, bundle, hint_size=(LATENT * 8, LATENT * 16)), steps=1)
    # a different size with the same aspect ratio is resized to the latent
    sample(base_model, *conditioned(fs, bundle, hint_size=(LATENT * 4, LATENT * 4)), steps=1)
    sd15 = tiny_unet_patcher(seed=0, sd15=True)
    with pytest.raises(InvalidInputError, match=r"SD15.*SDXL"):
        fs.patch_model_with_injector(sd15, bundle.ffrnet, bundle.pairing_key)
    with pytest.raises(InvalidInputError, match="SD15"):  # FFRNet conditioning sampled with SD1.5
        sample(sd15, *conditioned(fs, bundle), steps=1)
    positive, negative = tiny_conditioning()
    positive[0][1]["pooled_output"] = torch.zeros(1, 768)
    with pytest.raises(InvalidInputError, match="SD1.5"):
        fs.apply_identity_control(positive, negative, bundle.control, cond_tokens=torch.zeros(1, 16, 64),
                                  uncond_tokens=torch.zeros(1, 16, 64), hint=torch.zeros(1, 64, 64, 3), strength=1.0,
                                  start=0.0, end=1.0)


def test_face_encode_needs_arcface(bundle):
    from comfyui_facesnap.comfy_glue.methods.facesnap import face_features
    from comfyui_facesnap.models.errors import InvalidInputError
    from comfyui_facesnap.models.face_analysis.record import FaceRecord, FaceSet

    image = np.zeros((64, 64, 3), np.uint8)
    record = FaceRecord(bbox=np.array([16, 16, 48, 48], np.float32), score=0.9, kps5=np.zeros((5, 2), np.float32),
                        landmarks=np.zeros((72, 2), np.float32), backend="dlib", descriptor=np.zeros(128))
    with pytest.raises(InvalidInputError, match="insightface"):
        face_features(faces=FaceSet(records=[record], images=[image]), clip_vision=None)
    with pytest.raises(InvalidInputError, match="empty"):
        face_features(faces=FaceSet(records=[], images=[]), clip_vision=None)
