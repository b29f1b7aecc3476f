"""API-format graph pieces for the InstantID and identity-data tests (see identity_graphs.py for the base graph).

``register_instantid_folders`` writes the tiny InstantID pair (comfy_test_nodes.tiny_models.tiny_instantid_files) into
models/instantid and models/controlnet of the test host. Faces come from the generated antelopev2 stand-ins
(``identity_graphs.setup_face_pipeline``) on the Tom Hanks photo and on t1.jpg.
"""

from __future__ import annotations

import shutil

from comfy_test_nodes.tiny_models import tiny_instantid_files
from identity_graphs import insert_apply, sampler_inputs

IP_FILE = "tiny_ip-adapter.safetensors"
CN_FILE = "tiny_identitynet.safetensors"
PHOTOS = {"tom": "Tom_Hanks_54745.png", "t1": "t1.jpg"}


def register_instantid_folders(host, insightface_images, tmp) -> None:
    import folder_paths

    instantid, controlnet = tmp / "instantid", tmp / "controlnet"
    instantid.mkdir()
    controlnet.mkdir()
    ip_path, cn_path = tiny_instantid_files(str(tmp))
    shutil.move(ip_path, instantid / IP_FILE)
    shutil.move(cn_path, controlnet / CN_FILE)
    folder_paths.add_model_folder_path("instantid", str(instantid), is_default=True)
    folder_paths.add_model_folder_path("controlnet", str(controlnet), is_default=True)
    shutil.copy(insightface_images / "t1.jpg", host.input_dir / "t1.jpg")


def use_identity_folder(folder) -> None:
    """Make ``folder`` the first facesnap_identities folder, where FaceSnap Save Identity writes (call it in each
    test: the pack's entrypoint, which other tests run, puts ComfyUI's own models folder first again)."""
    import folder_paths

    folder_paths.add_model_folder_path("facesnap_identities", str(folder), is_default=True)


def add_faces(g: dict, person: str = "tom", backend: str = "insightface") -> str:
    """LoadImage -> Face Analyzer -> Face Crop (128 px); returns the crop node (output 1 = faces)."""
    node = f"faces_{person}_{backend}"
    g[f"{node}_photo"] = {"class_type": "LoadImage", "inputs": {"image": PHOTOS[person]}}
    g[f"analyzer_{backend}"] = {"class_type": "FaceSnapFaceAnalyzerLoader",
                                "inputs": {"backend": backend, "provider": "CPU", "dlib_detector": "hog"}}
    g[node] = {"class_type": "FaceSnapFaceCrop", "inputs": {
        "analyzer": [f"analyzer_{backend}", 0], "image": [f"{node}_photo", 0], "selection": "largest", "index": 0,
        "size": 128, "margin": 0.5, "if_no_face": "error"}}
    return node


def add_instantid_loader(g: dict, node: str = "instantid", **inputs) -> str:
    g[node] = {"class_type": "FaceSnapInstantIDLoader",
               "inputs": {"instantid_file": IP_FILE, "controlnet_name": CN_FILE, "dtype": "auto", **inputs}}
    return node


def add_encode(g: dict, loader: str, person: str = "tom", noise: float = 0.35) -> str:
    node = f"encode_{person}"
    g[node] = {"class_type": "FaceSnapInstantIDEncode",
               "inputs": {"instantid": [loader, 0], "faces": [add_faces(g, person), 1], "uncond_noise": noise}}
    return node


def add_keypoints(g: dict, person: str = "tom") -> str:
    node = f"kps_{person}"
    g[node] = {"class_type": "FaceSnapDrawKeypoints",
               "inputs": {"faces": [add_faces(g, person), 1], "frame": "crop", "width": 128, "height": 128}}
    return node


def add_apply_instantid(g: dict, loader: str, identity: str, weight: float = 0.8, mask: tuple | None = None,
                        node: str = "", advanced: dict | None = None) -> str:
    """FaceSnap Apply InstantID (or the Advanced node with ``advanced`` settings) before the sampler; ``mask`` =
    (x, y, w, h) in 128x128 px."""
    inputs = {**sampler_inputs(g, "model", "positive", "negative"), "instantid": [loader, 0],
              "identity": [identity, 0], "keypoints_image": [add_keypoints(g), 0], "start_percent": 0.0,
              "end_percent": 1.0}
    return insert_apply(g, node or f"apply_instantid_{len(g)}", "FaceSnapApplyInstantID", inputs, {"weight": weight},
                        advanced, {"ip_weight": weight, "cn_strength": weight, "uncond_noise": 0.0,
                                   "positive_only": False}, mask)
