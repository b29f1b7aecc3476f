"""Identity ControlNets in ComfyUI: a ControlNet whose cross-attention reads identity tokens, not the prompt.

Contract of ``IdentityControlNet`` (FaceSnap's FFRNet; InstantID's IdentityNet loaded as an ``SDXLControlNet``;
anything with the call signature of ``comfy.cldm.cldm.ControlNet``):

- Each control carries its own ``cond_tokens`` and ``uncond_tokens``, tensors of shape (1, T, D). For every batch
  chunk it feeds its model the cond tokens when ``transformer_options["cond_or_uncond"]`` says 0 (the positive) and
  the uncond tokens otherwise. Nothing is written on the conditioning, so every other ControlNet of the chain (called
  with the caller's cond, before or after this one) reads exactly what it would read without us: the prompt.
- ``strength`` scales cond chunks, ``uncond_strength`` (None = ``strength``) uncond chunks; ``positive_only`` zeroes
  uncond chunks (``conditioning.apply_identity_control`` then also keeps it off the negative).
- The hint (landmark image) and ``mask`` (N, H, W) cover the whole image. Like ComfyUI's conditioning masks they
  are resized to the latent (the hint to its pixel size), cropped to the area of the cond being sampled
  (ConditioningSetArea / ...Percentage), then resized to what the model needs. Each chunk's area comes from the
  ``area_probe`` entry the apply functions put on the conds; the whole latent's size from the host
  (``host_compat.sampled_latent_dims``), from an uncropped chunk, or on old hosts from a calc_cond_batch hook that
  only hosts without dynamic VRAM get (``host_compat.latent_size_hooks``). Without an area this is the plain resize.
- ``get_control`` runs on its own path: it builds its hint, tokens and residual weights itself and never relies on the
  base class's hint cache, whose behaviour changes between hosts.
- A control whose model has Diff-PC ID-Injector heads has a ``pairing_key`` (which FaceSnap file it comes from). It
  publishes its unscaled residuals and per-sample weights (strength x mask) under ``FEATURES_KEY`` in the per-call
  ``transformer_options``; only an ID-Injector patch on the MODEL with the same key turns them into (phi, mu)
  (``id_injector_patch.py``). No paired injector, no head computation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import comfy.controlnet
import comfy.model_management
import comfy.utils

from ..models.errors import InvalidInputError
from . import area_probe, host_compat
from .node_errors import node_error
from .unet_layout import unet_layout_error

FEATURES_KEY = "facesnap_identity_features"  # transformer_options entry: [IdentityFeatures] of this UNet call
LATENT_SIZE_HOOK = "facesnap_latent_size"
MERGED_KEYS = ("input", "middle", "output")
ASPECT_TOLERANCE = 0.02


@dataclass
class IdentityFeatures:
    """What one identity control hands to the ID-Injector for one UNet call."""

    pairing_key: str  # the FaceSnap file whose injector may use these
    residuals: list[torch.Tensor]  # the model's unscaled "output" residuals
    weights: list[torch.Tensor]  # per sample (strength x mask), at each residual's resolution
    source: str  # the node that applied the control, for messages


class IdentityControlNet(comfy.controlnet.ControlNet):
    """A ControlNet fed per-control identity tokens (see the module docstring). ``copy()`` keeps every setting."""

    SETTINGS = ("cond_tokens", "uncond_tokens", "uncond_strength", "positive_only", "mask", "pairing_key", "node_id")

    def __init__(self, control_model=None, **kwargs):
        super().__init__(control_model, **kwargs)
        self.cond_tokens: torch.Tensor | None = None
        self.uncond_tokens: torch.Tensor | None = None
        self.uncond_strength: float | None = None
        self.positive_only = False
        self.mask: torch.Tensor | None = None
        self.pairing_key: str | None = None
        self.node_id = ""
        self.latent_dims: tuple[int, ...] | None = None  # the whole sampled latent (h, w), once known
        self._hint_cache: tuple | None = None  # (key, hint) of the last batch layout
        self.extra_hooks = host_compat.latent_size_hooks(LATENT_SIZE_HOOK, _record_latent_size)

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
        self.latent_dims = host_compat.sampled_latent_dims(model)
        config = getattr(self.control_model, "config", None)
        problem = unet_layout_error(model, config) if config is not None else None
        if problem is not None:
            raise self._error(f"this identity ControlNet does not fit the sampled model: {problem}",
                              "sample with the SDXL model the FaceSnap/ControlNet weights were made for")

    def cleanup(self):
        self.latent_dims = None
        self._hint_cache = None
        super().cleanup()

    def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
        kinds = transformer_options.get("cond_or_uncond") or [0]
        areas = area_probe.chunk_areas(cond, len(kinds))
        control_prev = None
        if self.previous_controlnet is not None:  # the caller's cond: stock ControlNets keep reading the prompt
            control_prev = self.previous_controlnet.get_control(x_noisy, t, cond, batched_number, transformer_options)
        area_probe.drop(cond)
        if self.timestep_range is not None and (t[0] > self.timestep_range[0] or t[0] < self.timestep_range[1]):
            return control_prev
        self._check_adm(cond)
        dims = self._whole_latent(x_noisy, areas)
        self._check_aspect(dims)
        dtype = self.manual_cast_dtype or self.control_model.dtype
        extra = dict(self.extra_args)
        for name in self.extra_conds:
            if cond.get(name) is not None:
                extra[name] = cond[name].to(device=x_noisy.device, dtype=dtype)
        sampling = self.model_sampling_current
        control = self.control_model(
            x=sampling.calculate_input(t, x_noisy).to(dtype), hint=self._hint(x_noisy, areas, dims, dtype),
            timesteps=sampling.timestep(t).to(dtype), context=self._tokens(x_noisy, kinds).to(x_noisy.device, dtype),
            **extra)
        return self._merge(control, control_prev, _Chunks(kinds, areas, dims), transformer_options)

    # --- helpers --------------------------------------------------------------------------------------------
    def _error(self, message: str, fix: str) -> Exception:
        """The pack's node error naming the applying node: raised while sampling, it reaches ComfyUI's dialog as is."""
        return node_error(self.node_id, message, fix) if self.node_id else InvalidInputError(message, fix)

    def _check_adm(self, cond):
        config = getattr(self.control_model, "config", None)
        adm = getattr(config, "projection_class_embeddings_input_dim", None)
        y = cond.get("y")
        if adm is not None and (y is None or y.shape[-1] != adm):
            got = "no ADM vector (an SD1.5/SD2 model?)" if y is None else f"a {y.shape[-1]}-D ADM vector"
            raise self._error(
                f"this identity ControlNet is an SDXL ControlNet ({adm}-D ADM), but the model being sampled passes "
                f"{got}",
                "sample with an SDXL base checkpoint (not SD1.5/SD2 or the SDXL refiner)")

    def _whole_latent(self, x_noisy, areas) -> tuple[int, ...]:
        """The size of the whole sampled latent: from the host, or from a batch that holds an uncropped chunk."""
        if self.latent_dims is None and any(area is None for area in areas):
            self.latent_dims = tuple(x_noisy.shape[2:])
        if self.latent_dims is None:
            raise self._error(
                "this ComfyUI does not tell ControlNets the size of the latent, and every cond this identity control "
                "serves has an area (ConditioningSetArea), so its landmarks cannot be placed",
                "apply the identity to a cond without an area as well, or update ComfyUI")
        return self.latent_dims

    def _check_aspect(self, dims):
        hint = self.cond_hint_original
        if abs((hint.shape[-1] / hint.shape[-2]) / (dims[-1] / dims[-2]) - 1) > ASPECT_TOLERANCE:
            raise self._error(
                f"the landmark image is {hint.shape[-1]}x{hint.shape[-2]} but the latent is {dims[-1] * 8}x"
                f"{dims[-2] * 8} pixels: a different aspect ratio would crop the landmarks off the face",
                "draw the landmarks at the output size (same aspect ratio; the size itself is resized to fit)")

    def _tokens(self, x_noisy, kinds) -> torch.Tensor:
        if self.cond_tokens is None or self.uncond_tokens is None:
            raise self._error("this identity ControlNet has no identity tokens",
                              "apply it with comfy_glue.conditioning.apply_identity_control")
        per = x_noisy.shape[0] // len(kinds)
        parts = [self.cond_tokens if kind == 0 else self.uncond_tokens for kind in kinds]
        return torch.cat([comfy.utils.repeat_to_batch_size(p, per) for p in parts])

    def _hint(self, x_noisy, areas, dims, dtype) -> torch.Tensor:
        """The landmark image for this batch, chunk by chunk cropped to its cond's area, at the latent's pixel size
        (cached for the batch layout: the same every step)."""
        key = (tuple(x_noisy.shape), tuple(areas), dims, dtype, x_noisy.device)
        if self._hint_cache is not None and self._hint_cache[0] == key:
            return self._hint_cache[1]
        ratio = self.compression_ratio
        size = (x_noisy.shape[-2] * ratio, x_noisy.shape[-1] * ratio)
        hint = _per_chunk(self.cond_hint_original, x_noisy.shape[0], size, ratio, self.upscale_algorithm, "center",
                          areas, dims)
        hint = self.preprocess_image(hint).to(device=x_noisy.device, dtype=dtype)
        self._hint_cache = (key, hint)
        return hint

    def _merge(self, control: dict, control_prev: dict | None, chunks: "_Chunks", options: dict) -> dict:
        """Scale each residual per sample (strength of the chunk's kind x mask), publish the raw residuals for a
        paired ID-Injector, and add the earlier ControlNets' residuals."""
        weights = {}

        def weight(x):
            size = tuple(x.shape[-2:])
            if size not in weights:
                weights[size] = self._weight(chunks, x)
            return weights[size]

        outputs = control.get("output", [])
        if self.pairing_key is not None:
            options.setdefault(FEATURES_KEY, []).append(IdentityFeatures(
                self.pairing_key, list(outputs), [weight(x) for x in outputs], self.node_id))
        out = {key: [None if x is None else x * weight(x) for x in control.get(key, [])] for key in MERGED_KEYS}
        if control_prev is not None:
            for key in MERGED_KEYS:
                mine = out[key]
                for i, prev in enumerate(control_prev.get(key, [])):
                    if i >= len(mine):
                        mine.append(prev)
                    elif prev is not None:
                        mine[i] = prev if mine[i] is None else prev + mine[i]
        return out

    def _weight(self, chunks: "_Chunks", x: torch.Tensor) -> torch.Tensor:
        """Per sample: ``strength`` on cond chunks (0 in cond_or_uncond), ``uncond_strength`` (0 when
        ``positive_only``) on the others, times the mask at ``x``'s resolution."""
        per = x.shape[0] // len(chunks.kinds)
        uncond = 0.0 if self.positive_only else self.strength if self.uncond_strength is None else self.uncond_strength
        values = [float(self.strength) if kind == 0 else float(uncond) for kind in chunks.kinds]
        scale = torch.tensor(values, dtype=x.dtype, device=x.device).repeat_interleave(per)[:, None, None, None]
        if self.mask is None:
            return scale
        mask = self.mask.to(device=x.device, dtype=x.dtype).reshape(-1, 1, *self.mask.shape[-2:])
        return scale * _per_chunk(mask, x.shape[0], x.shape[-2:], 1, "bilinear", "disabled", chunks.areas,
                                  chunks.dims)


@dataclass(frozen=True)
class _Chunks:
    kinds: list  # cond_or_uncond of the batch's chunks
    areas: list  # each chunk's area (h, w, y, x) in latent units, or None
    dims: tuple  # the whole latent (h, w)


def _per_chunk(image, batch: int, size, scale: int, method: str, crop: str, areas, dims) -> torch.Tensor:
    """``image`` (the whole picture) for each batch chunk: resized to the whole latent x ``scale``, cropped to the
    chunk's area, resized to ``size``; each chunk repeated to its share of ``batch``."""
    per = batch // len(areas)
    chunks = []
    for area in areas:
        part, fit = image, crop
        if area is not None:
            h, w, y0, x0 = (v * scale for v in area)  # clamped to the latent by ComfyUI (get_area_and_mult)
            part = comfy.utils.common_upscale(part, dims[1] * scale, dims[0] * scale, method, crop)[..., y0:y0 + h,
                                                                                                    x0:x0 + w]
            fit = "disabled"
        if tuple(part.shape[-2:]) != tuple(size):
            part = comfy.utils.common_upscale(part, size[1], size[0], method, fit)
        chunks.append(comfy.utils.repeat_to_batch_size(part, per))
    return torch.cat(chunks)


def _record_latent_size(conds, x_in) -> None:
    """Tell every identity control of these conds the latent size (hosts without ``sampled_latent_dims``)."""
    for cond_list in conds:
        for cond in cond_list or ():
            control = cond.get("control")
            while control is not None:
                if isinstance(control, IdentityControlNet):
                    control.latent_dims = tuple(x_in.shape[2:])
                control = control.previous_controlnet


def wrap_identity_model(model: torch.nn.Module, manual_cast_dtype: torch.dtype | None = None) -> IdentityControlNet:
    """An identity model (FFRNet, or a ControlNet of that signature) as a ComfyUI-managed ControlNet on the UNet's
    device, as ComfyUI's ControlNet loader wraps its own: the model goes into a ModelPatcher (offloaded to
    ``unet_offload_device``) that ``get_models()`` hands to the sampler, so model management loads it, streams it
    layer by layer (low-VRAM partial load) or evicts it like the UNet. ``manual_cast_dtype``: the compute dtype when
    the weights are stored in another one (``weight_dtypes.WeightDtypes.manual_cast``)."""
    return IdentityControlNet(model, load_device=comfy.model_management.get_torch_device(),
                              manual_cast_dtype=manual_cast_dtype)
