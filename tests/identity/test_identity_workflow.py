"""The whole identity path through ComfyUI's validator and executor: tiny SDXL -> Face Encode (generated ONNX
ArcFace, tiny CLIP vision) -> Apply FFRNet -> ID-Injector -> KSampler -> VAE decode."""

from __future__ import annotations

import numpy as np
import pytest

from identity_graphs import identity_workflow_graph

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def host(identity_workflow_host):
    return identity_workflow_host


def test_identity_workflow_runs_end_to_end(host):
    from PIL import Image

    executor = host.run(identity_workflow_graph())
    images = executor.history_result["outputs"]["15"]["images"]
    assert len(images) == 1
    picture = np.asarray(Image.open(host.output_dir / images[0]["subfolder"] / images[0]["filename"]))
    assert picture.shape == (128, 128, 3) and picture.std() > 0


def _saved_image(host, executor):
    from PIL import Image

    item = executor.history_result["outputs"]["15"]["images"][0]
    return np.asarray(Image.open(host.output_dir / item["subfolder"] / item["filename"]))


def test_all_in_one_and_advanced_nodes(host):
    base = _saved_image(host, host.run(identity_workflow_graph()))
    g = identity_workflow_graph()
    g["16"] = {"class_type": "ApplyFaceSnap",
               "inputs": {"model": ["8", 0], "positive": ["9", 0], "negative": ["9", 1], "faces": ["3", 1],
                          "clip_vision": ["5", 0], "facesnap_model": ["7", 0], "landmark_image": ["4", 0],
                          "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}}
    g["13"]["inputs"].update(model=["16", 0], positive=["16", 1], negative=["16", 2])
    np.testing.assert_array_equal(_saved_image(host, host.run(g)), base)  # same as the separate nodes
    g = identity_workflow_graph()
    g["10"] = {"class_type": "FaceSnapApplyFFRNetAdvanced",
               "inputs": dict(g["10"]["inputs"], cond_strength=1.0, uncond_strength=0.5, uncond_noise=0.1)}
    del g["10"]["inputs"]["strength"]
    assert np.abs(_saved_image(host, host.run(g)).astype(int) - base).max() > 0


def test_sd15_model_is_refused_by_the_injector_node(host):
    executor = host.run(identity_workflow_graph(sd15=True), expect_success=False)
    message = host.error_message(executor)
    assert not executor.success and "[DiffPCIDInjector]" in message and "SDXL" in message and "SD15" in message


def test_corrupt_weights_are_refused_by_the_loader(host):
    executor = host.run(identity_workflow_graph(facesnap_name="broken.safetensors"), expect_success=False)
    message = host.error_message(executor)
    assert "[FaceSnapModelLoader]" in message and "not a readable .safetensors" in message
