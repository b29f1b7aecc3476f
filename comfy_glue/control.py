"""FFRNet as a ComfyUI ControlNet.

``FaceSnapControlNet`` is a ``comfy.controlnet.ControlNet`` whose model is FFRNet. Before ComfyUI scales the
residuals it computes the ID-Injector's (phi, mu) from them and publishes them in the per-call
``transformer_options``, where the UNet patches of ``unet_patches.py`` read them.
"""

from __future__ import annotations

import torch

import comfy.controlnet
import comfy.model_management
import comfy.utils

from ..models.errors import InvalidInputError
from ..models.identity.ffrnet import FFRNet

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
