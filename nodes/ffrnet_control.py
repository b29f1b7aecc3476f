"""ComfyUI glue for FFRNet and the ID-Injector (also used by the trainer's ComfyUI-side checks).

How the pieces meet at sampling time (see docs in ../shared/notes/comfyui-host.md §3-§4):
* ``FaceSnapControlNet`` is a ``comfy.controlnet.ControlNet`` whose model is FFRNet. Its cross-attention context
  is the cond key ``cross_attn_controlnet`` (f_mix). Before ComfyUI scales the residuals it computes the
  injector's (phi, mu) from them and publishes them in the per-call ``transformer_options``.
* ``patch_model_with_injector`` clones a MODEL and applies y = (1 + phi) * h + mu after the middle block and
  after each decoder block: an output_block_patch sees the middle output (id 0) and the outputs of decoder
  blocks 0..N-2 (id 1..N-1); the last decoder block gets a tap layer (object patch) reached through a
  forward_timestep_embed_patch. Outside the control's start/end window nothing is published: no-op.
"""

from __future__ import annotations

import torch

import comfy.controlnet
import comfy.model_management
import comfy.model_patcher
import comfy.ops
import comfy.utils
from comfy.ldm.modules.diffusionmodules.openaimodel import TimestepEmbedSequential

from ..models.attribute_mixer import FacialAttributeMixer
from ..models.errors import InvalidInputError, ModelFileError
from ..models.face_features import FaceFeatures
from ..models.ffrnet import FFRNet
from ..models.id_injector import IDInjector

INJECTOR_KEY = "facesnap_id_injector"  # transformer_options entry: [(phi, mu)] per injection point
ASPECT_TOLERANCE = 0.02


class FaceSnapControlNet(comfy.controlnet.ControlNet):
    """FFRNet as a ComfyUI ControlNet. Extra state survives ``copy()``:
    ``uncond_strength`` (None = same as cond), ``mask`` (H, W) restricting residuals and injector."""

    def __init__(self, control_model: FFRNet | None = None, **kwargs):
        super().__init__(control_model, **kwargs)
        self.uncond_strength: float | None = None
        self.mask: torch.Tensor | None = None
        self._call_options: dict | None = None

    def copy(self):
        c = FaceSnapControlNet(None, global_average_pooling=self.global_average_pooling,
                               load_device=self.load_device, manual_cast_dtype=self.manual_cast_dtype)
        c.control_model = self.control_model
        c.control_model_wrapped = self.control_model_wrapped
        self.copy_to(c)
        c.uncond_strength = self.uncond_strength
        c.mask = self.mask
        return c

    def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
        y = cond.get("y")
        adm = self.control_model.config.projection_class_embeddings_input_dim
        if y is None or y.shape[-1] != adm:
            got = "no ADM vector (an SD1.5/SD2 model?)" if y is None else f"a {y.shape[-1]}-D ADM vector"
            raise InvalidInputError(
                f"FaceSnap's FFRNet is an SDXL ControlNet ({adm}-D ADM), but the model being sampled passes {got}",
                "sample with an SDXL base checkpoint (not SD1.5/SD2 or the SDXL refiner)")
        self._check_hint_aspect(x_noisy)
        self._call_options = transformer_options
        try:
            return super().get_control(x_noisy, t, cond, batched_number, transformer_options)
        finally:
            self._call_options = None

    def _check_hint_aspect(self, x_noisy):
        hint = self.cond_hint_original
        ratio_hint = hint.shape[-1] / hint.shape[-2]
        ratio_latent = x_noisy.shape[-1] / x_noisy.shape[-2]
        if abs(ratio_hint / ratio_latent - 1) > ASPECT_TOLERANCE:
            raise InvalidInputError(
                f"the landmark image is {hint.shape[-1]}x{hint.shape[-2]} but the latent is "
                f"{x_noisy.shape[-1] * 8}x{x_noisy.shape[-2] * 8} pixels: a different aspect ratio would crop "
                "the landmarks off the face",
                "draw the landmarks at the output size (same aspect ratio; the size itself is resized to fit)")

    def _sample_scale(self, batch: int, like: torch.Tensor) -> torch.Tensor:
        """Per-sample strength: cond chunks get ``strength``, uncond chunks ``uncond_strength``."""
        scale = torch.full((batch, 1, 1, 1), float(self.strength), dtype=like.dtype, device=like.device)
        options = self._call_options or {}
        chunks = options.get("cond_or_uncond")
        if self.uncond_strength is not None and chunks:
            per = batch // len(chunks)
            for i, kind in enumerate(chunks):
                if kind == 1:  # comfy.samplers: 0 = cond, 1 = uncond
                    scale[i * per:(i + 1) * per] = float(self.uncond_strength)
        return scale

    def _spatial(self, scale: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.mask is None:
            return scale
        mask = self.mask.to(device=x.device, dtype=x.dtype)
        mask = mask.reshape(-1, 1, *mask.shape[-2:])
        mask = torch.nn.functional.interpolate(mask, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return scale * comfy.utils.repeat_to_batch_size(mask, x.shape[0])

    def control_merge(self, control, control_prev, output_dtype):
        some = control["output"][0]
        scale = self._sample_scale(some.shape[0], some)
        if self.control_model.id_injector is not None and self._call_options is not None:
            params = self.control_model.injector_params(control)  # from the unscaled residuals
            params = [(phi * self._spatial(scale, phi), mu * self._spatial(scale, mu)) for phi, mu in params]
            published = self._call_options.get(INJECTOR_KEY)
            if published is not None:  # a chained FaceSnap control published first: add up
                params = [(p0 + p1, m0 + m1) for (p0, m0), (p1, m1) in zip(published, params)]
            self._call_options[INJECTOR_KEY] = params
        scaled = {key: [None if x is None else x * self._spatial(scale, x) for x in values]
                  for key, values in control.items()}
        strength = self.strength
        self.strength = 1.0  # already applied per sample above; the base merge multiplies by it in place
        try:
            return super().control_merge(scaled, control_prev, output_dtype)
        finally:
            self.strength = strength


def wrap_ffrnet(ffrnet: FFRNet) -> FaceSnapControlNet:
    """FFRNet on ComfyUI's UNet device and dtype, managed (loaded/offloaded) by ComfyUI."""
    load_device = comfy.model_management.get_torch_device()
    params = sum(p.numel() for p in ffrnet.parameters())
    dtype = comfy.model_management.unet_dtype(load_device, model_params=params)
    # FFRNet computes in its weight dtype, so store it in the dtype the device can compute in
    dtype = comfy.model_management.unet_manual_cast(dtype, load_device) or dtype
    ffrnet.to(dtype)
    return FaceSnapControlNet(ffrnet, load_device=load_device)


class FaceSnapBundle:
    """The FACESNAP_MODEL payload: mixer + (optional) FFRNet, each managed by a ComfyUI ModelPatcher."""

    def __init__(self, mixer: FacialAttributeMixer, ffrnet: FFRNet | None, metadata: dict, name: str = ""):
        self.mixer = mixer
        self.ffrnet = ffrnet
        self.metadata = metadata
        self.name = name
        device = comfy.model_management.get_torch_device()
        self.mixer_patcher = comfy.model_patcher.ModelPatcher(
            mixer, load_device=device, offload_device=comfy.model_management.unet_offload_device())
        self.control = wrap_ffrnet(ffrnet) if ffrnet is not None else None

    @property
    def has_injector(self) -> bool:
        return self.ffrnet is not None and self.ffrnet.id_injector is not None

    def _run_mixer(self, *args) -> torch.Tensor:
        comfy.model_management.load_models_gpu([self.mixer_patcher])
        device = self.mixer_patcher.load_device
        with torch.no_grad():
            out = self.mixer(*[a.to(device) for a in args])
        return out.to(comfy.model_management.intermediate_device(), torch.float32)

    def encode(self, features: FaceFeatures) -> torch.Tensor:
        """f_mix (1, 16, d) for all references of one person."""
        return self._run_mixer(*features.batched())

    def uncond_tokens(self) -> torch.Tensor:
        c = self.mixer.config
        return self._run_mixer(torch.zeros(1, 1, c.id_dim), torch.zeros(1, 1, c.clip_tokens, c.clip_dim))


def check_unet_matches(model_patcher, ffrnet: FFRNet, node_id: str = "") -> None:
    """The MODEL must have the UNet layout FFRNet was built for (SDXL: 320/640/1280, 2 res blocks, ADM 2816)."""
    base = model_patcher.model
    unet_cfg = getattr(base.model_config, "unet_config", {}) or {}
    name = type(base.model_config).__name__
    cfg = ffrnet.config
    channels = [unet_cfg.get("model_channels", 0) * m for m in unet_cfg.get("channel_mult", [])]
    res_blocks = unet_cfg.get("num_res_blocks", [])
    if isinstance(res_blocks, int):
        res_blocks = [res_blocks] * len(channels)
    ok = (channels == list(cfg.block_out_channels)
          and all(n == cfg.layers_per_block for n in res_blocks)
          and unet_cfg.get("adm_in_channels") == cfg.projection_class_embeddings_input_dim)
    if not ok:
        raise InvalidInputError(
            f"the MODEL is {name} (UNet channels {channels}, ADM {unet_cfg.get('adm_in_channels')}), but this "
            f"FaceSnap model is for SDXL (channels {list(cfg.block_out_channels)}, ADM "
            f"{cfg.projection_class_embeddings_input_dim})",
            "load an SDXL checkpoint (SD1.5/SD2/Flux models cannot use FaceSnap)")


def apply_at(point: int, h: torch.Tensor, transformer_options: dict) -> torch.Tensor:
    """Eq. 17 at injection point ``point`` (0 = after the middle block), if a control published params."""
    params = transformer_options.get(INJECTOR_KEY)
    if params is None:
        return h
    phi, mu = params[point]
    return IDInjector.apply(h, phi, mu)


class InjectorOutputPatch:
    """output_block_patch: ``h`` entering decoder block ``id`` is the middle output (id 0) or block id-1's output."""

    def __call__(self, h, hsp, transformer_options):
        kind, index = transformer_options["block"]
        if kind == "output":
            h = apply_at(index, h, transformer_options)
        return h, hsp


class InjectorTap(torch.nn.Module):
    """Last layer of the last decoder block; its forward_timestep_embed handler applies the final point."""

    def __init__(self, point: int):
        super().__init__()
        self.point = point

    def forward(self, x):  # only reached without the handler below (a patch-less copy of the model)
        return x


def _tap_handler(layer, x, emb, context, transformer_options, *args):
    return apply_at(layer.point, x, transformer_options)


def patch_model_with_injector(model_patcher, ffrnet: FFRNet):
    """A clone of MODEL with the ID-Injector hooks; the input MODEL is untouched."""
    check_unet_matches(model_patcher, ffrnet)
    m = model_patcher.clone()
    patches = m.model_options.get("transformer_options", {}).get("patches", {})
    if any(isinstance(p, InjectorOutputPatch) for p in patches.get("output_block_patch", [])):
        return m  # already patched upstream: patching twice would apply Eq. 17 twice
    unet = m.get_model_object("diffusion_model")
    last = len(unet.output_blocks) - 1
    if len(unet.output_blocks) + 1 != ffrnet.id_injector.layout.points:
        raise InvalidInputError(
            f"the UNet has {len(unet.output_blocks)} decoder blocks; the ID-Injector expects "
            f"{ffrnet.id_injector.layout.points - 1}", "use the SDXL model the FaceSnap weights were trained for")
    m.set_model_output_block_patch(InjectorOutputPatch())
    block = unet.output_blocks[last]
    m.add_object_patch(f"diffusion_model.output_blocks.{last}",
                       TimestepEmbedSequential(*block, InjectorTap(last + 1)))
    m.set_model_forward_timestep_embed_patch((InjectorTap, _tap_handler))
    return m


def apply_facesnap_conditioning(positive, negative, bundle: FaceSnapBundle, f_mix: torch.Tensor,
                                uncond: torch.Tensor, landmark_image: torch.Tensor, strength: float,
                                start: float, end: float, mask: torch.Tensor | None = None,
                                uncond_strength: float | None = None):
    """Set ``control`` + ``cross_attn_controlnet`` on every positive and negative cond, chaining previous ones."""
    check_sdxl_conditioning(positive, negative)
    hint = landmark_image.movedim(-1, 1)
    cnets = {}
    out = []
    for conditioning, tokens in ((positive, f_mix), (negative, uncond)):
        result = []
        for text, opts in conditioning:
            d = opts.copy()
            prev = d.get("control")
            if prev not in cnets:
                c_net = bundle.control.copy().set_cond_hint(hint, strength, (start, end))
                c_net.uncond_strength = uncond_strength
                c_net.mask = mask
                c_net.set_previous_controlnet(prev)
                cnets[prev] = c_net
            d["control"] = cnets[prev]
            d["control_apply_to_uncond"] = False
            d["cross_attn_controlnet"] = tokens
            result.append([text, d])
        out.append(result)
    return out[0], out[1]


def check_sdxl_conditioning(*conditionings) -> None:
    for conditioning in conditionings:
        for _, opts in conditioning:
            pooled = opts.get("pooled_output")
            if pooled is not None and pooled.shape[-1] != 1280:
                raise InvalidInputError(
                    f"the conditioning carries a {pooled.shape[-1]}-D pooled text embedding (SD1.5/SD2 text "
                    "encoder); FaceSnap's FFRNet needs SDXL conditioning (1280-D pooled)",
                    "encode the prompt with the SDXL checkpoint's CLIP")


def init_ffrnet_from_unet(ffrnet: FFRNet, model_patcher) -> list[str]:
    """Copy the SDXL UNet's encoder, middle block and embeddings into FFRNet (ControlNet's usual start for
    training). A shallower FFRNet (``FFRNetConfig.sdxl_light()``) gets the first layers of each transformer block.
    Returns the FFRNet keys left as they were: zero convs, hint embedding, injector heads."""
    check_unet_matches(model_patcher, ffrnet)
    base = model_patcher.model
    return copy_unet_encoder(ffrnet, base.diffusion_model, base.model_config.unet_config)


def copy_unet_encoder(ffrnet: FFRNet, unet: torch.nn.Module, unet_config: dict) -> list[str]:
    """Load every FFRNet tensor that has a same-named (diffusers -> ComfyUI) UNet counterpart; returns the rest."""
    mapping = comfy.utils.unet_to_diffusers(unet_config)  # diffusers name -> ComfyUI name
    unet_sd = unet.state_dict()
    own = ffrnet.state_dict()
    update, mismatched = {}, []
    for name, source in mapping.items():
        if name not in own or source not in unet_sd:
            continue
        if unet_sd[source].shape != own[name].shape:
            mismatched.append(f"{name} {tuple(own[name].shape)} <- {source} {tuple(unet_sd[source].shape)}")
            continue
        update[name] = unet_sd[source].to(own[name].dtype)
    if mismatched:
        raise ModelFileError(
            "the FFRNet does not match the base UNet's encoder: " + "; ".join(mismatched[:3]),
            "build the FFRNet config from the base (the trainer does this unless model.ffrnet overrides it)",
        )
    ffrnet.load_state_dict(update, strict=False)
    return sorted(set(own) - set(update))
