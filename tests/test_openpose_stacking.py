"""The pack's OpenPose face drawing through the STOCK Apply ControlNet, stacked with an identity control (issue 15,
item 2), sampled by ComfyUI's real executor in both chain orders.

The stock ControlNet (the tiny test one, through ControlNetApplyAdvanced) must see the OpenPose drawing as its hint
and the prompt as its context; FaceSnap's FFRNet must see its own landmark drawing and the identity tokens.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from comfy_test_nodes.tiny_models import tiny_conditioning, tiny_face_features
from identity_graphs import (add_apply, add_loader, add_stock_controlnet, base_graph, cached, pack_module,
                             register_facesnap_folder, setup_face_pipeline)

pytestmark = pytest.mark.comfy

SIZE = 128  # the tiny graph's image size (latent 16 x 16): drawings at this size reach the ControlNets unresampled


@pytest.fixture(scope="module")
def host(comfy_host, insightface_images, tmp_path_factory):
    register_facesnap_folder(tmp_path_factory.mktemp("facesnap"))
    setup_face_pipeline(comfy_host, insightface_images, tmp_path_factory.mktemp("insightface"))
    return comfy_host


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


def stacked_graph(stock_first: bool) -> dict:
    g = base_graph(steps=1)
    add_drawings(g)
    loader = add_loader(g, node="loader")
    if stock_first:
        add_stock_controlnet(g)
    apply = add_apply(g, loader, person=10)
    if not stock_first:
        add_stock_controlnet(g)
    g["stock"]["inputs"]["image"] = ["openpose", 0]
    g[apply]["inputs"]["landmark_image"] = ["facesnap_drawing", 0]
    return g


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


@pytest.mark.parametrize("stock_first", [True, False], ids=["stock-then-facesnap", "facesnap-then-stock"])
def test_openpose_drawing_in_the_stock_controlnet_reads_the_prompt_beside_facesnap(host, monkeypatch, stock_first):
    import comfy.cldm.cldm

    from comfyui_facesnap.models.face_analysis.landmark_views import faces_to_landmarks
    from comfyui_facesnap.models.face_analysis.openpose_face import draw_openpose_face

    calls = []
    record_calls(monkeypatch, comfy.cldm.cldm.ControlNet, calls, "stock")
    record_calls(monkeypatch, pack_module(host, "DiffPCIDInjector", "models.identity.ffrnet").FFRNet, calls, "ffrnet")
    executor = host.run(stacked_graph(stock_first))

    openpose = cached(executor, "openpose")
    faces = executor.caches.outputs.get("crop").outputs[1][0]
    expected = draw_openpose_face(faces_to_landmarks(faces, "crop").points[0], SIZE, SIZE, include_head=True)
    np.testing.assert_array_equal((openpose[0].numpy() * 255).round().astype(np.uint8), expected)
    facesnap_drawing = cached(executor, "facesnap_drawing")
    assert not torch.equal(openpose, facesnap_drawing)

    bundle = cached(executor, "loader")
    positive, negative = tiny_conditioning(seed=1)
    assert_fed(calls, "stock", as_hint(openpose), {"cond": positive[0][0], "uncond": negative[0][0]})
    assert_fed(calls, "ffrnet", as_hint(facesnap_drawing),
               {"cond": bundle.encode(tiny_face_features(10)), "uncond": bundle.uncond_tokens()})
