"""The pack's OpenPose face drawing through the STOCK Apply ControlNet, stacked with an identity control, sampled
by ComfyUI's real executor in both chain orders.

The stock ControlNet (the tiny test one, through ControlNetApplyAdvanced) must see the OpenPose drawing as its hint
and the prompt as its context. The identity control must see its own image and the identity's tokens: FaceSnap's
FFRNet its landmark drawing and the mixer's tokens, or InstantID's IdentityNet the 5-keypoint image and the
Resampler's tokens (both run the pack's SDXLControlNet module: FFRNet is one).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from comfy_test_nodes.tiny_models import tiny_conditioning, tiny_face_features
from comfyui_facesnap.devkit.comfy_host import cached_output
from identity_graphs import add_apply, add_loader, add_stock_controlnet, base_graph, cached, pack_module
from instantid_graphs import add_apply_instantid, add_encode, add_instantid_loader

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def host(identity_host):
    """The FaceSnap + InstantID host (tests/nodes/conftest.py)."""
    return identity_host


SIZE = 128  # the tiny graph's image size (latent 16 x 16): drawings at this size reach the ControlNets unresampled


def record_calls(monkeypatch, cls, into: list, tag: str) -> None:
    """Record (tag, hint, context) of every forward of a ControlNet-shaped module (ComfyUI passes keywords)."""
    forward = cls.forward

    def recording(self, *args, **kwargs):
        into.append((tag, kwargs["hint"].detach().float().clone(), kwargs["context"].detach().float().clone()))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(cls, "forward", recording)


def add_drawings(g: dict) -> None:
    """The Tom Hanks photo's landmarks (dlib) drawn twice at SIZE: OpenPose face + head, and FaceSnap's drawing."""
    g["analyzer"] = {"class_type": "FaceSnapFaceAnalyzerLoader",
                     "inputs": {"backend": "dlib", "provider": "CPU", "dlib_detector": "hog"}}
    g["photo"] = {"class_type": "LoadImage", "inputs": {"image": "Tom_Hanks_54745.png"}}
    g["crop"] = {"class_type": "FaceSnapFaceCrop",
                 "inputs": {"analyzer": ["analyzer", 0], "image": ["photo", 0], "selection": "largest", "index": 0,
                            "size": SIZE, "margin": 0.5, "if_no_face": "error"}}
    for node, style in (("openpose", "openpose_face_head"), ("facesnap_drawing", "facesnap72")):
        g[node] = {"class_type": "FaceSnapDrawLandmarks",
                   "inputs": {"faces": ["crop", 1], "frame": "crop", "width": SIZE, "height": SIZE, "style": style}}


def add_identity_control(g: dict, kind: str) -> None:
    """FaceSnap's Apply FFRNet on the FaceSnap drawing, or Apply InstantID (IP-attention + IdentityNet on the
    5-keypoint image), on the sampler's current conditioning."""
    if kind == "facesnap":
        apply = add_apply(g, add_loader(g, node="loader"), person=10)
        g[apply]["inputs"]["landmark_image"] = ["facesnap_drawing", 0]
    else:
        loader = add_instantid_loader(g)
        add_apply_instantid(g, loader, add_encode(g, loader), node="apply_instantid")


def stacked_graph(kind: str, stock_first: bool) -> dict:
    g = base_graph(steps=1)
    add_drawings(g)
    if stock_first:
        add_stock_controlnet(g)
    add_identity_control(g, kind)
    if not stock_first:
        add_stock_controlnet(g)
    g["stock"]["inputs"]["image"] = ["openpose", 0]
    return g


def identity_fed(executor, kind: str) -> tuple[torch.Tensor, dict]:
    """The image and the cond / uncond tokens the identity control must read."""
    if kind == "facesnap":
        bundle = cached(executor, "loader")
        tokens = {"cond": bundle.run_mixer(*tiny_face_features(10).batched()), "uncond": bundle.uncond_tokens()}
        return as_hint(cached(executor, "facesnap_drawing")), tokens
    identity = cached(executor, "encode_tom")
    return as_hint(cached(executor, "kps_tom")), {"cond": identity.cond, "uncond": identity.uncond}


def as_hint(image: torch.Tensor) -> torch.Tensor:
    """An IMAGE (1, H, W, 3) as the hint a ControlNet receives at the same size: (3, H, W)."""
    return image[0].movedim(-1, 0).float()


def assert_fed(calls: list, tag: str, hint: torch.Tensor, tokens: dict) -> None:
    """Every call of ``tag`` got ``hint`` (on every batch row) and the cond / uncond ``tokens``, one per chunk."""
    mine = [(h, ctx) for t, h, ctx in calls if t == tag]
    assert mine, f"the {tag} ControlNet never ran"
    for h, ctx in mine:
        assert h.shape[1:] == hint.shape, f"{tag} got hint {tuple(h.shape)}"  # ComfyUI may keep a batch of 1
        for row in h:
            assert torch.equal(row, hint), f"{tag}: hint differs by {float((row - hint).abs().max())}"
        assert ctx.shape == (2, *tokens["cond"].shape[1:]), f"{tag} got context {tuple(ctx.shape)}"
        rows = sorted(kind for row in ctx for kind, ref in tokens.items() if torch.allclose(row, ref[0], atol=1e-4))
        assert rows == ["cond", "uncond"], f"{tag}: each batch chunk must get its own {list(tokens)} tokens"


@pytest.mark.parametrize("stock_first", [True, False], ids=["stock-first", "stock-last"])
@pytest.mark.parametrize("kind", ["facesnap", "instantid"])
def test_openpose_drawing_in_the_stock_controlnet_reads_the_prompt_beside_an_identity_control(host, monkeypatch, kind,
                                                                                              stock_first):
    import comfy.cldm.cldm

    from comfyui_facesnap.models.face_analysis.landmark_views import faces_to_landmarks
    from comfyui_facesnap.models.face_analysis.openpose_face import draw_openpose_face

    calls = []
    record_calls(monkeypatch, comfy.cldm.cldm.ControlNet, calls, "stock")
    controlnet = pack_module(host, "DiffPCIDInjector", "models.identity.sdxl_controlnet").SDXLControlNet
    record_calls(monkeypatch, controlnet, calls, "identity")  # FFRNet's forward is SDXLControlNet's
    executor = host.run(stacked_graph(kind, stock_first))

    openpose = cached(executor, "openpose")
    faces = cached_output(executor, "crop", 1)
    expected = draw_openpose_face(faces_to_landmarks(faces, "crop").points[0], SIZE, SIZE, include_head=True)
    np.testing.assert_array_equal((openpose[0].numpy() * 255).round().astype(np.uint8), expected)

    positive, negative = tiny_conditioning(seed=1)
    assert_fed(calls, "stock", as_hint(openpose), {"cond": positive[0][0], "uncond": negative[0][0]})
    hint, tokens = identity_fed(executor, kind)
    assert not torch.equal(hint, as_hint(openpose))
    assert_fed(calls, "identity", hint, tokens)
