"""The shipped sampling workflows, runnable on a CPU: each workflow's API form with its model loaders, text encoders,
sizes and step counts swapped for the test pack's tiny stand-ins, everything else (the pack's nodes, their widget
values and links, the stock ControlNet and sampler nodes) as shipped.

``register_tiny_files`` puts the tiny FaceSnap, InstantID, PuLID, EcomID and 3DMM files into the test host's model
folders (call it inside ``workflow_files.model_folders_restored``); ``tiny_prompt(name, info)`` gives the runnable
prompt.
"""

from __future__ import annotations

import json
import pathlib

from identity_graphs import register_facesnap_folder, setup_face_pipeline
from instantid_graphs import CN_FILE, IP_FILE, register_instantid_folders
from pulid_graphs import ECOMID_CN, ECOMID_IP, EVA_FILE, V1_1_FILE, V1_FILE, register_pulid_folders

WORKFLOWS = pathlib.Path(__file__).resolve().parents[2] / "workflows"
SIDE = 128  # the tiny graphs' longest image side, in pixels
FACE_MODEL = "ict_face_narrow.npz"
TINY_PULID = {"pulid_v1.1.safetensors": V1_1_FILE, "ip-adapter_pulid_sdxl_fp16.safetensors": V1_FILE}


def sampling_workflows() -> list[str]:
    return sorted(p.stem for p in WORKFLOWS.glob("*.json") if '"KSampler"' in p.read_text())


def register_tiny_files(host, insightface_images, face_model_path, tmp) -> None:
    import shutil

    import folder_paths

    for sub in ("facesnap", "insightface", "instantid_pair", "3dmm", "pulid_files"):
        (tmp / sub).mkdir()
    register_pulid_folders(tmp / "pulid_files")
    register_facesnap_folder(tmp / "facesnap")
    setup_face_pipeline(host, insightface_images, tmp / "insightface")
    register_instantid_folders(host, insightface_images, tmp / "instantid_pair")
    (tmp / "3dmm" / FACE_MODEL).symlink_to(face_model_path)
    folder_paths.add_model_folder_path("3dmm", str(tmp / "3dmm"), is_default=True)
    folder_paths.add_model_folder_path("facesnap_identities", str(tmp / "identities"), is_default=True)
    from comfyui_facesnap.devkit.workflow_files import populate_inputs

    populate_inputs(host.input_dir)
    shutil.copy(insightface_images / "Tom_Hanks_54745.png", host.input_dir / "reference.png")


def _scaled(inputs: dict) -> None:
    if "width" in inputs and "height" in inputs:
        scale = SIDE / max(inputs["width"], inputs["height"])
        inputs["width"] = max(8, round(inputs["width"] * scale / 8) * 8)
        inputs["height"] = max(8, round(inputs["height"] * scale / 8) * 8)


SWAPS = {
    "CheckpointLoaderSimple": lambda node: ("FaceSnapTestTinyCheckpoint", {"seed": 0}),
    "CLIPTextEncode": lambda node: ("FaceSnapTestCLIPTextEncode", node["inputs"]),
    "CLIPVisionLoader": lambda node: ("FaceSnapTestTinyCLIPVision", {"seed": 0}),
    "ControlNetLoader": lambda node: ("FaceSnapTestTinyControlNet", {"seed": 4}),
    "FaceSnapModelLoader": lambda node: (node["class_type"],
                                         dict(node["inputs"], facesnap_name="tiny_facesnap.safetensors")),
    "FaceSnapInstantIDLoader": lambda node: (node["class_type"],
                                             dict(node["inputs"], instantid_file=IP_FILE, controlnet_name=CN_FILE)),
    "FaceSnapPuLIDLoader": lambda node: (node["class_type"], dict(node["inputs"], pulid_file=TINY_PULID.get(
        node["inputs"]["pulid_file"], node["inputs"]["pulid_file"]))),
    "FaceSnapEVACLIPLoader": lambda node: (node["class_type"], dict(node["inputs"], eva_clip_file=EVA_FILE)),
    "FaceSnapEcomIDLoader": lambda node: (node["class_type"], dict(node["inputs"], instantid_file=ECOMID_IP,
                                                                   pulid_file=V1_FILE, controlnet_name=ECOMID_CN)),
    "FaceSnap3DMMLoader": lambda node: (node["class_type"],
                                        dict(node["inputs"], model="ICT-FaceKit", ict_file=FACE_MODEL,
                                             download_if_missing=False)),
    "FaceSnapFaceCrop": lambda node: (node["class_type"], dict(node["inputs"], size=SIDE)),
    "KSampler": lambda node: (node["class_type"], dict(node["inputs"], steps=2)),
    "FaceSnapSaveIdentity": lambda node: (node["class_type"], dict(node["inputs"], overwrite=True)),
}


def tiny_prompt(name: str, info: dict) -> dict:
    from comfyui_facesnap.devkit.workflow_format import ui_to_api

    prompt = ui_to_api(json.loads((WORKFLOWS / f"{name}.json").read_text()), info)
    for node in prompt.values():
        swap = SWAPS.get(node["class_type"])
        if swap is not None:
            node["class_type"], node["inputs"] = swap(node)
        _scaled(node["inputs"])
    return prompt
