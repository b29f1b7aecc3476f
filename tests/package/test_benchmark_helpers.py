"""The benchmarks' own machinery on tiny models: step_overhead's FLOP counting on the meta device (equal to counting
real tensors), its positive-only and ratio arithmetic, InstantID's IdentityNet and IP-attention, weight sharing;
landmark_transfer's per-person detail outside the 3DMM basis and its jaw-contour noise (on the toy 3DMM; the ICT model
stays out of the tests)."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest
import torch

BENCHMARKS = pathlib.Path(__file__).resolve().parents[2] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# ---- step_overhead ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def step():
    return load("step_overhead")


@pytest.fixture(scope="module")
def tiny_configs():
    from comfy_test_nodes.tiny_models import TINY_UNET
    from comfyui_facesnap.models.identity.facesnap.ffrnet import FFRNetConfig

    return dict(TINY_UNET, dtype=torch.float32), {"tiny": FFRNetConfig.tiny(cross_attention_dim=64)}


@pytest.mark.comfy
def test_meta_device_counts_equal_real_tensor_counts(step, tiny_configs):
    """Shape-only counting equals counting real tensors, provided the CPU run computes attention with matmuls:
    PyTorch's fused CPU attention kernel reports no FLOPs (FFRNet's attention would be missed)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    unet_cfg, ffrnet_cfgs = tiny_configs
    on_meta = step.network_flops(32, unet_cfg, ffrnet_cfgs, device="meta", attention="attention_basic")
    with sdpa_kernel(SDPBackend.MATH):
        on_cpu = step.network_flops(32, unet_cfg, ffrnet_cfgs, device="cpu", attention="attention_basic")
    assert on_meta == on_cpu and on_meta["unet"] > 0 and on_meta["injector2 tiny"] > 0
    fused = step.network_flops(32, unet_cfg, ffrnet_cfgs, device="cpu", attention="attention_basic")
    assert fused["ffrnet2 tiny"] < on_meta["ffrnet2 tiny"]  # why the benchmark counts on the meta device
    # the attention implementation does not change the count on the meta device
    assert step.network_flops(32, unet_cfg, ffrnet_cfgs, device="meta") == on_meta


@pytest.mark.comfy
def test_positive_only_halves_ffrnet_and_ratios_come_from_whole_steps(step, tiny_configs):
    unet_cfg, ffrnet_cfgs = tiny_configs
    flops = step.network_flops(32, unet_cfg, ffrnet_cfgs)
    assert flops["ffrnet2 tiny"] == 2 * flops["ffrnet1 tiny"]
    assert flops["injector2 tiny"] == 2 * flops["injector1 tiny"]
    steps = step.step_flops(flops, ["tiny"])
    ffrnet_unet, injector_ffrnet, positive_unet = step.headline_ratios(steps, "tiny")
    assert ffrnet_unet == (flops["unet"] + flops["ffrnet2 tiny"]) / flops["unet"]
    assert injector_ffrnet == steps["d tiny"] / steps["c tiny"] > 1.0
    assert positive_unet == pytest.approx(1 + (ffrnet_unet - 1) / 2)


@pytest.mark.comfy
def test_instantid_counts_identitynet_and_each_ip_attention_layer_once(step, tiny_configs):
    """IdentityNet is an SDXL ControlNet on the 16 identity tokens; the IP-attention surplus of the patched UNet
    equals the closed form over the UNet's cross-attentions (to_k_ip, to_v_ip, QK^T, AV; 2 FLOPs per multiply-add),
    so every patch ran exactly once, on both halves of the CFG batch."""
    from comfyui_facesnap.models.identity.sdxl_controlnet import ControlNetConfig
    from comfyui_facesnap.models.identity.unet_sites import ip_adapter_layer_sites

    unet_cfg, ffrnet_cfgs = tiny_configs
    identitynet = ControlNetConfig.tiny(cross_attention_dim=unet_cfg["context_dim"])
    size, tokens, width = 64, step.FMIX_TOKENS, unet_cfg["context_dim"]
    flops = step.network_flops(size, unet_cfg, ffrnet_cfgs, identitynet_config=identitynet)
    assert flops["identitynet2"] == 2 * flops["identitynet1"] == flops["ffrnet2 tiny"]
    sites = ip_adapter_layer_sites(unet_cfg).values()
    assert len(sites) == 4  # the tiny UNet: 1 input, 1 middle and 2 output cross-attentions
    side = lambda channels: size // 8 // (channels // unet_cfg["model_channels"])  # noqa: E731 (latent side per level)
    closed_form = sum(2 * (4 * tokens * width * s.channels + 4 * side(s.channels) ** 2 * tokens * s.channels)
                      for s in sites)
    assert flops["ip_attention"] == closed_form
    steps = step.step_flops(flops, ["tiny"])
    assert steps["g"] == flops["unet"] + flops["ip_attention"] + flops["identitynet2"]
    assert steps["h"] == steps["g"] - flops["identitynet1"]
    instantid, positive_only = step.instantid_ratios(steps)
    assert instantid > positive_only > 1.0


@pytest.mark.comfy
def test_pulid_and_ecomid_count_their_id_attention_once_per_layer(step, tiny_configs):
    """PuLID's ID attention in the patched UNet equals its closed form: InstantID's four matmuls plus ortho_v2's
    share (q k^T once more over the identity and zero tokens, with either share); EcomID's step adds IdentityNet."""
    from comfyui_facesnap.comfy_glue.methods.pulid import IDAttentionTerm
    from comfyui_facesnap.models.identity.sdxl_controlnet import ControlNetConfig
    from comfyui_facesnap.models.identity.unet_sites import ip_adapter_layer_sites

    unet_cfg, ffrnet_cfgs = tiny_configs
    identitynet = ControlNetConfig.tiny(cross_attention_dim=unet_cfg["context_dim"])
    size, width = 64, unet_cfg["context_dim"]
    terms = {"pulid_v1": (18, IDAttentionTerm("ortho_v2", "official")),
             "ecomid_attention": (18, IDAttentionTerm("ortho_v2", "cubiq")),
             "pulid_v1_1": (52, IDAttentionTerm("ortho", "official"))}
    flops = step.network_flops(size, unet_cfg, ffrnet_cfgs, identitynet_config=identitynet, attention_terms=terms)
    side = lambda channels: size // 8 // (channels // unet_cfg["model_channels"])  # noqa: E731 (latent side per level)

    def closed_form(tokens: int, share: bool) -> int:
        return sum(2 * (4 * tokens * width * s.channels + (6 if share else 4) * side(s.channels) ** 2 * tokens
                        * s.channels) for s in ip_adapter_layer_sites(unet_cfg).values())

    assert flops["pulid_v1"] == flops["ecomid_attention"] == closed_form(18, share=True)
    assert flops["pulid_v1_1"] == closed_form(52, share=False)
    steps = step.step_flops(flops, ["tiny"])
    assert steps["i"] == flops["unet"] + flops["pulid_v1"] and steps["j"] == flops["unet"] + flops["pulid_v1_1"]
    assert steps["k"] == flops["unet"] + flops["ecomid_attention"] + flops["identitynet2"]
    assert steps["l"] == steps["k"] - flops["identitynet1"]


@pytest.mark.comfy
def test_control_networks_share_the_unets_storage(step, tiny_configs):
    import comfy.supported_models
    import comfy.utils

    from comfyui_facesnap.models.identity.facesnap.ffrnet import FFRNet

    unet_cfg, ffrnet_cfgs = tiny_configs
    unet = comfy.supported_models.SDXL(unet_cfg).get_model({}).diffusion_model
    params = dict(unet.named_parameters())
    with torch.device("meta"):
        stock = step.stock_controlnet(unet_cfg, torch.device("meta"))
        ffrnet = FFRNet(ffrnet_cfgs["tiny"])
    assert step.materialize(stock, params) > 0
    assert stock.input_blocks[1][0].in_layers[2].weight is unet.input_blocks[1][0].in_layers[2].weight
    to_comfy = comfy.utils.unet_to_diffusers(unet_cfg)
    assert step.materialize(ffrnet, params, rename=lambda n: to_comfy.get(n, "")) > 0
    assert ffrnet.conv_in.weight is unet.input_blocks[0][0].weight
    assert not any(p.is_meta for p in [*stock.parameters(), *ffrnet.parameters()])
    assert ffrnet.controlnet_mid_block.weight.abs().sum() > 0  # unshared tensors get random values


# ---- landmark_transfer ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def transfer():
    return load("landmark_transfer")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from comfyui_facesnap.devkit.toy_3dmm import toy_morphable_model

    return toy_morphable_model(tmp_path_factory.mktemp("toy3dmm"))


def test_person_detail_lies_outside_what_the_fit_can_explain(transfer, toy):
    basis = transfer.representable_basis(toy)
    assert basis.shape[0] == 204 and torch.allclose(basis.T @ basis, torch.eye(basis.shape[1], dtype=basis.dtype),
                                                    atol=1e-8)
    detail = transfer.person_detail(basis, 5, 0.02, torch.Generator().manual_seed(0))
    assert detail.shape == (5, 68, 3)
    assert torch.allclose(detail.pow(2).mean((1, 2)).sqrt(), torch.full((5,), 0.02), rtol=1e-4)
    inside = detail.reshape(5, -1).double() @ basis
    assert inside.abs().max() < 1e-6
    assert transfer.person_detail(basis, 2, 0.0, None).abs().max() == 0


def test_jaw_noise_moves_only_the_contour_and_mostly_along_it(transfer, toy):
    from comfyui_facesnap.models.face3d.face_fitting import euler_to_matrix, landmarks_image

    rotation = euler_to_matrix(torch.zeros(200), torch.zeros(200), torch.zeros(200))
    points = landmarks_image(toy, torch.zeros(200, toy.num_id), torch.zeros(200, toy.num_exp), rotation,
                             torch.full((200,), 100.0), torch.full((200, 2), 256.0), with_extras=False)
    offsets = transfer.jaw_contour_noise(points, torch.full((200,), 3.0), torch.Generator().manual_seed(0))
    assert offsets[:, 17:].abs().max() == 0 and offsets[:, :17].abs().max() > 0
    tangent = torch.nn.functional.normalize(points[:, 10] - points[:, 8], dim=-1)
    along = (offsets[:, 9] * tangent).sum(-1)
    across = (offsets[:, 9] - along[:, None] * tangent).norm(dim=-1)
    assert along.std() == pytest.approx(3.0, rel=0.2) and across.pow(2).mean().sqrt() == pytest.approx(1.0, rel=0.2)


@pytest.mark.comfy
def test_timed_configurations_run_interleaved_through_the_sampler(step, tiny_configs):
    import comfy.model_management as mm

    unet_cfg, ffrnet_cfgs = tiny_configs
    configs = step.build_timed_configurations(32, unet_cfg, ffrnet_cfgs, torch.device("cpu"))
    assert {"a", "b", "c tiny", "d tiny"} <= set(configs)
    assert configs["c tiny"][1][0][1]["control"].control_model.id_injector is None
    assert configs["d tiny"][1][0][1]["control"].control_model.id_injector is not None
    ffrnet = configs["c tiny"][1][0][1]["control"].control_model
    assert configs["e tiny"][1][0][1]["control"].control_model is ffrnet and "control" not in configs["e tiny"][2][0][1]
    batches = []
    hook = ffrnet.register_forward_pre_hook(
        lambda module, args, kwargs: batches.append((args[0] if args else kwargs["x"]).shape[0]), with_kwargs=True)
    timer = step.Timer(torch.zeros(1, 4, 4, 4), 1, torch.device("cpu"))
    try:
        for key in ("c tiny", "e tiny"):
            batches.append(key)
            timer(*configs[key])
    finally:
        hook.remove()
    assert batches == ["c tiny", 2, "e tiny", 1]  # positive-only: FFRNet on the positive half of the CFG batch
    times = step.interleaved_times(configs, step.Timer(torch.zeros(1, 4, 4, 4), 1, torch.device("cpu")), rounds=2,
                                   warmup=0, device=torch.device("cpu"))
    assert set(times) == set(configs) and all(len(walls) == 2 and best > 0 for best, _, walls in times.values())
    mm.unload_all_models()


@pytest.mark.comfy
def test_main_times_interleaved_and_ends_with_the_three_flop_ratios(step, tiny_configs, monkeypatch, capsys):
    """The whole script on tiny networks (the tiny UNet stands in for SDXL, the tiny FFRNet for both presets and its
    backbone for IdentityNet)."""
    import comfy.model_management as mm

    from comfyui_facesnap.models.identity.facesnap.ffrnet import FFRNetConfig
    from comfyui_facesnap.models.identity.sdxl_controlnet import ControlNetConfig

    unet_cfg, ffrnet_cfgs = tiny_configs
    monkeypatch.setattr(step, "sdxl_unet_config", lambda dtype: dict(unet_cfg, dtype=dtype))
    monkeypatch.setattr(step, "PAPER_SIZE", 64)
    monkeypatch.setattr(FFRNetConfig, "preset", classmethod(lambda cls, name, id_injector=True: ffrnet_cfgs["tiny"]))
    tiny_identitynet = ControlNetConfig.tiny(cross_attention_dim=ffrnet_cfgs["tiny"].cross_attention_dim)
    monkeypatch.setattr(ControlNetConfig, "sdxl", classmethod(lambda cls: tiny_identitynet))
    threads = torch.get_num_threads()
    try:
        step.main(["--size", "32", "--rounds", "2", "--warmup", "0"])
    finally:
        torch.set_num_threads(threads)
        mm.unload_all_models()
    assert torch.is_grad_enabled()  # the script leaves the process's grad mode alone
    lines = capsys.readouterr().out.strip().splitlines()
    assert "2 interleaved rounds, min kept; torch threads 1" in "\n".join(lines)
    assert [line.split(":")[0] for line in lines[-3:]] == [
        "ratio ffrnet/unet", "ratio injector/ffrnet", "ratio ffrnet_positive_only/unet"]
    assert any(line.startswith("[sdxl_light] FLOPs: ratio ffrnet/unet") and "timed:" in line for line in lines)
    assert any(line.startswith("[instantid] FLOPs: ratio instantid/unet") for line in lines)
    ffrnet_unet, injector_ffrnet, positive_unet = (float(line.split(": ")[1]) for line in lines[-3:])
    assert ffrnet_unet > positive_unet > 1.0 and injector_ffrnet > 1.0
