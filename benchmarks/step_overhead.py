"""Cost of one sampling step at full SDXL size (random weights): UNet alone, + stock ControlNet, + FFRNet, + ID-Injector.

One step = one CFG-batched UNet call (cond + uncond) through ComfyUI's sampler, exactly as KSampler runs it:
    (a) the SDXL UNet alone
    (b) + a stock ComfyUI ControlNet (comfy.cldm) with the 77-token text context
    (c) + FFRNet with the 16-token f_mix context (injector heads not computed)
    (d) + FFRNet + the ID-Injector (heads computed, MODEL patched)
(c) and (d) run for every FFRNet preset given (default: the paper's ``sdxl`` and the lighter ``sdxl_light``), in the
same process, so all ratios share one (a).
Each configuration runs ``--repeats`` timed steps after one warm-up step; the minimum is reported. On the CPU the
ratios use the process's CPU time (robust to other jobs on a shared machine; wall time is printed too). Peak memory is
the process's peak RSS during that configuration on CPU (Linux resets it through /proc/self/clear_refs; where it cannot,
the peak so far), or the peak CUDA allocation of that configuration on a GPU. Only one ControlNet is held at a time
(fp32 SDXL UNet + one ControlNet is about 15 GB of weights).

    python benchmarks/step_overhead.py [--size 512] [--repeats 2] [--dtype fp32|fp16|bf16] \\
        [--ffrnet-preset sdxl sdxl_light]
The last two lines (``ratio ffrnet/unet``, ``ratio injector/ffrnet``) are those of the last preset given; every
preset's ratios are printed above them.
On a GPU the paper's setting is ``--size 1024 --dtype fp16 --steps 8`` (FaceSnap reports 6.1 s, 18.1 GB on an A800).
Needs the ComfyUI host (COMFYUI_PATH, default ~/.cache/comfyui-facesnap/comfyui).
"""

from __future__ import annotations

import argparse
import gc
import pathlib
import resource
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def boot(cpu: bool):
    sys.path.insert(0, str(ROOT))  # only while importing pack_import: the root's nodes/ would shadow ComfyUI's
    import pack_import

    sys.path.remove(str(ROOT))
    pack_import.boot_comfyui(cpu=cpu)


def sdxl_unet_config(dtype):
    return {
        "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
        "num_classes": "sequential", "adm_in_channels": 2816, "dtype": dtype, "in_channels": 4, "model_channels": 320,
        "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10], "channel_mult": [1, 2, 4],
        "transformer_depth_middle": 10, "use_linear_in_transformer": True, "context_dim": 2048, "num_head_channels": 64,
        "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10], "use_temporal_attention": False,
        "use_temporal_resblock": False,
    }


def randomize(module, std=0.02, seed=0):
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)
    return module


def reset_peak_memory(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        pathlib.Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak RSS
    except OSError:
        pass  # not Linux: peak_memory_gb then reports the peak so far


def peak_memory_gb(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    status = pathlib.Path("/proc/self/status")
    if status.exists():
        hwm = next(line for line in status.read_text().splitlines() if line.startswith("VmHWM:"))
        return int(hwm.split()[1]) / 2**20  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (latent = size / 8)")
    parser.add_argument("--repeats", type=int, default=2, help="timed steps per configuration")
    parser.add_argument("--steps", type=int, default=1, help="sampling steps per timed run")
    parser.add_argument("--dtype", choices=DTYPES, default=None, help="weights dtype (default fp32 CPU, fp16 GPU)")
    parser.add_argument("--cpu", action="store_true", help="force the CPU even when CUDA is available")
    parser.add_argument("--ffrnet-preset", nargs="+", metavar="PRESET",
                        help="FFRNet presets to time for (c) and (d): sdxl (the paper's), sdxl_light (default: both)")
    opts = parser.parse_args()

    import torch

    boot(cpu=opts.cpu or not torch.cuda.is_available())
    import comfy.cldm.cldm
    import comfy.controlnet
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.ops
    import comfy.sample
    import comfy.supported_models
    from comfyui_facesnap.models.identity.attribute_mixer import FacialAttributeMixer, MixerConfig
    from comfyui_facesnap.models.identity.ffrnet import FFRNET_PRESETS, FFRNet, FFRNetConfig
    from comfyui_facesnap.comfy_glue.bundle import FaceSnapBundle
    from comfyui_facesnap.comfy_glue.conditioning import apply_identity_control
    from comfyui_facesnap.comfy_glue.unet_patches import patch_model_with_injector

    presets = opts.ffrnet_preset or list(FFRNET_PRESETS)
    if not set(presets) <= set(FFRNET_PRESETS):
        parser.error(f"--ffrnet-preset: choose from {', '.join(FFRNET_PRESETS)}")
    device = mm.get_torch_device()
    dtype = getattr(torch, DTYPES[opts.dtype or ("fp16" if device.type == "cuda" else "fp32")])
    torch.set_grad_enabled(False)
    print(f"device {device}, dtype {dtype}, {opts.size}x{opts.size}, {opts.steps} step(s) x {opts.repeats} repeats, "
          f"torch threads {torch.get_num_threads()}", flush=True)

    t0 = time.time()
    unet_cfg = sdxl_unet_config(dtype)
    model = randomize(comfy.supported_models.SDXL(unet_cfg).get_model({}, device=torch.device("cpu")))
    model.to(dtype)
    base = comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=mm.unet_offload_device())
    print(f"SDXL UNet built: {sum(p.numel() for p in model.parameters()) / 1e9:.3f} B params ({time.time() - t0:.0f} s)",
          flush=True)

    latent = torch.zeros(1, 4, opts.size // 8, opts.size // 8)
    g = torch.Generator().manual_seed(1)
    text = torch.randn(1, 77, 2048, generator=g)
    pooled = torch.randn(1, 1280, generator=g)
    hint = torch.rand(1, opts.size, opts.size, 3, generator=g)

    def conds(control=None):
        pos, neg = {"pooled_output": pooled}, {"pooled_output": torch.zeros_like(pooled)}
        if control is not None:
            for d in (pos, neg):
                d.update(control=control, control_apply_to_uncond=False)
        return [[text, pos]], [[torch.zeros_like(text), neg]]

    def time_step(label, patcher, positive, negative):
        noise = comfy.sample.prepare_noise(latent, 0)
        run = lambda: comfy.sample.sample(patcher, noise, opts.steps, 5.0, "euler", "normal", positive, negative,  # noqa: E731
                                          latent, disable_pbar=True, seed=0)
        reset_peak_memory(device)
        run()  # warm-up (loads weights to the device)
        walls, cpus = [], []
        for _ in range(opts.repeats):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            walls.append(time.perf_counter() - start)
            cpus.append(time.process_time() - start_cpu)
        print(f"{label}: wall {min(walls):.2f} s, CPU {min(cpus):.2f} s per run "
              f"(wall runs {', '.join(f'{t:.2f}' for t in walls)}), peak memory {peak_memory_gb(device):.1f} GB",
              flush=True)
        return min(walls) if device.type == "cuda" else min(cpus)

    results = {}
    results["a"] = time_step("(a) UNet alone", base, *conds())

    cn_cfg = dict(unet_cfg)
    cn_cfg.pop("out_channels")
    cn_cfg.update(hint_channels=3, operations=comfy.ops.disable_weight_init, device=torch.device("cpu"))
    stock = randomize(comfy.cldm.cldm.ControlNet(**cn_cfg)).to(dtype)
    stock_control = comfy.controlnet.ControlNet(stock, load_device=device).copy().set_cond_hint(hint.movedim(-1, 1), 1.0)
    results["b"] = time_step("(b) + stock ControlNet, text context", base, *conds(stock_control))
    del stock, stock_control
    mm.unload_all_models()
    gc.collect()

    with torch.device("meta"):
        mixer = FacialAttributeMixer(MixerConfig())
    mixer = randomize(mixer.to_empty(device=torch.device("cpu"))).eval()
    features_id = torch.nn.functional.normalize(torch.randn(1, 1, 512, generator=g), dim=-1)
    t0 = time.time()
    with torch.no_grad():
        f_mix = mixer(features_id, torch.randn(1, 1, 257, 1280, generator=g)).float()
        uncond = mixer.uncond_tokens().float()
    print(f"mixer ({sum(p.numel() for p in mixer.parameters()) / 1e6:.1f} M params) encode: {time.time() - t0:.2f} s "
          "(once per generation, not per step)", flush=True)

    for preset in presets:
        with torch.device("meta"):
            ffrnet = FFRNet(FFRNetConfig.preset(preset, id_injector=True))
        ffrnet = randomize(ffrnet.to_empty(device=torch.device("cpu")))
        heads = ffrnet.id_injector
        for head in [*heads.phi, *heads.mu]:  # trained heads are non-zero; zeros would make the multiply-adds trivial
            torch.nn.init.normal_(head.weight, std=1e-3)
        backbone = sum(p.numel() for p in ffrnet.parameters()) - sum(p.numel() for p in heads.parameters())
        injector = sum(p.numel() for p in heads.parameters())
        print(f"FFRNet {preset}: {backbone / 1e6:.1f} M params + injector {injector / 1e6:.1f} M", flush=True)
        bundle = FaceSnapBundle(mixer, ffrnet, {}, name="benchmark")
        # without an ID-Injector on the MODEL the control computes no heads
        ffrnet_conds = apply_identity_control(*conds(), bundle.control, f_mix, uncond, hint, 1.0, 0.0, 1.0)
        results[f"c {preset}"] = time_step(f"(c) + FFRNet {preset}, f_mix context", base, *ffrnet_conds)
        patched = patch_model_with_injector(base, ffrnet, bundle.key)
        results[f"d {preset}"] = time_step(f"(d) + FFRNet {preset} + ID-Injector", patched, *ffrnet_conds)
        del ffrnet, heads, bundle, patched, ffrnet_conds
        mm.unload_all_models()
        gc.collect()

    print(f"(b)/(a) = {results['b'] / results['a']:.3f}")
    for preset in presets:
        c, d = results[f"c {preset}"], results[f"d {preset}"]
        print(f"[{preset}] (c)/(a) = {c / results['a']:.3f}, (d)/(a) = {d / results['a']:.3f}, "
              f"ratio ffrnet/unet {c / results['a']:.2f}, ratio injector/ffrnet {d / c:.2f}")
    last = presets[-1]
    print(f"ratio ffrnet/unet: {results[f'c {last}'] / results['a']:.2f}")
    print(f"ratio injector/ffrnet: {results[f'd {last}'] / results[f'c {last}']:.2f}")


if __name__ == "__main__":
    main()
