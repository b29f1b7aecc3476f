"""benchmarks/memory.py: its live-tensor accounting, and its computed path on full-size meta modules (small latent)."""

import importlib.util
import pathlib
import sys

import pytest
import torch

from comfyui_facesnap.models.identity.facesnap.ffrnet import FFRNet, FFRNetConfig

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "memory.py"


@pytest.fixture(scope="module")
def memory():
    spec = importlib.util.spec_from_file_location("facesnap_memory_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    return module


def test_tracker_counts_live_allocations_not_views_or_known_tensors(memory):
    known = torch.zeros(1000, device="meta")  # 4000 bytes, never counted
    with memory.live_tensor_tracker([known]) as tracker:
        a = known * 2  # +4000
        view = a.view(10, 100)  # same storage
        b = known.view(100, 10)  # a view of a known tensor
        c = torch.empty(500, device="meta")  # +2000: peak 6000
        del a, c  # the view keeps a's storage alive: 4000
        d = torch.empty(250, dtype=torch.float16, device="meta")  # +500
    assert tracker.peak == 6000 and tracker.live == 4500
    del view, b, d
    assert tracker.live == 0


def test_meta_accounting_matches_a_real_cpu_forward(memory):
    """The same forward traced on real CPU tensors and on the meta device allocates the same bytes."""
    peaks = {}
    for device in ("cpu", "meta"):
        with torch.device(device):
            ffrnet = FFRNet(FFRNetConfig.tiny())
            g = {"device": device}
            inputs = dict(x=torch.zeros(2, 4, 16, 16, **g), hint=torch.zeros(2, 3, 128, 128, **g),
                          timesteps=torch.ones(2, **g), context=torch.zeros(2, 16, 64, **g),
                          y=torch.zeros(2, 2816, **g))
        with torch.no_grad(), memory.fused_attention_mode(), \
                memory.live_tensor_tracker([*ffrnet.parameters(), *inputs.values()]) as tracker:
            out = ffrnet(**inputs)
            params = ffrnet.injector_params(out)
            del out, params
        peaks[device] = tracker.peak
    assert peaks["cpu"] == peaks["meta"] > 0


@pytest.mark.comfy
def test_computed_report_on_full_size_modules(memory):
    nets = memory.build_networks()
    assert nets["sdxl_unet"].params == 2_567_463_684  # ComfyUI's SDXL UNet
    assert nets["identitynet"].params == nets["ffrnet_sdxl"].params - sum(
        p.numel() for p in nets["ffrnet_sdxl"].module.id_injector.parameters())  # IdentityNet = FFRNet's backbone
    assert nets["ip_attention"].name.endswith("(70 pairs)") and nets["clip_vit_h"].params == 632_076_800
    assert nets["resampler"].params == 81_978_624 and 1.7e8 < nets["mixer"].params < 1.8e8  # diffusers' count too
    cross_attentions = [m for n, m in nets["sdxl_unet"].module.named_modules() if n.endswith("attn2")]
    # a 2048->C pair per cross-attention
    assert nets["ip_attention"].params == sum(2 * 2048 * m.to_k.out_features for m in cross_attentions)

    assert nets["pulid_v1_attention"].params == nets["pulid_v1.1_attention"].params == nets["ip_attention"].params
    assert (nets["pulid_v1_encoder"].params + nets["pulid_v1_attention"].params,
            nets["pulid_v1.1_encoder"].params + nets["pulid_v1.1_attention"].params) == (395_673_600, 492_185_600)
    assert (nets["eva_clip"].params, nets["face_parser"].params) == (304_432_832, 13_300_416)
    ecomid = memory.configurations()["SDXL + EcomID + EVA-CLIP + parser"]
    assert ecomid == (["sdxl_unet", "identitynet", "resampler", "pulid_v1_encoder", "pulid_v1_attention", "eva_clip",
                       "face_parser"], "identitynet")
    parser_row = next(line for line in memory.weight_table(nets) if line.startswith("BiSeNet"))
    assert parser_row.split()[-8:] == ["0.05", "GiB"] * 4, "the parser stays float32 whatever the option"

    labels = ("SDXL", "SDXL + FFRNet sdxl_light + heads", "SDXL + InstantID + CLIP-ViT-H")
    configs = {label: memory.configurations()[label] for label in labels}
    acts = memory.computed_activations(nets, configs, latent=16, compute_dtypes=("float16",))
    for control in (None, "ffrnet_sdxl_light", "identitynet"):
        assert 1.8 < acts[(control, 2, 2)] / acts[(control, 1, 2)] < 2.05
    assert acts[(None, 2, 2)] < acts[("identitynet", 2, 2)] < acts[("ffrnet_sdxl_light", 2, 2)]  # + phi/mu
    unet = nets["sdxl_unet"].module
    fp32 = memory.step_activation_bytes(unet.to(torch.float32), batch=1, latent=16, dtype=torch.float32)
    assert 1.8 < fp32 / acts[(None, 1, 2)] < 2.05
    unet.to(torch.float16)

    fits = {}
    lines = memory.memory_report(nets, acts, configs, fits, storages=("fp16", "fp8_e4m3fn"))
    assert len(lines) == 1 + len(configs) * 2
    sdxl_fp16 = next(line for line in lines if line.startswith("SDXL ") and " fp16 " in line)
    assert " 4.78 GiB " in sdxl_fp16  # 2.57 B params x 2 bytes
    normal, lowvram = fits["fp16"]["SDXL + InstantID + CLIP-ViT-H"]
    assert lowvram < normal and memory.smallest_gpu(normal) == "12 GB" and memory.smallest_gpu(lowvram) == "8 GB"
    assert memory.smallest_gpu(81 * memory.GIB) == "> 80 GB"
    summary = memory.fit_summary(fits)
    assert summary[-1].split() == ["SDXL", "+", "InstantID", "+", "CLIP-ViT-H"] + ["12", "GB"] + ["8", "GB"] * 3
