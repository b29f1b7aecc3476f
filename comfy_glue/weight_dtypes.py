"""Storage and compute dtypes of the pack's networks inside ComfyUI, chosen and built as ComfyUI's loaders do.

The one code path for every network the pack loads (FaceSnap's mixer, FFRNet and heads; InstantID's Resampler,
IP-attention layers and IdentityNet). A loader's ``dtype`` option names the STORAGE dtype: auto, fp16, bf16, fp32 or
fp8_e4m3fn (ComfyUI's UNet loader offers the same ``weight_dtype`` choices). As in ComfyUI's ControlNet loaders
(``comfy/controlnet.py``):

- auto = ``model_management.unet_dtype(model_params=-1, weight_dtype=<the files' dtype>)``: ComfyUI's dtype flags
  (``--fp8_e4m3fn-unet``, ``--bf16-unet``, ...) apply, and an fp8 file stays fp8;
- compute = ``unet_manual_cast(storage, load device)`` where the device cannot compute in the storage dtype (fp8
  everywhere; fp16/bf16 on a CPU), else the storage dtype itself;
- layers = ``comfy.ops.pick_operations(storage, manual cast, disable_fast_fp8=True)``, the call of
  ``controlnet_config``, which every ControlNet family ComfyUI added since its fp8 matrix multiply loads through
  (the older SD/SDXL ``load_controlnet_state_dict`` omits the flag). It gives ``disable_weight_init`` when storage ==
  compute and ``manual_cast`` otherwise (each layer casts its weights to the compute dtype when it runs), never
  ``fp8_ops``: ``--fast fp8_matrix_mult`` would quantise these small identity networks' activations to fp8 with unit
  scale (clamped in place to +-448), which nothing here can test. No ``load_device`` is passed, as in all of
  ComfyUI's loaders: with the flag it would only feed the fp8-compute probe, whose answer is then unused. Both layer
  kinds are streamed layer by layer by ComfyUI's low-VRAM partial load.

The networks take these classes through their ``operations`` argument and the compute dtype through
``compute_dtype`` (see ``models/common/operations.py``); ``build_managed`` builds them, ``managed_patcher`` hands them
to ComfyUI's model management.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

import comfy.model_management
import comfy.ops
import comfy.utils

from ..models.errors import InvalidInputError
from . import host_compat

DTYPE_OPTIONS = {"auto": None, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32,
                 "fp8_e4m3fn": torch.float8_e4m3fn}


def dtype_option(option: str) -> torch.dtype | None:
    """The storage dtype named by a loader option (None = auto); anything else is refused."""
    if option not in DTYPE_OPTIONS:
        raise InvalidInputError(f"unknown dtype {option!r}", f"choose one of {', '.join(DTYPE_OPTIONS)}")
    return DTYPE_OPTIONS[option]


@dataclass(frozen=True)
class WeightDtypes:
    storage: torch.dtype  # what the parameters are held in (on the GPU and when offloaded)
    compute: torch.dtype  # what the layers compute in

    @property
    def manual_cast(self) -> torch.dtype | None:
        """ComfyUI's ``manual_cast_dtype``: the compute dtype when it differs from the storage dtype."""
        return None if self.compute == self.storage else self.compute

    @property
    def operations(self):
        return comfy.ops.pick_operations(self.storage, self.manual_cast, disable_fast_fp8=True)


def choose_weight_dtypes(option: str, load_device: torch.device, file_dtype: torch.dtype | None) -> WeightDtypes:
    """The storage and compute dtypes for loader option ``option`` on ``load_device`` (see the module docstring)."""
    storage = dtype_option(option)
    if storage is None:
        storage = comfy.model_management.unet_dtype(load_device, model_params=-1, weight_dtype=file_dtype)
    compute = comfy.model_management.unet_manual_cast(storage, load_device) or storage
    return WeightDtypes(storage, compute)


def file_dtype(*modules: torch.nn.Module | None) -> torch.dtype | None:
    """The dtype most of the modules' weights are in (``comfy.utils.weight_dtype``, as ComfyUI's loaders read it)."""
    state = {f"{i}.{k}": v for i, m in enumerate(modules) if m is not None for k, v in m.state_dict().items()}
    return comfy.utils.weight_dtype(state)


def build_managed(factory: Callable, module: torch.nn.Module, dtypes: WeightDtypes) -> torch.nn.Module:
    """``factory(operations, compute_dtype)`` built on the meta device from ComfyUI's operations and filled with
    ``module``'s weights in the storage dtype (shared, not copied, where the dtype already matches), on ComfyUI's
    offload device."""
    state = {}
    for name, value in module.state_dict().items():  # a long conversion stops at ComfyUI's /interrupt
        comfy.model_management.throw_exception_if_processing_interrupted()
        state[name] = value.to(dtypes.storage) if value.is_floating_point() else value
    with torch.device("meta"):
        built = factory(dtypes.operations, dtypes.compute)
    built.load_state_dict(state, assign=True)
    left = [n for n, t in (*built.named_parameters(), *built.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"{type(built).__name__} has tensors outside its state dict: {left[:3]}")
    return built.eval().to(comfy.model_management.unet_offload_device())


def managed_patcher(module: torch.nn.Module):
    """A patcher of the class the host's own loaders use now (``host_compat.model_patcher_class``: the dynamic-VRAM
    one where it is on) that loads ``module`` to the UNet's device and offloads it like the UNet, so that model
    management loads it fully, streams it layer by layer (low-VRAM partial load) or evicts it."""
    return host_compat.model_patcher_class()(module, load_device=comfy.model_management.get_torch_device(),
                                             offload_device=comfy.model_management.unet_offload_device())
