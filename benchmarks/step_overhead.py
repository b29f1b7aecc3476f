"""Cost of one SDXL sampling step with FaceSnap's additions: FLOP counts (deterministic) and interleaved timings.

One step = one CFG-batched UNet call (cond + uncond), as KSampler runs it:
    (a) the SDXL UNet alone
    (b) + a stock ComfyUI ControlNet (comfy.cldm) with the 77-token text context
    (c) + FFRNet with the 16-token f_mix context (injector heads not computed)
    (d) + FFRNet + the ID-Injector (heads computed, MODEL patched)
    (e) + FFRNet on the positive half only (the positive-only ControlNet option: FFRNet runs on batch 1, not 2)
    (f) (e) + the ID-Injector on the positive half
    (g) InstantID: IdentityNet (an SDXL ControlNet reading the Resampler's 16 tokens of width 2048) on both halves
        + IP-attention at the UNet's 70 cross-attentions (to_k_ip / to_v_ip over the 16 tokens), as the pack runs it
    (h) InstantID with IdentityNet on the positive half only (IP-attention still on both halves)
    (i) PuLID v1: its ID attention at the 70 cross-attentions, 10 identity + 8 zero tokens, ortho_v2 (fidelity)
    (j) PuLID v1.1: 32 identity + 20 zero tokens, ortho_v2 (the official v1.1 demo's default)
    (k) EcomID: its IdentityNet (16 Resampler tokens) on both halves + PuLID v1's ID attention (fidelity, cubiq's
        ortho_v2 share)
    (l) EcomID with its IdentityNet on the positive half only
(c)-(f) for every FFRNet preset: ``sdxl`` (the paper's full encoder copy) and ``sdxl_light``. (g)-(l) are counted,
not timed: IdentityNet (InstantID's and EcomID's alike) has the full ``sdxl`` layout (InstantID's ControlNetModel
config, loaded as an ``SDXLControlNet``, FFRNet's backbone); the IP and ID attention are the pack's attn2 patch
(comfy_glue/ip_attention_patch.py) with InstantID's term or PuLID's (comfy_glue/methods/pulid.py). PuLID's encoding
(EVA-CLIP, the parser, the ID encoder) runs once per identity, not per step, and is not in these rows.

FLOPs come from ``torch.utils.flop_counter`` on the meta device: the networks are built without weights and run on
shape-only tensors, so the paper's 1024x1024 is counted exactly in seconds, with no arithmetic and no memory.
Counting real tensors at a small size and scaling up would be wrong twice: attention grows with the square of the
token count, and PyTorch's fused CPU attention kernel reports no FLOPs at all to the counter. Counted: matmuls,
convolutions and attention, 2 FLOPs per multiply-add. Not counted: elementwise work (norms, activations, adding
residuals, the injector's (1 + phi) * h + mu), a fraction of a percent and memory-bound. ComfyUI's attention is
pointed at its ``attention_pytorch`` while counting (its CPU default asks the device for free memory, which a
meta tensor cannot answer); every attention implementation does the same two matmuls.

Timing (unless ``--flops-only``): every configuration is built once, then the rounds interleave them (a, b, c, ...,
then again) and the minimum over rounds is reported, so noise from other jobs hits all configurations alike. On the
CPU the ratios use the process's CPU time with one torch thread by default (wall time is printed too): with two
threads on a busy 2-core machine, threads waiting for each other inflated CPU time many-fold; on a GPU, wall time.
On the CPU the control networks' encoder weights share storage with the UNet's tensors of the same name and shape
(random weights either way, identical arithmetic), so every configuration fits in memory at once. (e)/(f) are
with the control object's ``positive_only`` option.

    python benchmarks/step_overhead.py --flops-only                     # seconds, any machine
    python benchmarks/step_overhead.py --size 1024 --dtype fp16 --rounds 5  # timings on a GPU
The last three lines are the paper's full ``sdxl`` preset, from FLOPs at 1024x1024 (the paper's size):
``ratio ffrnet/unet``, ``ratio injector/ffrnet`` and ``ratio ffrnet_positive_only/unet``. With timings at another
--size, FLOPs at that size are printed beside the times as well.
Needs the ComfyUI host (COMFYUI_PATH, default ~/.cache/comfyui-facesnap/comfyui).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import gc
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
TEXT_TOKENS, FMIX_TOKENS, CONTEXT_DIM, ADM_DIM = 77, 16, 2048, 2816  # SDXL text, f_mix tokens; widths
LABELS = {
    "a": "(a) SDXL UNet alone",
    "b": "(b) + stock ControlNet, 77 text tokens",
    "c": "(c) + FFRNet, 16 f_mix tokens",
    "d": "(d) + FFRNet + ID-Injector",
    "e": "(e) + FFRNet on the positive half only",
    "f": "(f) + FFRNet positive-only + ID-Injector",
    "g": "(g) InstantID: + IdentityNet + IP-attention",
    "h": "(h) InstantID: + IdentityNet positive-only + IP-attention",
    "i": "(i) PuLID v1: + ID attention (10 + 8 zero tokens)",
    "j": "(j) PuLID v1.1: + ID attention (32 + 20 zero tokens)",
    "k": "(k) EcomID: + IdentityNet + PuLID v1 ID attention",
    "l": "(l) EcomID: + IdentityNet positive-only + ID attention",
}
PULID_TOKENS = {"pulid_v1": 10 + 8, "pulid_v1_1": 32 + 20, "ecomid_attention": 10 + 8}  # identity + zero tokens


def boot(cpu: bool):
    sys.path.insert(0, str(ROOT))  # only while importing pack_import: the root's nodes/ would shadow ComfyUI's
    import pack_import

    sys.path.remove(str(ROOT))
    pack_import.boot_comfyui(cpu=cpu)


def sdxl_unet_config(dtype):
    return {
        "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
        "num_classes": "sequential", "adm_in_channels": ADM_DIM, "dtype": dtype, "in_channels": 4,
        "model_channels": 320, "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10],
        "channel_mult": [1, 2, 4], "transformer_depth_middle": 10, "use_linear_in_transformer": True,
        "context_dim": CONTEXT_DIM, "num_head_channels": 64, "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
        "use_temporal_attention": False, "use_temporal_resblock": False,
    }


def stock_controlnet(unet_cfg: dict, device):
    import comfy.cldm.cldm
    import comfy.ops

    cfg = dict(unet_cfg)
    cfg.pop("out_channels")
    cfg.update(hint_channels=3, operations=comfy.ops.disable_weight_init, device=device)
    return comfy.cldm.cldm.ControlNet(**cfg)


# ---- FLOPs ------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def comfy_attention(name: str = "attention_pytorch"):
    """Route ComfyUI's cross-attention through ``name`` (a function of comfy.ldm.modules.attention) for a while."""
    import comfy.ldm.modules.attention as attention

    saved = attention.optimized_attention
    attention.optimized_attention = getattr(attention, name)
    try:
        yield
    finally:
        attention.optimized_attention = saved


def count_flops(run) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def step_inputs(batch: int, size: int, tokens: int, unet_cfg: dict, device):
    import torch

    return dict(x=torch.zeros(batch, 4, size // 8, size // 8, device=device),
                timesteps=torch.full((batch,), 500.0, device=device),
                context=torch.zeros(batch, tokens, unet_cfg["context_dim"], device=device),
                y=torch.zeros(batch, unet_cfg["adm_in_channels"], device=device))


def ip_attention_options(unet_cfg: dict, tokens: int, device, attention: str, term=None) -> dict:
    """transformer_options with an identity's attention patch at every cross-attention of ``unet_cfg`` (the pack's
    ``IPAttentionPatch``, with ``term``: InstantID's by default; the text attention inside it through ComfyUI's
    ``attention``), for a CFG batch."""
    import torch

    import comfy.ldm.modules.attention

    from comfyui_facesnap.comfy_glue.ip_attention_patch import IPAttentionPatch
    from comfyui_facesnap.models.identity.ip_attention import IPAttentionLayers
    from comfyui_facesnap.models.identity.unet_sites import ip_adapter_layer_sites

    width = unet_cfg["context_dim"]
    with torch.device(device):
        layers = IPAttentionLayers(ip_adapter_layer_sites(unet_cfg), context_dim=width)
        cond, uncond = torch.zeros(1, tokens, width), torch.zeros(1, tokens, width)
    text_attention = getattr(comfy.ldm.modules.attention, attention)

    def inner(q, k, v, extra):
        return text_attention(q, k, v, extra["n_heads"], attn_precision=extra.get("attn_precision"))

    patches = {key: IPAttentionPatch(layers.for_patch_key(key), cond, uncond, 1.0, (float("inf"), 0.0), None, inner,
                                     term) for key in layers.patch_keys}
    return {"patches_replace": {"attn2": patches}, "cond_or_uncond": [0, 1]}


def network_flops(size: int, unet_cfg: dict, ffrnet_configs: dict, device="meta",
                  attention: str = "attention_pytorch", identitynet_config=None,
                  attention_terms: dict | None = None) -> dict[str, int]:
    """FLOPs of each network in one CFG step (batch 2; FFRNet and its injector heads also on batch 1).

    Built and run on ``device`` ("meta": shapes only). ``ffrnet_configs``: preset name -> FFRNetConfig. With
    ``identitynet_config`` (a ControlNetConfig), InstantID's IdentityNet on batch 2 and 1
    ("identitynet2", "identitynet1") and its IP-attention ("ip_attention": the patched UNet's surplus) too.
    ``attention_terms``: name -> (tokens, term), further identity attentions counted the same way (PuLID's)."""
    import torch

    import comfy.supported_models

    from comfyui_facesnap.models.identity.facesnap.ffrnet import FFRNet
    from comfyui_facesnap.models.identity.sdxl_controlnet import SDXLControlNet

    device = torch.device(device)
    with torch.device(device):
        unet = comfy.supported_models.SDXL(unet_cfg).get_model({}, device=device).diffusion_model
        stock = stock_controlnet(unet_cfg, device)
        ffrnets = {preset: FFRNet(cfg) for preset, cfg in ffrnet_configs.items()}
        identitynet = SDXLControlNet(identitynet_config) if identitynet_config is not None else None
    text, fmix = (step_inputs(2, size, tokens, unet_cfg, device) for tokens in (TEXT_TOKENS, FMIX_TOKENS))
    hint = torch.zeros(2, 3, size, size, device=device)

    def control_flops(net, batch: int, out: dict) -> int:
        inputs = {k: v[:batch] for k, v in fmix.items()}
        return count_flops(lambda: out.update(control=net(inputs["x"], hint[:batch], inputs["timesteps"],
                                                          inputs["context"], inputs["y"])))

    flops = {}
    with torch.no_grad(), comfy_attention(attention):
        flops["unet"] = count_flops(lambda: unet(**text))
        flops["stock"] = count_flops(lambda: stock(text["x"], hint, text["timesteps"], text["context"], text["y"]))
        for preset, ffrnet in ffrnets.items():
            for batch in (2, 1):
                out = {}
                flops[f"ffrnet{batch} {preset}"] = control_flops(ffrnet, batch, out)
                injector = functools.partial(ffrnet.injector_params, out["control"])
                flops[f"injector{batch} {preset}"] = count_flops(injector)
        if identitynet is not None:
            for batch in (2, 1):
                flops[f"identitynet{batch}"] = control_flops(identitynet, batch, {})
            options = ip_attention_options(unet_cfg, FMIX_TOKENS, device, attention)
            flops["ip_attention"] = count_flops(lambda: unet(**text, transformer_options=options)) - flops["unet"]
        for name, (tokens, term) in (attention_terms or {}).items():
            options = ip_attention_options(unet_cfg, tokens, device, attention, term)
            flops[name] = count_flops(functools.partial(unet, **text, transformer_options=options)) - flops["unet"]
    return flops


def step_flops(flops: dict[str, int], presets) -> dict[str, int]:
    """FLOPs of a whole CFG step per configuration key ("a", "b", "c sdxl", ...)."""
    steps = {"a": flops["unet"], "b": flops["unet"] + flops["stock"]}
    for p in presets:
        steps[f"c {p}"] = flops["unet"] + flops[f"ffrnet2 {p}"]
        steps[f"d {p}"] = steps[f"c {p}"] + flops[f"injector2 {p}"]
        steps[f"e {p}"] = flops["unet"] + flops[f"ffrnet1 {p}"]
        steps[f"f {p}"] = steps[f"e {p}"] + flops[f"injector1 {p}"]
    if "identitynet2" in flops:
        steps["g"] = flops["unet"] + flops["ip_attention"] + flops["identitynet2"]
        steps["h"] = flops["unet"] + flops["ip_attention"] + flops["identitynet1"]
    for key, name in (("i", "pulid_v1"), ("j", "pulid_v1_1")):
        if name in flops:
            steps[key] = flops["unet"] + flops[name]
    if "ecomid_attention" in flops and "identitynet2" in flops:
        steps["k"] = flops["unet"] + flops["ecomid_attention"] + flops["identitynet2"]
        steps["l"] = flops["unet"] + flops["ecomid_attention"] + flops["identitynet1"]
    return steps


def pulid_encode_flops() -> dict[str, int]:
    """FLOPs of encoding one photo for PuLID / EcomID (once per identity, not per step), on the meta device: the face
    parser at 512 px, the EVA-CLIP tower at 336 px, v1's IDEncoder and v1.1's IDFormer on its features."""
    import torch

    from comfyui_facesnap.models.face_analysis.face_parsing import BiSeNet
    from comfyui_facesnap.models.identity.pulid.adapter import V1, V1_1, PuLIDAdapter, id_features
    from comfyui_facesnap.models.identity.pulid.eva_clip_vision import EVAVisionTower

    meta = torch.device("meta")
    with meta:
        parser, tower = BiSeNet().eval(), EVAVisionTower()
        encoders = {version: PuLIDAdapter(version).image_proj for version in (V1, V1_1)}
    eva = {}
    flops = {"parser": count_flops(lambda: parser(torch.zeros(1, 3, 512, 512, device=meta))),
             "eva_clip": count_flops(lambda: eva.update(out=tower(torch.zeros(1, 3, 336, 336, device=meta))))}
    features = id_features(torch.zeros(1, 512, device=meta), eva["out"].embedding)
    flops["idencoder"] = count_flops(lambda: encoders[V1](features, eva["out"].hidden_states))
    flops["idformer"] = count_flops(lambda: encoders[V1_1](features[None], eva["out"].hidden_states))
    return flops


def pulid_terms() -> dict:
    """PULID_TOKENS with PuLID's term: fidelity's ortho_v2, the official share (PuLID) or cubiq's (EcomID)."""
    from comfyui_facesnap.comfy_glue.methods.pulid import IDAttentionTerm

    shares = {"pulid_v1": "official", "pulid_v1_1": "official", "ecomid_attention": "cubiq"}
    return {name: (tokens, IDAttentionTerm("ortho_v2", shares[name])) for name, tokens in PULID_TOKENS.items()}


def headline_ratios(steps: dict[str, float], preset: str) -> tuple[float, float, float]:
    """ffrnet/unet = (c)/(a), injector/ffrnet = (d)/(c), ffrnet_positive_only/unet = (e)/(a)."""
    return (steps[f"c {preset}"] / steps["a"], steps[f"d {preset}"] / steps[f"c {preset}"],
            steps[f"e {preset}"] / steps["a"])


def instantid_ratios(steps: dict[str, float]) -> tuple[float, float]:
    """instantid/unet = (g)/(a) and instantid_positive_only/unet = (h)/(a)."""
    return steps["g"] / steps["a"], steps["h"] / steps["a"]


def label(key: str) -> str:
    kind, _, preset = key.partition(" ")
    return f"[{preset}] {LABELS[kind]}" if preset else LABELS[kind]


# ---- timing -----------------------------------------------------------------------------------------------------
def randomize(module, std=0.02, seed=0):
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)
    return module


def materialize(module, shared: dict, rename=lambda name: name, std=0.02, seed=0) -> int:
    """Give a meta-device module real tensors: parameters with a same-named, same-shaped ``shared`` tensor use it
    (the same Parameter object), the rest are new random tensors. Returns the number of shared elements."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    count = 0
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        owner_name, _, attr = name.rpartition(".")
        owner = module.get_submodule(owner_name)
        source = shared.get(rename(name))
        if isinstance(tensor, torch.nn.Parameter) and source is not None and source.shape == tensor.shape \
                and source.dtype == tensor.dtype:
            setattr(owner, attr, source)
            count += tensor.numel()
            continue
        fresh = (torch.randn(tensor.shape, generator=gen) * std).to(tensor.dtype)
        if isinstance(tensor, torch.nn.Parameter):
            setattr(owner, attr, torch.nn.Parameter(fresh, requires_grad=False))
        else:
            owner.register_buffer(attr, fresh)
    return count


class Timer:
    def __init__(self, latent, steps: int, device):
        self.latent, self.steps, self.device = latent, steps, device

    def __call__(self, patcher, positive, negative) -> tuple[float, float]:
        import torch

        import comfy.sample

        noise = comfy.sample.prepare_noise(self.latent, 0)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start, start_cpu = time.perf_counter(), time.process_time()
        comfy.sample.sample(patcher, noise, self.steps, 5.0, "euler", "normal", positive, negative, self.latent,
                            disable_pbar=True, seed=0)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - start, time.process_time() - start_cpu


def build_timed_configurations(size: int, unet_cfg: dict, ffrnet_configs: dict, device) -> dict:
    """key -> (patcher, positive, negative); every network built once and held. ``ffrnet_configs``: preset name ->
    FFRNetConfig (with injector heads); the dtype is ``unet_cfg["dtype"]``."""
    import torch

    import comfy.controlnet
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    import comfy.utils

    from comfyui_facesnap.comfy_glue.conditioning import apply_identity_control
    from comfyui_facesnap.comfy_glue.control import wrap_identity_model
    from comfyui_facesnap.comfy_glue.id_injector_patch import patch_model_with_injector
    from comfyui_facesnap.models.identity.facesnap.ffrnet import FFRNet

    dtype = unet_cfg["dtype"]
    share = device.type == "cpu" and dtype == torch.float32
    model = randomize(comfy.supported_models.SDXL(unet_cfg).get_model({}, device=torch.device("cpu"))).to(dtype)
    base = comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=mm.unet_offload_device())
    unet_params = dict(model.diffusion_model.named_parameters()) if share else {}
    g = torch.Generator().manual_seed(1)
    width = unet_cfg["context_dim"]
    text = torch.randn(1, TEXT_TOKENS, width, generator=g)
    pooled = torch.randn(1, 1280, generator=g)
    hint = torch.rand(1, 3, size, size, generator=g)
    f_mix, uncond = torch.randn(1, FMIX_TOKENS, width, generator=g), torch.zeros(1, FMIX_TOKENS, width)

    def conds(control=None):
        pos, neg = {"pooled_output": pooled}, {"pooled_output": torch.zeros_like(pooled)}
        if control is not None:
            for d in (pos, neg):
                d.update(control=control, control_apply_to_uncond=False)
        return [[text, pos]], [[torch.zeros_like(text), neg]]

    def identity_conds(control, positive_only=False):
        image = hint.movedim(1, -1)  # apply_identity_control takes a ComfyUI IMAGE
        return apply_identity_control(*conds(), control, cond_tokens=f_mix, uncond_tokens=uncond, hint=image,
                                      strength=1.0, start=0.0, end=1.0, positive_only=positive_only)

    configs = {"a": (base, *conds())}
    with torch.device("meta"):
        stock = stock_controlnet(unet_cfg, torch.device("meta")).to(dtype)
    shared = materialize(stock, unet_params)
    stock_control = comfy.controlnet.ControlNet(stock, load_device=device).copy().set_cond_hint(hint, 1.0)
    configs["b"] = (base, *conds(stock_control))
    print(f"stock ControlNet: {sum(p.numel() for p in stock.parameters()) / 1e6:.0f} M params "
          f"({shared / 1e6:.0f} M sharing the UNet's storage)", flush=True)
    to_comfy = comfy.utils.unet_to_diffusers(unet_cfg)  # diffusers name -> ComfyUI name
    for preset, ffrnet_config in ffrnet_configs.items():
        with torch.device("meta"):
            ffrnet = FFRNet(ffrnet_config).to(dtype)
        shared = materialize(ffrnet, unet_params, rename=lambda name: to_comfy.get(name, ""))
        heads = ffrnet.id_injector
        print(f"FFRNet {preset}: {sum(p.numel() for p in ffrnet.parameters()) / 1e6:.0f} M params incl. injector "
              f"{sum(p.numel() for p in heads.parameters()) / 1e6:.1f} M ({shared / 1e6:.0f} M sharing the UNet's "
              "storage)", flush=True)
        plain = copy.copy(ffrnet)  # (c): the same weights without the heads
        plain._modules = dict(ffrnet._modules)
        plain.id_injector = None
        injector_key = f"benchmark-{preset}"
        for key, net in (("c", plain), ("d", ffrnet)):
            control = wrap_identity_model(net)
            patcher = base
            if key == "d":
                control.injector_key = injector_key
                patcher = patch_model_with_injector(base, ffrnet, injector_key)
            configs[f"{key} {preset}"] = (patcher, *identity_conds(control))
            configs[f"{'e' if key == 'c' else 'f'} {preset}"] = (patcher, *identity_conds(control, positive_only=True))
    return configs


def interleaved_times(configs: dict, timer: Timer, rounds: int, warmup: int, device) -> dict[str, tuple]:
    walls = {key: [] for key in configs}
    cpus = {key: [] for key in configs}
    for r in range(warmup + rounds):
        for key, (patcher, positive, negative) in configs.items():
            wall, cpu = timer(patcher, positive, negative)
            if r >= warmup:
                walls[key].append(wall)
                cpus[key].append(cpu)
        print(f"round {r + 1}/{warmup + rounds} done{' (warm-up)' if r < warmup else ''}", flush=True)
    use = walls if device.type == "cuda" else cpus
    return {key: (min(use[key]), min(walls[key]), walls[key]) for key in configs}


# ---- main -------------------------------------------------------------------------------------------------------
PAPER_SIZE = 1024  # FaceSnap's Table 1 setting: 1024x1024


def print_flops(size: int, steps: dict, seconds: float) -> None:
    print(f"FLOPs per sampling step at {size}x{size} (CFG batch of 2), torch.utils.flop_counter on the meta device "
          f"({seconds:.1f} s):")
    for key, value in steps.items():
        print(f"  {label(key):<60} {value / 1e12:8.3f} TFLOP   x{value / steps['a']:.3f} of (a)")


def count_steps(size: int, presets) -> dict:
    import torch

    from comfyui_facesnap.models.identity.facesnap.ffrnet import FFRNetConfig
    from comfyui_facesnap.models.identity.sdxl_controlnet import ControlNetConfig

    started = time.time()
    flops = network_flops(size, sdxl_unet_config(torch.float32),
                          {p: FFRNetConfig.preset(p, id_injector=True) for p in presets},
                          identitynet_config=ControlNetConfig.sdxl(),
                          attention_terms=pulid_terms())
    steps = step_flops(flops, presets)
    print_flops(size, steps, time.time() - started)
    print(f"  InstantID's parts: IdentityNet {flops['identitynet2'] / 1e12:.3f} TFLOP on both halves, "
          f"{flops['identitynet1'] / 1e12:.3f} on the positive; IP-attention {flops['ip_attention'] / 1e12:.3f} TFLOP")
    print(f"  PuLID's ID attention: v1 {flops['pulid_v1'] / 1e12:.3f} TFLOP, v1.1 {flops['pulid_v1_1'] / 1e12:.3f}, "
          f"in EcomID {flops['ecomid_attention'] / 1e12:.3f}")
    encode = pulid_encode_flops()
    print(f"  PuLID / EcomID encode, once per photo (not per step): face parser {encode['parser'] / 1e9:.1f} GFLOP, "
          f"EVA-CLIP {encode['eva_clip'] / 1e9:.1f}, IDEncoder (v1) {encode['idencoder'] / 1e9:.2f}, IDFormer (v1.1) "
          f"{encode['idformer'] / 1e9:.2f} per pass (two passes: the identity and its negative)")
    return steps


def time_configurations(opts, size: int, presets, steps: dict) -> dict:
    import torch

    import comfy.model_management as mm

    from comfyui_facesnap.models.identity.facesnap.ffrnet import FFRNetConfig

    device = mm.get_torch_device()
    dtype = getattr(torch, DTYPES[opts.dtype or ("fp16" if device.type == "cuda" else "fp32")])
    if device.type == "cpu":
        torch.set_num_threads(opts.threads)
    print(f"\ntiming: device {device}, dtype {dtype}, {size}x{size}, {opts.steps} step(s), {opts.warmup} warm-up + "
          f"{opts.rounds} interleaved rounds, min kept; torch threads {torch.get_num_threads()}", flush=True)
    configs = build_timed_configurations(size, sdxl_unet_config(dtype),
                                         {p: FFRNetConfig.preset(p, id_injector=True) for p in presets}, device)
    latent = torch.zeros(1, 4, size // 8, size // 8)
    times = interleaved_times(configs, Timer(latent, opts.steps, device), opts.rounds, opts.warmup, device)
    basis = "wall" if device.type == "cuda" else "CPU"
    print(f"\nmin over {opts.rounds} rounds ({basis} time is the ratio's basis):")
    for key, (best, _, walls) in times.items():
        print(f"  {label(key):<60} {basis} {best:7.2f} s  x{best / times['a'][0]:.3f} of (a)   "
              f"FLOPs x{steps[key] / steps['a']:.3f}   (wall runs {', '.join(f'{w:.2f}' for w in walls)})")
    return {key: value[0] for key, value in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512, help="image side in pixels for the timings")
    parser.add_argument("--flops-only", action="store_true",
                        help=f"count FLOPs only, at {PAPER_SIZE}x{PAPER_SIZE} (seconds, any machine)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds over all configurations (min is kept)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--steps", type=int, default=1, help="sampling steps per timed run")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for CPU timings (default 1: with more, threads that wait for each other "
                             "on a busy machine inflate the process's CPU time)")
    parser.add_argument("--dtype", choices=DTYPES, default=None, help="weights dtype (default fp32 CPU, fp16 GPU)")
    parser.add_argument("--cpu", action="store_true", help="force the CPU even when CUDA is available")
    parser.add_argument("--ffrnet-preset", nargs="+", metavar="PRESET",
                        help="FFRNet presets to time: sdxl (the paper's), sdxl_light "
                             "(default: both; FLOPs: always both)")
    opts = parser.parse_args(argv)

    import torch

    boot(cpu=opts.cpu or not torch.cuda.is_available())
    from comfyui_facesnap.models.identity.facesnap.ffrnet import FFRNET_PRESETS

    timed_presets = opts.ffrnet_preset or list(FFRNET_PRESETS)
    if not set(timed_presets) <= set(FFRNET_PRESETS):
        parser.error(f"--ffrnet-preset: choose from {', '.join(FFRNET_PRESETS)}")
    with torch.no_grad():  # not set_grad_enabled(False): main() also runs inside the test process
        steps = count_steps(PAPER_SIZE, FFRNET_PRESETS)
        times = {}
        if not opts.flops_only:
            timed_steps = steps if opts.size == PAPER_SIZE else count_steps(opts.size, FFRNET_PRESETS)
            times = time_configurations(opts, opts.size, timed_presets, timed_steps)

    print(f"\nratios per preset; FLOPs at {PAPER_SIZE}x{PAPER_SIZE}"
          + (f", times at {opts.size}x{opts.size}" if times else "") + ":")
    for preset in FFRNET_PRESETS:
        ratios = headline_ratios(steps, preset)
        line = (f"[{preset}] FLOPs: ratio ffrnet/unet {ratios[0]:.3f}, ratio injector/ffrnet {ratios[1]:.4f}, "
                f"ratio ffrnet_positive_only/unet {ratios[2]:.3f}")
        if f"c {preset}" in times:
            line += (f"; timed: ffrnet/unet {times[f'c {preset}'] / times['a']:.3f}, injector/ffrnet "
                     f"{times[f'd {preset}'] / times[f'c {preset}']:.3f}")
            if f"e {preset}" in times:
                line += f", ffrnet_positive_only/unet {times[f'e {preset}'] / times['a']:.3f}"
        print(line)
    instantid, instantid_positive_only = instantid_ratios(steps)
    print(f"[instantid] FLOPs: ratio instantid/unet {instantid:.3f}, ratio instantid_positive_only/unet "
          f"{instantid_positive_only:.3f} (IdentityNet + IP-attention)")
    print(f"[pulid] FLOPs: ratio pulid_v1/unet {steps['i'] / steps['a']:.4f}, ratio pulid_v1_1/unet "
          f"{steps['j'] / steps['a']:.4f} (ID attention)")
    print(f"[ecomid] FLOPs: ratio ecomid/unet {steps['k'] / steps['a']:.3f}, ratio ecomid_positive_only/unet "
          f"{steps['l'] / steps['a']:.3f} (IdentityNet + ID attention; the paper's preset follows)")
    ffrnet_unet, injector_ffrnet, positive_only_unet = headline_ratios(steps, "sdxl")
    print(f"ratio ffrnet/unet: {ffrnet_unet:.3f}")
    print(f"ratio injector/ffrnet: {injector_ffrnet:.4f}")
    print(f"ratio ffrnet_positive_only/unet: {positive_only_unet:.3f}")
    gc.collect()


if __name__ == "__main__":
    main()
