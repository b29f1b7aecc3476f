"""Fixtures shared by the identity tests."""

import sys

import pytest

from identity_graphs import pack_module


@pytest.fixture()
def layer_calls(host, monkeypatch):
    """Every UNet call ("unet", None) and every IP-attention patch call ("ip", (block, id, index)), in order."""
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    events = []
    unet_forward = UNetModel._forward
    monkeypatch.setattr(UNetModel, "_forward",
                        lambda self, *a, **k: events.append(("unet", None)) or unet_forward(self, *a, **k))
    patch = pack_module(host, "FaceSnapApplyInstantID", "comfy_glue.ip_attention_patch").IPAttentionPatch
    call = patch.__call__

    def recording(self, q, k, v, extra_options):
        block = extra_options["block"]
        events.append(("ip", (block[0], block[1], extra_options.get("block_index", 0))))
        return call(self, q, k, v, extra_options)

    monkeypatch.setattr(patch, "__call__", recording)
    return events


@pytest.fixture()
def delegates_asked(host):
    """A callable: how often a simulated dynamic-VRAM MODEL's non-dynamic delegate was asked for during this test
    (the counts live on classes shared by the whole session, so they are reset first)."""
    package = sys.modules[host.node_classes["FaceSnapTestDynamicModel"].__module__]
    dynamic_vram = sys.modules[package.simulated_dynamic.__module__]
    dynamic_vram.reset_delegate_counts()
    return dynamic_vram.delegates_asked
