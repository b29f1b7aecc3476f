"""API-format graphs for the identity tests: tiny SDXL + tiny FaceSnap files -> KSampler -> SaveLatent.

Graphs are dicts of node id -> node; helpers add nodes and return the id. ``latent(executor)`` reads the KSampler's
output from the executor's cache. ``pack_module`` finds this pack's (or the test pack's) module instance that the
executor runs: ComfyUI imports custom-node packs under their folder path, not as ``comfyui_facesnap``.
"""

from __future__ import annotations

import sys

from comfy_test_nodes.tiny_models import tiny_facesnap_models
from comfyui_facesnap.devkit.comfy_host import cached_output

NO_CONTROLNET = "(FFRNet inside the FaceSnap file)"
FACESNAP_FILES = {  # file name -> tiny_facesnap_models arguments
    "tiny_facesnap.safetensors": dict(seed=0),
    "tiny_facesnap_copy.safetensors": dict(seed=0),  # the same weights under another name
    "other_heads.safetensors": dict(seed=1, injector_kernel_size=3),  # another head layout (3x3 heads)
    "deep_ffrnet.safetensors": dict(seed=2, layers_per_block=2),  # an FFRNet for a deeper UNet than the tiny SDXL
}


def write_facesnap_files(folder) -> None:
    from comfyui_facesnap.models.identity.facesnap.checkpoint import save_facesnap

    for name, kwargs in FACESNAP_FILES.items():
        if not (folder / name).exists():
            save_facesnap(str(folder / name), *tiny_facesnap_models(**kwargs), {"note": "test"})


def register_facesnap_folder(folder) -> None:
    import folder_paths

    write_facesnap_files(folder)
    folder_paths.add_model_folder_path("facesnap", str(folder), is_default=True)


def setup_face_pipeline(host, insightface_images, folder) -> None:
    """The Tom Hanks photo in ComfyUI's input folder and generated antelopev2 ONNX stand-ins as insightface models."""
    import shutil

    import folder_paths

    from comfyui_facesnap.devkit.onnx_antelopev2 import make_antelopev2

    shutil.copy(insightface_images / "Tom_Hanks_54745.png", host.input_dir / "Tom_Hanks_54745.png")
    folder_paths.add_model_folder_path("insightface", str(make_antelopev2(folder)), is_default=True)


def pack_module(host, node_id: str, submodule: str):
    """The executor's instance of ``submodule`` of the pack that registered ``node_id``."""
    module = host.node_classes[node_id].__module__
    package = module.rsplit(".nodes.", 1)[0] if ".nodes." in module else module
    return sys.modules[f"{package}.{submodule}"]


def base_graph(steps: int = 2, cfg: float = 4.0) -> dict:
    """Tiny SDXL and its conditioning, sampled to a latent (the KSampler is node "sampler")."""
    return {
        "model": {"class_type": "FaceSnapTestTinySDXL", "inputs": {"seed": 0, "sd15": False}},
        "cond": {"class_type": "FaceSnapTestConditioning", "inputs": {"seed": 1}},
        "empty": {"class_type": "EmptyLatentImage", "inputs": {"width": 128, "height": 128, "batch_size": 1}},
        "hint": {"class_type": "EmptyImage", "inputs": {"width": 128, "height": 128, "batch_size": 1,
                                                        "color": 0x406080}},
        "sampler": {"class_type": "KSampler",
                    "inputs": {"model": ["model", 0], "seed": 3, "steps": steps, "cfg": cfg, "sampler_name": "euler",
                               "scheduler": "normal", "positive": ["cond", 0], "negative": ["cond", 1],
                               "latent_image": ["empty", 0], "denoise": 1.0}},
        "save": {"class_type": "SaveLatent", "inputs": {"samples": ["sampler", 0], "filename_prefix": "latents/test"}},
    }


def add_loader(g: dict, name: str = "tiny_facesnap.safetensors", node: str = "", **inputs) -> str:
    node = node or f"load_{name}"
    g[node] = {"class_type": "FaceSnapModelLoader",
               "inputs": {"facesnap_name": name, "controlnet_name": NO_CONTROLNET, **inputs}}
    return node


def add_apply(g: dict, loader: str, person: int = 10, strength: float = 1.0, mask: tuple | None = None,
              node: str = "") -> str:
    """FaceSnap Apply FFRNet on the sampler's current positive/negative; ``mask`` = (x, y, w, h) in 128x128 px."""
    node = node or f"apply_{len(g)}"
    features = f"{node}_person"
    g[features] = {"class_type": "FaceSnapTestFaceFeatures", "inputs": {"seed": person}}
    sampler = g["sampler"]["inputs"]
    inputs = {"positive": sampler["positive"], "negative": sampler["negative"], "facesnap_model": [loader, 0],
              "face_features": [features, 0], "landmark_image": ["hint", 0], "strength": strength,
              "start_percent": 0.0, "end_percent": 1.0}
    add_rect_mask(g, node, mask, inputs)
    g[node] = {"class_type": "FaceSnapApplyFFRNet", "inputs": inputs}
    sampler.update(positive=[node, 0], negative=[node, 1])
    return node


def add_rect_mask(g: dict, node: str, mask: tuple | None, inputs: dict) -> None:
    """A FaceSnapTestRectMask (x, y, w, h in the 128 x 128 image) on ``inputs["mask"]``; nothing when ``mask`` is
    None."""
    if mask is not None:
        g[f"{node}_mask"] = {"class_type": "FaceSnapTestRectMask",
                             "inputs": dict(zip(("width", "height", "x", "y", "w", "h"), (128, 128, *mask),
                                                strict=True))}
        inputs["mask"] = [f"{node}_mask", 0]


def insert_apply(g: dict, node: str, class_type: str, inputs: dict, simple: dict, advanced: dict | None,
                 advanced_defaults: dict, mask: tuple | None, outputs=("model", "positive", "negative")) -> str:
    """Apply node ``class_type`` with ``inputs`` and ``simple``'s settings (or its Advanced node with
    ``advanced_defaults`` updated by ``advanced``) right before the sampler, whose ``outputs`` it then feeds."""
    inputs.update(simple if advanced is None else {**advanced_defaults, **advanced})
    add_rect_mask(g, node, mask, inputs)
    g[node] = {"class_type": class_type if advanced is None else class_type + "Advanced", "inputs": inputs}
    g["sampler"]["inputs"].update({name: [node, slot] for slot, name in enumerate(outputs)})
    return node


def sampler_inputs(g: dict, *names: str) -> dict:
    """The sampler's current links of ``names`` (model, positive, negative): what an apply node inserted before it
    takes."""
    return {name: g["sampler"]["inputs"][name] for name in names}


def add_model_node(g: dict, node: str, class_type: str, **inputs) -> str:
    """A MODEL -> MODEL node inserted right before the sampler."""
    g[node] = {"class_type": class_type, "inputs": {"model": g["sampler"]["inputs"]["model"], **inputs}}
    g["sampler"]["inputs"]["model"] = [node, 0]
    return node


def add_injector(g: dict, loader: str, node: str = "") -> str:
    return add_model_node(g, node or f"inject_{loader}", "DiffPCIDInjector", facesnap_model=[loader, 0])


def add_stock_controlnet(g: dict, node: str = "stock") -> str:
    g[f"{node}_net"] = {"class_type": "FaceSnapTestTinyControlNet", "inputs": {"seed": 4}}
    sampler = g["sampler"]["inputs"]
    g[node] = {"class_type": "ControlNetApplyAdvanced",
               "inputs": {"positive": sampler["positive"], "negative": sampler["negative"],
                          "control_net": [f"{node}_net", 0], "image": ["hint", 0], "strength": 1.0,
                          "start_percent": 0.0, "end_percent": 1.0}}
    sampler.update(positive=[node, 0], negative=[node, 1])
    return node


def cached(executor, node: str):
    return cached_output(executor, node, 0)


def latent(executor):
    return cached(executor, "sampler")["samples"].clone()


def sdxl_meta_patcher():
    """A full-size SDXL base MODEL (ComfyUI's detection of its config) on the meta device: its attention layout,
    no weights."""
    import torch

    import comfy.model_patcher
    import comfy.supported_models

    config = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
              "legacy": False, "num_classes": "sequential", "adm_in_channels": 2816, "dtype": torch.float16,
              "in_channels": 4, "model_channels": 320, "num_res_blocks": [2, 2, 2], "channel_mult": [1, 2, 4],
              "transformer_depth": [0, 0, 2, 2, 10, 10], "transformer_depth_middle": 10,
              "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10], "use_linear_in_transformer": True,
              "context_dim": 2048, "num_head_channels": 64, "use_temporal_attention": False,
              "use_temporal_resblock": False}
    cpu = torch.device("cpu")
    base = comfy.supported_models.SDXL(config).get_model({}, device=torch.device("meta"))
    return comfy.model_patcher.ModelPatcher(base, load_device=cpu, offload_device=cpu)


def sdxl_attn2_keys(model_patcher) -> set:
    """The attn2 patch key of every cross-attention ComfyUI's UNet calls: (block, block id, transformer index)."""
    from comfy.ldm.modules.attention import SpatialTransformer

    unet = model_patcher.model.diffusion_model
    return {(name, i, t) for name, blocks in (("input", unet.input_blocks), ("middle", [unet.middle_block]),
                                              ("output", unet.output_blocks))
            for i, block in enumerate(blocks) for m in block if isinstance(m, SpatialTransformer)
            for t in range(len(m.transformer_blocks))}


def identity_workflow_graph(facesnap_name="tiny_facesnap.safetensors", sd15=False, injector=True):
    """The whole identity path: photo -> Face Crop -> Draw Landmarks + Face Encode -> Apply FFRNet, ID-Injector on
    the tiny SDXL -> KSampler -> VAE decode -> SaveImage (node "15")."""
    g = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "Tom_Hanks_54745.png"}},
        "2": {"class_type": "FaceSnapFaceAnalyzerLoader",
              "inputs": {"backend": "insightface", "provider": "CPU", "dlib_detector": "hog"}},
        "3": {"class_type": "FaceSnapFaceCrop",
              "inputs": {"analyzer": ["2", 0], "image": ["1", 0], "selection": "largest", "index": 0, "size": 128,
                         "margin": 0.5, "if_no_face": "error"}},
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
