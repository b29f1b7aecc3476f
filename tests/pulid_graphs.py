"""API-format graph pieces for the PuLID and EcomID tests (see identity_graphs.py for the base graph).

``register_pulid_folders`` writes tiny same-architecture files into the test host's model folders:

- models/pulid: PuLID v1 and v1.1 for the tiny SDXL (64-wide tokens, the layout in the metadata), each in both
  published layouts (``*_official``: ``id_adapter.*`` / ``id_adapter_attn_layers.*``; the others ``image_proj.*`` /
  ``ip_adapter.*``), and a second v1 file of other weights;
- models/text_encoders: an EVA-CLIP tower of the real structure at 56 px, 32 wide, with the 768-wide embedding PuLID
  reads (``eva_config`` metadata);
- models/facexlib: facexlib's BiSeNet at its fixed size with random weights (``parsing_bisenet.pth``);
- models/instantid + models/controlnet: EcomID's tiny pair, a Resampler and an IdentityNet for 64-wide tokens.

Faces come from the generated antelopev2 stand-ins (``identity_graphs.setup_face_pipeline``).
"""

from __future__ import annotations

import json

import torch

from comfy_test_nodes.tiny_models import init_, tiny_instantid_files
from comfyui_facesnap.models.identity.pulid.adapter import V1, V1_1
from comfyui_facesnap.models.identity.pulid.eva_clip_vision import EVAVisionConfig, EVAVisionTower
from identity_graphs import insert_apply, sampler_inputs, setup_face_pipeline
from instantid_graphs import add_faces, add_keypoints, register_instantid_folders
from pulid_files import save_tiny, tiny_adapter
from weight_files import random_parser

TINY_EVA = EVAVisionConfig(image_size=56, patch_size=14, width=32, layers=6, heads=4, mlp_hidden=48, embed_dim=768,
                           hidden_layers=(1, 2, 3, 4, 5))  # width: the tiny PuLID encoders' vit_dim
EVA_FILE = "tiny_eva_clip.safetensors"
PARSER_FILE = "parsing_bisenet.pth"
PULID_FILES = {  # name -> (version, official layout, seed)
    "tiny_pulid_v1.safetensors": (V1, False, 0),
    "tiny_pulid_v1_official.safetensors": (V1, True, 0),
    "tiny_pulid_v1_other.safetensors": (V1, False, 1),
    "tiny_pulid_v1.1.safetensors": (V1_1, False, 0),
    "tiny_pulid_v1.1_official.safetensors": (V1_1, True, 0),
}
V1_FILE, V1_1_FILE = "tiny_pulid_v1.safetensors", "tiny_pulid_v1.1.safetensors"
ECOMID_PREFIX = "tiny_ecomid_"
ECOMID_IP, ECOMID_CN = f"{ECOMID_PREFIX}ip-adapter.safetensors", f"{ECOMID_PREFIX}identitynet.safetensors"


def write_tiny_eva(path, seed: int = 0) -> None:
    from dataclasses import asdict

    from safetensors.torch import save_file

    torch.manual_seed(seed)
    tower = init_(EVAVisionTower(TINY_EVA), seed, std=0.1)
    for module in tower.modules():  # LayerNorms near 1, as trained ones are
        if isinstance(module, torch.nn.LayerNorm):
            torch.nn.init.ones_(module.weight)
    save_file({"visual." + k: v.contiguous() for k, v in tower.state_dict().items()}, str(path),
              metadata={"eva_config": json.dumps(asdict(TINY_EVA))})


def prepare_pulid_host(comfy_host, insightface_images, tmp_path_factory):
    """The test host with the face pipeline, InstantID's tiny files and PuLID's and EcomID's (the PuLID and EcomID
    test modules' host)."""
    setup_face_pipeline(comfy_host, insightface_images, tmp_path_factory.mktemp("insightface"))
    register_instantid_folders(comfy_host, insightface_images, tmp_path_factory.mktemp("instantid"))
    register_pulid_folders(tmp_path_factory.mktemp("pulid"))
    return comfy_host


def register_pulid_folders(tmp) -> None:
    import folder_paths

    folders = {name: tmp / name for name in ("pulid", "text_encoders", "facexlib", "instantid", "controlnet")}
    for folder in folders.values():
        folder.mkdir()
    for name, (version, official, seed) in PULID_FILES.items():
        save_tiny(folders["pulid"] / name, tiny_adapter(version, seed), official)
    write_tiny_eva(folders["text_encoders"] / EVA_FILE)
    torch.save(random_parser().state_dict(), folders["facexlib"] / PARSER_FILE)
    tiny_instantid_files(str(folders["instantid"]), output_dim=64, prefix=ECOMID_PREFIX)
    (folders["instantid"] / ECOMID_CN).rename(folders["controlnet"] / ECOMID_CN)
    for name, folder in folders.items():
        folder_paths.add_model_folder_path(name, str(folder), is_default=True)


def add_feature_loaders(g: dict) -> tuple[str, str]:
    g["eva"] = {"class_type": "FaceSnapEVACLIPLoader", "inputs": {"eva_clip_file": EVA_FILE, "dtype": "auto"}}
    g["parser"] = {"class_type": "FaceSnapFaceParserLoader", "inputs": {"parser_file": PARSER_FILE}}
    return "eva", "parser"


def add_pulid_loader(g: dict, name: str = V1_FILE, node: str = "pulid", dtype: str = "auto") -> str:
    g[node] = {"class_type": "FaceSnapPuLIDLoader", "inputs": {"pulid_file": name, "dtype": dtype}}
    return node


def _encode(g: dict, class_type: str, socket: str, loader: str, person: str, noise: float, node: str) -> str:
    eva, parser = add_feature_loaders(g)
    g[node] = {"class_type": class_type, "inputs": {socket: [loader, 0], "eva_clip": [eva, 0],
                                                    "face_parser": [parser, 0], "faces": [add_faces(g, person), 1],
                                                    "uncond_noise": noise}}
    return node


def add_pulid_encode(g: dict, loader: str = "pulid", person: str = "tom", noise: float = 0.0, node: str = "") -> str:
    return _encode(g, "FaceSnapPuLIDEncode", "pulid", loader, person, noise, node or f"encode_{loader}_{person}")


def add_apply_pulid(g: dict, loader: str, identity: str, weight: float = 0.8, method: str = "default",
                    mask: tuple | None = None, node: str = "", advanced: dict | None = None) -> str:
    """FaceSnap Apply PuLID (or the Advanced node with ``advanced`` settings) before the sampler; ``mask`` =
    (x, y, w, h) in 128x128 px."""
    inputs = {**sampler_inputs(g, "model"), "pulid": [loader, 0], "identity": [identity, 0], "weight": weight,
              "start_percent": 0.0, "end_percent": 1.0}
    return insert_apply(g, node or f"apply_pulid_{len(g)}", "FaceSnapApplyPuLID", inputs, {"method": method}, advanced,
                        {"num_zero_tokens": 8, "projection": "ortho_v2", "share": "official",
                         "zero_token_noise": 0.0}, mask, outputs=("model",))


def add_ecomid_loader(g: dict, node: str = "ecomid", pulid: str = V1_FILE, **inputs) -> str:
    g[node] = {"class_type": "FaceSnapEcomIDLoader",
               "inputs": {"instantid_file": ECOMID_IP, "pulid_file": pulid, "controlnet_name": ECOMID_CN,
                          "dtype": "auto", **inputs}}
    return node


def add_ecomid_encode(g: dict, loader: str = "ecomid", person: str = "tom", noise: float = 0.35) -> str:
    return _encode(g, "FaceSnapEcomIDEncode", "ecomid", loader, person, noise, f"encode_{loader}_{person}")


def add_apply_ecomid(g: dict, loader: str, identity: str, weight: float = 0.8, method: str = "fidelity",
                     mask: tuple | None = None, node: str = "", advanced: dict | None = None) -> str:
    inputs = {**sampler_inputs(g, "model", "positive", "negative"), "ecomid": [loader, 0], "identity": [identity, 0],
              "keypoints_image": [add_keypoints(g), 0], "method": method, "start_percent": 0.0, "end_percent": 1.0}
    return insert_apply(g, node or f"apply_ecomid_{len(g)}", "FaceSnapApplyEcomID", inputs, {"weight": weight},
                        advanced, {"ip_weight": weight, "cn_strength": weight, "zero_token_noise": 0.0,
                                   "positive_only": False}, mask)
