"""The face nodes run by ComfyUI's own validator and executor, on workflows/facesnap_landmarks.json and on bad input."""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest
import torch

from comfyui_facesnap.devkit.onnx_antelopev2 import hide_insightface, make_antelopev2
from comfyui_facesnap.devkit.ui_workflow import object_info
from comfyui_facesnap.devkit.workflow_format import ui_to_api

pytestmark = pytest.mark.comfy

WORKFLOW = pathlib.Path(__file__).resolve().parents[2] / "workflows" / "facesnap_landmarks.json"


@pytest.fixture(scope="module")
def host(comfy_host, insightface_images):
    for name in ("t1.jpg", "mask_black.jpg", "Tom_Hanks_54745.png"):
        shutil.copy(insightface_images / name, comfy_host.input_dir / name)
    return comfy_host


@pytest.fixture(scope="module")
def landmark_prompt(host):
    return ui_to_api(json.loads(WORKFLOW.read_text()), object_info(host.node_classes))


def saved_images(executor, node_id: str, output_dir: pathlib.Path) -> list[pathlib.Path]:
    images = executor.history_result["outputs"][node_id]["images"]
    return [output_dir / item["subfolder"] / item["filename"] for item in images]


def face_nodes():
    from comfyui_facesnap.nodes import face_nodes

    return face_nodes


def test_workflow_converts_to_api(landmark_prompt):
    assert landmark_prompt["1"]["class_type"] == "LoadImage" and landmark_prompt["1"]["inputs"] == {"image": "t1.jpg"}
    assert landmark_prompt["2"]["inputs"] == {"backend": "dlib", "provider": "CPU", "dlib_detector": "hog"}
    assert landmark_prompt["3"]["inputs"] == {"analyzer": ["2", 0], "image": ["1", 0], "selection": "all", "index": 0,
                                              "size": 512, "margin": 0.5, "if_no_face": "error"}
    assert landmark_prompt["4"]["inputs"] == {"faces": ["3", 1], "frame": "crop", "width": 0, "height": 0,
                                              "style": "facesnap72"}


def test_landmark_workflow_draws_six_faces(host, landmark_prompt):
    from PIL import Image

    executor = host.run(landmark_prompt)
    controls = saved_images(executor, "5", host.output_dir)
    overlays = saved_images(executor, "6", host.output_dir)
    assert len(controls) == len(overlays) == 6
    for control_path, overlay_path in zip(controls, overlays, strict=True):
        control = np.asarray(Image.open(control_path).convert("RGB"))
        overlay = np.asarray(Image.open(overlay_path).convert("RGB"))
        assert control.shape == overlay.shape == (512, 512, 3)
        drawn = control.max(-1) > 0
        assert 0.005 < drawn.mean() < 0.2
        np.testing.assert_array_equal(overlay[drawn], control[drawn], "overlay carries the same strokes")


def test_no_face_error_names_node_and_image(host, landmark_prompt):
    prompt = {key: {**node, "inputs": dict(node["inputs"])} for key, node in landmark_prompt.items()}
    prompt["1"]["inputs"]["image"] = "mask_black.jpg"
    executor = host.run(prompt, expect_success=False)
    message = host.error_message(executor)
    assert "[FaceSnapFaceCrop]" in message and "image 0" in message and "skip" in message
    # the executor is still usable: the same graph on a photo with faces runs
    prompt["1"]["inputs"]["image"] = "Tom_Hanks_54745.png"
    prompt["3"]["inputs"]["selection"] = "largest"
    prompt["3"]["inputs"]["size"] = 128
    assert host.run(prompt).success


def loader_prompt(backend: str = "insightface") -> dict:
    return {
        "1": {"class_type": "FaceSnapFaceAnalyzerLoader",
              "inputs": {"backend": backend, "provider": "CPU", "dlib_detector": "hog"}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "t1.jpg"}},
        "3": {"class_type": "FaceSnapFaceCrop",
              "inputs": {"analyzer": ["1", 0], "image": ["2", 0], "selection": "largest", "index": 0, "size": 128,
                         "margin": 0.5, "if_no_face": "error"}},
        "4": {"class_type": "FaceSnapDrawLandmarks", "inputs": {"faces": ["3", 1]}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    }


@pytest.fixture
def insightface_folder(monkeypatch, tmp_path):
    """Point ComfyUI's insightface model folder at tmp_path (empty unless a test fills it)."""
    import folder_paths

    _, extensions = folder_paths.folder_names_and_paths["insightface"]
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "insightface", ([str(tmp_path)], extensions))
    return tmp_path


def test_antelopev2_missing_is_reported(host, insightface_folder):
    executor = host.run(loader_prompt(), expect_success=False)
    message = host.error_message(executor)
    assert "[FaceSnapFaceAnalyzerLoader]" in message
    assert str(insightface_folder / "models" / "antelopev2") in message


def test_insightface_not_installed_is_reported(host, insightface_folder, monkeypatch):
    make_antelopev2(insightface_folder)
    hide_insightface(monkeypatch)
    executor = host.run(loader_prompt(), expect_success=False)
    message = host.error_message(executor)
    assert "[FaceSnapFaceAnalyzerLoader]" in message and "pip install insightface" in message


def test_insightface_graph_on_generated_models(host, insightface_folder):
    make_antelopev2(insightface_folder)
    executor = host.run(loader_prompt())
    assert len(executor.history_result["outputs"]["5"]["images"]) == 1


def test_draw_landmarks_needs_an_input(host):
    prompt = {"1": {"class_type": "FaceSnapDrawLandmarks", "inputs": {}},
              "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    executor = host.run(prompt, expect_success=False)
    assert "[FaceSnapDrawLandmarks]" in host.error_message(executor)


@pytest.fixture(scope="module")
def dlib_analyzer(host):
    return face_nodes().cached_analyzer("dlib", "CPU", "hog")


def portrait_tensor(insightface_images, channels: int) -> torch.Tensor:
    from PIL import Image

    mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    array = np.asarray(Image.open(insightface_images / "Tom_Hanks_54745.png").convert(mode), np.float32) / 255.0
    return torch.from_numpy(array.reshape(array.shape[0], array.shape[1], channels))[None]


@pytest.mark.parametrize("channels", [1, 4])
def test_grayscale_and_rgba_images(dlib_analyzer, insightface_images, channels):
    image = portrait_tensor(insightface_images, channels)
    crop = face_nodes().FaceSnapFaceCrop
    crops, faces = crop.execute(dlib_analyzer, image, "largest", 0, 64, 0.5, "error").result[:2]
    assert crops.shape == (1, 64, 64, 3) and len(faces) == 1


def test_batch_with_faceless_image(dlib_analyzer, insightface_images):
    from PIL import Image

    portrait = portrait_tensor(insightface_images, 3)
    mask = Image.open(insightface_images / "mask_black.jpg").convert("RGB").resize(portrait.shape[2:0:-1])
    batch = torch.cat([portrait, torch.from_numpy(np.asarray(mask, np.float32) / 255.0)[None], portrait])
    nodes = face_nodes()
    crops, faces = nodes.FaceSnapFaceCrop.execute(dlib_analyzer, batch, "largest", 0, 64, 0.5, "skip").result[:2]
    assert crops.shape == (3, 64, 64, 3) and [r.image_index for r in faces.records] == [0, 1, 2]
    control, overlay = nodes.FaceSnapDrawLandmarks.execute(faces=faces).result
    assert control.shape == overlay.shape == (3, 64, 64, 3)
    assert control[1].max() == 0 and control[0].max() > 0, "the faceless image gets an empty control image"
    with pytest.raises(Exception, match=r"\[FaceSnapFaceCrop\] no face found in image 1"):
        nodes.FaceSnapFaceCrop.execute(dlib_analyzer, batch, "largest", 0, 64, 0.5, "error")


def test_one_pixel_image(dlib_analyzer):
    nodes = face_nodes()
    pixel = torch.full((1, 1, 1, 3), 0.5)
    crops, faces = nodes.FaceSnapFaceCrop.execute(dlib_analyzer, pixel, "largest", 0, 64, 0.5, "skip").result[:2]
    assert crops.shape == (1, 64, 64, 3) and len(faces) == 1
    with pytest.raises(Exception, match=r"\[FaceSnapFaceCrop\] no face found in image 0"):
        nodes.FaceSnapFaceCrop.execute(dlib_analyzer, pixel, "largest", 0, 64, 0.5, "error")


def test_analyzers_are_cached(dlib_analyzer):
    assert face_nodes().cached_analyzer("dlib", "CPU", "hog") is dlib_analyzer
