"""Identity core, pure PyTorch: attribute mixer (Eq. 1-2), FFRNet (diffusers layout), ID-Injector, weight files."""

import dataclasses
import json

import pytest
import torch

from comfyui_facesnap.models.errors import InvalidInputError, ModelFileError
from comfyui_facesnap.models.identity.diffusers_controlnet import load_diffusers_controlnet
from comfyui_facesnap.models.identity.facesnap.attribute_mixer import FacialAttributeMixer, MixerConfig
from comfyui_facesnap.models.identity.facesnap.checkpoint import load_facesnap, save_facesnap
from comfyui_facesnap.models.identity.facesnap.ffrnet import FFRNet, FFRNetConfig
from comfyui_facesnap.models.identity.facesnap.id_injector import IDInjector

diffusers = pytest.importorskip("diffusers")


def _mixer(seed=0):
    torch.manual_seed(seed)
    return FacialAttributeMixer(MixerConfig.tiny()).eval()


def _features(b, n, cfg, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, cfg.id_dim, generator=g), torch.randn(b, n, cfg.clip_tokens, cfg.clip_dim, generator=g)


@torch.no_grad()
def test_mixer_shapes_and_reference_masking():
    mixer = _mixer()
    cfg = mixer.config
    ids, clips = _features(2, 3, cfg)
    assert mixer(ids, clips).shape == (2, cfg.mix_tokens, cfg.dim)
    # sample 0 has one real reference, padded with two others: padding must not leak in
    mask = torch.tensor([[True, False, False], [True, True, True]])
    padded = mixer(ids, clips, mask)
    alone = mixer(ids[:1, :1], clips[:1, :1])
    torch.testing.assert_close(padded[:1], alone, atol=1e-5, rtol=1e-5)
    # the order of the references does not matter
    perm = torch.tensor([2, 0, 1])
    torch.testing.assert_close(mixer(ids[:, perm], clips[:, perm]), mixer(ids, clips), atol=1e-5, rtol=1e-5)
    # several references of one person give a different f_mix than any single one
    assert not torch.allclose(padded[1], mixer(ids[1:, :1], clips[1:, :1])[0], atol=1e-4)


@torch.no_grad()
def test_mixer_single_reference_is_the_papers_equations():
    """N = 1 written out with plain (unmasked) attention: Eq. 1 then Eq. 2."""
    mixer = _mixer()
    c = mixer.config
    ids, clips = _features(1, 1, c)
    f_id = mixer.pi1(ids[:, 0]).view(1, c.id_tokens, c.dim)
    f_clip = mixer.pi2(clips[:, 0])
    kv = mixer.norm_kv(torch.cat([f_id, f_clip], dim=1))
    f_pre = f_id + mixer.cross_attn(mixer.norm_q(f_id), kv, kv, need_weights=False)[0]
    f_mix = mixer.decoder(mixer.queries[None], f_pre)
    torch.testing.assert_close(mixer(ids, clips), f_mix, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_mixer_uncond_tokens_and_bad_input():
    mixer = _mixer()
    c = mixer.config
    zeros = mixer(torch.zeros(1, 1, c.id_dim), torch.zeros(1, 1, c.clip_tokens, c.clip_dim))
    torch.testing.assert_close(mixer.uncond_tokens(), zeros)
    with pytest.raises(InvalidInputError, match="empty"):
        mixer(torch.zeros(1, 0, c.id_dim), torch.zeros(1, 0, c.clip_tokens, c.clip_dim))
    with pytest.raises(InvalidInputError, match="ArcFace"):
        mixer(torch.zeros(1, 1, 128), torch.zeros(1, 1, c.clip_tokens, c.clip_dim))
    with pytest.raises(InvalidInputError, match="no real reference"):
        mixer(*_features(1, 2, c), torch.tensor([[False, False]]))


def _diffusers_pair(cfg: FFRNetConfig, seed=0):
    torch.manual_seed(seed)
    ref = diffusers.ControlNetModel(**cfg.diffusers_kwargs())
    for p in ref.parameters():
        torch.nn.init.normal_(p, std=0.05)
    ours = FFRNet(cfg)
    missing, unexpected = ours.load_state_dict(ref.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("id_injector.") for k in missing)
    return ref.eval(), ours.eval()


def _diffusers_call(ref, ours, batch=2):
    from diffusers.models.embeddings import Timesteps

    g = torch.Generator().manual_seed(3)
    x, hint = torch.randn(batch, 4, 16, 16, generator=g), torch.rand(batch, 3, 128, 128, generator=g)
    t, ctx = torch.tensor([10.0, 700.0][:batch]), torch.randn(batch, 16, ours.config.cross_attention_dim, generator=g)
    text, time_ids = torch.randn(batch, 1280, generator=g), torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024]] * batch)
    y = torch.cat([text, Timesteps(256, True, 0)(time_ids.flatten()).reshape(batch, -1)], dim=1)  # ComfyUI's ADM
    with torch.no_grad():
        down, mid = ref(x, t, ctx, hint, added_cond_kwargs={"text_embeds": text, "time_ids": time_ids},
                        return_dict=False)
        out = ours(x, hint, t, ctx, y=y)
    return down, mid, out


def test_ffrnet_matches_diffusers_layout_and_outputs():
    cfg = FFRNetConfig.tiny()
    ref, ours = _diffusers_pair(cfg)
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    our_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items() if not k.startswith("id_injector.")}
    assert our_shapes == ref_shapes
    down, mid, out = _diffusers_call(ref, ours)
    assert len(out["output"]) == len(down) == len(cfg.residual_channels())
    # ComfyUI's "output" is diffusers' down_block_res_samples, same order
    for a, b in zip(down, out["output"], strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out["middle"][0], mid, atol=1e-5, rtol=1e-4)


def test_full_size_parameter_counts():
    with torch.device("meta"):
        ffrnet = FFRNet(FFRNetConfig.sdxl())
        ref = diffusers.ControlNetModel(**FFRNetConfig.sdxl().diffusers_kwargs())
        mixer = FacialAttributeMixer(MixerConfig())
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    backbone = count(ffrnet) - count(ffrnet.id_injector)
    assert backbone == count(ref)
    assert 1.20e9 < backbone < 1.30e9  # an SDXL ControlNet is ~1.25 B
    assert ffrnet.id_injector.layout.target_channels == [1280] * 4 + [640] * 3 + [320] * 3
    print(f"\nFFRNet backbone {backbone:,}  injector {count(ffrnet.id_injector):,}  mixer {count(mixer):,}")
    assert 1e8 < count(mixer) < 3e8


def test_light_preset_is_a_diffusers_controlnet_with_the_same_outputs(tmp_path):
    light, full = FFRNetConfig.preset("sdxl_light"), FFRNetConfig.preset("sdxl")
    with torch.device("meta"):
        ffrnet = FFRNet(light)
        ref = diffusers.ControlNetModel(**light.diffusers_kwargs())
    ours = {k: tuple(v.shape) for k, v in ffrnet.state_dict().items() if not k.startswith("id_injector.")}
    assert ours == {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    blocks = [ffrnet.down_blocks[1].attentions[0], ffrnet.down_blocks[2].attentions[0], ffrnet.mid_block.attentions[0]]
    assert [len(b.transformer_blocks) for b in blocks] == [2, 2, 2]
    assert light.residual_channels() == full.residual_channels() and light.injector_layout() == full.injector_layout()
    backbone = sum(p.numel() for p in ffrnet.parameters()) - sum(p.numel() for p in ffrnet.id_injector.parameters())
    print(f"\nFFRNet sdxl_light backbone {backbone:,}")
    assert 0.40e9 < backbone < 0.43e9
    with pytest.raises(ValueError, match="sdxl_light"):
        FFRNetConfig.preset("sdxl_huge")

    # the preset's layout at toy widths through the weights files: a FaceSnap file and a config-less diffusers file
    small = dataclasses.replace(light, block_out_channels=(32, 64, 64), attention_head_dim=(1, 1, 1),  # 64-wide heads
                                cross_attention_dim=64, conditioning_embedding_out_channels=(8, 8, 16, 16))
    ref, ours = _diffusers_pair(small, seed=2)
    for head in [*ours.id_injector.phi, *ours.id_injector.mu]:
        torch.nn.init.normal_(head.weight, std=0.01)
    save_facesnap(str(tmp_path / "light.safetensors"), _mixer(), ours)
    _, loaded, _ = load_facesnap(str(tmp_path / "light.safetensors"))
    assert loaded.config == small
    sa, sb = ours.state_dict(), loaded.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "cn.safetensors"))
    single = load_diffusers_controlnet(str(tmp_path / "cn.safetensors"))
    assert single.config.transformer_layers_per_block == (1, 2, 2) and single.config.attention_head_dim == (1, 1, 1)
    down, mid, out = _diffusers_call(ref, single)
    torch.testing.assert_close(out["middle"][0], mid, atol=1e-5, rtol=1e-4)


@torch.no_grad()
def test_injector_heads_read_the_matching_resolution():
    cfg = FFRNetConfig.tiny()
    ffrnet = FFRNet(cfg).reset_parameters(generator=torch.Generator().manual_seed(0))
    for p in ffrnet.controlnet_down_blocks.parameters():  # non-zero residuals so the heads see something
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(2, 4, 16, 16)
    out = ffrnet(x, torch.rand(2, 3, 128, 128), torch.tensor([5.0, 5.0]), torch.randn(2, 16, 64),
                 y=torch.randn(2, 2816))
    params = ffrnet.injector_params(out)
    assert all(float(p.abs().max()) == 0 and float(m.abs().max()) == 0 for p, m in params)  # zero-init
    h = torch.randn(2, 64, 8, 8)
    assert torch.equal(IDInjector.apply(h, *params[0]), h)
    # hidden-state sizes of the tiny UNet at the 5 points: middle, then after each decoder block
    sizes = [(64, 8), (64, 8), (64, 16), (32, 16), (32, 16)]
    for (phi, mu), (ch, res) in zip(params, sizes, strict=True):
        assert phi.shape == mu.shape == (2, ch, res, res)
    for head in ffrnet.id_injector.phi:
        torch.nn.init.normal_(head.weight, std=0.1)
    phi, mu = ffrnet.injector_params(out)[0]
    assert not torch.equal(IDInjector.apply(h, phi, mu), h)


def _tiny_models(seed=0):
    torch.manual_seed(seed)
    mixer = FacialAttributeMixer(MixerConfig.tiny())
    ffrnet = FFRNet(FFRNetConfig.tiny()).reset_parameters()
    for head in [*ffrnet.id_injector.phi, *ffrnet.id_injector.mu]:
        torch.nn.init.normal_(head.weight, std=0.01)
    return mixer, ffrnet


def test_checkpoint_round_trip(tmp_path):
    mixer, ffrnet = _tiny_models()
    path = tmp_path / "fs.safetensors"
    save_facesnap(str(path), mixer, ffrnet, {"trained_steps": 12})
    mixer2, ffrnet2, meta = load_facesnap(str(path))
    assert meta["trained_steps"] == "12"
    assert mixer2.config == mixer.config and ffrnet2.config == ffrnet.config
    for a, b in [(mixer, mixer2), (ffrnet, ffrnet2)]:
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_checkpoint_errors(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    mixer, ffrnet = _tiny_models()
    good = tmp_path / "good.safetensors"
    save_facesnap(str(good), mixer, ffrnet)
    tensors = load_file(str(good))
    with safe_open(str(good), "pt") as f:
        meta = f.metadata()
    tensors["ffrnet.add_embedding.linear_1.weight"] = torch.zeros(128, 2048)  # not SDXL's 2816-d ADM
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=meta)
    with pytest.raises(ModelFileError, match=r"ffrnet\.add_embedding\.linear_1\.weight.*SDXL") as err:
        load_facesnap(str(bad))
    assert "[128, 2048]" in str(err.value)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header at all")
    with pytest.raises(ModelFileError, match="not a readable"):
        load_facesnap(str(garbage))
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(ModelFileError, match="not a FaceSnap weights file"):
        load_facesnap(str(plain))
    with pytest.raises(ModelFileError, match="not found"):
        load_facesnap(str(tmp_path / "missing.safetensors"))


def test_diffusers_controlnet_as_backbone(tmp_path):
    cfg = FFRNetConfig.tiny()
    ref, _ = _diffusers_pair(cfg, seed=4)
    ref.save_pretrained(tmp_path / "cn")  # a diffusers folder, as in models/controlnet
    mixer, ffrnet = _tiny_models()
    fs = tmp_path / "heads_only.safetensors"
    save_facesnap(str(fs), mixer, ffrnet, include_backbone=False)
    mixer2, loaded, _ = load_facesnap(str(fs), controlnet_path=str(tmp_path / "cn"))
    down, mid, out = _diffusers_call(ref, loaded)
    torch.testing.assert_close(out["middle"][0], mid, atol=1e-5, rtol=1e-4)
    sa, sb = ffrnet.id_injector.state_dict(), loaded.id_injector.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    # a single diffusers .safetensors without config: the config is inferred from the shapes
    single = load_diffusers_controlnet(str(tmp_path / "cn" / "diffusion_pytorch_model.safetensors"))
    assert single.config.block_out_channels == cfg.block_out_channels
    assert single.config.transformer_layers_per_block == cfg.transformer_layers_per_block


def test_sd15_controlnet_is_refused(tmp_path):
    sd15 = diffusers.ControlNetModel(
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), layers_per_block=1,
        cross_attention_dim=768, attention_head_dim=2, conditioning_embedding_out_channels=(8, 8, 16, 16),
    )
    sd15.save_pretrained(tmp_path / "sd15")
    with pytest.raises(ModelFileError, match="SD1.5, not SDXL"):
        load_diffusers_controlnet(str(tmp_path / "sd15"))
    config = json.loads((tmp_path / "sd15" / "config.json").read_text())
    assert config["cross_attention_dim"] == 768
