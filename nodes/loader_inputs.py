"""Widgets shared by the pack's weight loaders, and by its apply nodes about the weights they apply."""

from __future__ import annotations

from comfy_api.latest import io

from ..comfy_glue.weight_dtypes import DTYPE_OPTIONS


def dtype_input(networks: str, optional: bool = False):
    """The storage-dtype dropdown of a loader whose weights are ``networks``."""
    return io.Combo.Input("dtype", options=list(DTYPE_OPTIONS), default="auto", optional=optional,
                          tooltip=f"Storage precision of {networks}: auto = what ComfyUI picks for your device (as "
                                  "for a ControlNet), or fp16 / bf16 / fp32 / fp8_e4m3fn. Layers compute in fp16/bf16 "
                                  "(fp32 on a CPU) where the device cannot compute in the storage dtype; fp8 halves "
                                  "the fp16 weight memory.")


def other_weights_input(weights: str):
    """The Advanced apply nodes' way to apply an identity made with other ``weights`` (off: refused by name)."""
    return io.Boolean.Input("allow_other_weights", default=False, optional=True,
                            tooltip=f"Off: an identity made with another {weights} is refused, naming the file that "
                                    "made it (its tokens do not fit these weights). On: it is applied with a warning, "
                                    "e.g. with a bf16 copy of the same file (a file and its fp16 copy share their "
                                    "weights key, so they need no option).")
