"""The whole identity path through ComfyUI's validator and executor: tiny SDXL -> Face Encode (generated ONNX
ArcFace, tiny CLIP vision) -> Apply FFRNet -> ID-Injector -> KSampler -> VAE decode."""

from __future__ import annotations

import numpy as np
import pytest

from identity_graphs import register_facesnap_folder, setup_face_pipeline

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def host(comfy_host, insightface_images, tmp_path_factory):
    setup_face_pipeline(comfy_host, insightface_images, tmp_path_factory.mktemp("insightface"))
    facesnap_dir = tmp_path_factory.mktemp("facesnap")
    (facesnap_dir / "broken.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!")
    register_facesnap_folder(facesnap_dir)
    return comfy_host


def graph(facesnap_name="tiny_facesnap.safetensors", sd15=False, injector=True):
    g = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "Tom_Hanks_54745.png"}},
        "2": {"class_type": "FaceSnapFaceAnalyzerLoader",
              "inputs": {"backend": "insightface", "provider": "CPU", "dlib_detector": "hog"}},
        "3": {"class_type": "FaceSnapFaceCrop", "inputs": {"analyzer": ["2", 0], "image": ["1", 0], "selection": "largest",
                                                         "index": 0, "size": 128, "margin": 0.5, "if_no_face": "error"}},
        "4": {"class_type": "FaceSnapDrawLandmarks", "inputs": {"faces": ["3", 1]}},
        "5": {"class_type": "FaceSnapTestTinyCLIPVision", "inputs": {"seed": 0}},
        "6": {"class_type": "FaceSnapFaceEncode", "inputs": {"faces": ["3", 1], "clip_vision": ["5", 0]}},
        "7": {"class_type": "FaceSnapModelLoader",
              "inputs": {"facesnap_name": facesnap_name, "controlnet_name": "(FFRNet inside the FaceSnap file)"}},
        "8": {"class_type": "FaceSnapTestTinySDXL", "inputs": {"seed": 0, "sd15": sd15}},
        "9": {"class_type": "FaceSnapTestConditioning", "inputs": {"seed": 1}},
        "10": {"class_type": "FaceSnapApplyFFRNet",
               "inputs": {"positive": ["9", 0], "negative": ["9", 1], "facesnap_model": ["7", 0],
                          "face_features": ["6", 0], "landmark_image": ["4", 0], "strength": 1.0,
                          "start_percent": 0.0, "end_percent": 1.0}},
        "11": {"class_type": "DiffPCIDInjector", "inputs": {"model": ["8", 0], "facesnap_model": ["7", 0]}},
        "12": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 1}},
        "13": {"class_type": "KSampler",
               "inputs": {"model": ["11", 0] if injector else ["8", 0], "seed": 3, "steps": 2, "cfg": 4.0,
                          "sampler_name": "euler", "scheduler": "normal", "positive": ["10", 0],
                          "negative": ["10", 1], "latent_image": ["12", 0], "denoise": 1.0}},
        "14": {"class_type": "VAEDecode", "inputs": {"samples": ["13", 0], "vae": ["8", 1]}},
        "15": {"class_type": "SaveImage", "inputs": {"images": ["14", 0], "filename_prefix": "facesnap_identity"}},
    }
    return g


def test_identity_workflow_runs_end_to_end(host):
    from PIL import Image

    executor = host.run(graph())
    images = executor.history_result["outputs"]["15"]["images"]
    assert len(images) == 1
    picture = np.asarray(Image.open(host.output_dir / images[0]["subfolder"] / images[0]["filename"]))
    assert picture.shape == (128, 128, 3) and picture.std() > 0


def _saved_image(host, executor):
    from PIL import Image

    item = executor.history_result["outputs"]["15"]["images"][0]
    return np.asarray(Image.open(host.output_dir / item["subfolder"] / item["filename"]))


def test_all_in_one_and_advanced_nodes(host):
    base = _saved_image(host, host.run(graph()))
    g = graph()
    g["16"] = {"class_type": "ApplyFaceSnap",
               "inputs": {"model": ["8", 0], "positive": ["9", 0], "negative": ["9", 1], "faces": ["3", 1],
                          "clip_vision": ["5", 0], "facesnap_model": ["7", 0], "landmark_image": ["4", 0],
                          "strength": 1.0, "start_percent": 0.0, "end_percent": 1.0}}
    g["13"]["inputs"].update(model=["16", 0], positive=["16", 1], negative=["16", 2])
    np.testing.assert_array_equal(_saved_image(host, host.run(g)), base)  # same as the separate nodes
    g = graph()
    g["10"] = {"class_type": "FaceSnapApplyFFRNetAdvanced",
               "inputs": dict(g["10"]["inputs"], cond_strength=1.0, uncond_strength=0.5, uncond_noise=0.1)}
    del g["10"]["inputs"]["strength"]
    assert np.abs(_saved_image(host, host.run(g)).astype(int) - base).max() > 0


def test_sd15_model_is_refused_by_the_injector_node(host):
    executor = host.run(graph(sd15=True), expect_success=False)
    message = host.error_message(executor)
    assert not executor.success and "[DiffPCIDInjector]" in message and "SDXL" in message and "SD15" in message


def test_corrupt_weights_are_refused_by_the_loader(host):
    executor = host.run(graph(facesnap_name="broken.safetensors"), expect_success=False)
    message = host.error_message(executor)
    assert "[FaceSnapModelLoader]" in message and "not a readable .safetensors" in message
