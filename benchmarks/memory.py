"""GPU memory of every configuration the pack runs: weights per storage dtype, activations at 1024², smallest GPU.

Configurations: SDXL alone; SDXL + FFRNet (``sdxl``, ``sdxl_light``) + its heads (Attribute Mixer, ID-Injector);
SDXL + InstantID (IdentityNet, Resampler, the 70 IP-attention ``to_k_ip``/``to_v_ip`` pairs); each with and without
CLIP-ViT-H. SDXL + PuLID v1 / v1.1 (the ID encoder, the 70 ID-attention ``id_to_k``/``id_to_v`` pairs) and SDXL +
EcomID (its IdentityNet, InstantID's Resampler, PuLID v1), each with and without the networks their encoding adds:
EVA02-CLIP-L-14-336's vision tower and the BiSeNet face parser (stored in float32 whatever the storage dtype, as the
pack loads it).

COMPUTED (no GPU; what this script prints everywhere):
  * Parameter counts come from the real modules built on the meta device: ComfyUI's SDXL UNet (the config that
    ComfyUI's own ``model_detection`` derives from an SDXL ControlNet layout, i.e. ``comfy.supported_models.SDXL``),
    IdentityNet as ComfyUI's ControlNet loader builds it (``comfy.cldm.cldm.ControlNet``), the pack's FFRNet, Mixer
    and ID-Injector, the pack's InstantID Resampler (``models/identity/instantid/resampler.py``, InstantID's
    published config) and IP-attention projections (``ip_attention.py``: one 2048->C ``to_k_ip``/``to_v_ip`` pair per
    SDXL cross-attention, C = the layer's width, as in InstantID's ``ip-adapter.bin``), CLIP-ViT-H from ComfyUI's
    ``clip_vision_config_h.json``. Weight bytes = count x storage size (all tensors in the storage dtype, as
    ComfyUI's loaders store them).
  * Activations: the peak of live tensor bytes (weights and inputs excluded) during one sampling step at a 128²
    latent, counted on the meta device by following every tensor the real forward passes allocate and free: the
    ControlNet (when present), then ComfyUI's UNet with the control residuals (and the ID-Injector's phi/mu, held for
    the whole UNet call). Attention is counted as a fused kernel (output only), as PyTorch's flash / memory-efficient
    SDPA allocates on CUDA; ComfyUI's ``attention_pytorch`` is used. Not counted: the CUDA caching allocator's
    fragmentation, cuDNN/cuBLAS workspaces, InstantID's extra 16-token IP attention per layer and PuLID's ID
    attention (its float32 projections of one layer's output: tens of MB at 1024 px).
  * Fits "normally": every weight of the configuration resident at once + activations of both CFG halves (batch 2)
    + OVERHEAD. With low-VRAM streaming (ComfyUI's partial load): only the streaming buffers resident, i.e. the
    largest single load unit (one layer, or a raw-parameter module the pack casts at use) x (NUM_STREAMS + 1) in the
    storage dtype (``comfy/model_patcher.py`` ``load``: ``module_offload_mem * (NUM_STREAMS + 1)``; NUM_STREAMS = 2 on
    NVIDIA) + one cast copy of it in the compute dtype + activations of ONE CFG half (ComfyUI runs the halves one
    at a time when memory is short, ``comfy/samplers.py`` ``_calc_cond_batch``) + OVERHEAD.
  * OVERHEAD = an ASSUMED 0.5 GiB for the CUDA context and library workspaces (not measured here) + ComfyUI's own
    reserve (``comfy.model_management.extra_reserved_memory()``: 0.39 GiB on Linux).
  * Encode-only networks (CLIP-ViT-H, Mixer, Resampler) run once before sampling; ComfyUI evicts managed models the
    sampler needs room for, so the rows without CLIP-ViT-H are the sampling-phase need.

MEASURED (``--cuda``, on a CUDA machine only): the peak of ``torch.cuda.max_memory_allocated`` during one 1024²
sampling step (KSampler's path, CFG 5, both halves) with every network of the configuration resident (random fp16
weights), through ComfyUI's sampler and its stock ControlNet object. Without CUDA this section prints "not run".

    python benchmarks/memory.py [--cuda] [--latent 128]
Needs the ComfyUI host (COMFYUI_PATH, default ~/.cache/comfyui-facesnap/comfyui).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import weakref
from dataclasses import dataclass, field

ROOT = pathlib.Path(__file__).resolve().parents[1]
GIB = 2**30
GPU_SIZES_GIB = (8, 12, 16, 24, 48, 80)
CUDA_CONTEXT_GIB = 0.5  # assumed, see the module docstring
# comfy.model_management.NUM_STREAMS on NVIDIA (async weight offload), unless --disable-async-offload
NVIDIA_STREAMS = 2
FFRNET_TOKENS = 16  # f_mix / InstantID identity tokens
TEXT_TOKENS = 77


def boot(cpu: bool):
    sys.path.insert(0, str(ROOT))  # only while importing pack_import: the root's nodes/ would shadow ComfyUI's
    import pack_import

    sys.path.remove(str(ROOT))
    pack_import.boot_comfyui(cpu=cpu)


def storage_dtypes() -> dict:
    """Storage dtype -> (storage, compute) as ComfyUI's manual cast pairs them (fp8 computes in fp16)."""
    import torch

    return {"fp32": (torch.float32, torch.float32), "fp16": (torch.float16, torch.float16),
            "bf16": (torch.bfloat16, torch.bfloat16), "fp8_e4m3fn": (torch.float8_e4m3fn, torch.float16)}


# --- networks, built on the meta device ----------------------------------------------------------------------------
@dataclass
class Network:
    name: str
    params: int
    largest_unit: int  # parameters of the largest unit ComfyUI streams or the pack casts at use
    encode_only: bool = False
    module: object = field(default=None, repr=False)  # the meta module, where activations are traced through it
    fixed_size: int | None = None  # bytes per parameter when the pack stores it so whatever the option (the parser)


def load_units(module) -> list[int]:
    """Parameter counts of what is moved or cast as one piece: modules with parameters of their own (ComfyUI's
    ``ModelPatcher._load_list`` streams those without parameters in children; the pack casts the others at use)."""
    return [sum(p.numel() for p in m.parameters(recurse=False)) for m in module.modules()
            if any(True for _ in m.parameters(recurse=False))]


def network(name: str, module, encode_only: bool = False, keep: bool = False,
            fixed_size: int | None = None) -> Network:
    return Network(name, sum(p.numel() for p in module.parameters()), max(load_units(module)), encode_only,
                   module if keep else None, fixed_size)


def sdxl_unet_config(dtype):
    """The SDXL UNet config as ComfyUI derives it from a diffusers SDXL ControlNet layout, checked to be
    the ``comfy.supported_models.SDXL`` family."""
    import torch

    import comfy.model_detection
    import comfy.supported_models

    from comfyui_facesnap.models.identity.sdxl_controlnet import ControlNetConfig, SDXLControlNet

    with torch.device("meta"):
        probe = SDXLControlNet(ControlNetConfig.sdxl())
    config = comfy.model_detection.unet_config_from_diffusers_unet(probe.state_dict(), dtype)
    family = comfy.model_detection.model_config_from_unet_config(config)
    if type(family) is not comfy.supported_models.SDXL:
        raise RuntimeError(f"ComfyUI detects {type(family).__name__}, not SDXL, for the SDXL layout")
    return config, family


def build_networks(compute_dtype=None) -> dict[str, Network]:
    """Every network, on the meta device; those traced for activations keep their module (in ``compute_dtype``)."""
    import torch

    import comfy.cldm.cldm
    import comfy.clip_model
    import comfy.ops

    from comfyui_facesnap.models.face_analysis.face_parsing import BiSeNet
    from comfyui_facesnap.models.identity.facesnap.attribute_mixer import FacialAttributeMixer, MixerConfig
    from comfyui_facesnap.models.identity.facesnap.ffrnet import FFRNET_PRESETS, FFRNet, FFRNetConfig
    from comfyui_facesnap.models.identity.instantid.resampler import Resampler, ResamplerConfig
    from comfyui_facesnap.models.identity.ip_attention import IPAttentionLayers
    from comfyui_facesnap.models.identity.pulid.adapter import V1, V1_1, PuLIDAdapter
    from comfyui_facesnap.models.identity.pulid.eva_clip_vision import EVAVisionTower
    from comfyui_facesnap.models.identity.unet_sites import ip_adapter_layer_sites

    meta = torch.device("meta")
    dtype = compute_dtype or torch.float16
    config, family = sdxl_unet_config(dtype)
    nets = {}
    unet = family.get_model({}, device=meta).diffusion_model.to(dtype)
    nets["sdxl_unet"] = network("SDXL UNet", unet, keep=True)
    ops = comfy.ops.disable_weight_init
    with meta:
        ip = IPAttentionLayers(ip_adapter_layer_sites(config), config["context_dim"], ops)
        nets["ip_attention"] = network(f"InstantID IP projections ({len(ip)} pairs)", ip)
        cn_config = dict(config, hint_channels=3, operations=ops, device=meta)
        cn_config.pop("out_channels")  # as comfy/controlnet.py builds a diffusers ControlNet
        nets["identitynet"] = network("IdentityNet (SDXL ControlNet)",
                                      comfy.cldm.cldm.ControlNet(**cn_config).to(dtype), keep=True)
        for preset in FFRNET_PRESETS:
            ffrnet = FFRNet(FFRNetConfig.preset(preset), ops).to(dtype)
            nets[f"ffrnet_{preset}"] = network(f"FFRNet {preset} + ID-Injector", ffrnet, keep=True)
        nets["mixer"] = network("Attribute Mixer", FacialAttributeMixer(MixerConfig(), ops), encode_only=True)
        nets["resampler"] = network("InstantID Resampler", Resampler(ResamplerConfig.instantid(), ops),
                                    encode_only=True)
        clip_config = json.loads(
            (pathlib.Path(comfy.clip_model.__file__).parent / "clip_vision_config_h.json").read_text())
        nets["clip_vit_h"] = network("CLIP-ViT-H", comfy.clip_model.CLIPVisionModelProjection(
            clip_config, dtype, meta, comfy.ops.manual_cast), encode_only=True)
        for version in (V1, V1_1):
            adapter = PuLIDAdapter(version, unet_config=config, operations=ops)
            nets[f"pulid_{version}_encoder"] = network(f"PuLID {version} ID encoder", adapter.image_proj,
                                                      encode_only=True)
            nets[f"pulid_{version}_attention"] = network(f"PuLID {version} ID attention ({len(adapter.ip_adapter)} "
                                                         "pairs)", adapter.ip_adapter)
        nets["eva_clip"] = network("EVA02-CLIP-L-14-336 vision tower", EVAVisionTower(operations=ops),
                                   encode_only=True)
        nets["face_parser"] = network("BiSeNet face parser (float32)", BiSeNet(operations=ops), encode_only=True,
                                      fixed_size=4)
    return nets


CONFIGURATIONS = {  # label -> (networks, ControlNet traced for activations)
    "SDXL": (["sdxl_unet"], None),
    "SDXL + FFRNet sdxl + heads": (["sdxl_unet", "ffrnet_sdxl", "mixer"], "ffrnet_sdxl"),
    "SDXL + FFRNet sdxl_light + heads": (["sdxl_unet", "ffrnet_sdxl_light", "mixer"], "ffrnet_sdxl_light"),
    "SDXL + InstantID": (["sdxl_unet", "identitynet", "resampler", "ip_attention"], "identitynet"),
    "SDXL + PuLID v1": (["sdxl_unet", "pulid_v1_encoder", "pulid_v1_attention"], None),
    "SDXL + PuLID v1.1": (["sdxl_unet", "pulid_v1.1_encoder", "pulid_v1.1_attention"], None),
    # EcomID's IdentityNet has InstantID's IdentityNet's layout (its published file: 1,251,014,160 parameters)
    "SDXL + EcomID": (["sdxl_unet", "identitynet", "resampler", "pulid_v1_encoder", "pulid_v1_attention"],
                      "identitynet"),
}
ENCODE_NETWORKS = {"PuLID": (" + EVA-CLIP + parser", ["eva_clip", "face_parser"]),
                   "EcomID": (" + EVA-CLIP + parser", ["eva_clip", "face_parser"])}  # default: CLIP-ViT-H


def configurations() -> dict[str, tuple[list[str], str | None]]:
    out = {}
    for label, (names, control) in CONFIGURATIONS.items():
        out[label] = (names, control)
        method = next((m for m in ENCODE_NETWORKS if f" {m}" in label), None)
        suffix, extra = ENCODE_NETWORKS.get(method, (" + CLIP-ViT-H", ["clip_vit_h"]))
        out[label + suffix] = (names + extra, control)
    return out


# --- activations: live tensor bytes on the meta device ---------------------------------------------------------------
def live_tensor_tracker(known_tensors):
    """A dispatch mode counting the bytes of every storage an op allocates while it is alive (``peak``, ``live``).
    Storages of ``known_tensors`` (weights, inputs) are never counted, nor are views of them."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class LiveTensorBytes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self._known = [t.untyped_storage() for t in known_tensors]  # held, so their ids stay unique
            self._known_ids = {id(s) for s in self._known}
            self._tracked: set[int] = set()
            self.live = self.peak = 0

        def _release(self, key: int, nbytes: int) -> None:
            self._tracked.discard(key)
            self.live -= nbytes

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                if not isinstance(t, torch.Tensor):
                    continue
                storage = t.untyped_storage()  # one Python object per storage while it lives
                key = id(storage)
                if key in self._known_ids or key in self._tracked:
                    continue
                self._tracked.add(key)
                self.live += storage.nbytes()
                self.peak = max(self.peak, self.live)
                weakref.finalize(storage, self._release, key, storage.nbytes())
            return out

    return LiveTensorBytes()


def fused_attention_mode():
    """``F.scaled_dot_product_attention`` allocating only its output, as CUDA's fused kernels do (the meta device
    would otherwise count the full attention matrix of the math fallback)."""
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    class FusedAttention(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func is F.scaled_dot_product_attention:
                q, _, v = args[:3]
                return q.new_empty(q.shape[:-1] + (v.shape[-1],))
            return func(*args, **(kwargs or {}))

    return FusedAttention()


def step_activation_bytes(unet, control_net=None, batch: int = 2, latent: int = 128, dtype=None) -> int:
    """Peak activation bytes of one sampling step: ``control_net`` (FFRNet, or a ComfyUI ControlNet) on the batch,
    then the UNet with its residuals (and FFRNet's injector phi/mu). Inputs are counted; weights are not."""
    import torch

    import comfy.ldm.modules.attention as attention

    meta, dtype = torch.device("meta"), dtype or torch.float16
    x = torch.empty(batch, 4, latent, latent, device=meta, dtype=dtype)
    hint = torch.empty(batch, 3, latent * 8, latent * 8, device=meta, dtype=dtype)
    timesteps = torch.empty(batch, device=meta, dtype=dtype)
    text = torch.empty(batch, TEXT_TOKENS, 2048, device=meta, dtype=dtype)
    tokens = torch.empty(batch, FFRNET_TOKENS, 2048, device=meta, dtype=dtype)
    y = torch.empty(batch, 2816, device=meta, dtype=dtype)
    inputs = (x, hint, timesteps, text, tokens, y)
    weights = [*unet.parameters(), *unet.buffers()]
    if control_net is not None:
        weights += [*control_net.parameters(), *control_net.buffers()]
    tracker = live_tensor_tracker(weights + list(inputs))
    selected = attention.optimized_attention
    attention.optimized_attention = attention.attention_pytorch  # what ComfyUI picks on CUDA
    try:
        with torch.no_grad(), fused_attention_mode(), tracker:
            control, injector = None, None
            if control_net is not None:
                out = control_net(x=x, hint=hint, timesteps=timesteps, context=tokens, y=y)
                if getattr(control_net, "id_injector", None) is not None:
                    injector = control_net.injector_params(out)
                control = {"output": list(out["output"]), "middle": list(out["middle"])}
                del out
            result = unet(x, timesteps, text, y, control=control)
            del result, control, injector
    finally:
        attention.optimized_attention = selected
    return tracker.peak + sum(t.numel() * t.element_size() for t in inputs)


# --- report ----------------------------------------------------------------------------------------------------------
def overhead_bytes() -> float:
    import comfy.model_management as mm

    return CUDA_CONTEXT_GIB * GIB + mm.extra_reserved_memory()


def smallest_gpu(need_bytes: float) -> str:
    return next((f"{size} GB" for size in GPU_SIZES_GIB if need_bytes <= size * GIB), "> 80 GB")


def weight_table(nets: dict[str, Network]) -> list[str]:
    import torch

    lines = [f"{'network':44s} {'params':>15s}  " + "  ".join(f"{k:>10s}" for k in storage_dtypes())]
    for net in nets.values():
        gib = [net.params * (net.fixed_size or torch.empty((), dtype=s).element_size()) / GIB
               for s, _ in storage_dtypes().values()]
        lines.append(f"{net.name:44s} {net.params:>15,d}  " + "  ".join(f"{g:>6.2f} GiB" for g in gib))
    return lines


def memory_report(nets: dict[str, Network], activations: dict, configs: dict, fits: dict | None = None,
                  storages=None) -> list[str]:
    """``activations``: (control name or None, batch, compute element size) -> bytes. ``fits`` (optional) receives
    storage -> configuration -> (normal, lowvram) bytes. ``storages``: names of ``storage_dtypes()`` (default all)."""
    import torch

    overhead = overhead_bytes()
    fits = {} if fits is None else fits
    lines = [f"{'configuration':48s} {'storage':>10s} {'weights':>9s} {'act x1':>7s} {'act x2':>7s} "
             f"{'normal':>8s} {'GPU':>7s} {'lowvram':>8s} {'GPU':>7s}"]
    for label, (names, control) in configs.items():
        members = [nets[n] for n in names]
        for storage_name, (storage, compute) in storage_dtypes().items():
            if storages is not None and storage_name not in storages:
                continue
            size = torch.empty((), dtype=storage).element_size()
            compute_size = torch.empty((), dtype=compute).element_size()
            weights = sum(n.params * (n.fixed_size or size) for n in members)
            act1, act2 = (activations[(control, b, compute_size)] for b in (1, 2))
            unit = max(n.largest_unit for n in members)
            cast_copy = unit * compute_size if compute_size != size else 0  # manual cast: one layer at a time
            normal = weights + cast_copy + act2 + overhead
            lowvram = unit * size * (NVIDIA_STREAMS + 1) + cast_copy + act1 + overhead
            fits.setdefault(storage_name, {})[label] = (normal, lowvram)
            lines.append(f"{label:48s} {storage_name:>10s} {weights / GIB:>5.2f} GiB {act1 / GIB:>7.2f} "
                         f"{act2 / GIB:>7.2f} {normal / GIB:>4.1f} GiB {smallest_gpu(normal):>7s} "
                         f"{lowvram / GIB:>4.1f} GiB {smallest_gpu(lowvram):>7s}")
    return lines


def fit_summary(fits: dict, storage_names=("fp16", "fp8_e4m3fn")) -> list[str]:
    """The smallest GPU of each configuration per storage dtype, without and with low-VRAM streaming."""
    header = "".join(f" {name:>11s} {name + ' lowvram':>19s}" for name in storage_names)
    lines = [f"{'configuration':48s}{header}"]
    for label in fits[storage_names[0]]:
        cells = "".join(f" {smallest_gpu(fits[s][label][0]):>11s} {smallest_gpu(fits[s][label][1]):>19s}"
                        for s in storage_names)
        lines.append(f"{label:48s}{cells}")
    return lines


def computed_activations(nets: dict[str, Network], configs: dict, latent: int, batches=(1, 2),
                         compute_dtypes=("float16", "float32")) -> dict:
    """(control, batch, compute element size) -> activation bytes, traced at each compute dtype (bf16 = fp16)."""
    import torch

    controls = {control for _, control in configs.values()}
    out = {}
    for compute in (getattr(torch, name) for name in compute_dtypes):
        size = torch.empty((), dtype=compute).element_size()
        unet = nets["sdxl_unet"].module.to(compute)
        for control in controls:
            control_net = None if control is None else nets[control].module.to(compute)
            for batch in batches:
                out[(control, batch, size)] = step_activation_bytes(unet, control_net, batch, latent, compute)
    return out


def cuda_measurements(nets: dict[str, Network], configs: dict, latent: int) -> list[str]:
    """Peak allocation of one sampling step per configuration (random fp16 weights, all resident). CUDA only."""
    import torch

    import comfy.controlnet
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.sample

    device, dtype, meta = mm.get_torch_device(), torch.float16, torch.device("meta")
    g = torch.Generator().manual_seed(0)
    text, pooled = torch.randn(1, TEXT_TOKENS, 2048, generator=g), torch.randn(1, 1280, generator=g)
    tokens = torch.randn(1, FFRNET_TOKENS, 2048, generator=g)
    hint = torch.rand(1, 3, latent * 8, latent * 8, generator=g)
    latent_image = torch.zeros(1, 4, latent, latent)
    _, family = sdxl_unet_config(dtype)
    model = family.get_model({}, device=device)
    for p in model.parameters():
        p.data.normal_(0.0, 0.02)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=device)
    lines = []
    for label, (names, control_name) in configs.items():
        idle = sum(nets[n].params for n in names if n not in ("sdxl_unet", control_name)) * 2
        held = torch.empty(idle, dtype=torch.uint8, device=device)  # the encode-only networks' fp16 weights
        positive, negative = {"pooled_output": pooled}, {"pooled_output": torch.zeros_like(pooled)}
        net = None
        if control_name is not None:
            net = nets[control_name].module.to_empty(device=device).to(dtype)
            for p in net.parameters():
                p.data.normal_(0.0, 0.02)
            control = comfy.controlnet.ControlNet(net, load_device=device).copy().set_cond_hint(hint, 1.0)
            for cond in (positive, negative):
                cond.update(control=control, cross_attn_controlnet=tokens)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        noise = comfy.sample.prepare_noise(latent_image, 0)
        comfy.sample.sample(patcher, noise, 1, 5.0, "euler", "normal", [[text, positive]],
                            [[torch.zeros_like(text), negative]], latent_image, disable_pbar=True, seed=0)
        peak = torch.cuda.max_memory_allocated(device)
        lines.append(f"{label:48s} fp16  peak allocated {peak / GIB:6.2f} GiB (measured; encode-only networks held "
                     f"as {idle / GIB:.2f} GiB, IP attention and ID-Injector not applied)")
        del held, positive, negative
        mm.unload_all_models()
        if net is not None:
            net.to_empty(device=meta)
        mm.soft_empty_cache()
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latent", type=int, default=128, help="latent side (128 = 1024 px)")
    parser.add_argument("--cuda", action="store_true", help="also measure peak allocation on the CUDA device")
    opts = parser.parse_args(argv)

    import torch

    boot(cpu=not (opts.cuda and torch.cuda.is_available()))
    import comfy.model_management as mm

    nets = build_networks()
    configs = configurations()
    px = opts.latent * 8
    print("== Weights (COMPUTED: parameter counts of the real modules on the meta device) ==")
    print("\n".join(weight_table(nets)))
    activations = computed_activations(nets, configs, opts.latent)
    print(f"\n== One sampling step at {px}x{px} (COMPUTED: activations traced on the meta device; "
          f"act x1/x2 = one / both CFG halves, GiB) ==")
    print(f"overhead {overhead_bytes() / GIB:.2f} GiB (assumed {CUDA_CONTEXT_GIB} GiB CUDA context + ComfyUI reserve "
          f"{mm.extra_reserved_memory() / GIB:.2f} GiB); lowvram buffers = largest unit x {NVIDIA_STREAMS + 1} "
          "(+ its cast copy when storage != compute)")
    fits = {}
    print("\n".join(memory_report(nets, activations, configs, fits)))
    print("\n== Which GPU (COMPUTED, from the table above) ==")
    print("\n".join(fit_summary(fits)))
    print(f"\n== Peak allocation during one {px}x{px} sampling step (MEASURED, CUDA) ==")
    if opts.cuda and torch.cuda.is_available():
        print("\n".join(cuda_measurements(nets, configs, opts.latent)))
    else:
        print("not run (no CUDA device; run with --cuda on a GPU)")


if __name__ == "__main__":
    main()
