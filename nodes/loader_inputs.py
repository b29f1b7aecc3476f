"""Widgets that every weight loader of the pack shares."""

from __future__ import annotations

from comfy_api.latest import io

from ..comfy_glue.bundle import DTYPE_OPTIONS


def dtype_input(networks: str, optional: bool = False):
    """The storage-dtype dropdown of a loader whose weights are ``networks``."""
    return io.Combo.Input("dtype", options=list(DTYPE_OPTIONS), default="auto", optional=optional,
                          tooltip=f"Storage precision of {networks}: auto = what ComfyUI picks for your device (as "
                                  "for a ControlNet), or fp16 / bf16 / fp32 / fp8_e4m3fn. Layers compute in fp16/bf16 "
                                  "(fp32 on a CPU) where the device cannot compute in the storage dtype; fp8 halves "
                                  "the fp16 weight memory.")
