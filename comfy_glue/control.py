"""Identity ControlNets in ComfyUI: a ControlNet whose cross-attention reads identity tokens, not the prompt.

Contract of ``IdentityControlNet`` (FaceSnap's FFRNet; InstantID's IdentityNet loaded as an ``FFRNet`` without
heads; anything with the call signature of ``comfy.cldm.cldm.ControlNet``):

- Each control carries its own ``cond_tokens`` and ``uncond_tokens``, tensors of shape (1, T, D). For every batch
  chunk it feeds its model the cond tokens when ``transformer_options["cond_or_uncond"]`` says 0 (the positive) and
  the uncond tokens otherwise. Nothing is written on the conditioning, so every other ControlNet of the chain (called
  with the caller's cond, before or after this one) reads exactly what it would read without us: the prompt.
- ``strength`` scales cond chunks, ``uncond_strength`` (None = ``strength``) uncond chunks; ``positive_only`` zeroes
  uncond chunks (``conditioning.apply_identity_control`` then also keeps it off the negative).
- The hint (landmark image) and ``mask`` (N, H, W) cover the whole image. Like ComfyUI's conditioning masks they
  are resized to the latent (the hint to its pixel size), cropped to the area of the cond being sampled
  (ConditioningSetArea / ...Percentage), then resized to what the model needs. The area and the latent size reach
  the control through a calc_cond_batch wrapper that it registers as a ControlNet ``extra_hooks`` hook
  (``_AREA_HOOK``): ``get_control`` itself only sees the cropped latent. Without an area this is the plain resize.
- A control whose model has Diff-PC ID-Injector heads has an ``injector_key`` (the FaceSnap file's identity). It
  publishes its unscaled residuals and per-sample weights (strength x mask) under ``FEATURES_KEY`` in the per-call
  ``transformer_options``; only an ID-Injector patch on the MODEL with the same key turns them into (phi, mu)
  (``unet_patches.py``). No paired injector, no head computation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import comfy.controlnet
import comfy.hooks
import comfy.model_management
import comfy.patcher_extension
import comfy.utils

from ..models.errors import InvalidInputError
from .unet_layout import unet_layout_error

FEATURES_KEY = "facesnap_identity_features"  # transformer_options entry: [IdentityFeatures] of this UNet call
ASPECT_TOLERANCE = 0.02


@dataclass
class IdentityFeatures:
    """What one identity control hands to the ID-Injector for one UNet call."""

    key: str  # the FaceSnap file whose injector may use these
    residuals: list[torch.Tensor]  # the model's unscaled "output" residuals
    weights: list[torch.Tensor]  # per sample (strength x mask), at each residual's resolution
    source: str  # the node that applied the control, for messages


@dataclass
class _Call:
    options: dict
    control_prev: dict | None


def _record_areas(executor, model, conds, x_in, timestep, model_options):
    """calc_cond_batch wrapper: tell each identity control the latent size and the area of every cond it serves."""
    dims = tuple(x_in.shape[2:])
    for cond_list in conds:
        for cond in cond_list or ():
            control = cond.get("control")
            while control is not None:
                if isinstance(control, IdentityControlNet):
                    control.areas[cond["uuid"]] = (cond.get("area"), dims)
                control = control.previous_controlnet
    return executor(model, conds, x_in, timestep, model_options)


_AREA_HOOK = comfy.hooks.TransformerOptionsHook(
    {"wrappers": {comfy.patcher_extension.WrappersMP.CALC_COND_BATCH: {"facesnap_identity_areas": [_record_areas]}}})


class IdentityControlNet(comfy.controlnet.ControlNet):
    """A ControlNet fed per-control identity tokens (see the module docstring). ``copy()`` keeps every setting."""

    SETTINGS = ("cond_tokens", "uncond_tokens", "uncond_strength", "positive_only", "mask", "injector_key", "node_id")

    def __init__(self, control_model=None, **kwargs):
        super().__init__(control_model, **kwargs)
        self.cond_tokens: torch.Tensor | None = None
        self.uncond_tokens: torch.Tensor | None = None
        self.uncond_strength: float | None = None
        self.positive_only = False
        self.mask: torch.Tensor | None = None
        self.injector_key: str | None = None
        self.node_id = ""
        self.areas: dict = {}  # cond uuid -> (area or None, latent dims), filled by _record_areas
        self._call: _Call | None = None
        self._hint_key = None
        self.extra_hooks = comfy.hooks.HookGroup()
        self.extra_hooks.add(_AREA_HOOK)

    def copy(self):
        c = IdentityControlNet(None, global_average_pooling=self.global_average_pooling,
                               load_device=self.load_device, manual_cast_dtype=self.manual_cast_dtype)
        c.control_model = self.control_model
        c.control_model_wrapped = self.control_model_wrapped
        self.copy_to(c)
        for name in self.SETTINGS:
            setattr(c, name, getattr(self, name))
        return c

    # --- sampling -------------------------------------------------------------------------------------------
    def pre_run(self, model, percent_to_timestep_function):
        super().pre_run(model, percent_to_timestep_function)
        config = getattr(self.control_model, "config", None)
        problem = unet_layout_error(model, config) if config is not None else None
        if problem is not None:
            raise InvalidInputError(self._named(f"this identity ControlNet does not fit the sampled model: {problem}"),
                                    "sample with the SDXL model the FaceSnap/ControlNet weights were made for")

    def cleanup(self):
        self.areas = {}
        super().cleanup()

    def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
        previous = self.previous_controlnet
        control_prev = None
        if previous is not None:  # the caller's cond: stock ControlNets keep reading the prompt
            control_prev = previous.get_control(x_noisy, t, cond, batched_number, transformer_options)
        self._check_inputs(x_noisy, cond, transformer_options)
        self._prepare_hint(x_noisy, transformer_options)
        own = dict(cond, crossattn_controlnet=self._tokens(x_noisy, transformer_options))
        self.previous_controlnet, self._call = None, _Call(transformer_options, control_prev)
        try:
            control = super().get_control(x_noisy, t, own, batched_number, transformer_options)
        finally:
            self.previous_controlnet, self._call = previous, None
        return control_prev if control is None else control

    def control_merge(self, control, control_prev, output_dtype):
        call = self._call
        if call is not None and control_prev is None:
            control_prev = call.control_prev
        options = call.options if call is not None else {}
        some = control["output"][0]
        scale = self._sample_scale(some.shape[0], some, options)
        weights = {}

        def weight(x):
            size = tuple(x.shape[-2:])
            if size not in weights:
                weights[size] = self._spatial(scale, x, options)
            return weights[size]

        if self.injector_key is not None and call is not None:
            options.setdefault(FEATURES_KEY, []).append(IdentityFeatures(
                self.injector_key, list(control["output"]), [weight(x) for x in control["output"]], self.node_id))
        scaled = {key: [None if x is None else x * weight(x) for x in values] for key, values in control.items()}
        strength = self.strength
        self.strength = 1.0  # applied per sample above; the base merge multiplies by it in place
        try:
            return super().control_merge(scaled, control_prev, output_dtype)
        finally:
            self.strength = strength

    # --- helpers --------------------------------------------------------------------------------------------
    def _named(self, message: str) -> str:
        return f"[{self.node_id}] {message}" if self.node_id else message

    def _check_inputs(self, x_noisy, cond, options):
        config = getattr(self.control_model, "config", None)
        adm = getattr(config, "projection_class_embeddings_input_dim", None)
        y = cond.get("y")
        if adm is not None and (y is None or y.shape[-1] != adm):
            got = "no ADM vector (an SD1.5/SD2 model?)" if y is None else f"a {y.shape[-1]}-D ADM vector"
            raise InvalidInputError(
                self._named(f"this identity ControlNet is an SDXL ControlNet ({adm}-D ADM), but the model being "
                            f"sampled passes {got}"),
                "sample with an SDXL base checkpoint (not SD1.5/SD2 or the SDXL refiner)")
        hint = self.cond_hint_original
        uuids = options.get("uuids") or [None]
        dims = self.areas.get(uuids[0], (None, None))[1] or tuple(x_noisy.shape[-2:])  # the whole latent
        if abs((hint.shape[-1] / hint.shape[-2]) / (dims[-1] / dims[-2]) - 1) > ASPECT_TOLERANCE:
            raise InvalidInputError(
                self._named(f"the landmark image is {hint.shape[-1]}x{hint.shape[-2]} but the latent is "
                            f"{dims[-1] * 8}x{dims[-2] * 8} pixels: a different aspect ratio would crop the "
                            "landmarks off the face"),
                "draw the landmarks at the output size (same aspect ratio; the size itself is resized to fit)")

    def _tokens(self, x_noisy, options) -> torch.Tensor:
        if self.cond_tokens is None or self.uncond_tokens is None:
            raise InvalidInputError(self._named("this identity ControlNet has no identity tokens"),
                                    "apply it with comfy_glue.conditioning.apply_identity_control")
        kinds = options.get("cond_or_uncond") or [0]
        per = x_noisy.shape[0] // len(kinds)
        parts = [self.cond_tokens if kind == 0 else self.uncond_tokens for kind in kinds]
        return torch.cat([comfy.utils.repeat_to_batch_size(p, per) for p in parts])

    def _sample_scale(self, batch: int, like: torch.Tensor, options: dict) -> torch.Tensor:
        """Per-sample strength: cond chunks (0 in comfy.samplers' cond_or_uncond) get ``strength``, the others
        ``uncond_strength`` (0 when ``positive_only``)."""
        kinds = options.get("cond_or_uncond") or [0]
        per = batch // len(kinds)
        uncond = 0.0 if self.positive_only else self.strength if self.uncond_strength is None else self.uncond_strength
        values = [float(self.strength) if kind == 0 else float(uncond) for kind in kinds]
        return torch.tensor(values, dtype=like.dtype, device=like.device).repeat_interleave(per)[:, None, None, None]

    def _spatial(self, scale: torch.Tensor, x: torch.Tensor, options: dict) -> torch.Tensor:
        if self.mask is None:
            return scale
        mask = self.mask.to(device=x.device, dtype=x.dtype).reshape(-1, 1, *self.mask.shape[-2:])
        return scale * self._per_chunk(mask, x.shape[0], x.shape[-2:], 1, "bilinear", "disabled", options)

    def _prepare_hint(self, x_noisy, options):
        """The hint for this batch, chunk by chunk cropped to its cond's area, at the latent's pixel size. Set as
        ``cond_hint`` so that ComfyUI's ``get_control`` finds it ready (same size, same batch)."""
        uuids = tuple(options.get("uuids") or [None])
        key = (tuple(x_noisy.shape), tuple(self.areas.get(u, (None, None)) for u in uuids))
        if self.cond_hint is not None and self._hint_key == key:
            return
        ratio = self.compression_ratio
        size = (x_noisy.shape[-2] * ratio, x_noisy.shape[-1] * ratio)
        hint = self._per_chunk(self.cond_hint_original, x_noisy.shape[0], size, ratio, self.upscale_algorithm, "center",
                               options)
        dtype = self.manual_cast_dtype or self.control_model.dtype
        self.cond_hint = self.preprocess_image(hint).to(device=x_noisy.device, dtype=dtype)
        self._hint_key = key

    def _per_chunk(self, image, batch: int, size, scale: int, method: str, crop: str, options) -> torch.Tensor:
        """``image`` (whole picture) for each batch chunk: resized to the latent x ``scale``, cropped to the chunk's
        area, resized to ``size``; each chunk repeated to its share of ``batch``."""
        uuids = options.get("uuids") or [None]
        per = batch // len(uuids)
        chunks = []
        for uuid in uuids:
            area, dims = self.areas.get(uuid, (None, None))
            part, fit = image, crop
            if area is not None and dims is not None and len(area) == 4 and len(dims) == 2:
                h, w, y0, x0 = (v * scale for v in area)  # latent pixels; clamped as get_area_and_mult does
                full = comfy.utils.common_upscale(part, dims[1] * scale, dims[0] * scale, method, crop)
                part = full[..., y0:y0 + min(h, full.shape[-2] - y0), x0:x0 + min(w, full.shape[-1] - x0)]
                fit = "disabled"
            if tuple(part.shape[-2:]) != tuple(size):
                part = comfy.utils.common_upscale(part, size[1], size[0], method, fit)
            chunks.append(comfy.utils.repeat_to_batch_size(part, per))
        return torch.cat(chunks)


def wrap_identity_model(model: torch.nn.Module, manual_cast_dtype: torch.dtype | None = None) -> IdentityControlNet:
    """An identity model (FFRNet, or a ControlNet of that signature) as a ComfyUI-managed ControlNet on the UNet's
    device, as ComfyUI's ControlNet loader wraps its own: the model goes into a ModelPatcher (offloaded to
    ``unet_offload_device``) that ``get_models()`` hands to the sampler, so model management loads it, streams it
    layer by layer (low-VRAM partial load) or evicts it like the UNet. ``manual_cast_dtype``: the compute dtype when
    the weights are stored in another one (``weight_dtypes.WeightDtypes.manual_cast``)."""
    return IdentityControlNet(model, load_device=comfy.model_management.get_torch_device(),
                              manual_cast_dtype=manual_cast_dtype)
